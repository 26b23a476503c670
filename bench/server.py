"""A real depthscope server in its own process on a free loopback port, for the benchmarks."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `depthscope.service.app.serve` on a free loopback port; wait (≤ 60 s) until healthy."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = "import sys; from pathlib import Path; from depthscope.service.app import serve; "
    code += "serve('127.0.0.1', int(sys.argv[1]), Path(sys.argv[2]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(port), str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(f"{url}/api/health", timeout=1).raise_for_status()
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")
