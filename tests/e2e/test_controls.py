"""Play / pause / step beside the heatmap: enabled by the runs' statuses, pausing within a second,
stepping exactly the chosen number of steps, acting on every shown run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from .e2e_helpers import Explorer

# The most steps a run may have: it trains for a minute or more, so it is still running when the
# page's buttons are pressed, however fast this machine is (each test cancels it at the end).
LONG = {
    "model": {"depth": 3, "width": 8},
    "training": {"steps": 100_000, "batch_size": 16},
    "data": {"dataset": "moons", "n_samples": 512},
}


def start(api: httpx.Client) -> str:
    created = api.post("/api/runs", json=LONG)
    assert created.status_code == 201, created.text
    run_id: str = created.json()["id"]
    return run_id


def run(api: httpx.Client, run_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/api/runs/{run_id}").json()
    return body


def wait(api: httpx.Client, run_id: str, check: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = run(api, run_id)
        if check(body):
            return body
        time.sleep(0.05)
    raise AssertionError(f"{run_id}: {run(api, run_id)}")


def enabled(explorer: Explorer) -> dict[str, bool]:
    value: dict[str, bool] = explorer.page.evaluate(
        """() => Object.fromEntries(['run-play', 'run-pause', 'run-step']
                 .map(id => [id.slice(4), !document.getElementById(id).disabled]))"""
    )
    return value


def wait_enabled(explorer: Explorer, play: bool, pause: bool, step: bool) -> None:
    explorer.page.wait_for_function(
        """([play, pause, step]) => {
            const on = id => !document.getElementById(id).disabled;
            return on('run-play') === play && on('run-pause') === pause && on('run-step') === step;
        }""",
        arg=[play, pause, step],
        timeout=15_000,
    )


def test_controls_pause_step_exactly_and_play(
    explorer: Explorer, api: httpx.Client, screenshots_dir: Path
) -> None:
    run_id = start(api)
    wait(api, run_id, lambda r: r["records"] > 3)
    explorer.open(f"#runs={run_id}")
    wait_enabled(explorer, play=False, pause=True, step=False)

    explorer.page.click("#run-pause")  # the latency itself is held to a second by the API tests
    paused = wait(api, run_id, lambda r: r["status"] == "paused", timeout=10)
    wait_enabled(explorer, play=True, pause=False, step=True)
    done = paused["steps_done"]

    explorer.page.select_option("#run-step-size", "10")
    explorer.page.click("#run-step")
    stepped = wait(api, run_id, lambda r: r["status"] == "paused" and r["steps_done"] > done)
    assert stepped["steps_done"] == done + 10
    time.sleep(0.3)
    assert run(api, run_id)["steps_done"] == done + 10  # and it stays there
    explorer.page.select_option("#run-step-size", "1")
    explorer.page.click("#run-step")
    assert wait(api, run_id, lambda r: r["steps_done"] > done + 10)["steps_done"] == done + 11
    explorer.page.wait_for_function(
        "() => document.querySelector('.run-controls-state').textContent.includes('paused')"
    )
    explorer.shot("controls", screenshots_dir)

    explorer.page.click("#run-play")
    wait(api, run_id, lambda r: r["status"] == "running" and r["steps_done"] > done + 20)
    wait_enabled(explorer, play=False, pause=True, step=False)
    api.post(f"/api/runs/{run_id}/cancel")
    wait_enabled(explorer, play=False, pause=False, step=False)  # an ended run takes none


def test_controls_act_on_every_shown_run(explorer: Explorer, api: httpx.Client) -> None:
    ids = [start(api), start(api)]
    for run_id in ids:
        wait(api, run_id, lambda r: r["records"] > 3)
    explorer.open(f"#runs={','.join(ids)}&view=compare")
    wait_enabled(explorer, play=False, pause=True, step=False)
    explorer.page.click("#run-pause")
    before = [wait(api, i, lambda r: r["status"] == "paused")["steps_done"] for i in ids]
    wait_enabled(explorer, play=True, pause=False, step=True)
    explorer.page.select_option("#run-step-size", "100")
    explorer.page.click("#run-step")
    for run_id, done in zip(ids, before, strict=True):
        after = wait(api, run_id, lambda r, d=done: r["status"] == "paused" and r["steps_done"] > d)
        assert after["steps_done"] == done + 100
    for run_id in ids:
        api.post(f"/api/runs/{run_id}/cancel")
