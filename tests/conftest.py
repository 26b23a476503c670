"""Shared fixtures: small configs, an ASGI client over a temp data dir, a real uvicorn server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from depthscope.service.app import create_app
from depthscope.service.settings import Settings
from fastapi import FastAPI
from torch.utils._python_dispatch import TorchDispatchMode


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fast unit tests first, then API tests over httpx (async), then tests against a real
    server process, then the browser."""

    def tier(item: pytest.Item) -> int:
        for rank, marker in ((3, "browser"), (2, "server"), (1, "anyio")):
            if item.get_closest_marker(marker):
                return rank
        return 0

    items.sort(key=tier)  # stable: file order within a tier


def tiny_config(steps: int = 20, **training: Any) -> dict[str, Any]:
    """A run that trains in well under a second."""
    return {
        "model": {"depth": 2, "width": 8},
        "training": {"steps": steps, "batch_size": 32, **training},
        "data": {"n_samples": 256},
        "recording": {"histogram_every": 5, "eval_every": 10},
    }


class CountOps(TorchDispatchMode):
    """Counts the aten ops dispatched while active (views and out= writes included)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.count += 1
        return func(*args, **(kwargs or {}))


# The CPU always, twice: through the probe's C kernels (kernels.py; its tensor ops where no C
# compiler is found) and through its tensor ops alone; CUDA where this machine has it. Engine
# tests that check numbers against a reference take the `device` fixture, so each path is
# checked against the same reference (and a CPU-only machine shows no skipped copies).
DEVICES = ["cpu", "cpu-tensor-ops", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name: str = request.param
    if name == "cpu-tensor-ops":
        monkeypatch.setenv("DEPTHSCOPE_NATIVE", "0")
        return "cpu"
    return name


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Two runs at once, two queued; a test's `@pytest.mark.settings(field=value)` changes more."""
    marker = request.node.get_closest_marker("settings")
    changed = marker.kwargs if marker else {}
    return Settings(data_dir=tmp_path, max_concurrent_runs=2, max_queued_runs=2, **changed)


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    app = create_app(settings)
    yield app
    app.state.manager.shutdown()  # ASGITransport runs no lifespan
    app.state.store.close()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """`depthscope.service.app.serve` in its own process, as the CLI runs it."""

    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        self.port = free_port()
        code = (
            "import sys; from pathlib import Path; from depthscope.service.app import serve; "
            "serve('127.0.0.1', int(sys.argv[1]), Path(sys.argv[2]))"
        )
        env = {**os.environ, **(self.env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(self.port), str(self.data_dir)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 90  # a loaded CI machine starts torch slowly
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self.url
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the server did not come up within 90 s")

    def stop(self, kill: bool = False) -> None:
        if self.process is not None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(15)
            self.process = None


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data")
    yield server
    server.stop()


@pytest.fixture
def live_server(server_process: ServerProcess) -> str:
    """The base URL of a real uvicorn server over a temp data dir (browser tests use it too)."""
    return server_process.start()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real server shared by a module's tests (each server start imports torch: seconds)."""
    server = ServerProcess(tmp_path_factory.mktemp("data"))
    yield server.start()
    server.stop()


@dataclass
class Event:
    event: str
    id: str
    data: str


def read_events(response: httpx.Response, until: str = "end") -> Iterator[Event]:
    """Parse an SSE response (pings and comments skipped) until an event named `until`."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                event = Event(fields.get("event", "message"), fields.get("id", ""), fields["data"])
                yield event
                if event.event == until:
                    return
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
