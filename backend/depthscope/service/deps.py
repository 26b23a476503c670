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


def require_token(request: Request) -> None:
    """With a token configured, mutating endpoints and the stream need it, as a bearer header
    or (for EventSource, which cannot set headers) a `token` query parameter."""
    expected = get_settings(request).token
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    given = header.removeprefix("Bearer ").strip() or request.query_params.get("token", "")
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "a valid token is required", {"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[RunStore, Depends(get_store)]
ManagerDep = Annotated[RunManager, Depends(get_manager)]
BroadcasterDep = Annotated[Broadcaster, Depends(get_broadcaster)]
Authorized = Depends(require_token)
