"""The request edge: what every HTTP request passes before a route sees it.

Host names (DNS rebinding), the Origin of mutating requests (cross-site requests), the body's
size, media type and JSON well-formedness, and HEAD answered as GET without a body. Each check
answers with the same `{"detail": ...}` body as the API's own errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
# Deeper JSON than this is refused before anything recurses over it (pydantic's error echo,
# FastAPI's encoder): a RunConfig nests two levels.
MAX_JSON_DEPTH = 32


async def answer(send: Send, status: int, detail: Any) -> None:
    """A complete JSON error response, sent without the app (no route ran)."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def split_host(host_header: str) -> tuple[str, str]:
    """'Example.org:8000' → ('example.org', '8000'), '[::1]' → ('::1', '')."""
    host = host_header.strip().lower()
    if host.startswith("[") and "]" in host:
        name, _, rest = host[1:].partition("]")
        return name, rest.removeprefix(":")
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, port
    return host, ""


def same_origin(origin: str, host_header: str, scheme: str) -> bool:
    """Whether a page at `origin` is this server as the request reached it (Host header)."""
    try:
        parts = urlsplit(origin.lower())
        origin_port = parts.port
    except ValueError:
        return False  # 'null', garbage, an impossible port
    default = {"http": 80, "https": 443}
    if parts.scheme not in default or parts.scheme != scheme or not parts.hostname:
        return False
    name, port = split_host(host_header)
    own_port = int(port) if port.isdigit() else default[scheme]
    return parts.hostname == name and (origin_port or default[scheme]) == own_port


def json_problem(body: bytes) -> str | None:
    """Why `body` is not acceptable JSON, or None: strict UTF-8, valid JSON, at most
    MAX_JSON_DEPTH levels, no lone surrogate in any string or key (RFC 8259 §8.2)."""
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        return f"the body is not valid UTF-8 (byte {error.start})"
    except RecursionError:
        return f"the body nests deeper than {MAX_JSON_DEPTH} levels"
    except ValueError as error:
        return f"the body is not valid JSON: {error}"
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:  # iterative: nothing here recurses however deep the body is
        item, depth = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                return "the body holds a lone surrogate (\\ud800-\\udfff) in a string"
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            return f"the body nests deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(item, dict):
            if not all(_encodable(key) for key in item):
                return "the body holds a lone surrogate (\\ud800-\\udfff) in a key"
            stack.extend((v, depth + 1) for v in item.values())
        else:
            stack.extend((v, depth + 1) for v in item)
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


class Edge:
    """Host and Origin checks, the body limit (413), `application/json` for bodies (415) and
    JSON well-formedness (422), in that order. A body is read whole (at most `max_bytes`)
    and replayed to the app, so a route never sees a body these checks did not."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.hosts = {h.strip("[]").lower() for h in allowed_hosts}
        self.origins = {o.rstrip("/").lower() for o in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refused = self._refusal(scope, headers)
        if refused is not None:
            await answer(send, *refused)
            return
        if scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        body = await self._read(receive)
        if body is None:
            await answer(send, 413, f"request body over {self.max_bytes} bytes")
            return
        problem = self._body_problem(headers, body)
        if problem is not None:
            await answer(send, *problem)
            return
        await self.app(scope, _replay(body, receive), send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        host, _ = split_host(headers.get("host", ""))
        if "*" not in self.hosts and host not in self.hosts:
            return 400, (
                f"host {host!r} is not served here; the server accepts "
                f"{', '.join(sorted(self.hosts))} (setting DEPTHSCOPE_ALLOWED_HOSTS)"
            )
        origin = headers.get("origin")
        if (
            scope["method"] in MUTATING
            and origin is not None
            and not self._own(origin, scope, headers)
        ):
            return 403, (
                f"requests from origin {origin!r} may not change anything here; allowed: this "
                "server's own pages and DEPTHSCOPE_CORS_ORIGINS"
            )
        declared = headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            return 413, f"request body over {self.max_bytes} bytes"
        return None

    def _own(self, origin: str, scope: Scope, headers: dict[str, str]) -> bool:
        """The page is this server (the Host it reached is an allowed name, checked first) or
        one of the configured origins."""
        if origin.rstrip("/").lower() in self.origins:
            return True
        return same_origin(origin, headers.get("host", ""), scope.get("scheme", "http"))

    async def _read(self, receive: Receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client left: the app's own receive will say so too
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _body_problem(self, headers: dict[str, str], body: bytes) -> tuple[int, Any] | None:
        content_type = headers.get("content-type")
        if (body or content_type is not None) and not _is_json(content_type or ""):
            return 415, f"request bodies must be application/json, not {content_type!r}"
        if not body:
            return None
        problem = json_problem(body)
        if problem is None:
            return None
        return 422, [{"type": "json_invalid", "loc": ["body"], "msg": problem}]


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: disconnects

    return replay


class _HeadDoneError(Exception):
    """Raised into a response that keeps sending after a HEAD answer is complete."""


class HeadAsGet:
    """HEAD on any GET endpoint: routed as GET, answered with its status and headers and no
    body. A streaming body (export, events) is stopped after its first chunk."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        finished = False

        async def headers_only(message: Message) -> None:
            nonlocal finished
            if finished:
                raise _HeadDoneError
            if message["type"] == "http.response.body":
                finished = True
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        async def gone() -> Message:
            if finished:
                return {"type": "http.disconnect"}
            return await receive()

        try:
            await self.app({**scope, "method": "GET"}, gone, headers_only)
        except Exception:
            if not finished:
                raise
