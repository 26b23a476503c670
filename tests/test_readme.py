"""The README's commands work as written: its shell and Python examples run against a real
server, and `make serve` (one of its two commands) brings the service up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DEFAULT_URL = "http://127.0.0.1:8000"


def section(title: str) -> str:
    """The README's text under `## title`, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def run(command: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.server
@pytest.mark.slow
def test_readme_api_examples_run_against_a_live_server(live_server: str, tmp_path: Path) -> None:
    api = section("REST API")
    shell, python_client, python_inprocess = blocks(api, "sh")[0], *blocks(api, "python")
    assert DEFAULT_URL in shell and DEFAULT_URL in python_client

    done = run(["bash", "-eu", "-c", shell.replace(DEFAULT_URL, live_server)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "event: end" in done.stdout
    assert '"metric":"grad_norm"' in done.stdout.replace(" ", "")
    assert "step,layer_index,layer" in done.stdout

    script = tmp_path / "client.py"
    script.write_text(python_client.replace(DEFAULT_URL, live_server))
    done = run([sys.executable, str(script)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(r"block1: \S+e[-+]\d+ +block15: \S+e[-+]\d+", done.stdout), done.stdout

    inprocess = tmp_path / "inprocess.py"
    inprocess.write_text(python_inprocess)
    done = run([sys.executable, str(inprocess)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "completed"


@pytest.mark.slow
def test_readme_cli_run_writes_a_report(tmp_path: Path) -> None:
    line = next(
        c for c in blocks(section("Command line"), "sh")[0].splitlines() if " run " in c
    ).split("#")[0]
    command = line.replace(".venv/bin/depthscope", str(Path(sys.executable).parent / "depthscope"))
    command = command.replace("model.depth=30", "model.depth=30 --set training.steps=20")
    done = run(["bash", "-c", command], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sigmoid.html").stat().st_size > 1_000_000  # plotly.js inlined


@pytest.mark.server
@pytest.mark.slow
def test_readme_make_serve_serves_the_app(tmp_path: Path) -> None:
    assert "make serve" in section("Two commands")
    port = free_port()
    venv = Path(sys.executable).parent.parent
    command = ["make", "serve", f"PORT={port}", f"DATA_DIR={tmp_path}", f"VENV={venv}"]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, log.read_text()
                time.sleep(0.2)
        else:
            pytest.fail("make serve did not answer within 120 s")
        assert page.status_code == 200 and "depthscope" in page.text
        assert (tmp_path / "runs.db").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # make and the server it started
        server.wait(15)
