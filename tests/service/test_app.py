"""The app factory: the frontend and plotly.js served locally, no path escapes, limits, token."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from depthscope.service.app import create_app
from depthscope.service.settings import Settings
from fastapi import FastAPI

pytestmark = pytest.mark.anyio


async def test_app_serves_frontend_and_vendored_plotly(client: httpx.AsyncClient) -> None:
    index = await client.get("/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    script = await client.get("/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    plotly = await client.get("/vendor/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    assert (await client.get("/docs")).status_code == 200


async def test_app_docs_page_loads_nothing_from_elsewhere(client: httpx.AsyncClient) -> None:
    """Offline first: /docs is Swagger UI from this server's own copy, not a CDN."""
    page = await client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") for s in sources), sources
    assert '"validatorUrl": null' in page.text  # no badge fetched from swagger.io
    for source in sources:
        asset = await client.get(source)
        assert asset.status_code == 200 and len(asset.content) > 100, source
    assert (await client.get("/vendor/swagger-ui/swagger-ui.css.map")).status_code == 404
    assert (await client.get("/redoc")).status_code == 404


@pytest.mark.parametrize(
    "path",
    ["/..%2Fpyproject.toml", "/%2e%2e%2fpyproject.toml", "/.hidden", "/missing.js", "/__init__.py"],
)
async def test_app_static_paths_cannot_escape_frontend(
    client: httpx.AsyncClient, path: str
) -> None:
    assert (await client.get(path)).status_code == 404


async def test_app_rejects_oversized_body_with_413(client: httpx.AsyncClient) -> None:
    big = b'{"model": {}, "pad": "' + b"x" * 70_000 + b'"}'
    response = await client.post(
        "/api/runs", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


@pytest.fixture
def guarded(tmp_path: Path) -> FastAPI:
    return create_app(Settings(data_dir=tmp_path, token="s3cret"))


async def test_app_token_guards_mutating_endpoints(guarded: FastAPI) -> None:
    transport = httpx.ASGITransport(app=guarded)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            body = {"training": {"steps": 1}, "data": {"n_samples": 256}}
            assert (await client.post("/api/runs", json=body)).status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert (await client.post("/api/runs", json=body, headers=wrong)).status_code == 401
            assert (await client.get("/api/runs")).status_code == 200  # reads stay open
            right = {"Authorization": "Bearer s3cret"}
            created = await client.post("/api/runs", json=body, headers=right)
            assert created.status_code == 201
    finally:
        guarded.state.manager.shutdown()
