"""The local executor: one worker process per run on this machine (the default).

Each run trains in its own process (multiprocessing `forkserver`, torch preloaded there, so a
start costs tens of milliseconds), so an exception, an out-of-memory kill or a `kill -9` costs
that run alone. The worker writes its records and outcome to the store itself; if the process
dies without a word, the run manager marks the run failed with the reason read from its exit code.
Every worker gets the read end of a pipe whose only write end this process holds (the server's
link: its closing, by exit or death, tells the workers to stop) and the store's epoch, which
fences its writes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from typing import Any

from depthscope.service.control import RunControl
from depthscope.service.executors import ExecutorKind
from depthscope.service.store import RunStore
from depthscope.service.worker import run_worker


def _context() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    # torch.optim imports torch._dynamo on first use: seconds that every run would pay again;
    # the probe's C kernels are loaded there once too (probe/backends/preload.py).
    preload = ["depthscope.service.worker", "depthscope.probe.backends.preload", "torch._dynamo"]
    ctx.set_forkserver_preload(preload)
    return ctx


class LocalJob:
    """A run's worker process and its RunControl (stop, pause, advance through shared memory)."""

    def __init__(
        self,
        ctx: ForkServerContext,
        control: RunControl,
        store: RunStore,
        link: Connection,
        run_id: str,
        config: str,
    ) -> None:
        self.control = control
        self.process = ctx.Process(
            target=run_worker,
            args=(str(store.path), run_id, config, control, link, store.epoch),
            name=f"depthscope-run-{run_id}",
            daemon=True,
        )

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def start(self) -> None:
        self.process.start()  # a worker that finds the flag set reports `cancelled` itself

    def stop(self) -> None:
        self.control.cancel()

    def join(self, timeout: float | None) -> bool:
        if self.process.pid is None:
            return True  # never started
        self.process.join(timeout)
        return not self.process.is_alive()

    def kill(self) -> None:
        self.process.kill()

    def failure(self) -> str:
        return exit_reason(self.process.exitcode)


class LocalExecutor:
    kind: ExecutorKind = "local"
    can_pause = True

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._ctx = _context()
        # The server's end of the link every worker watches (worker.ServerLink): never written
        # to, and only this process holds it.
        self._link, self._link_end = self._ctx.Pipe(duplex=False)

    def warm_up(self) -> None:
        """Start the fork server now (it imports torch: seconds), not on the first run."""
        process = self._ctx.Process(target=_noop, daemon=True)
        process.start()
        process.join()

    def control(self) -> RunControl:
        return RunControl(self._ctx)

    def prepare(self, run_id: str, config_json: str, control: RunControl | None) -> LocalJob:
        control = control or self.control()
        return LocalJob(self._ctx, control, self.store, self._link, run_id, config_json)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "nodes": 1, "cpus": os.cpu_count()}

    def shutdown(self) -> None:
        """Close the link: every worker left sees it and stops writing (the run manager kills
        the jobs too)."""
        self._link_end.close()


def exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (killed: out of memory, or by an operator)" if -code == signal.SIGKILL else ""
        return f"the worker process died from signal {name}{hint}"
    return f"the worker process exited with code {code} without reporting a result"


def _noop() -> None:
    pass
