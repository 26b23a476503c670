"""Browser-test fixtures: a real uvicorn server on a free port, Debian's Chromium via Playwright."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .e2e_helpers import Console, Explorer

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own browser download cannot work here, so it drives the system Chromium.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--screenshots-dir",
        default=None,
        help="also write the screenshot tour's images here (make screenshots: docs/screenshots)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.server)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode}; see test-artifacts/server.log"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not healthy after {timeout} s")


@pytest.fixture(scope="package")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`depthscope serve` in a subprocess with a temporary data dir (or DEPTHSCOPE_E2E_URL)."""
    if external := os.environ.get("DEPTHSCOPE_E2E_URL"):
        yield external.rstrip("/")
        return
    port = free_port()
    data = tmp_path_factory.mktemp("e2e-data")
    ARTIFACTS.mkdir(exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "depthscope",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data),
    ]
    with (ARTIFACTS / "server.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, proc)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


# Package scope: Playwright's sync API keeps an event loop running while it is open, which
# would break any asyncio test collected after the browser tests.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (make chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Any, console: Console) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    pg = context.new_page()
    pg.on("console", lambda m: m.type == "error" and console.errors.append(m.text))
    pg.on("pageerror", lambda e: console.errors.append(f"uncaught: {e}"))
    yield pg
    context.close()
    assert console.unexpected() == [], "console errors on the page"


@pytest.fixture
def api(server_url: str) -> Iterator[httpx.Client]:
    """A plain HTTP client for setup, references and cleanup; cancels what a test left unfinished
    (queued, running or paused: a paused run holds its worker)."""
    with httpx.Client(base_url=server_url, timeout=10) as client:
        yield client
        for run in client.get("/api/runs").json():
            if run["status"] in ("queued", "running", "paused"):
                client.post(f"/api/runs/{run['id']}/cancel")


@pytest.fixture(scope="session")
def screenshots_dir(request: pytest.FixtureRequest) -> Path:
    chosen = request.config.getoption("screenshots_dir", default=None)
    path = Path(chosen) if chosen else ARTIFACTS / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def explorer(page: Any, server_url: str) -> Explorer:
    return Explorer(page, server_url, ARTIFACTS)


@pytest.fixture(scope="module")
def modules(browser: Any, server_url: str) -> Iterator[Any]:
    """One page on the server's origin for unit tests of the ES modules (import('/state.js'))."""
    context = browser.new_context()
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{server_url}/api/health")
    yield pg
    context.close()
    assert errors == []
