"""RunManager: FIFO order under bounded concurrency, killed workers, queued cancels."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import tiny_config
from depthscope import RunConfig
from depthscope.service.executors.local import LocalJob
from depthscope.service.runs import QueueFullError, RunManager
from depthscope.service.store import TERMINAL, RunRow, RunStore


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[RunManager]:
    manager = RunManager(RunStore(tmp_path / "runs.db"), max_concurrent=1, max_queued=2)
    yield manager
    manager.shutdown()


def wait(manager: RunManager, run_id: str, done: set[str], timeout: float = 60) -> RunRow:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = manager.store.get_run(run_id)
        if row is not None and row.status in done:
            return row
        time.sleep(0.02)
    raise AssertionError(f"{run_id} never reached {done}")


def test_manager_runs_queue_in_order_one_at_a_time(manager: RunManager) -> None:
    ids = [manager.submit(RunConfig.model_validate(tiny_config(10))).id for _ in range(3)]
    with pytest.raises(QueueFullError):
        manager.submit(RunConfig.model_validate(tiny_config(10)))
    rows = [wait(manager, run_id, set(TERMINAL)) for run_id in ids]
    assert [r.status for r in rows] == ["completed"] * 3
    for earlier, later in itertools.pairwise(rows):
        assert earlier.finished_at is not None and later.started_at is not None
        assert earlier.finished_at <= later.started_at  # one slot: strictly one after another


def test_manager_killed_worker_marks_only_its_run_failed(manager: RunManager) -> None:
    victim = manager.submit(RunConfig.model_validate(tiny_config(100_000 // 32))).id
    after = manager.submit(RunConfig.model_validate(tiny_config(5))).id
    wait(manager, victim, {"running"})
    while manager.store.get_run(victim).n_records == 0:  # type: ignore[union-attr]
        time.sleep(0.02)
    job = manager.job(victim)
    assert isinstance(job, LocalJob) and job.pid is not None
    os.kill(job.pid, signal.SIGKILL)
    row = wait(manager, victim, set(TERMINAL))
    assert row.status == "failed" and row.error is not None and "SIGKILL" in row.error
    assert row.n_records > 0  # committed records survive the crash
    assert wait(manager, after, set(TERMINAL)).status == "completed"  # the queue moves on


def test_manager_cancel_queued_run_is_immediate(manager: RunManager) -> None:
    first = manager.submit(RunConfig.model_validate(tiny_config(100_000 // 32))).id
    queued = manager.submit(RunConfig.model_validate(tiny_config(5))).id
    manager.cancel(queued)
    assert manager.store.get_run(queued).status == "cancelled"  # type: ignore[union-attr]
    manager.cancel(first)
    assert wait(manager, first, set(TERMINAL), timeout=2).status == "cancelled"
