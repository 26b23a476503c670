"""The worker: what runs inside a run's own process — train, append records to the store, report.

A worker writes only through the store, so the server learns everything (records, the final
status, a crash's reason) from the database; if the process dies without a word, the run manager
marks the run failed from the exit code. A worker whose server is gone stops at once and writes
nothing more (ServerLink); one that misses it is still refused by the store's epoch fence.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

import torch

from depthscope.engine.config import RunConfig
from depthscope.engine.trainer import RunResult, Trainer
from depthscope.probe.backends import kernels as native
from depthscope.records import StepRecord
from depthscope.service.status import RunStatus
from depthscope.service.store import RunStore, StaleEpochError

# A batch is committed when this long has passed since the last commit, or it grows this large:
# short enough for live charts (record-to-client latency), long enough that fast runs commit
# tens of records per transaction instead of one.
FLUSH_INTERVAL_S = 0.008
FLUSH_MAX_RECORDS = 512

# The probe's C kernels, built or loaded here, once: the run manager's fork server imports this
# module, and every run's process is forked from it with the library already loaded (so no run
# compiles, loads, or warns that there is no compiler, on its own).
native.kernels()


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


class RecordWriter:
    """Buffers records and appends them to the store in batches; once `orphaned()` says the
    server is gone, it drops what it holds instead."""

    def __init__(
        self, store: RunStore, run_id: str, orphaned: Callable[[], bool] = lambda: False
    ) -> None:
        self.store, self.run_id, self.orphaned = store, run_id, orphaned
        self.buffer: list[StepRecord] = []
        self.last_flush = 0.0  # so the first record is committed at once

    def add(self, record: StepRecord) -> None:
        self.buffer.append(record)
        now = time.monotonic()
        if now - self.last_flush >= FLUSH_INTERVAL_S or len(self.buffer) >= FLUSH_MAX_RECORDS:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        if self.buffer and not self.orphaned():
            self.store.append(self.run_id, self.buffer)
        self.buffer = []
        self.last_flush = time.monotonic() if now is None else now


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


def train_into(
    store: RunStore, run_id: str, config: RunConfig, stop: StopFlag, link: ServerLink
) -> RunResult:
    """Train `config`, committing its records as they come; returns the trainer's result."""
    writer = RecordWriter(store, run_id, link.gone)

    def should_stop() -> bool:
        return stop.is_set() or link.gone()

    try:
        return Trainer(config).run(writer.add, should_stop)
    finally:
        writer.flush()  # also on an exception: keep every record the run produced


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
        if link.gone():
            return
        last = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
        store.transition(run_id, RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}{where}")
        return
    if link.gone():
        return  # orphaned: the restarted server marks this run interrupted
    divergence = result.divergence
    store.transition(
        run_id,
        RunStatus(result.status),
        final=result.final,
        steps_done=result.steps_done,
        divergence=None if divergence is None else divergence.to_wire(),
        error=None if divergence is None else divergence.describe(),
    )
