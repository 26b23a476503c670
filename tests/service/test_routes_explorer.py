"""The explorer's routes: boundaries held to the model itself, pause / advance / resume with exact
step counts, the stream's status events, a paused run across a restart, and the lessons."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx
import pytest
import torch
from conftest import ServerProcess, read_events, tiny_config
from depthscope import RunConfig, Trainer
from depthscope.lessons import LESSONS
from depthscope.service.status import TERMINAL
from test_api import wait_until

pytestmark = pytest.mark.anyio


def planar(steps: int, **sections: dict[str, Any]) -> dict[str, Any]:
    config = tiny_config(steps)
    config["data"] = {**config["data"], "dataset": "moons"}
    config["recording"] = {**config["recording"], "boundary_every": 10}
    for name, values in sections.items():
        config[name] = {**config[name], **values}
    return config


async def start(client: httpx.AsyncClient, config: dict[str, Any]) -> str:
    created = await client.post("/api/runs", json=config)
    assert created.status_code == 201, created.text
    run_id: str = created.json()["id"]
    return run_id


async def wait_for(
    client: httpx.AsyncClient, run_id: str, check: Any, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = (await client.get(f"/api/runs/{run_id}")).json()
        if check(run):
            return run
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} never got there: {run}")


def reference_grid(config: dict[str, Any], x: list[float], y: list[float]) -> torch.Tensor:
    """Train the same config here (the CPU is deterministic) and evaluate the model itself."""
    trainer = Trainer(RunConfig.model_validate(config))
    trainer.run(lambda _record: None)
    gy, gx = torch.meshgrid(torch.tensor(y), torch.tensor(x), indexing="ij")
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1))
    return torch.softmax(logits, 1).reshape(len(y), len(x), -1)


async def test_boundary_is_the_softmax_of_the_trained_model(client: httpx.AsyncClient) -> None:
    config = planar(25)
    run_id = await start(client, config)
    assert (await wait_until(client, run_id, TERMINAL))["status"] == "completed"
    body = (await client.get(f"/api/runs/{run_id}/boundary")).json()
    assert body["step"] == 25 and body["steps"] == [0, 10, 20, 25]
    assert body["n_classes"] == 2 and body["classes"] is None
    assert len(body["x"]) >= 32 and len(body["y"]) >= 32
    prob = torch.tensor(body["prob"])
    assert prob.shape == (len(body["y"]), len(body["x"]))  # rows follow y
    assert float(prob.min()) >= 0 and float(prob.max()) <= 1
    expected = reference_grid(config, body["x"], body["y"])[..., 1]
    assert torch.allclose(prob, expected, atol=1e-5)
    points = body["points"]
    assert len(points["x"]) == len(points["y"]) == len(points["label"]) > 100
    assert set(points["label"]) == {0, 1}
    assert min(points["x"]) > body["x"][0] and max(points["x"]) < body["x"][-1]  # the margin


async def test_boundary_step_picks_the_latest_frame_at_or_before_it(
    client: httpx.AsyncClient,
) -> None:
    run_id = await start(client, planar(25))
    await wait_until(client, run_id, TERMINAL)
    for asked, got in ((0, 0), (9, 0), (10, 10), (24, 20), (25, 25), (10**6, 25)):
        body = (await client.get(f"/api/runs/{run_id}/boundary?step={asked}")).json()
        assert body["step"] == got
    first = (await client.get(f"/api/runs/{run_id}/boundary?step=0")).json()
    last = (await client.get(f"/api/runs/{run_id}/boundary")).json()
    assert first["prob"] != last["prob"] and first["x"] == last["x"]
    bad = await client.get(f"/api/runs/{run_id}/boundary?step=-1")
    assert bad.status_code == 422


async def test_boundary_more_classes_name_the_predicted_class(client: httpx.AsyncClient) -> None:
    config = planar(15, data={"dataset": "blobs"})
    run_id = await start(client, config)
    await wait_until(client, run_id, TERMINAL)
    body = (await client.get(f"/api/runs/{run_id}/boundary")).json()
    assert body["n_classes"] == 4
    expected = reference_grid(config, body["x"], body["y"])
    prob, classes = expected.max(dim=2)
    assert torch.equal(torch.tensor(body["classes"]), classes)
    assert torch.allclose(torch.tensor(body["prob"]), prob, atol=1e-5)


@pytest.mark.parametrize(
    ("data", "reason"),
    [({"input_dim": 3}, "data.input_dim=3"), ({"dataset": "teacher"}, "regression")],
)
async def test_boundary_is_409_with_the_reason_without_2d_classes(
    client: httpx.AsyncClient, data: dict[str, Any], reason: str
) -> None:
    config = tiny_config(3)
    config["data"] = {**config["data"], **data}
    run_id = await start(client, config)
    response = await client.get(f"/api/runs/{run_id}/boundary")
    assert response.status_code == 409 and reason in response.json()["detail"]


async def test_boundary_unknown_run_or_none_yet_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/runs/nope/boundary")).status_code == 404
    for _ in range(2):  # both slots busy, so the third run stays queued
        await start(client, planar(100_000 // 32))
    queued = await start(client, planar(5))
    response = await client.get(f"/api/runs/{queued}/boundary")
    assert response.status_code == 404 and "no decision boundary" in response.json()["detail"]


async def test_pause_advance_exact_steps_resume(client: httpx.AsyncClient) -> None:
    # The pause's latency (no step after it is asked: tests/service/test_control.py) is not
    # timed here; the request waits up to a second for the worker to park.
    run_id = await start(client, planar(100_000 // 32))
    await wait_for(client, run_id, lambda r: r["records"] >= 5)
    assert (await client.post(f"/api/runs/{run_id}/pause")).status_code == 200
    paused = await wait_for(client, run_id, lambda r: r["status"] == "paused")
    done = paused["steps_done"]
    await asyncio.sleep(0.3)
    still = (await client.get(f"/api/runs/{run_id}")).json()
    assert still["steps_done"] == done and still["records"] == done  # it waits
    boundary = (await client.get(f"/api/runs/{run_id}/boundary")).json()
    assert boundary["step"] == done  # a frame of the network where it paused
    for n in (7, 1):
        response = await client.post(f"/api/runs/{run_id}/advance", json={"steps": n})
        assert response.status_code == 200, response.text
        done += n
        run = await wait_for(
            client, run_id, lambda r, d=done: r["status"] == "paused" and r["steps_done"] == d
        )
        assert run["records"] == done
        exported = (await client.get(f"/api/runs/{run_id}/export")).json()["records"]
        assert [r["step"] for r in exported] == list(range(done))  # exactly n more
    await asyncio.sleep(0.3)
    assert (await client.get(f"/api/runs/{run_id}")).json()["steps_done"] == done
    resumed = await client.post(f"/api/runs/{run_id}/resume")
    assert resumed.status_code == 200
    await wait_for(client, run_id, lambda r: r["status"] == "running" and r["steps_done"] > done)
    cancelled = (await client.post(f"/api/runs/{run_id}/cancel")).json()
    assert cancelled["status"] == "cancelled"


async def test_advance_needs_a_paused_run_and_a_bounded_count(client: httpx.AsyncClient) -> None:
    run_id = await start(client, planar(100_000 // 32))
    await wait_for(client, run_id, lambda r: r["status"] == "running")
    running = await client.post(f"/api/runs/{run_id}/advance", json={"steps": 3})
    assert running.status_code == 409 and "not paused; pause it" in running.json()["detail"]
    for body in ({"steps": 0}, {"steps": 10**6}, {"steps": "3"}, {"stps": 3}):
        response = await client.post(f"/api/runs/{run_id}/advance", json=body)
        assert response.status_code == 422, body
    await client.post(f"/api/runs/{run_id}/cancel")


async def test_a_queued_run_paused_starts_paused_at_step_zero(client: httpx.AsyncClient) -> None:
    busy = [await start(client, planar(100_000 // 32)) for _ in range(2)]
    queued = await start(client, planar(50))
    paused = (await client.post(f"/api/runs/{queued}/pause")).json()
    assert paused["status"] == "queued"
    await client.post(f"/api/runs/{busy[0]}/cancel")  # frees a slot
    run = await wait_for(client, queued, lambda r: r["status"] == "paused")
    assert run["steps_done"] == 0 and run["records"] == 0
    assert (await client.get(f"/api/runs/{queued}/boundary")).json()["step"] == 0
    await client.post(f"/api/runs/{queued}/advance", json={"steps": 1})
    run = await wait_for(client, queued, lambda r: r["status"] == "paused" and r["steps_done"])
    assert run["steps_done"] == 1 and run["records"] == 1
    await client.post(f"/api/runs/{busy[1]}/cancel")


@pytest.mark.parametrize("action", ["pause", "advance", "resume"])
async def test_control_of_an_ended_run_is_409(client: httpx.AsyncClient, action: str) -> None:
    run_id = await start(client, tiny_config(3))
    run = await wait_until(client, run_id, TERMINAL)
    response = await client.post(f"/api/runs/{run_id}/{action}", json={"steps": 1})
    assert response.status_code == 409
    assert f"has ended ({run['status']})" in response.json()["detail"]
    assert (await client.post(f"/api/runs/nope/{action}")).status_code == 404


async def test_cancel_and_delete_a_paused_run(client: httpx.AsyncClient) -> None:
    run_id = await start(client, planar(100_000 // 32))
    await wait_for(client, run_id, lambda r: r["records"] >= 2)
    await client.post(f"/api/runs/{run_id}/pause")
    cancelled = (await client.post(f"/api/runs/{run_id}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    assert (await client.delete(f"/api/runs/{run_id}")).status_code == 204
    assert (await client.get(f"/api/runs/{run_id}/boundary")).status_code == 404


async def test_lessons_are_served_and_name_served_presets(client: httpx.AsyncClient) -> None:
    lessons = (await client.get("/api/lessons")).json()
    assert lessons == [lesson.to_wire() for lesson in LESSONS]
    presets = {p["id"] for p in (await client.get("/api/presets")).json()}
    assert {run for lesson in lessons for s in lesson["steps"] for run in s["runs"]} <= presets


def statuses_seen(url: str, run_id: str, into: list[str]) -> None:
    """The status of every status event, until the server goes away."""
    try:
        with httpx.stream("GET", f"{url}/api/runs/{run_id}/events", timeout=30) as response:
            for event in read_events(response):
                if event.event in ("status", "end"):
                    into.append(json.loads(event.data)["status"])
    except httpx.HTTPError:
        pass  # the server stopped under us: expected


@pytest.mark.server
@pytest.mark.slow
def test_stream_shows_pause_and_resume_and_restart_interrupts_a_paused_run(
    server_process: ServerProcess,
) -> None:
    url = server_process.start()
    run_id = httpx.post(f"{url}/api/runs", json=planar(100_000 // 32)).json()["id"]
    seen: list[str] = []
    listener = threading.Thread(target=statuses_seen, args=(url, run_id, seen))
    listener.start()
    deadline = time.monotonic() + 60
    while "running" not in seen or httpx.get(f"{url}/api/runs/{run_id}").json()["records"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert httpx.post(f"{url}/api/runs/{run_id}/pause").json()["status"] == "paused"
    time.sleep(0.3)  # the stream coalesces to ~30 events a second: let each change show
    httpx.post(f"{url}/api/runs/{run_id}/resume")
    time.sleep(0.3)
    assert httpx.post(f"{url}/api/runs/{run_id}/pause").json()["status"] == "paused"
    time.sleep(0.3)
    assert seen[-3:] == ["paused", "running", "paused"]

    server_process.stop()  # a clean stop with the run paused
    listener.join(10)
    url = server_process.start()
    run = httpx.get(f"{url}/api/runs/{run_id}").json()
    assert run["status"] == "interrupted" and "stopped" in run["error"]
    assert httpx.post(f"{url}/api/runs/{run_id}/resume").status_code == 409
