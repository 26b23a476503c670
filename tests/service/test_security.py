"""Exposure: security headers, the token on every mutating endpoint, CORS, path escapes, bind."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import tiny_config
from depthscope import RunConfig
from depthscope.cli import build_parser, main
from depthscope.service import app as app_module
from depthscope.service.app import create_app
from depthscope.service.runs import RunManager, StoreFullError
from depthscope.service.security import PAGE_CSP, StreamSlots, exposure_warning, until_shutdown
from depthscope.service.settings import Settings
from depthscope.service.store import RunStore
from fastapi import FastAPI
from sse_starlette import ServerSentEvent

pytestmark = pytest.mark.anyio


async def finished_run(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> str:
    created = await client.post("/api/runs", json=tiny_config(5), headers=headers)
    assert created.status_code == 201, created.text
    run_id: str = created.json()["id"]
    deadline = time.monotonic() + 30
    while (await client.get(f"/api/runs/{run_id}")).json()["terminal"] is not True:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return run_id


# -- headers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/", "/app.js", "/api/health", "/api/runs", "/api/runs/nope", "/missing.js"]
)
async def test_security_headers_on_page_api_and_errors(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.headers["content-security-policy"] == PAGE_CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"


async def test_security_headers_on_413(client: httpx.AsyncClient) -> None:
    big = b"{" + b" " * 70_000 + b"}"
    response = await client.post(
        "/api/runs", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_security_page_csp_allows_only_own_scripts() -> None:
    directives = dict(d.strip().split(" ", 1) for d in PAGE_CSP.split(";"))
    assert directives["script-src"] == "'self'"  # no inline script, no eval, no CDN
    assert directives["frame-ancestors"] == "'none'"
    assert "'unsafe-inline'" in directives["style-src"]  # plotly's inline SVG styles


# -- token --------------------------------------------------------------------------------------
@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(data_dir=tmp_path, token="s3cret"))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield client
    finally:
        app.state.manager.shutdown()
        app.state.store.close()


RIGHT = {"Authorization": "Bearer s3cret"}


async def test_token_required_by_every_mutating_endpoint_and_the_stream(
    guarded: httpx.AsyncClient,
) -> None:
    assert (await guarded.post("/api/runs", json=tiny_config(5))).status_code == 401
    run_id = await finished_run(guarded, RIGHT)
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"/api/runs/{run_id}/cancel", {}),
        ("GET", f"/api/runs/{run_id}/events", {}),
        ("DELETE", f"/api/runs/{run_id}", {}),
    ]
    for method, path, _ in calls:
        refused = await guarded.request(method, path)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == "Bearer"
        wrong = await guarded.request(method, path, headers={"Authorization": "Bearer s3cre"})
        assert wrong.status_code == 401, path
    assert (await guarded.post(f"/api/runs/{run_id}/cancel", headers=RIGHT)).status_code == 200
    stream = await guarded.get(f"/api/runs/{run_id}/events?token=s3cret")  # EventSource form
    assert stream.status_code == 200 and "event: end" in stream.text
    assert (await guarded.delete(f"/api/runs/{run_id}", headers=RIGHT)).status_code == 204


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
async def test_token_bearer_scheme_is_case_insensitive(
    guarded: httpx.AsyncClient, scheme: str
) -> None:
    """Regression: `Authorization: bearer T` (valid per RFC 7235) was refused."""
    created = await guarded.post(
        "/api/runs", json=tiny_config(5), headers={"Authorization": f"{scheme}  s3cret "}
    )
    assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    "header", ["s3cret", "Basic s3cret", "Bearer", "Bearers3cret", "Token s3cret"]
)
async def test_token_without_the_bearer_scheme_is_refused(
    guarded: httpx.AsyncClient, header: str
) -> None:
    """Regression: a bare `Authorization: T` was accepted."""
    refused = await guarded.post(
        "/api/runs", json=tiny_config(5), headers={"Authorization": header}
    )
    assert refused.status_code == 401


async def test_token_query_parameter_only_on_the_event_stream(guarded: httpx.AsyncClient) -> None:
    """Regression: `?token=` worked on POST and DELETE, putting the token in access logs."""
    assert (await guarded.post("/api/runs?token=s3cret", json=tiny_config(5))).status_code == 401
    run_id = await finished_run(guarded, RIGHT)
    assert (await guarded.post(f"/api/runs/{run_id}/cancel?token=s3cret")).status_code == 401
    assert (await guarded.delete(f"/api/runs/{run_id}?token=s3cret")).status_code == 401
    stream = await guarded.get(f"/api/runs/{run_id}/events?token=s3cret")
    assert stream.status_code == 200 and "event: end" in stream.text
    assert (await guarded.get(f"/api/runs/{run_id}/events?token=nope")).status_code == 401


@pytest.mark.parametrize("token", ["", "   ", " s3cret", "s3cret\n"])
def test_blank_token_refuses_to_start(
    token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: `--token ""` silently disabled authentication."""
    with pytest.raises(ValueError, match="token is empty"):
        Settings(data_dir=tmp_path, token=token)
    with pytest.raises(app_module.StartupError, match="refusing to start: token"):
        app_module.serve("127.0.0.1", 8000, tmp_path, token=token)
    assert main(["serve", "--data-dir", str(tmp_path), "--token", token]) == 2
    assert "refusing to start" in capsys.readouterr().err


