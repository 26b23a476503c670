"""Crashes: a server killed with SIGKILL mid-run loses no committed record; a worker that is
killed or runs out of memory fails its own run only."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerProcess, read_events, tiny_config
from depthscope import RunConfig
from depthscope.records import StepRecord
from depthscope.service import worker as worker_module
from depthscope.service.executors.local import LocalJob
from depthscope.service.runs import RunManager
from depthscope.service.store import TERMINAL, RunStore
from depthscope.service.worker import run_worker
from test_runs import wait
from test_server_stream import create, wait_for


def follow(url: str, run_id: str, into: list[dict[str, Any]], done: threading.Event) -> None:
    """Collect every record the stream delivers until the connection breaks."""
    try:
        with httpx.stream("GET", f"{url}/api/runs/{run_id}/events", timeout=30) as response:
            for event in read_events(response):
                if event.event == "records":
                    into += json.loads(event.data)["records"]
    except httpx.HTTPError:
        pass  # the server was killed under us: expected
    finally:
        done.set()


@pytest.mark.server
def test_kill9_server_keeps_every_streamed_record_and_db_is_sound(
    server_process: ServerProcess,
) -> None:
    url = server_process.start()
    run_id = create(url, 100_000 // 32)
    streamed: list[dict[str, Any]] = []
    done = threading.Event()
    threading.Thread(target=follow, args=(url, run_id, streamed, done), daemon=True).start()
    wait_for(url, run_id, lambda r: r["records"] >= 50)
    server_process.stop(kill=True)
    assert done.wait(10)
    assert len(streamed) >= 1
    time.sleep(0.5)  # the orphaned worker notices its server is gone and stops writing

    url = server_process.start()
    run = httpx.get(f"{url}/api/runs/{run_id}").json()
    assert run["status"] == "interrupted" and "stopped" in run["error"]
    kept = httpx.get(f"{url}/api/runs/{run_id}/export").json()["records"]
    assert kept[: len(streamed)] == streamed  # everything a client saw is there, unchanged
    assert [r["step"] for r in kept] == list(range(run["records"]))
    with sqlite3.connect(server_process.data_dir / "runs.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[RunManager]:
    manager = RunManager(RunStore(tmp_path / "runs.db"), max_concurrent=2, max_queued=2)
    yield manager
    manager.shutdown()


def test_killed_worker_fails_its_run_while_a_concurrent_run_completes(pair: RunManager) -> None:
    victim = pair.submit(RunConfig.model_validate(tiny_config(100_000 // 32))).id
    other = pair.submit(RunConfig.model_validate(tiny_config(400))).id
    wait(pair, victim, {"running"})
    wait(pair, other, {"running"})
    while pair.store.get_run(victim).n_records == 0:  # type: ignore[union-attr]
        time.sleep(0.02)  # the process has started and trains
    job = pair.job(victim)
    assert isinstance(job, LocalJob) and job.pid is not None
    os.kill(job.pid, signal.SIGKILL)
    failed = wait(pair, victim, set(TERMINAL))
    assert failed.status == "failed" and failed.error and "SIGKILL" in failed.error
    row = wait(pair, other, set(TERMINAL))
    assert row.status == "completed" and row.n_records == 400 and row.error is None


def test_worker_out_of_memory_fails_its_run_with_records_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RunStore(tmp_path / "runs.db")
    config = RunConfig.model_validate(tiny_config(50))
    for run_id in ("oom", "bystander"):
        store.create_run(run_id, config.model_dump(), [])
        store.transition(run_id, "running", only_from=("queued",))

    add, handed = worker_module.RecordWriter.add, []

    def exhausted(writer: worker_module.RecordWriter, record: StepRecord) -> None:
        """Memory runs out at the 11th record's hand-off (in training or in its handling:
        the worker must treat either the same)."""
        if len(handed) == 10:
            raise MemoryError("cannot allocate 8 GiB")
        handed.append(record.step)
        add(writer, record)

    monkeypatch.setattr(worker_module.RecordWriter, "add", exhausted)
    run_worker(str(store.path), "oom", config.model_dump_json(), threading.Event())
    row = store.get_run("oom")
    assert row is not None and row.status == "failed" and row.n_records == 10
    assert row.error is not None and row.error.startswith("MemoryError: cannot allocate")
    assert store.get_run("bystander").status == "running"  # type: ignore[union-attr]
