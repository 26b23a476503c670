"""The worker: what runs inside a run's own process — train, append records to the store, report.

A worker writes only through the store, so the server learns everything (records, boundary
frames, pauses, the final status, a crash's reason) from the database; if the process dies
without a word, the run manager marks the run failed from the exit code. Its writes are made on a
thread of their own (Committer), so training never waits on the disk. Orders come the other
way through shared memory (service/control.py), read before every step. A worker whose server
is gone stops at once and writes nothing more (ServerLink); one that misses it is still refused
by the store's epoch fence.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

import torch

from depthscope.engine.boundary import BoundaryFrame
from depthscope.engine.config import RunConfig
from depthscope.engine.trainer import RunResult, Trainer
from depthscope.records import StepRecord
from depthscope.service.control import RunControl
from depthscope.service.status import RunStatus
from depthscope.service.store import RunStore, StaleEpochError

# A batch is committed when it has waited long enough since the last commit, or grows this large.
# Long enough: FLUSH_INTERVAL_S at least (short enough for live charts: bench/stream.py), and
# COMMIT_SHARE times the last commit's own duration, so that committing takes at most about
# 1/COMMIT_SHARE of the committing thread's time however big the records (a deep net's commit
# costs a few milliseconds, its step a few too: bench/service.py), up to MAX_FLUSH_INTERVAL_S (a
# very slow disk then costs more time rather than more latency).
FLUSH_INTERVAL_S = 0.01
COMMIT_SHARE = 25
MAX_FLUSH_INTERVAL_S = 0.25
FLUSH_MAX_RECORDS = 512
PARKED_POLL_S = 0.2  # a paused worker wakes at once on news, and this often to watch the server


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class Committer:
    """Store writes on a thread of their own, in the order they were handed over, so that the
    training thread never waits on the disk (SQLite leaves Python's lock while it writes, and
    a write-ahead log's checkpoint can take a tenth of a second). The first write that fails
    is kept and raised on the training thread by `check()`; nothing after it is written."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._settled = threading.Condition()
        self._unfinished = 0  # jobs handed over and not yet done
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="depthscope-commits", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        with self._settled:
            self._unfinished += 1
        self._jobs.put(job)

    def idle(self) -> bool:
        return self._unfinished == 0

    def wait(self) -> None:
        """Until every job handed over is done; then raise the first failure, if any."""
        with self._settled:
            self._settled.wait_for(self.idle)
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Finish every job, then stop the thread (which closes its connection)."""
        self._jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                try:
                    if self.error is None:
                        job()
                except BaseException as exc:  # raised on the training thread, not lost here
                    self.error = exc
                finally:
                    with self._settled:
                        self._unfinished -= 1
                        self._settled.notify_all()
        finally:
            self.store.close()  # this thread's connection


class RecordWriter:
    """Buffers records and appends them to the store in batches; once `orphaned()` says the
    server is gone, it drops what it holds instead.

    With `background` (a worker's), every write goes through a Committer: a batch is handed
    over when it is due and the previous one is done (records gather in the buffer meanwhile,
    so a slow disk makes batches bigger, not a queue longer), and `flush()` returns once all
    of it is in the store. Without (a caller that is a writing thread already), writes are
    made at once on the calling thread."""

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        orphaned: Callable[[], bool] = lambda: False,
        *,
        background: bool = False,
    ) -> None:
        self.store, self.run_id, self.orphaned = store, run_id, orphaned
        self.buffer: list[StepRecord] = []
        self.last_flush = 0.0  # so the first record is committed at once
        self.interval = FLUSH_INTERVAL_S
        self.committer = Committer(store) if background else None

    def add(self, record: StepRecord) -> None:
        self.buffer.append(record)
        now = time.monotonic()
        full = len(self.buffer) >= FLUSH_MAX_RECORDS
        if not full and now - self.last_flush < self.interval:
            return
        if self.committer is not None:
            if full:
                self.committer.wait()  # backpressure: the disk is this far behind
            elif not self.committer.idle():
                return  # the previous batch is still going in: this one grows meanwhile
            self.committer.check()
        self._hand_over()

    def flush(self) -> None:
        """Everything added so far is in the store when this returns."""
        self._hand_over()
        if self.committer is not None:
            self.committer.wait()

    def close(self) -> None:
        """flush(), then stop the committing thread (also when the flush fails)."""
        try:
            self.flush()
        finally:
            if self.committer is not None:
                self.committer.close()

    def _hand_over(self) -> None:
        batch, self.buffer = self.buffer, []
        if batch:
            self._write(lambda: self._commit(batch))
        self.last_flush = time.monotonic()  # after the commit itself, when it is made here

    def _commit(self, batch: list[StepRecord]) -> None:
        if self.orphaned():
            return
        began = time.monotonic()
        self.store.append(self.run_id, batch)
        took = time.monotonic() - began
        self.interval = min(MAX_FLUSH_INTERVAL_S, max(FLUSH_INTERVAL_S, COMMIT_SHARE * took))

    def _write(self, job: Callable[[], None]) -> None:
        if self.committer is None:
            job()
        else:
            self.committer.submit(job)

    def add_spectrum(self, step: int, values: list[float]) -> None:
        """A Jacobian spectrum goes to the store at once, in its own (small) transaction."""
        if not self.orphaned():
            self._write(lambda: self.store.put_spectrum(self.run_id, step, values))

    def add_boundary(self, frame: BoundaryFrame) -> None:
        """A boundary frame goes to the store at once, in its own (small) transaction."""
        if self.orphaned():
            return
        prob = frame.prob.numpy()
        classes = None if frame.classes is None else frame.classes.numpy()
        self._write(lambda: self.store.put_boundary(self.run_id, frame.step, prob, classes))


class ServerLink:
    """Whether the server that started this run is gone.

    The server holds the only write end of a pipe and never writes to it; every worker gets
    the read end. When the server dies, however it dies (SIGKILL, OOM, even while it lingers
    unreaped as a zombie), the kernel closes its descriptors and the read end reports EOF. A
    thread blocked on it notices at once. (The worker's parent is the fork server, which may
    outlive the server, so neither a parent-death signal nor the parent pid would tell.)"""

    def __init__(self, server: Connection | None) -> None:
        self.lost = threading.Event()
        if server is not None:
            threading.Thread(target=self._watch, args=(server,), daemon=True).start()

    def _watch(self, server: Connection) -> None:
        with contextlib.suppress(OSError):
            server.poll(None)  # nothing is ever sent: returns on EOF only
        self.lost.set()

    def gone(self) -> bool:
        return self.lost.is_set()


class Gate:
    """Asked before every step: stop, go on, or park paused until the server says otherwise.

    Parking commits the records so far, a boundary frame of the network as it stands, and the
    status `paused` with the exact steps done; leaving it marks the run `running` again."""

    def __init__(
        self, trainer: Trainer, writer: RecordWriter, stop: StopFlag, server: ServerLink
    ) -> None:
        self.trainer, self.writer, self.stop, self.server = trainer, writer, stop, server
        self.control = stop if isinstance(stop, RunControl) else None

    def __call__(self) -> bool:
        if self.stop.is_set() or self.server.gone():
            return True
        if self.control is None or self.control.take_step():
            return False
        return self._park(self.control)

    def _park(self, control: RunControl) -> bool:
        store, run_id = self.writer.store, self.writer.run_id
        self.writer.flush()
        frame = self.trainer.boundary_frame()
        if frame is not None:
            self.writer.add_boundary(frame)
            self.writer.flush()  # the frame is stored before the run says it is paused
        done = self.trainer.steps_done
        store.transition(run_id, RunStatus.PAUSED, only_from=(RunStatus.RUNNING,), steps_done=done)
        control.parked.set()
        try:
            while not control.take_step():
                if control.is_set() or self.server.gone():
                    return True
                control.sleep(PARKED_POLL_S)
        finally:
            control.parked.clear()
        store.transition(run_id, RunStatus.RUNNING, only_from=(RunStatus.PAUSED,))
        return False


def train_into(
    store: RunStore,
    run_id: str,
    config: RunConfig,
    stop: StopFlag,
    link: ServerLink | None = None,
) -> RunResult:
    """Train `config`, committing its records, boundary frames and spectra as they come; returns the
    trainer's result. A RunControl as `stop` also pauses and advances the run."""
    link = link or ServerLink(None)
    writer = RecordWriter(store, run_id, link.gone, background=True)
    trainer = Trainer(config)
    if trainer.boundary is not None:
        store.put_boundary_layout(run_id, trainer.boundary.layout.to_wire())
    gate = Gate(trainer, writer, stop, link)
    try:
        return trainer.run(writer.add, gate, writer.add_boundary, writer.add_spectrum)
    finally:
        writer.close()  # also on an exception: keep every record the run produced


def run_worker(
    db_path: str,
    run_id: str,
    config_json: str,
    stop: StopFlag,
    server: Connection | None = None,
    epoch: int | None = None,
) -> None:
    """Process entry point. The manager already marked the run `running`. Every write is
    fenced by `epoch`: after a restart, the new server's store refuses this worker's."""
    # One thread per run: with several runs on a few cores, more threads only contend.
    torch.set_num_threads(1)
    store = RunStore(Path(db_path), epoch=epoch)
    link = ServerLink(server)
    try:
        _train_and_report(store, run_id, config_json, stop, link)
    except StaleEpochError:
        pass  # a newer server owns the store: this run is its `interrupted` one now
    finally:
        store.close()


def _train_and_report(
    store: RunStore, run_id: str, config_json: str, stop: StopFlag, link: ServerLink
) -> None:
    try:
        config = RunConfig.model_validate_json(config_json)
        result = train_into(store, run_id, config, stop, link)
    except StaleEpochError:
        raise
    except Exception as exc:  # any failure is this run's, reported with its reason
        if not link.gone():
            store.transition(run_id, RunStatus.FAILED, error=failure_message(exc))
        return
    if link.gone():
        return  # orphaned: the restarted server marks this run interrupted
    report(store, run_id, result)


def failure_message(exc: BaseException) -> str:
    """A run's `error` for an exception: its type, message and where it was raised."""
    last = traceback.extract_tb(exc.__traceback__)[-1:]
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"


def report(store: RunStore, run_id: str, result: RunResult) -> None:
    """Record a run's outcome, after its last records (every executor ends a run so)."""
    divergence = result.divergence
    store.transition(
        run_id,
        RunStatus(result.status),
        final=result.final,
        steps_done=result.steps_done,
        divergence=None if divergence is None else divergence.to_wire(),
        error=None if divergence is None else divergence.describe(),
    )