def test_blank_token_from_the_environment_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEPTHSCOPE_TOKEN", "")
    with pytest.raises(app_module.StartupError, match="token"):
        app_module.serve("127.0.0.1", 8000, tmp_path)


@pytest.mark.parametrize(
    "path", ["/api/health", "/api/presets", "/api/schema", "/api/runs", "/", "/openapi.json"]
)
async def test_token_leaves_reads_open(guarded: httpx.AsyncClient, path: str) -> None:
    assert (await guarded.get(path)).status_code == 200


# -- CORS ---------------------------------------------------------------------------------------
PREFLIGHT = {
    "Origin": "https://evil.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


async def test_cors_closed_by_default(client: httpx.AsyncClient) -> None:
    preflight = await client.options("/api/runs", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    plain = await client.get("/api/runs", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers


async def test_cors_allows_only_configured_origins(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, cors_origins=["https://lab.example"]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        other = await client.options("/api/runs", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in other.headers
        ok = await client.options(
            "/api/runs", headers={**PREFLIGHT, "Origin": "https://lab.example"}
        )
        assert ok.headers["access-control-allow-origin"] == "https://lab.example"
    app.state.store.close()


# -- paths --------------------------------------------------------------------------------------
TRAVERSALS = [
    "/../pyproject.toml",
    "/..%2fpyproject.toml",
    "/%2e%2e/pyproject.toml",
    "/%2e%2e%2fpyproject.toml",
    "/..%5cpyproject.toml",
    "/..\\pyproject.toml",
    "/%2fetc%2fpasswd",
    "//etc/passwd",
    "/etc/passwd",
    "/.env",
    "/.hidden.js",
    "/__init__.py",
    "/__pycache__/app.cpython-311.pyc",
    "/app.pyc",
    "/app.js%00.png",
    "/vendor/../pyproject.toml",
    "/vendor/..%2f..%2fpyproject.toml",
    "/C:%5cWindows%5cwin.ini",
]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_static_paths_cannot_escape_frontend(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404, response.text[:200]
    assert b"[project]" not in response.content and b"root:" not in response.content


@pytest.mark.parametrize(
    "run_id", ["..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..", "runs.db"]
)
async def test_run_ids_that_are_paths_are_404(client: httpx.AsyncClient, run_id: str) -> None:
    for suffix in ("", "/series?metric=grad_norm", "/export", "/events"):
        response = await client.get(f"/api/runs/{run_id}{suffix}")
        assert response.status_code == 404, (suffix, response.status_code)


# -- budgets ------------------------------------------------------------------------------------
async def test_stream_slots_per_client_limit_is_429_and_released(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    run_id = await finished_run(client)
    slots: StreamSlots = app.state.stream_slots
    for _ in range(app.state.settings.max_streams_per_client):
        assert slots.acquire("127.0.0.1") is None
    refused = await client.get(f"/api/runs/{run_id}/events")
    assert refused.status_code == 429 and "per client" in refused.json()["detail"]
    assert refused.headers["retry-after"]
    slots.release("127.0.0.1")
    served = await client.get(f"/api/runs/{run_id}/events")
    assert served.status_code == 200 and "event: end" in served.text
    assert slots.open_streams() == app.state.settings.max_streams_per_client - 1  # given back


def test_stream_slots_total_cap_counts_every_client() -> None:
    slots = StreamSlots(per_client=2, total=4)
    assert [slots.acquire(c) for c in ("a", "a", "b")] == [None, None, None]
    assert "per client" in str(slots.acquire("a"))
    assert slots.acquire("c") is None
    assert "4 streams" in str(slots.acquire("d"))
    slots.release("b")
    assert slots.acquire("d") is None


async def test_max_stored_runs_is_507_until_one_is_deleted(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, max_stored_runs=2))
    app.state.manager.shutdown()  # runs stay queued: this is about counting, not training
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        ids = [(await client.post("/api/runs", json=tiny_config(5))).json()["id"] for _ in "ab"]
        full = await client.post("/api/runs", json=tiny_config(5))
        assert full.status_code == 507 and "max_stored_runs" in full.json()["detail"]
        assert (await client.delete(f"/api/runs/{ids[0]}")).status_code == 204
        assert (await client.post("/api/runs", json=tiny_config(5))).status_code == 201
    app.state.store.close()


# -- exposure -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "token", "warns"),
    [
        ("127.0.0.1", None, False),
        ("::1", None, False),
        ("localhost", None, False),
        ("0.0.0.0", None, True),
        ("192.168.1.5", None, True),
        ("example.org", None, True),
        ("0.0.0.0", "s3cret", False),
    ],
)
def test_exposure_warning_only_when_reachable_without_token(
    host: str, token: str | None, warns: bool
) -> None:
    assert (exposure_warning(host, token) is not None) == warns


def test_serve_warns_loudly_on_public_bind_without_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    served: list[tuple[str, Settings]] = []

    def run(app: FastAPI, host: str, **_: Any) -> None:
        served.append((host, app.state.settings))
        app.state.lock.release()  # as the server's lifespan does when it stops

    monkeypatch.setattr(app_module.uvicorn, "run", run)
    monkeypatch.delenv("DEPTHSCOPE_TOKEN", raising=False)
    with caplog.at_level(logging.WARNING, logger="depthscope"):
        app_module.serve("0.0.0.0", 8000, tmp_path)  # the Docker image: still serves
    assert served[0][0] == "0.0.0.0"
    assert any("no token is set" in r.message for r in caplog.records)
    caplog.clear()
    monkeypatch.setenv("DEPTHSCOPE_TOKEN", "from-env")
    app_module.serve("0.0.0.0", 8000, tmp_path)
    assert served[1][1].token == "from-env"  # an omitted token keeps the environment's
    assert not caplog.records


@pytest.mark.parametrize(
    ("host", "added"), [("192.168.1.5", True), ("lab.example", True), ("0.0.0.0", False)]
)
def test_serve_answers_to_the_name_it_binds(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, host: str, added: bool
) -> None:
    served: list[Settings] = []

    def run(app: FastAPI, **_: Any) -> None:
        served.append(app.state.settings)
        app.state.lock.release()

    monkeypatch.setattr(app_module.uvicorn, "run", run)
    monkeypatch.setenv("DEPTHSCOPE_TOKEN", "s3cret")
    app_module.serve(host, 8000, tmp_path)
    assert (host in served[0].allowed_hosts) is added
    assert {"localhost", "127.0.0.1", "::1"} <= set(served[0].allowed_hosts)


def test_second_serve_on_a_busy_data_dir_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = create_app(Settings(data_dir=tmp_path))
    assert main(["serve", "--data-dir", str(tmp_path)]) == 2
    assert "another depthscope server" in capsys.readouterr().err
    busy.state.lock.release()


def test_serve_default_binds_loopback() -> None:
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1"


async def test_body_limit_counts_chunked_bodies_without_length(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": {"depth": 2}, "pad": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'

    response = await client.post(
        "/api/runs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "request body over" in response.json()["detail"]


def test_max_store_bytes_refuses_new_runs_with_the_size(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    config = RunConfig.model_validate(tiny_config(5))
    roomy = RunManager(store, 1, 10, max_bytes=store.size_bytes() + 2**20)
    roomy.shutdown()  # nothing trains: only admission is under test
    assert roomy.submit(config).status == "queued"
    full = RunManager(store, 1, 10, max_bytes=store.size_bytes())
    with pytest.raises(StoreFullError, match="max_store_bytes"):
        full.submit(config)
    store.close()


async def test_token_query_parameter_also_on_the_sweep_stream_only(
    guarded: httpx.AsyncClient,
) -> None:
    body = {"base": tiny_config(3), "axes": [{"field": "training.seed", "values": [0]}]}
    assert (await guarded.post("/api/sweeps?token=s3cret", json=body)).status_code == 401
    created = await guarded.post("/api/sweeps", json=body, headers=RIGHT)
    assert created.status_code == 201, created.text
    sweep_id = created.json()["id"]
    deadline = time.monotonic() + 60
    while (await guarded.get(f"/api/sweeps/{sweep_id}")).json()["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert (await guarded.get(f"/api/sweeps/{sweep_id}/events")).status_code == 401
    stream = await guarded.get(f"/api/sweeps/{sweep_id}/events?token=s3cret")
    assert stream.status_code == 200 and "event: end" in stream.text


async def test_until_shutdown_ends_a_stream_with_a_last_event() -> None:
    """Regression: on SIGTERM the sweep stream was cut mid-body; it now says goodbye."""

    async def forever() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(data="1", event="cell")
        await asyncio.sleep(3600)
        yield ServerSentEvent(data="never", event="cell")

    shutdown = anyio.Event()
    stream = until_shutdown(forever(), shutdown)
    assert (await stream.__anext__()).event == "cell"
    later = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.05)
    shutdown.set()
    last = await asyncio.wait_for(later, 5)
    assert last.event == "shutdown" and last.retry == 5000
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    finished = until_shutdown(forever(), anyio.Event())  # content that ends, ends the stream
    assert (await finished.__anext__()).data == "1"
