"""The app factory and `serve`: settings in, a FastAPI app out — API, docs and the frontend."""

from __future__ import annotations

import math
import mimetypes
import re
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from depthscope import __version__
from depthscope.service.api import router
from depthscope.service.executors import ExecutorKind, make_executor
from depthscope.service.routes_analysis import router as analysis_router
from depthscope.service.routes_explorer import router as explorer_router
from depthscope.service.routes_metrics import router as metrics_router
from depthscope.service.routes_sweeps import router as sweeps_router
from depthscope.service.runs import RunManager
from depthscope.service.security import SecurityHeaders, StreamSlots, exposure_warning, log
from depthscope.service.settings import Settings
from depthscope.service.store import RunStore
from depthscope.service.stream import Broadcaster
from depthscope.service.sweep_store import Sweeps

# A static name is one plain file name with a shipped extension (pyproject's package-data): no
# slash, no leading dot, so nothing outside frontend/ and no Python source is ever served.
STATIC_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,100}\.(html|js|css|svg|png)$")


def create_app(settings: Settings) -> FastAPI:
    """Open the store (runs a dead server left active become `interrupted`), then wire it up."""
    store = RunStore(settings.db_path)
    store.recover()
    manager = RunManager(
        store,
        settings.max_concurrent_runs,
        settings.max_queued_runs,
        settings.max_stored_runs,
        settings.max_store_bytes,
        executor=make_executor(settings.executor, store, settings.ray_address),
        max_cells=settings.max_queued_cells,
    )
    broadcaster = Broadcaster(store, settings.subscriber_buffer)
    sweeps = Sweeps(store, manager, settings.max_sweep_work)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=manager.warm_up, daemon=True).start()
        yield
        await broadcaster.close()
        manager.shutdown()

    # /docs is rebuilt below on local Swagger UI files; ReDoc has no offline bundle.
    app = FastAPI(
        title="depthscope",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings, app.state.store = settings, store
    app.state.manager, app.state.broadcaster = manager, broadcaster
    app.state.sweeps = sweeps
    app.state.stream_slots = StreamSlots(settings.max_streams_per_client, settings.max_streams)
    app.include_router(router)
    app.include_router(sweeps_router)
    app.include_router(explorer_router)  # boundaries, pause/advance/resume, lessons
    app.include_router(metrics_router)
    app.include_router(analysis_router)  # theory, spectra, diagnoses, init scans
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    _mount_frontend(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)  # outermost: errors from the others get headers too
    return app


async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, but a NaN or infinite input (JSON from Python clients may carry them) is
    echoed as a string: the default handler would fail to encode it and answer 500."""
    return JSONResponse({"detail": _finite(jsonable_encoder(error.errors()))}, status_code=422)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# Swagger UI 5 (it reads OpenAPI 3.1) as the fastapi-offline package ships it; only its files.
SWAGGER_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"})


def _mount_frontend(app: FastAPI) -> None:
    """`/` and `/<file>` from the depthscope.frontend package, plotly.js from plotly's own
    bundle: everything the page needs comes from this server (no CDN)."""
    frontend = resources.files("depthscope.frontend")
    plotly_js = resources.files("plotly").joinpath("package_data", "plotly.min.js")
    swagger_ui = resources.files("fastapi_offline").joinpath("static")

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return _file(frontend.joinpath("index.html"))

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly() -> Response:
        return _file(plotly_js, cache="public, max-age=86400")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="depthscope API",
            swagger_js_url="/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/vendor/swagger-ui/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from elsewhere
        )

    @app.get("/vendor/swagger-ui/{name}", include_in_schema=False)
    def swagger_ui_file(name: str) -> Response:
        if name not in SWAGGER_FILES:
            raise HTTPException(404, "not found")
        return _file(swagger_ui.joinpath(name), cache="public, max-age=86400")

    @app.get("/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if not STATIC_NAME.match(name) or not frontend.joinpath(name).is_file():
            raise HTTPException(404, "not found")
        return _file(frontend.joinpath(name))


def _file(path: Traversable, cache: str = "no-cache") -> Response:
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.name.endswith(".js"):
        kind = "text/javascript"  # ES modules need a JavaScript type whatever the OS maps
    headers = {"Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    return Response(path.read_bytes(), media_type=kind, headers=headers)


class BodyLimit:
    """413 for request bodies over the limit, by Content-Length or while a chunked body
    streams in, before any route parses it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body over {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def serve(
    host: str,
    port: int,
    data_dir: Path,
    token: str | None = None,
    executor: ExecutorKind | None = None,
    ray_address: str | None = None,
) -> None:
    """Run the server (blocking). Other settings come from DEPTHSCOPE_* variables."""
    # An explicit None would override DEPTHSCOPE_TOKEN (or _EXECUTOR, ...) from the environment.
    given: dict[str, Any] = {"token": token, "executor": executor, "ray_address": ray_address}
    settings = Settings(data_dir=data_dir, **{k: v for k, v in given.items() if v is not None})
    warning = exposure_warning(host, settings.token)
    if warning:
        log.warning(warning)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
