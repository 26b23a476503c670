"""The worker: batching, outcomes reported through the store, crashes and orphans."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from multiprocessing import forkserver
from pathlib import Path

import pytest
from conftest import tiny_config
from depthscope import RunConfig, StepRecord, iter_records
from depthscope.presets import BY_ID
from depthscope.probe.backends import kernels
from depthscope.service import worker as worker_module
from depthscope.service.executors import local
from depthscope.service.store import RunStore
from depthscope.service.worker import RecordWriter, ServerLink, run_worker


class _Appends:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def append(self, run_id: str, records: list[StepRecord]) -> None:
        self.batches.append([r.step for r in records])


def test_record_writer_batches_and_keeps_order() -> None:
    sink = _Appends()
    writer = RecordWriter(sink, "r")  # type: ignore[arg-type]
    records = list(iter_records(RunConfig.model_validate(tiny_config(40))))
    for record in records:
        writer.add(record)
    writer.flush()
    assert [s for batch in sink.batches for s in batch] == list(range(40))
    assert len(sink.batches[0]) == 1  # the first record goes out at once
    assert len(sink.batches) < 40  # fast steps share transactions


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _SlowAppends(_Appends):
    """A store whose every commit takes `cost` seconds of the clock."""

    def __init__(self, clock: _Clock, cost: float) -> None:
        super().__init__()
        self.clock, self.cost, self.spent = clock, cost, 0.0

    def append(self, run_id: str, records: list[StepRecord]) -> None:
        super().append(run_id, records)
        self.clock.now += self.cost
        self.spent += self.cost


@pytest.mark.parametrize("cost", [0.0001, 0.002, 0.02])
def test_record_writer_commits_take_a_bounded_share_of_the_time(
    cost: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Driven by a fake clock: steps of 1 ms, commits of `cost`. However slow a commit, the
    # writer waits COMMIT_SHARE times as long before the next, so commits take at most about
    # 1/COMMIT_SHARE of the time; cheap ones still go out every FLUSH_INTERVAL_S.
    clock = _Clock()
    monkeypatch.setattr(worker_module.time, "monotonic", clock)
    sink = _SlowAppends(clock, cost)
    writer = RecordWriter(sink, "r")  # type: ignore[arg-type]
    record = next(iter_records(RunConfig.model_validate(tiny_config(1))))
    began = clock.now
    for _ in range(5000):
        clock.now += 0.001
        writer.add(record)
    writer.flush()
    assert sum(len(b) for b in sink.batches) == 5000
    wait = max(worker_module.FLUSH_INTERVAL_S, worker_module.COMMIT_SHARE * cost)
    gap = min(wait, worker_module.MAX_FLUSH_INTERVAL_S)  # a very slow disk: latency is capped
    assert sink.spent / (clock.now - began) <= 1.1 * cost / gap
    assert sink.spent / (clock.now - began) <= 1.1 / worker_module.COMMIT_SHARE or wait > gap
    assert len(sink.batches) >= 0.8 * 5.0 / gap  # and no rarer than that: the charts stay live


class _HeldAppends(_Appends):
    """A store whose commits wait until `release` is set, as a disk that has stalled."""

    def __init__(self) -> None:
        super().__init__()
        self.release, self.entered = threading.Event(), threading.Event()
        self.threads: set[str] = set()

    def append(self, run_id: str, records: list[StepRecord]) -> None:
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(10)
        super().append(run_id, records)

    def close(self) -> None:
        pass


def test_background_writer_never_waits_on_a_stalled_store() -> None:
    sink = _HeldAppends()
    writer = RecordWriter(sink, "r", background=True)  # type: ignore[arg-type]
    records = list(iter_records(RunConfig.model_validate(tiny_config(30))))
    writer.add(records[0])  # the first goes out at once, and stalls there
    assert sink.entered.wait(5)
    began = time.monotonic()
    for record in records[1:]:
        writer.add(record)  # returns at once: the records gather in the buffer
    assert time.monotonic() - began < 1 and sink.batches == []
    sink.release.set()
    writer.close()
    # in order, every one; one batch in flight at a time, so the stall made the second big
    assert [s for batch in sink.batches for s in batch] == list(range(30))
    assert sink.batches[0] == [0] and len(sink.batches) == 2
    assert sink.threads == {"depthscope-commits"}


class _FailingAppends(_Appends):
    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    def append(self, run_id: str, records: list[StepRecord]) -> None:
        if len(self.batches) == self.fail_at:
            raise OSError("disk I/O error")
        super().append(run_id, records)

    def close(self) -> None:
        pass


def test_background_writer_raises_a_failed_commit_on_the_training_thread() -> None:
    sink = _FailingAppends(fail_at=1)
    writer = RecordWriter(sink, "r", background=True)  # type: ignore[arg-type]
    records = list(iter_records(RunConfig.model_validate(tiny_config(5))))
    writer.add(records[0])
    writer.flush()
    writer.add(records[1])
    with pytest.raises(OSError, match="disk I/O error"):
        writer.flush()  # the second commit failed: said where training can act on it
    writer.add_spectrum(1, [1.0])  # nothing is written after a failure
    with pytest.raises(OSError):
        writer.close()
    assert sink.batches == [[0]]


def test_train_into_commits_every_record_and_frame_before_it_returns(tmp_path: Path) -> None:
    config = RunConfig.model_validate(
        {**tiny_config(40), "recording": {"boundary_every": 10, "spectrum_every": 10}}
    )
    store, _ = _queued(tmp_path, config)
    result = worker_module.train_into(store, "r", config, threading.Event())
    assert result.status == "completed"
    row = store.get_run("r")
    assert row is not None and row.n_records == 40 and row.steps_done == 40
    assert [step for step, _ in store.spectra("r")] == [0, 10, 20, 30, 39]
    assert len(store.boundary_steps("r")) == config.boundary_frames() == 5
    assert "depthscope-commits" not in {t.name for t in threading.enumerate()}  # it has gone


def _queued(tmp_path: Path, config: RunConfig) -> tuple[RunStore, str]:
    store = RunStore(tmp_path / "runs.db")
    store.create_run("r", config.model_dump(), [])
    store.transition("r", "running", only_from=("queued",))
    return store, config.model_dump_json()


def test_run_worker_completes_with_every_record(tmp_path: Path) -> None:
    store, config = _queued(tmp_path, RunConfig.model_validate(tiny_config(25)))
    run_worker(str(store.path), "r", config, threading.Event())
    row = store.get_run("r")
    assert row is not None and row.status == "completed" and row.n_records == 25
    assert row.final is not None and row.final["step"] == 24 and row.error is None


def test_run_worker_reports_an_exception_as_failed(tmp_path: Path) -> None:
    store, _ = _queued(tmp_path, RunConfig.model_validate(tiny_config(3)))
    run_worker(str(store.path), "r", '{"model": {"depth": -1}}', threading.Event())
    row = store.get_run("r")
    assert row is not None and row.status == "failed"
    assert row.error is not None and row.error.startswith("ValidationError")


def test_run_worker_diverged_names_first_non_finite(tmp_path: Path) -> None:
    store, config = _queued(tmp_path, BY_ID["exploding"].config)
    run_worker(str(store.path), "r", config, threading.Event())
    row = store.get_run("r")
    assert row is not None and row.status == "diverged" and row.divergence is not None
    d = row.divergence
    assert row.error == f"layer {d['layer']} went non-finite at step {d['step']} ({d['metric']})"
    assert row.n_records == d["step"] + 1  # the record that diverged is kept


def test_run_worker_stops_when_flagged(tmp_path: Path) -> None:
    store, config = _queued(tmp_path, RunConfig.model_validate(tiny_config(50)))
    stop = threading.Event()
    stop.set()
    run_worker(str(store.path), "r", config, stop)
    row = store.get_run("r")
    assert row is not None and row.status == "cancelled" and row.n_records == 0


def test_server_link_reports_the_server_gone_when_its_end_closes() -> None:
    ctx = multiprocessing.get_context("forkserver")
    worker_end, server_end = ctx.Pipe(duplex=False)
    link = ServerLink(worker_end)
    time.sleep(0.05)
    assert not link.gone()  # alive: nothing is ever sent, so the watcher keeps waiting
    server_end.close()  # what the kernel does to every descriptor of a dead server
    assert link.lost.wait(1)
    assert not ServerLink(None).gone()


def test_record_writer_writes_nothing_once_orphaned() -> None:
    sink, orphaned = _Appends(), threading.Event()
    writer = RecordWriter(sink, "r", orphaned.is_set)  # type: ignore[arg-type]
    records = list(iter_records(RunConfig.model_validate(tiny_config(6))))
    writer.add(records[0])
    orphaned.set()
    for record in records[1:]:
        writer.add(record)
    writer.flush()
    assert sink.batches == [[0]]


def loaded_after_import(module: str) -> str:
    """Whether the probe's C kernels are loaded once `module` is imported, in a fresh process."""
    kernels = "depthscope.probe.backends.kernels"
    code = f"import sys, {module}, {kernels} as n; print(int(n.MODULE in sys.modules))"
    env = {k: v for k, v in os.environ.items() if k != "DEPTHSCOPE_NATIVE"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    return done.stdout.strip()


def test_worker_kernels_are_loaded_once_by_the_fork_server() -> None:
    """Importing the engine or the worker loads nothing; the fork server preloads the module
    that loads the kernels, so each run's process inherits them."""
    assert loaded_after_import("depthscope.engine.trainer") == "0"
    assert loaded_after_import("depthscope.service.worker") == "0"
    built = "1" if kernels.load() is not None else "0"
    assert loaded_after_import("depthscope.probe.backends.preload") == built
    local._context()
    assert "depthscope.probe.backends.preload" in vars(forkserver._forkserver)["_preload_modules"]
