"""The Ray executor: every run (single or sweep cell) is a task on a Ray cluster.

A run's task trains and yields its records in batches (a Ray streaming generator), with the
decision-boundary frames of a 2-D run, then its outcome; a thread on the server takes each batch
as it arrives and writes it into the server's store through the same RecordWriter a local
worker uses. So streaming, resume, export and
restart recovery behave exactly as with local workers, wherever the run trained. Tasks are
never retried (a retry would write a run's records twice): a task that dies marks its run
failed. Cancel is `ray.cancel` (the task gets a KeyboardInterrupt at once), then a forced
cancel that kills its worker if it has not stopped within the grace. A server started without
an address starts a local Ray instance and shuts it down when it stops.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayError, TaskCancelledError

from depthscope.engine.boundary import BoundaryFrame
from depthscope.engine.config import RunConfig
from depthscope.engine.trainer import RunResult, final_of
from depthscope.records import StepRecord
from depthscope.service.control import RunControl
from depthscope.service.executors import ExecutorKind
from depthscope.service.status import RunStatus
from depthscope.service.store import RunStore
from depthscope.service.worker import FLUSH_INTERVAL_S, FLUSH_MAX_RECORDS, RecordWriter, report

INFO_TTL_S = 5.0  # how stale the cluster size in /api/health may be


@dataclass(frozen=True)
class Batch:
    """Records as the task flushes them, with the boundary frames and Jacobian spectra
    (step, singular values) made meanwhile."""

    records: list[StepRecord]
    frames: list[BoundaryFrame]
    spectra: list[tuple[int, list[float]]] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    """A 2-D run's boundary layout (its grid and data points), sent before any frame."""

    wire: dict[str, Any]


@dataclass(frozen=True)
class TaskFailure:
    """What a task yields last when training raised: the run's error message."""

    error: str


Item = Batch | Layout | RunResult | TaskFailure


def train_batches(config_json: str) -> Iterator[Item]:
    """The task body: the boundary layout of a 2-D run, batches of records as they come
    (flushed like a local worker's), then the RunResult, or a TaskFailure if training raised."""
    import torch

    from depthscope.engine.trainer import Trainer
    from depthscope.service.worker import failure_message

    torch.set_num_threads(1)  # one core per task, as Ray accounts for it
    batch: list[StepRecord] = []
    frames: list[BoundaryFrame] = []
    spectra: list[tuple[int, list[float]]] = []
    last_flush = 0.0  # so the first record goes out at once
    try:
        trainer = Trainer(RunConfig.model_validate_json(config_json))
        if trainer.boundary is not None:
            yield Layout(trainer.boundary.layout.to_wire())
        records = trainer.records(
            on_boundary=frames.append, on_spectrum=lambda step, v: spectra.append((step, v))
        )
        while True:
            try:
                record = next(records)
            except StopIteration as done:
                outcome: Item = done.value
                break
            batch.append(record)
            now = time.monotonic()
            if now - last_flush >= FLUSH_INTERVAL_S or len(batch) >= FLUSH_MAX_RECORDS:
                yield Batch(batch, frames[:], spectra[:])
                batch, last_flush = [], now
                frames.clear()  # the trainer appends to these very lists
                spectra.clear()
    except Exception as exc:  # any failure is this run's, reported with its reason
        outcome = TaskFailure(failure_message(exc))
    if batch or frames or spectra:
        yield Batch(batch, frames, spectra)
    yield outcome


def _warm() -> None:
    """Import torch and the trainer in a worker before the first run needs them."""
    import depthscope.engine.trainer  # noqa: F401


