"""RunManager: the run lifecycle — a FIFO queue, bounded concurrency, an executor that trains.

Runs wait in two FIFO queues: single runs (bounded by max_queued: more → QueueFullError, a 429)
and sweep cells (bounded by max_cells: a sweep is admitted whole or not at all). Single runs
take a free slot first, so a long sweep never locks out a run started by hand. A monitor
thread per run waits for its job to end, marks the run `failed` if the job could not say why
itself, and starts the next queued run. Where a run trains is the executor's business
(service/executors: local worker processes, or Ray). Each run on an executor that can pause
has a RunControl (stop, pause, advance) from submission until its job ends.
"""

from __future__ import annotations

import secrets
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from depthscope.engine.config import RunConfig
from depthscope.records import layer_names
from depthscope.service.control import RunControl
from depthscope.service.executors import Executor, Job
from depthscope.service.executors.local import LocalExecutor
from depthscope.service.status import RunStatus
from depthscope.service.store import RunRow, RunStore

CANCEL_GRACE_S = 0.8  # a job that has not stopped by then is killed: cancel within a second
PAUSE_WAIT_S = 1.0  # how long a pause request waits for the worker to say it has parked
STARTED = (RunStatus.RUNNING, RunStatus.PAUSED)


class StoreFullError(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(f"the store is full: {what}; delete finished runs to make room")


class NotPausedError(Exception):
    def __init__(self, run_id: str, why: str = "") -> None:
        why = why or "pause it before advancing it step by step"
        super().__init__(f"run {run_id} is not paused; {why}")


class QueueFullError(Exception):
    def __init__(self, queued: int, what: str = "the run queue is full") -> None:
        super().__init__(f"{what} ({queued} runs waiting); retry later")
        self.queued = queued


@dataclass
class _Active:
    job: Job
    started: threading.Event = field(default_factory=threading.Event)


class RunManager:
    def __init__(
        self,
        store: RunStore,
        max_concurrent: int,
        max_queued: int,
        max_stored: int = 10**9,
        max_bytes: int = 2**62,
        *,
        executor: Executor | None = None,
        max_cells: int = 1024,
    ) -> None:
        self.store = store
        self.max_concurrent, self.max_queued = max_concurrent, max_queued
        self.max_stored, self.max_bytes, self.max_cells = max_stored, max_bytes, max_cells
        self.executor: Executor = executor or LocalExecutor(store)
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, str]] = deque()  # (run id, config JSON), oldest first
        self._cells: deque[tuple[str, str]] = deque()  # sweep cells, after every single run
        self._active: dict[str, _Active] = {}
        self._controls: dict[str, RunControl] = {}  # queued and active runs that can pause
        self._closed = False

    def warm_up(self) -> None:
        self.executor.warm_up()

    def submit(self, config: RunConfig) -> RunRow:
        with self._lock:
            # Counted together: a run not yet moved from the queue to a slot counts once either way.
            if len(self._active) + len(self._queue) >= self.max_concurrent + self.max_queued:
                raise QueueFullError(len(self._queue))
            self._check_room()  # under the lock: concurrent submissions cannot pass the cap
            row = self._create(config, None)
            self._queue.append((row.id, config.model_dump_json()))
        threading.Thread(target=self._pump, daemon=True).start()
        return row

    def submit_cells(self, configs: Sequence[RunConfig], sweep_id: str) -> list[RunRow]:
        """A sweep's cells, one queued run each, admitted together or not at all."""
        with self._lock:
            if len(self._cells) + len(configs) > self.max_cells:
                raise QueueFullError(
                    len(self._cells), f"the sweep queue holds at most {self.max_cells} cells"
                )
            self._check_room(len(configs))
            rows = [self._create(config, sweep_id) for config in configs]
            self._cells.extend(
                (r.id, c.model_dump_json()) for r, c in zip(rows, configs, strict=True)
            )
        threading.Thread(target=self._pump, daemon=True).start()
        return rows

    def counts(self) -> tuple[int, int]:
        """(running, queued). Without the lock, which a pump holds across a database write:
        each len() is atomic, and health checks on the event loop must never wait."""
        return len(self._active), len(self._queue) + len(self._cells)

    def job(self, run_id: str) -> Job | None:
        """The job of a run that is training now."""
        active = self._active.get(run_id)
        return None if active is None else active.job

    def cancel(self, run_id: str) -> None:
        """Queued: cancelled at once. Running: asked to stop, killed if it has not within a
        second (its committed records stay either way)."""
        with self._lock:
            self._queue = deque(q for q in self._queue if q[0] != run_id)
            self._cells = deque(q for q in self._cells if q[0] != run_id)
            active = self._active.get(run_id)
            if active is None:
                self._controls.pop(run_id, None)
        if active is None:
            self.store.transition(run_id, RunStatus.CANCELLED, only_from=(RunStatus.QUEUED,))
            return
        active.job.stop()
        if not active.started.wait(CANCEL_GRACE_S):  # still starting: it will see the flag
            self.store.transition(run_id, RunStatus.CANCELLED, only_from=STARTED)
            return
        if not active.job.join(CANCEL_GRACE_S):
            self.store.transition(run_id, RunStatus.CANCELLED, only_from=STARTED)
            active.job.kill()

    def cancel_many(self, run_ids: Sequence[str]) -> None:
        """Cancel many runs (a sweep's cells): the queued ones in one pass, the running ones
        side by side, so that n running runs stop within a second, not n seconds."""
        wanted = set(run_ids)
        with self._lock:
            self._queue = deque(q for q in self._queue if q[0] not in wanted)
            self._cells = deque(q for q in self._cells if q[0] not in wanted)
            running = [r for r in wanted if r in self._active]
        for run_id in wanted.difference(running):
            self._controls.pop(run_id, None)
            self.store.transition(run_id, RunStatus.CANCELLED, only_from=(RunStatus.QUEUED,))
        threads = [threading.Thread(target=self.cancel, args=(r,)) for r in running]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # -- pause, advance, resume: False when the run is not queued or training any more --------
    def pause(self, run_id: str) -> bool:
        """Pause before the next step. A queued run starts paused, at step 0. Waits up to a
        second for a running worker to park (commit its records and mark the run `paused`)."""
        control = self._control(run_id)
        if control is None:
            return False
        control.pause()
        if run_id in self._active:
            control.wait_parked(PAUSE_WAIT_S)
        return True

    def advance(self, run_id: str, steps: int) -> bool:
        """Train exactly `steps` more steps of a paused (or queued and paused) run, then pause
        again. Raises NotPausedError for a run that is training freely."""
        control = self._control(run_id)
        if control is None:
            return False
        if not control.advance(steps):
            raise NotPausedError(run_id)
        return True

    def resume(self, run_id: str) -> bool:
        control = self._control(run_id)
        if control is None:
            return False
        control.resume()
        return True

    def shutdown(self) -> None:
        """Stop every job; what was queued or running stays so and becomes `interrupted` on
        the next start, exactly as after a crash."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._cells.clear()
            active = list(self._active.values())
        for a in active:
            if a.started.wait(5):
                a.job.kill()
                a.job.join(5)
        self.executor.shutdown()

    # -- internals ------------------------------------------------------------------------------
    def _create(self, config: RunConfig, sweep_id: str | None) -> RunRow:
        """A queued run's row, and its control where the executor can pause (under the lock)."""
        row = self.store.create_run(
            secrets.token_hex(6), config.model_dump(), layer_names(config.model.depth), sweep_id
        )
        if self.executor.can_pause:
            self._controls[row.id] = self.executor.control()
        return row

    def _control(self, run_id: str) -> RunControl | None:
        """The run's control; NotPausedError where its executor cannot pause runs at all."""
        if not self.executor.can_pause:
            raise NotPausedError(run_id, f"the {self.executor.kind} executor cannot pause runs")
        return self._controls.get(run_id)

    def _check_room(self, adding: int = 1) -> None:
        """Admission only: a run already accepted may still grow the store past max_bytes."""
        stored = self.store.count_runs()
        if stored + adding > self.max_stored:
            raise StoreFullError(
                f"{stored} runs stored, {adding} more asked for, limit {self.max_stored} "
                "(max_stored_runs)"
            )
        size = self.store.size_bytes()
        if size >= self.max_bytes:
            raise StoreFullError(
                f"{size / 2**20:.0f} MiB stored, limit {self.max_bytes / 2**20:.0f} MiB "
                "(max_store_bytes)"
            )

    def _next(self) -> tuple[str, str] | None:
        """The next run to start (single runs first), under the lock."""
        if self._queue:
            return self._queue.popleft()
        return self._cells.popleft() if self._cells else None

    def _pump(self) -> None:
        """Start queued runs while there are free slots. A slot is claimed under the lock, the
        job started outside it: the first start may take seconds (a fork server importing
        torch, a Ray worker starting), and health checks and submissions must not wait."""
        while True:
            with self._lock:
                if self._closed or len(self._active) >= self.max_concurrent:
                    return
                queued = self._next()
                if queued is None:
                    return
                run_id, config_json = queued
                control = self._controls.get(run_id)
                if not self.store.transition(
                    run_id, RunStatus.RUNNING, only_from=(RunStatus.QUEUED,)
                ):
                    self._controls.pop(run_id, None)
                    continue  # cancelled or deleted while it waited
                job = self.executor.prepare(run_id, config_json, control)
                active = self._active[run_id] = _Active(job)
            try:
                active.job.start()
            except Exception as exc:  # the executor refused it: this run fails, the rest go on
                error = f"the {self.executor.kind} executor could not start this run: {exc}"
                self.store.transition(run_id, RunStatus.FAILED, only_from=STARTED, error=error)
                with self._lock:
                    del self._active[run_id]
                    self._controls.pop(run_id, None)
                continue
            finally:
                active.started.set()
            threading.Thread(target=self._monitor, args=(run_id,), daemon=True).start()

    def _monitor(self, run_id: str) -> None:
        active = self._active[run_id]
        active.job.join(None)
        if not self._closed:  # a no-op when the job reported its own outcome
            reason = active.job.failure()
            self.store.transition(run_id, RunStatus.FAILED, only_from=STARTED, error=reason)
        with self._lock:
            del self._active[run_id]
            self._controls.pop(run_id, None)
        self._pump()
