"""The app factory and `serve`: settings in, a FastAPI app out — API, docs and the frontend."""

from __future__ import annotations

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
from fastapi import FastAPI, HTTPException, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from pydantic import ValidationError

from depthscope import __version__
from depthscope.service.api import router
from depthscope.service.edge import Edge, HeadAsGet
from depthscope.service.errors import invalid_request
from depthscope.service.executors import ExecutorKind, make_executor
from depthscope.service.ownership import DataDirBusyError, DataDirLock
from depthscope.service.routes_analysis import router as analysis_router
from depthscope.service.routes_explorer import router as explorer_router
from depthscope.service.routes_metrics import router as metrics_router
from depthscope.service.routes_sweeps import router as sweeps_router
from depthscope.service.runs import RunManager
from depthscope.service.security import SecurityHeaders, StreamSlots, exposure_warning, log
from depthscope.service.settings import Settings, StartupError
from depthscope.service.store import RunStore
from depthscope.service.stream import Broadcaster
from depthscope.service.sweep_store import Sweeps

# A static name is one plain file name with a shipped extension (pyproject's package-data): no
# slash, no leading dot, so nothing outside frontend/ and no Python source is ever served.
STATIC_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,100}\.(html|js|css|svg|png)$")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
SHUTDOWN_TIMEOUT_S = 5  # uvicorn's wait for open connections (streams end within 2 s)


def create_app(settings: Settings) -> FastAPI:
    """Lock the data directory (one server owns it: DataDirBusyError otherwise), claim the
    store (a new epoch: a dead server's workers can no longer write), mark the runs that
    server left active `interrupted`, then wire everything up."""
    lock = DataDirLock(settings.data_dir).acquire()
    store = RunStore(settings.db_path)
    store.claim()
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
    broadcaster = Broadcaster(store)
    sweeps = Sweeps(store, manager, settings.max_sweep_work)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=manager.warm_up, daemon=True).start()
        yield
        await broadcaster.close()
        manager.shutdown()
        lock.release()

    # /docs is rebuilt below on local Swagger UI files; ReDoc has no offline bundle.
    app = FastAPI(
        title="depthscope",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings, app.state.store, app.state.lock = settings, store, lock
    app.state.manager, app.state.broadcaster = manager, broadcaster
    app.state.sweeps = sweeps
    app.state.stream_slots = StreamSlots(settings.max_streams_per_client, settings.max_streams)
    app.state.export_slots = StreamSlots(settings.max_exports_per_client, settings.max_exports)
    app.include_router(router)
    app.include_router(sweeps_router)
    app.include_router(explorer_router)  # boundaries, pause/advance/resume, lessons
    app.include_router(metrics_router)
    app.include_router(analysis_router)  # theory, spectra, diagnoses, init scans
    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]
    _mount_frontend(app)
    _document_body_errors(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
    app.add_middleware(HeadAsGet)
    app.add_middleware(
        Edge,
        max_bytes=settings.max_body_bytes,
        allowed_hosts=settings.allowed_hosts,
        allowed_origins=settings.cors_origins,
    )
    app.add_middleware(SecurityHeaders)  # outermost: errors from the others get headers too
    return app


def _document_body_errors(app: FastAPI) -> None:
    """/openapi.json lists, on every operation that takes a body (whichever router added it),
    the statuses the request edge answers for bodies: 413, 415 and 422."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = plain()
        problem = {
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        }
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if "requestBody" in operation:
                    responses = operation.setdefault("responses", {})
                    for code, why in BODY_ERRORS.items():
                        responses.setdefault(code, {"description": why, **problem})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


BODY_ERRORS = {
    "413": "request body over max_body_bytes",
    "415": "a request body that is not application/json",
    "422": "invalid input; `detail` names each wrong field",
}


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


def serve(
    host: str,
    port: int,
    data_dir: Path,
    token: str | None = None,
    executor: ExecutorKind | None = None,
    ray_address: str | None = None,
) -> None:
    """Run the server (blocking). Other settings come from DEPTHSCOPE_* variables. Raises
    StartupError, before binding anything, for an empty token or a data dir in use."""
    # An explicit None would override DEPTHSCOPE_TOKEN (or _EXECUTOR, ...) from the environment.
    given: dict[str, Any] = {"token": token, "executor": executor, "ray_address": ray_address}
    try:
        settings = Settings(data_dir=data_dir, **{k: v for k, v in given.items() if v is not None})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise StartupError(f"refusing to start: {problems}") from error
    if host not in WILDCARD_BINDS and host.lower() not in settings.allowed_hosts:
        # Bound to one name or address: requests naming it are this server's own.
        settings = settings.model_copy(update={"allowed_hosts": [*settings.allowed_hosts, host]})
    warning = exposure_warning(host, settings.token)
    if warning:
        log.warning(warning)
    try:
        app = create_app(settings)
    except DataDirBusyError as error:
        raise StartupError(str(error)) from error
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S,
    )
