"""Executors: the local worker processes and Ray tasks behind one interface, the Ray path
against a real local Ray instance (records in the server's store, cancel, a dying task,
restart recovery, health, its own instance shut down on stop)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray
import torch
from conftest import ServerProcess, tiny_config
from depthscope import RunConfig, iter_records
from depthscope.service.app import create_app
from depthscope.service.executors import make_executor
from depthscope.service.executors.local import LocalExecutor
from depthscope.service.executors.ray import RayExecutor
from depthscope.service.runs import RunManager
from depthscope.service.settings import Settings
from depthscope.service.status import ACTIVE, TERMINAL
from depthscope.service.store import RunRow, RunStore
from fastapi import FastAPI


def wait(store: RunStore, run_id: str, done: set[str], timeout: float = 120) -> RunRow:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = store.get_run(run_id)
        if row is not None and row.status in done:
            return row
        time.sleep(0.02)
    raise AssertionError(f"{run_id} never reached {done}")


def wait_records(store: RunStore, run_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while store.get_run(run_id).n_records == 0:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "no record arrived"
        time.sleep(0.02)


# -- local ---------------------------------------------------------------------------------------
def test_make_executor_local_is_the_default(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    executor = make_executor(Settings(data_dir=tmp_path).executor, store)
    assert isinstance(executor, LocalExecutor)
    assert executor.describe() == {"kind": "local", "nodes": 1, "cpus": os.cpu_count()}


def test_local_job_stopped_before_it_starts_reports_cancelled(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.create_run("r1", RunConfig().model_dump(), ["block1", "readout"])
    store.transition("r1", "running", only_from=("queued",))
    executor = LocalExecutor(store)
    config = RunConfig.model_validate(tiny_config(5)).model_dump_json()
    job = executor.prepare("r1", config, executor.control())
    job.stop()
    job.start()
    assert job.join(60)
    row = store.get_run("r1")
    assert row is not None and row.status == "cancelled" and row.n_records == 0


# -- ray: its own local instance -----------------------------------------------------------------
@pytest.mark.slow
def test_ray_executor_starts_and_shuts_down_its_own_local_instance(tmp_path: Path) -> None:
    assert not ray.is_initialized()
    executor = RayExecutor(RunStore(tmp_path / "runs.db"), None, num_cpus=1)
    try:
        assert ray.is_initialized() and executor.owns
        info = executor.describe()
        assert info["kind"] == "ray" and info["nodes"] == 1 and info["cpus"] == 1.0
        assert info["address"] == "local"
    finally:
        executor.shutdown()
    assert not ray.is_initialized()


# -- ray: one shared local instance --------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture
def ray_manager(ray_instance: None, tmp_path: Path) -> Iterator[RunManager]:
    store = RunStore(tmp_path / "runs.db")
    manager = RunManager(store, 2, 2, executor=RayExecutor(store, None))
    yield manager
    manager.shutdown()


def worker_pid(name: str) -> int:
    """The Ray worker running the task named `name` (Ray sets its title to ray::<name>)."""
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if command.startswith(f"ray::{name}".encode()):
            return int(entry.name)
    raise AssertionError(f"no Ray worker runs {name}")


@pytest.mark.slow
def test_ray_run_stores_the_records_the_trainer_produces(ray_manager: RunManager) -> None:
    config = RunConfig.model_validate(tiny_config(30))
    run = ray_manager.submit(config)
    assert not ray_manager.executor.owns  # type: ignore[attr-defined]
    row = wait(ray_manager.store, run.id, set(TERMINAL))
    assert row.status == "completed" and row.steps_done == 30 and row.error is None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the task trains
    try:
        expected = [r.to_wire() for r in iter_records(config)]
    finally:
        torch.set_num_threads(threads)
    stored = [json.loads(r) for r in ray_manager.store.iter_records(run.id)]
    assert stored == json.loads(json.dumps(expected))  # the same records, in order, once each
    assert row.final is not None and row.final["loss"] == expected[-1]["loss"]
    assert [step for step, _ in ray_manager.store.spectra(run.id)] == [0, 29]  # spectra came too


@pytest.mark.slow
def test_ray_cancel_stops_the_task_within_a_second_and_keeps_records(
    ray_manager: RunManager,
) -> None:
    run = ray_manager.submit(RunConfig.model_validate(tiny_config(100_000 // 32)))
    wait_records(ray_manager.store, run.id)
    started = time.monotonic()
    ray_manager.cancel(run.id)
    took = time.monotonic() - started
    row = wait(ray_manager.store, run.id, set(TERMINAL), timeout=2)
    assert row.status == "cancelled" and took < 1.0, took
    assert row.n_records > 0 and row.final and row.final["step"] == row.steps_done - 1
    time.sleep(0.3)
    assert ray_manager.store.get_run(run.id).n_records == row.n_records  # type: ignore[union-attr]


@pytest.mark.slow
def test_ray_task_that_dies_fails_only_its_run(ray_manager: RunManager) -> None:
    victim = ray_manager.submit(RunConfig.model_validate(tiny_config(100_000 // 32))).id
    other = ray_manager.submit(RunConfig.model_validate(tiny_config(300))).id
    wait_records(ray_manager.store, victim)
    os.kill(worker_pid(f"depthscope-run-{victim}"), signal.SIGKILL)
    failed = wait(ray_manager.store, victim, set(TERMINAL))
    assert failed.status == "failed" and failed.error and "the Ray task died" in failed.error
    assert failed.n_records > 0  # what it sent before it died is kept
    done = wait(ray_manager.store, other, set(TERMINAL))
    assert done.status == "completed" and done.n_records == 300


@pytest.mark.slow
def test_ray_run_left_running_by_a_stopped_server_becomes_interrupted(
    ray_instance: None, tmp_path: Path
) -> None:
    store = RunStore(tmp_path / "runs.db")
    manager = RunManager(store, 1, 1, executor=RayExecutor(store, None))
    run = manager.submit(RunConfig.model_validate(tiny_config(100_000 // 32)))
    wait_records(store, run.id)
    manager.shutdown()  # as the server does when it stops: the task is killed, no outcome
    assert store.get_run(run.id).status == "running"  # type: ignore[union-attr]
    reopened = RunStore(tmp_path / "runs.db")
    assert reopened.recover() == [run.id]
    row = reopened.get_run(run.id)
    assert row is not None and row.status == "interrupted" and row.n_records > 0


@pytest.mark.slow
def test_ray_server_reports_its_cluster_and_runs_a_sweep(
    ray_instance: None, tmp_path: Path
) -> None:
    # asyncio.run, not an anyio test: those run after every other test, and this module's Ray
    # instance would have to start again for it.
    app = create_app(Settings(data_dir=tmp_path, executor="ray"))
    try:
        asyncio.run(health_and_sweep(app))
    finally:
        app.state.manager.shutdown()
        app.state.store.close()


async def health_and_sweep(app: FastAPI) -> None:
    spec: dict[str, Any] = {
        "base": tiny_config(20),
        "axes": [{"field": "training.lr", "values": [0.05, 0.1]}],
    }
    transport = httpx.ASGITransport(app=app)  # no lifespan: the fixture's Ray stays up
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        health = (await client.get("/api/health")).json()
        assert health["executor"] == {"kind": "ray", "nodes": 1, "cpus": 2.0, "address": "local"}
        created = await client.post("/api/sweeps", json=spec)
        assert created.status_code == 201, created.text
        sweep_id = created.json()["id"]
        deadline = time.monotonic() + 120
        while (sweep := (await client.get(f"/api/sweeps/{sweep_id}")).json())["status"] in ACTIVE:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert sweep["status"] == "completed"
        for cell in sweep["cells"]:
            run = (await client.get(f"/api/runs/{cell['run_id']}")).json()
            assert run["records"] == 20 and run["sweep_id"] == sweep_id
        boundary = await client.get(f"/api/runs/{cell['run_id']}/boundary")  # frames came too
        assert boundary.status_code == 200, boundary.text
        assert boundary.json()["step"] == 20 and len(boundary.json()["prob"]) >= 32
        refused = await client.post(f"/api/runs/{cell['run_id']}/pause")
        assert refused.status_code == 409  # it has ended; a live one cannot pause on Ray either
        live = (await client.post("/api/runs", json=tiny_config(100_000 // 32))).json()
        refused = await client.post(f"/api/runs/{live['id']}/pause")
        assert refused.status_code == 409
        assert "the ray executor cannot pause runs" in refused.json()["detail"]
        await client.post(f"/api/runs/{live['id']}/cancel")


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit():
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None  # gone


@pytest.mark.slow
@pytest.mark.server
def test_ray_server_process_trains_and_shuts_its_ray_instance_down(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"DEPTHSCOPE_EXECUTOR": "ray"})
    url = server.start()
    try:
        assert httpx.get(f"{url}/api/health").json()["executor"]["kind"] == "ray"
        run = httpx.post(f"{url}/api/runs", json=tiny_config(20)).json()
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/api/runs/{run['id']}").json()["status"] in ACTIVE:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert httpx.get(f"{url}/api/runs/{run['id']}").json()["records"] == 20
        assert server.process is not None
        ray_processes = descendants(server.process.pid)
        assert len(ray_processes) >= 2  # at least the GCS and the raylet it started
    finally:
        server.stop()
    deadline = time.monotonic() + 30
    while alive := [p for p in ray_processes if Path(f"/proc/{p}").exists()]:
        zombies = [p for p in alive if process_state(p) in ("Z", None)]
        if len(zombies) == len(alive):
            break  # exited, waiting for a parent that is gone to be reaped
        assert time.monotonic() < deadline, f"Ray processes left running: {alive}"
        time.sleep(0.2)