class RayExecutor:
    kind: ExecutorKind = "ray"
    can_pause = False  # a task on another machine cannot see the server's shared memory

    def __init__(self, store: RunStore, address: str | None, **init_options: Any) -> None:
        """Connect to the cluster at `address`, or start a local instance when it is None.
        A Ray already initialised in this process (a test's) is used as it is and left up."""
        self.store, self.address = store, address
        self.owns = not ray.is_initialized()
        if self.owns:
            ray.init(address=address, include_dashboard=False, **init_options)
        self.task = ray.remote(num_cpus=1, max_retries=0)(train_batches)
        self._info: dict[str, Any] = {"kind": self.kind, "nodes": None, "cpus": None}
        self._info_at = 0.0
        self._refreshing = threading.Lock()
        self._refresh()

    def warm_up(self) -> None:
        with contextlib.suppress(RayError):  # a server stopping meanwhile: nothing to warm
            ray.get(ray.remote(num_cpus=1)(_warm).remote())

    def control(self) -> RunControl:
        raise NotImplementedError("the ray executor cannot pause runs")

    def prepare(self, run_id: str, config_json: str, control: RunControl | None) -> RayJob:
        return RayJob(self, run_id, config_json)

    def describe(self) -> dict[str, Any]:
        if time.monotonic() - self._info_at > INFO_TTL_S and not self._refreshing.locked():
            threading.Thread(target=self._refresh, daemon=True).start()
        return dict(self._info)

    def _refresh(self) -> None:
        if not self._refreshing.acquire(blocking=False):
            return
        try:
            with contextlib.suppress(Exception):  # unreachable now: report the last known
                nodes = len([n for n in ray.nodes() if n.get("Alive")])  # type: ignore[no-untyped-call]
                cpus = ray.cluster_resources().get("CPU")  # type: ignore[no-untyped-call]
                address = "local" if self.address is None else self.address
                self._info = {"kind": self.kind, "nodes": nodes, "cpus": cpus, "address": address}
            self._info_at = time.monotonic()
        finally:
            self._refreshing.release()

    def shutdown(self) -> None:
        if self.owns and ray.is_initialized():
            ray.shutdown()  # a local instance stops; a cluster is only disconnected from


class RayJob:
    """One run's task and the server-side thread that stores what it yields."""

    def __init__(self, executor: RayExecutor, run_id: str, config_json: str) -> None:
        self.executor, self.run_id, self.config_json = executor, run_id, config_json
        self.store = executor.store
        self._lock = threading.Lock()
        self._stream: Any = None  # the task's ObjectRefGenerator, once submitted
        self._stopped = self._killed = False
        self._done = threading.Event()
        self._failure = "the Ray task ended without reporting a result"

    def start(self) -> None:
        with self._lock:
            if self._stopped:  # cancelled before it was submitted
                report(self.store, self.run_id, RunResult("cancelled", 0))
                self._done.set()
                return
            self._stream = self.executor.task.options(
                num_returns="streaming", name=f"depthscope-run-{self.run_id}"
            ).remote(self.config_json)
        threading.Thread(target=self._consume, name=f"ray-{self.run_id}", daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._stream is not None:
                ray.cancel(self._stream)

    def join(self, timeout: float | None) -> bool:
        return self._done.wait(timeout)

    def kill(self) -> None:
        """A forced cancel kills the task's worker; whoever kills owns the run's outcome."""
        with self._lock:
            self._killed = self._stopped = True
            if self._stream is not None:
                ray.cancel(self._stream, force=True)

    def failure(self) -> str:
        return self._failure

    def _consume(self) -> None:
        writer = RecordWriter(self.store, self.run_id)
        last: StepRecord | None = None
        try:
            for ref in self._stream:
                item: Item = ray.get(ref)
                if isinstance(item, Batch):
                    last = self._store(writer, item) or last
                elif isinstance(item, Layout):
                    self.store.put_boundary_layout(self.run_id, item.wire)
                elif isinstance(item, TaskFailure):
                    self._end(RunStatus.FAILED, last, item.error)
                else:
                    self._end(item, last)
        except TaskCancelledError:
            self._end(RunStatus.CANCELLED, last)
        except RayError as error:  # the task's worker or node died
            stopped = RunStatus.CANCELLED if self._stopped else RunStatus.FAILED
            self._end(stopped, last, _describe(error))
        finally:
            writer.flush()
            self._done.set()

    def _store(self, writer: RecordWriter, batch: Batch) -> StepRecord | None:
        """Into the store as a local worker writes: the records, then the frames and spectra."""
        for record in batch.records:
            writer.add(record)
        writer.flush()
        for frame in batch.frames:
            writer.add_boundary(frame)
        for step, values in batch.spectra:
            writer.add_spectrum(step, values)
        return batch.records[-1] if batch.records else None

    def _end(
        self, outcome: RunResult | RunStatus, last: StepRecord | None, error: str = ""
    ) -> None:
        if self._killed:
            return  # the run manager has recorded the outcome (or the server is stopping)
        if isinstance(outcome, RunResult):
            report(self.store, self.run_id, outcome)
        elif outcome == RunStatus.FAILED:
            self._failure = error
            self.store.transition(
                self.run_id, RunStatus.FAILED, only_from=(RunStatus.RUNNING,), error=error
            )
        else:
            steps = 0 if last is None else last.step + 1
            report(self.store, self.run_id, RunResult("cancelled", steps, final_of(last)))


def _describe(error: RayError) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"the Ray task died: {type(error).__name__}" + (f": {first}" if first else "")
