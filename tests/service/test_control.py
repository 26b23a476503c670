"""The control channel: RunControl's step allowance, and the worker's Gate parking a real training
run in a thread, exactly N steps per advance, with its records, frames and status committed."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_config
from depthscope import RunConfig
from depthscope.engine.trainer import RunResult
from depthscope.service.control import MAX_ADVANCE, RunControl
from depthscope.service.store import RunRow, RunStore
from depthscope.service.worker import train_into


@pytest.fixture
def control() -> RunControl:
    return RunControl(multiprocessing.get_context("forkserver"))


def test_control_allowance_runs_pauses_and_counts_steps(control: RunControl) -> None:
    assert control.take_step() and control.take_step() and not control.paused  # runs freely
    assert not control.advance(3)  # advancing a run that trains freely changes nothing
    assert control.take_step()
    control.pause()
    assert control.paused and not control.take_step()
    assert control.advance(3) and control.advance(2)  # allowances add up
    assert [control.take_step() for _ in range(6)] == [True] * 5 + [False]
    control.advance(MAX_ADVANCE + 5)
    assert control.allowance.value == MAX_ADVANCE  # capped
    control.resume()
    assert control.take_step() and not control.paused and not control.is_set()
    control.cancel()
    assert control.is_set()


def test_control_wakes_a_sleeping_worker_at_once(control: RunControl) -> None:
    control.pause()
    woke: list[float] = []

    def sleeper() -> None:
        started = time.monotonic()
        while not control.take_step():
            control.sleep(30)
        woke.append(time.monotonic() - started)

    thread = threading.Thread(target=sleeper)
    thread.start()
    time.sleep(0.1)
    control.advance(1)
    thread.join(5)
    assert woke and woke[0] < 2


class Worker:
    """train_into in a thread over a temporary store, as a worker process runs it."""

    def __init__(self, tmp_path: Path, control: RunControl, config: dict[str, Any]) -> None:
        self.store = RunStore(tmp_path / "runs.db")
        self.store.create_run("r", config, [])
        self.store.transition("r", "running", only_from=("queued",))
        self.control = control
        self.result: list[RunResult] = []
        cfg = RunConfig.model_validate(config)
        self.thread = threading.Thread(
            target=lambda: self.result.append(train_into(self.store, "r", cfg, control))
        )
        self.thread.start()

    def row(self) -> RunRow:
        row = self.store.get_run("r")
        assert row is not None
        return row

    def wait(self, ok: Callable[[RunRow], bool], timeout: float = 30) -> RunRow:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.row()
            if ok(row):
                return row
            time.sleep(0.01)
        raise AssertionError(f"not reached: {self.row()}")

    def steps(self) -> list[int]:
        return [int(r.split('"step":')[1].split(",")[0]) for r in self.store.iter_records("r")]

    def finish(self) -> None:
        self.control.cancel()
        self.thread.join(30)


def parked(worker: Worker) -> bool:
    return worker.control.parked.is_set()


def test_gate_starts_paused_then_advances_exactly_n_steps(
    tmp_path: Path, control: RunControl
) -> None:
    control.pause()  # before the first step: the run parks at step 0
    worker = Worker(tmp_path, control, tiny_config(200))
    try:
        assert control.wait_parked(30)
        row = worker.wait(lambda r: r.status == "paused")
        assert row.steps_done == 0 and worker.steps() == []
        assert worker.store.boundary_steps("r") == [0]  # the untrained network's frame
        for n, done in ((7, 7), (1, 8), (25, 33)):
            control.advance(n)
            row = worker.wait(lambda r, done=done: parked(worker) and r.steps_done == done)
            assert row.status == "paused"
            assert worker.steps() == list(range(done))  # exactly n more, all committed
            assert worker.store.boundary_steps("r")[-1] == done  # a frame where it parked
        time.sleep(0.3)
        assert worker.row().steps_done == 33 and worker.steps() == list(range(33))  # it waits
        control.resume()
        worker.thread.join(30)  # train_into returns; run_worker would record the outcome
        assert worker.result[0].status == "completed" and worker.result[0].steps_done == 200
        assert worker.row().status == "running" and worker.steps() == list(range(200))
    finally:
        worker.finish()


def test_gate_pauses_a_running_run_before_its_next_step(
    tmp_path: Path, control: RunControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What bounds the pause latency is that no step starts once it is asked for (a step of a
    # small net takes about a millisecond): counted here, not timed.
    worker = Worker(tmp_path, control, tiny_config(100_000 // 32))
    asked = threading.Event()
    steps_after: list[bool] = []
    take_step = control.take_step

    def counted() -> bool:
        allowed = take_step()
        if asked.is_set() and allowed:
            steps_after.append(allowed)
        return allowed

    monkeypatch.setattr(control, "take_step", counted)
    try:
        worker.wait(lambda r: r.n_records >= 5)
        control.pause()
        asked.set()
        assert control.wait_parked(30)
        assert len(steps_after) <= 1  # at most a step that read the allowance just before
        row = worker.wait(lambda r: r.status == "paused")
        assert worker.steps() == list(range(row.steps_done))  # every step done is committed
        control.resume()
        worker.wait(lambda r: r.status == "running" and r.steps_done > row.steps_done + 5)
    finally:
        worker.finish()
    assert worker.result[0].status == "cancelled"


def test_gate_cancel_while_paused_stops_at_once(tmp_path: Path, control: RunControl) -> None:
    control.pause()
    worker = Worker(tmp_path, control, tiny_config(100))
    assert control.wait_parked(30)
    control.cancel()  # wakes the parked worker: it returns without another step
    worker.thread.join(30)
    assert not worker.thread.is_alive()
    assert worker.result[0].status == "cancelled" and worker.result[0].steps_done == 0


class CountingControl(RunControl):
    """Counts the steps the worker was allowed to take, and those after a pause was asked."""

    def __init__(self) -> None:
        super().__init__(multiprocessing.get_context("forkserver"))
        self.taken = 0
        self.asked_at: int | None = None

    def take_step(self) -> bool:
        allowed = super().take_step()
        self.taken += allowed
        return allowed

    def pause(self) -> None:
        self.asked_at = self.taken
        super().pause()


def test_gate_pause_takes_effect_before_the_next_step(tmp_path: Path) -> None:
    """Latency in steps, whatever the machine's load: at most the step already begun."""
    control = CountingControl()
    worker = Worker(tmp_path, control, tiny_config(100_000 // 32))
    try:
        worker.wait(lambda r: r.n_records >= 20)
        control.pause()
        assert control.wait_parked(30)
        row = worker.wait(lambda r: r.status == "paused")
        assert control.asked_at is not None and control.taken - control.asked_at <= 1
        assert row.steps_done == control.taken
    finally:
        worker.finish()
