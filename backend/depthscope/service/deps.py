"""Dependencies of the HTTP layer: the app's shared objects and the optional token, as aliases."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from depthscope.service.runs import RunManager
from depthscope.service.settings import Settings
from depthscope.service.store import RunStore
from depthscope.service.stream import Broadcaster


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> RunStore:
    store: RunStore = request.app.state.store
    return store


def get_manager(request: Request) -> RunManager:
    manager: RunManager = request.app.state.manager
    return manager


def get_broadcaster(request: Request) -> Broadcaster:
    broadcaster: Broadcaster = request.app.state.broadcaster
    return broadcaster


def bearer(header: str) -> str | None:
    """The credentials of an `Authorization: Bearer <token>` header (the scheme is
    case-insensitive, RFC 7235); None for any other form, a bare token included."""
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _check(request: Request, allow_query: bool) -> None:
    expected = get_settings(request).token
    if expected is None:
        return
    given = bearer(request.headers.get("authorization", ""))
    if given is None and allow_query:
        given = request.query_params.get("token")
    if given is None or not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "a valid token is required", {"WWW-Authenticate": "Bearer"})


def require_token(request: Request) -> None:
    """With a token configured, mutating endpoints need `Authorization: Bearer <token>`. A
    `?token=` is not accepted here: URLs land in access logs."""
    _check(request, allow_query=False)


def require_stream_token(request: Request) -> None:
    """Event streams (SSE) need the token too, as the header or, since a browser's
    EventSource cannot set headers, a `token` query parameter."""
    _check(request, allow_query=True)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[RunStore, Depends(get_store)]
ManagerDep = Annotated[RunManager, Depends(get_manager)]
BroadcasterDep = Annotated[Broadcaster, Depends(get_broadcaster)]
Authorized = Depends(require_token)
StreamAuthorized = Depends(require_stream_token)
