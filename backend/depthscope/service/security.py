"""Exposure controls: security headers on every response, stream slots, the bind warning."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("depthscope")

# The page loads only its own scripts (no inline script, no eval). plotly.js sets inline
# styles on the SVG it draws, and renders heatmaps and icons as data:/blob: images.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# /docs is Swagger UI, served from this server's own copy; its page bootstraps with one inline
# script, so it alone may run inline script (still never framed, nothing from elsewhere).
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs",)


class SecurityHeaders:
    """Adds CSP, nosniff, Referrer-Policy and X-Frame-Options to every HTTP response, streams
    included (plain ASGI, so SSE bodies pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        csp = DOCS_CSP if path.startswith(DOCS_PATHS) else PAGE_CSP
        extra = [
            (b"content-security-policy", csp.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((k, v) for k, v in extra if k not in names),
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


class StreamSlots:
    """Counts open streams (SSE, exports), per client address and in total, so that no one
    client (or crowd) can hold unbounded connections and buffers. Event loop only."""

    def __init__(self, per_client: int, total: int) -> None:
        self.per_client, self.total = per_client, total
        self._open: Counter[str] = Counter()

    def acquire(self, client: str, what: str = "streams") -> str | None:
        """Take a slot for `client`; None on success, else why not (for a 429)."""
        if sum(self._open.values()) >= self.total:
            return f"the server already serves {self.total} {what}; retry later"
        if self._open[client] >= self.per_client:
            return f"at most {self.per_client} open {what} per client; close one first"
        self._open[client] += 1
        return None

    def release(self, client: str) -> None:
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]

    def open_streams(self) -> int:
        return sum(self._open.values())


class _GivesSlotBack(Response):
    """A response that calls `on_close` (gives its slot back) however its body ends: sent,
    cut by the client, or failed. Put first among the bases of a concrete response class."""

    def __init__(self, *args: Any, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


class SlotEventSource(_GivesSlotBack, EventSourceResponse):
    """An event stream that gives its stream slot back however it ends."""


async def until_shutdown(
    content: AsyncIterator[ServerSentEvent], shutdown: anyio.Event
) -> AsyncIterator[ServerSentEvent]:
    """`content`'s events until `shutdown` is set (sse-starlette sets it when the server is
    told to stop), then a last `shutdown` event, so the stream ends cleanly, not cut mid-body.
    For streams of a few events a second (the run stream has its own, cheaper, way)."""
    events = aiter(content)
    stopping = asyncio.ensure_future(shutdown.wait())
    try:
        while True:
            step = asyncio.ensure_future(anext(events))
            await asyncio.wait({step, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                reason = {"reason": "the server is shutting down; reconnect later"}
                yield ServerSentEvent(data=json.dumps(reason), event="shutdown", retry=5000)
                return
            try:
                event = step.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        stopping.cancel()


class SlotStreamingResponse(_GivesSlotBack, StreamingResponse):
    """A streamed body (an export) that gives its slot back however it ends."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def exposure_warning(host: str, token: str | None) -> str | None:
    """The start-up warning for a server reachable from other machines without a token."""
    if token or is_loopback(host):
        return None
    return (
        f"WARNING: depthscope is listening on {host}, which other machines may reach, and no "
        "token is set: anyone who can connect can start, cancel and delete runs. Set "
        "DEPTHSCOPE_TOKEN (or --token), or bind 127.0.0.1 (fine inside a container behind a "
        "published port)."
    )
