"""RunManager: the run lifecycle — a FIFO queue, bounded concurrency, one worker process per run.

Each run trains in its own process (multiprocessing `forkserver`, torch preloaded there, so a
start costs tens of milliseconds), so an exception, an out-of-memory kill or a `kill -9` costs
that run alone. A monitor thread per run waits for its process to exit, marks the run `failed`
if the worker could not say why itself, and starts the next queued run. Each run has a
RunControl (stop, pause, advance) from submission until its worker exits.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import signal
import threading
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess

from depthscope.engine.config import RunConfig
from depthscope.records import layer_names
from depthscope.service.control import RunControl
from depthscope.service.status import RunStatus
from depthscope.service.store import RunRow, RunStore
from depthscope.service.worker import run_worker

CANCEL_GRACE_S = 0.8  # a worker that has not stopped by then is killed: cancel within a second
PAUSE_WAIT_S = 1.0  # how long a pause request waits for the worker to say it has parked


class StoreFullError(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(f"the store is full: {what}; delete finished runs to make room")


class NotPausedError(Exception):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} is not paused; pause it before advancing it step by step")


class QueueFullError(Exception):
    def __init__(self, queued: int) -> None:
        super().__init__(f"the run queue is full ({queued} runs waiting); retry later")
        self.queued = queued


def _context() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    # torch.optim imports torch._dynamo on first use: seconds that every run would pay again;
    # the probe's C kernels are loaded there once too (probe/backends/preload.py).
    preload = ["depthscope.service.worker", "depthscope.probe.backends.preload", "torch._dynamo"]
    ctx.set_forkserver_preload(preload)
    return ctx


@dataclass
class _Active:
    process: BaseProcess
    control: RunControl
    started: threading.Event = field(default_factory=threading.Event)


class RunManager:
    def __init__(
        self,
        store: RunStore,
        max_concurrent: int,
        max_queued: int,
        max_stored: int = 10**9,
        max_bytes: int = 2**62,
    ) -> None:
        self.store = store
        self.max_concurrent, self.max_queued = max_concurrent, max_queued
        self.max_stored, self.max_bytes = max_stored, max_bytes
        self._ctx = _context()
        self._lock = threading.Lock()
        self._queue: deque[tuple[str, str]] = deque()  # (run id, config JSON), oldest first
        self._active: dict[str, _Active] = {}
        self._controls: dict[str, RunControl] = {}  # queued and active runs
        self._closed = False

    def warm_up(self) -> None:
        """Start the fork server now (it imports torch: seconds), not on the first run."""
        process = self._ctx.Process(target=_noop, daemon=True)
        process.start()
        process.join()

    def submit(self, config: RunConfig) -> RunRow:
        with self._lock:
            # Counted together: a run not yet moved from the queue to a slot counts once either way.
            if len(self._active) + len(self._queue) >= self.max_concurrent + self.max_queued:
                raise QueueFullError(len(self._queue))
            self._check_room()  # under the lock: concurrent submissions cannot pass the cap
            run_id = secrets.token_hex(6)
            layers = layer_names(config.model.depth)
            row = self.store.create_run(run_id, config.model_dump(), layers)
            self._controls[run_id] = RunControl(self._ctx)
            self._queue.append((run_id, config.model_dump_json()))
        threading.Thread(target=self._pump, daemon=True).start()
        return row

    def counts(self) -> tuple[int, int]:
        """(running, queued). Without the lock, which a pump holds across a database write:
        each len() is atomic, and health checks on the event loop must never wait."""
        return len(self._active), len(self._queue)

    def queue_position(self, run_id: str) -> int | None:
        with self._lock:
            ids = [queued for queued, _ in self._queue]
        return ids.index(run_id) if run_id in ids else None

    def cancel(self, run_id: str) -> None:
        """Queued: cancelled at once. Running: asked to stop, killed if it has not within a
        second (its committed records stay either way)."""
        with self._lock:
            self._queue = deque(q for q in self._queue if q[0] != run_id)
            active = self._active.get(run_id)
            if active is None:
                self._controls.pop(run_id, None)
        if active is None:
            self.store.transition(run_id, RunStatus.CANCELLED, only_from=(RunStatus.QUEUED,))
            return
        active.control.cancel()
        started = (RunStatus.RUNNING, RunStatus.PAUSED)
        if not active.started.wait(CANCEL_GRACE_S):  # still starting: it will see the flag
            self.store.transition(run_id, RunStatus.CANCELLED, only_from=started)
            return
        active.process.join(CANCEL_GRACE_S)
        if active.process.is_alive():
            self.store.transition(run_id, RunStatus.CANCELLED, only_from=started)
            active.process.kill()

    # -- pause, advance, resume: False when the run is not queued or training any more --------
    def pause(self, run_id: str) -> bool:
        """Pause before the next step. A queued run starts paused, at step 0. Waits up to a
        second for a running worker to park (commit its records and mark the run `paused`)."""
        control = self._controls.get(run_id)
        if control is None:
            return False
        control.pause()
        if run_id in self._active:
            control.wait_parked(PAUSE_WAIT_S)
        return True

    def advance(self, run_id: str, steps: int) -> bool:
        """Train exactly `steps` more steps of a paused (or queued and paused) run, then pause
        again. Raises NotPausedError for a run that is training freely."""
        control = self._controls.get(run_id)
        if control is None:
            return False
        if not control.advance(steps):
            raise NotPausedError(run_id)
        return True

    def resume(self, run_id: str) -> bool:
        control = self._controls.get(run_id)
        if control is None:
            return False
        control.resume()
        return True

    def shutdown(self) -> None:
        """Stop every worker; what was queued or running stays so and becomes `interrupted` on
        the next start, exactly as after a crash."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            active = list(self._active.values())
        for a in active:
            if a.started.wait(5):
                a.process.kill()
                a.process.join(5)

    # -- internals ------------------------------------------------------------------------------
    def _check_room(self) -> None:
        """Admission only: a run already accepted may still grow the store past max_bytes."""
        stored = self.store.count_runs()
        if stored >= self.max_stored:
            raise StoreFullError(f"{stored} runs stored, the limit (max_stored_runs)")
        size = self.store.size_bytes()
        if size >= self.max_bytes:
            raise StoreFullError(
                f"{size / 2**20:.0f} MiB stored, limit {self.max_bytes / 2**20:.0f} MiB "
                "(max_store_bytes)"
            )

    def _pump(self) -> None:
        """Start queued runs while there are free slots. A slot is claimed under the lock, the
        process started outside it: the first start waits for the fork server to import torch
        (seconds), and health checks and submissions must not wait with it."""
        while True:
            with self._lock:
                if self._closed or not self._queue or len(self._active) >= self.max_concurrent:
                    return
                run_id, config_json = self._queue.popleft()
                control = self._controls.get(run_id)
                if control is None or not self.store.transition(
                    run_id, RunStatus.RUNNING, only_from=(RunStatus.QUEUED,)
                ):
                    self._controls.pop(run_id, None)
                    continue  # cancelled or deleted while it waited
                process = self._ctx.Process(
                    target=run_worker,
                    args=(str(self.store.path), run_id, config_json, control, os.getpid()),
                    name=f"depthscope-run-{run_id}",
                    daemon=True,
                )
                active = self._active[run_id] = _Active(process, control)
            process.start()
            active.started.set()
            threading.Thread(target=self._monitor, args=(run_id,), daemon=True).start()

    def _monitor(self, run_id: str) -> None:
        active = self._active[run_id]
        active.process.join()
        if not self._closed:  # a no-op when the worker reported its own outcome
            reason = _exit_reason(active.process.exitcode)
            started = (RunStatus.RUNNING, RunStatus.PAUSED)
            self.store.transition(run_id, RunStatus.FAILED, only_from=started, error=reason)
        with self._lock:
            del self._active[run_id]
            self._controls.pop(run_id, None)
        self._pump()


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (killed: out of memory, or by an operator)" if -code == signal.SIGKILL else ""
        return f"the worker process died from signal {name}{hint}"
    return f"the worker process exited with code {code} without reporting a result"


def _noop() -> None:
    pass
