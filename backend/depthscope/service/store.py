"""RunStore: the SQLite (WAL) store of runs and their records; the single source of truth.

Workers append each batch of records in one transaction; the stream tails it, export and series
read it, and restart recovery is a single UPDATE. Records are kept twice, on purpose: as wire
JSON (streamed and exported as-is, never re-encoded) and as per-metric float32 blocks, so the
series endpoint reads one blob per batch into numpy instead of parsing every record.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from depthscope.records import METRICS, Divergence, StepRecord
from depthscope.service.boundaries import BOUNDARY_SCHEMA, BoundaryTables
from depthscope.service.status import ACTIVE, TERMINAL, RunStatus, sql_list

STEP_COLUMN = "step"  # the per-batch block of step numbers sits beside the metric blocks
PAGE_SIZE = 65536  # bytes; see RunStore._db
SCALARS = ("loss", "accuracy", "grad_norm_total")  # per-step values kept as one-column blocks

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, config TEXT NOT NULL, layers TEXT NOT NULL,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    steps_done INTEGER NOT NULL DEFAULT 0, n_records INTEGER NOT NULL DEFAULT 0,
    status_version INTEGER NOT NULL DEFAULT 0,
    final TEXT, error TEXT, divergence TEXT, sweep_id TEXT);
CREATE TABLE IF NOT EXISTS records (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, step INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spectra (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (run_id, step)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (
    run_id TEXT NOT NULL, metric TEXT NOT NULL, start_seq INTEGER NOT NULL,
    n INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (run_id, metric, start_seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', 0);
"""


class StaleEpochError(Exception):
    """A write from a process of an earlier server: a newer server owns the store now."""

    def __init__(self, mine: int, current: int) -> None:
        super().__init__(f"write refused: this writer has epoch {mine}, the store {current}")


def to_json(value: Any) -> str:
    """Compact JSON that refuses NaN/Infinity: they must have become null before this point."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def record_json(record: StepRecord) -> str:
    """A record's wire JSON, the same document `to_json` makes, by orjson: several times faster
    on the long float lists of a deep net's record, which the worker encodes on the training
    thread (the wire form has nulls already where a value was not finite)."""
    return orjson.dumps(record.to_wire()).decode()


@dataclass(frozen=True)
class RunRow:
    id: str
    status: RunStatus
    config: dict[str, Any]
    layers: list[str]
    created_at: float
    started_at: float | None
    finished_at: float | None
    steps_done: int
    n_records: int
    status_version: int
    final: dict[str, Any] | None
    error: str | None
    divergence: dict[str, Any] | None
    sweep_id: str | None = None  # the sweep this run is a cell of

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_wire(self) -> dict[str, Any]:
        """The run summary of docs/api.md, plus divergence, records and start/finish times."""
        return {
            "id": self.id,
            "status": self.status,
            "terminal": self.terminal,
            "config": self.config,
            "steps_done": self.steps_done,
            "layers": self.layers,
            "created_at": _iso(self.created_at),
            "final": self.final,
            "error": self.error,
            "divergence": self.divergence,
            "records": self.n_records,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "sweep_id": self.sweep_id,
        }


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


@dataclass(frozen=True)
class Cursor:
    """How far a run has got: what a stream tailer polls."""

    n_records: int
    status_version: int
    status: RunStatus


def _row(r: sqlite3.Row) -> RunRow:
    def load(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    return RunRow(
        id=r["id"],
        status=RunStatus(r["status"]),
        config=json.loads(r["config"]),
        layers=json.loads(r["layers"]),
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
        steps_done=r["steps_done"],
        n_records=r["n_records"],
        status_version=r["status_version"],
        final=load(r["final"]),
        error=r["error"],
        divergence=_divergence(load(r["divergence"])),
        sweep_id=r["sweep_id"],
    )


def _divergence(wire: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored divergence, with its message (runs stored before messages were sent lack it)."""
    if wire is None or "message" in wire:
        return wire
    return Divergence(wire["step"], wire["layer"], wire["layer_index"], wire["metric"]).to_wire()


def metric_blocks(records: Sequence[StepRecord]) -> list[npt.NDArray[np.float32]]:
    """Per metric (METRICS order): [n_records, n_layers] float32, null → NaN. Cut from the
    records' tables where they all have one, else read from their lists."""
    tables = [r.table for r in records]
    if all(t is not None for t in tables):
        stacked = np.stack(tables)  # type: ignore[arg-type]  # [record, metric, layer]
        return list(stacked.transpose(1, 0, 2))
    return [
        np.array([[math.nan if v is None else v for v in r.layers[m]] for r in records], np.float32)
        for m in METRICS
    ]


def scalar_block(records: Sequence[StepRecord], name: str) -> npt.NDArray[np.float32]:
    """[n_records, 1] float32 of a per-step scalar, null → NaN."""
    values = [getattr(r, name) for r in records]
    return np.array([[math.nan if v is None else v] for v in values], dtype=np.float32)


class RunStore(BoundaryTables):
    """One per process. Connections are per thread: SQLite in WAL mode lets readers run beside
    the one writer, and `timeout` makes a writer wait for another's commit instead of failing.

    Ownership: each server start `claim()`s the store, which increments its epoch. A store
    opened with an `epoch` (a worker's) checks it inside every write transaction and refuses
    the write (StaleEpochError) once a newer server has claimed the store."""

    def __init__(self, path: Path, epoch: int | None = None) -> None:
        self.path, self.epoch = path, epoch
        self._local = threading.local()
        path.parent.mkdir(parents=True, exist_ok=True)
        db = self._db()
        db.executescript(_SCHEMA + BOUNDARY_SCHEMA)
        if "sweep_id" not in {c[1] for c in db.execute("PRAGMA table_info(runs)")}:
            db.execute("ALTER TABLE runs ADD COLUMN sweep_id TEXT")  # a store from before sweeps
        db.execute("CREATE INDEX IF NOT EXISTS runs_by_sweep ON runs (sweep_id)")

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            # Big pages for big blobs: a metric block spans a few pages instead of a long
            # overflow chain, which halves /series read time. Only a new file takes it, and it
            # must come before WAL mode.
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a killed process; only an OS crash or power
            # loss can drop the last commits, and never corrupts the file.
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def _tx(self) -> _Transaction:
        return _Transaction(self._db(), self._fence)

    def _fence(self, db: sqlite3.Connection) -> None:
        if self.epoch is None:
            return
        current: int = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
        if current != self.epoch:
            raise StaleEpochError(self.epoch, current)

    def claim(self) -> int:
        """Make this store the owner's: a new epoch, which every earlier writer lacks."""
        self.epoch = None  # the claim itself is not fenced
        with self._tx() as db:
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'epoch'")
            epoch: int = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
        self.epoch = epoch
        return epoch

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, for tables other modules keep in the same file (sweeps)."""
        return self._db()

    def transaction(self) -> _Transaction:
        """BEGIN IMMEDIATE … COMMIT on this thread's connection, for those modules too."""
        return self._tx()

    def close(self) -> None:
        """This thread's connections."""
        for name in ("db", "peek_db"):
            db: sqlite3.Connection | None = getattr(self._local, name, None)
            if db is not None:
                db.close()
                setattr(self._local, name, None)

    # -- runs -----------------------------------------------------------------------------------
    def create_run(
        self,
        run_id: str,
        config: dict[str, Any],
        layers: list[str],
        sweep_id: str | None = None,
    ) -> RunRow:
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs (id, status, config, layers, created_at, sweep_id)"
                " VALUES (?,?,?,?,?,?)",
                (
                    run_id,
                    RunStatus.QUEUED.value,
                    to_json(config),
                    to_json(layers),
                    time.time(),
                    sweep_id,
                ),
            )
        row = self.get_run(run_id)
        assert row is not None
        return row

    def get_run(self, run_id: str) -> RunRow | None:
        r = self._db().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if r is None else _row(r)

    def list_runs(self) -> list[RunRow]:
        rows = self._db().execute("SELECT * FROM runs ORDER BY created_at DESC, id").fetchall()
        return [_row(r) for r in rows]

    def count_runs(self) -> int:
        count: int = self._db().execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        return count

    def size_bytes(self) -> int:
        """Pages in use (free pages left by deleted runs excluded), in bytes."""
        db = self._db()
        pages: int = db.execute("PRAGMA page_count").fetchone()[0]
        free: int = db.execute("PRAGMA freelist_count").fetchone()[0]
        size: int = db.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    def cursor(self, run_id: str) -> Cursor | None:
        return self._cursor(self._db(), run_id)

    def peek(self, run_id: str) -> Cursor | None:
        """cursor(), for an event loop to call itself (a primary-key read, ~10 µs, where a hop
        to a thread costs ~0.2 ms here): on a connection of this thread's that never waits
        for a lock. In WAL mode a read takes none, so the sqlite3.OperationalError ("database
        is locked") this raises instead of waiting is for the rare exception (a crashed
        writer's log being recovered): the caller then asks cursor() from a thread."""
        db: sqlite3.Connection | None = getattr(self._local, "peek_db", None)
        if db is None:  # the file, its schema and WAL mode are the constructor's
            db = self._local.peek_db = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        return self._cursor(db, run_id)

    @staticmethod
    def _cursor(db: sqlite3.Connection, run_id: str) -> Cursor | None:
        query = "SELECT n_records, status_version, status FROM runs WHERE id = ?"
        r = db.execute(query, (run_id,)).fetchone()
        return None if r is None else Cursor(r[0], r[1], RunStatus(r[2]))

    def transition(
        self,
        run_id: str,
        status: RunStatus,
        *,
        only_from: Sequence[str] = ACTIVE,
        error: str | None = None,
        final: dict[str, Any] | None = None,
        divergence: dict[str, Any] | None = None,
        steps_done: int | None = None,
    ) -> bool:
        """Move a run to `status` if it is in one of `only_from`; False if it was not (so a
        worker finishing late never overwrites a cancel, and a terminal state is final)."""
        now = time.time()
        marks = ", ".join("?" * len(only_from))
        with self._tx() as db:
            cur = db.execute(
                f"""UPDATE runs SET status = ?, status_version = status_version + 1,
                    started_at = CASE WHEN ? = 'running' THEN COALESCE(started_at, ?)
                        ELSE started_at END,
                    finished_at = CASE WHEN ? IN {sql_list(TERMINAL)} THEN ? ELSE finished_at END,
                    error = COALESCE(?, error), final = COALESCE(?, final),
                    divergence = COALESCE(?, divergence),
                    steps_done = COALESCE(?, steps_done)
                    WHERE id = ? AND status IN ({marks})""",
                (
                    status,
                    status,
                    now,
                    status,
                    now,
                    error,
                    None if final is None else to_json(final),
                    None if divergence is None else to_json(divergence),
                    steps_done,
                    run_id,
                    *only_from,
                ),
            )
            return cur.rowcount == 1

    def recover(self) -> list[str]:
        """At start-up: runs a dead server left queued, running or paused become `interrupted`."""
        ids = [
            r[0]
            for r in self._db().execute(f"SELECT id FROM runs WHERE status IN {sql_list(ACTIVE)}")
        ]
        for run_id in ids:
            self.transition(
                run_id, RunStatus.INTERRUPTED, error="the server stopped before this run finished"
            )
        return ids

    def delete_run(self, run_id: str) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM records WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM blocks WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM spectra WHERE run_id = ?", (run_id,))
            self._delete_boundaries(db, run_id)
            return db.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount == 1

    # -- records --------------------------------------------------------------------------------
    def append(self, run_id: str, records: Sequence[StepRecord]) -> None:
        """One batch, one transaction: the wire JSON of each record plus a block per metric."""
        if not records:
            return
        with self._tx() as db:
            start = db.execute("SELECT n_records FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
            db.executemany(
                "INSERT INTO records (run_id, seq, step, data) VALUES (?,?,?,?)",
                [(run_id, start + i, r.step, record_json(r)) for i, r in enumerate(records)],
            )
            steps = np.array([r.step for r in records], dtype=np.int64)
            blocks = [(STEP_COLUMN, steps.tobytes())]
            blocks += [
                (m, block.tobytes())
                for m, block in zip(METRICS, metric_blocks(records), strict=True)
            ]
            blocks += [(m, scalar_block(records, m).tobytes()) for m in SCALARS]
            db.executemany(
                "INSERT INTO blocks (run_id, metric, start_seq, n, data) VALUES (?,?,?,?,?)",
                [(run_id, m, start, len(records), blob) for m, blob in blocks],
            )
            db.execute(
                "UPDATE runs SET n_records = n_records + ?, steps_done = ? WHERE id = ?",
                (len(records), records[-1].step + 1, run_id),
            )

    def records_since(self, run_id: str, seq: int, limit: int) -> list[str]:
        """Wire JSON of records seq, seq+1, … (at most `limit`)."""
        rows = self._db().execute(
            "SELECT data FROM records WHERE run_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
            (run_id, seq, limit),
        )
        return [r[0] for r in rows]

    def records_page(self, run_id: str, seq: int, max_bytes: int) -> list[str]:
        """Records seq, seq+1, … while they total at most `max_bytes` of JSON (always at least
        one, if there is one): rows are read one at a time, so no more is ever held."""
        cursor = self._db().execute(
            "SELECT data FROM records WHERE run_id = ? AND seq >= ? ORDER BY seq", (run_id, seq)
        )
        page: list[str] = []
        size = 0
        try:
            for (data,) in cursor:
                if page and size + len(data) > max_bytes:
                    break
                page.append(data)
                size += len(data)
        finally:
            cursor.close()
        return page

    def iter_pages(self, run_id: str, max_bytes: int) -> Iterator[list[str]]:
        """Every record of a run, in pages of at most `max_bytes` (see `records_page`)."""
        seq = 0
        while page := self.records_page(run_id, seq, max_bytes):
            yield page
            seq += len(page)

    def iter_records(self, run_id: str, max_bytes: int = 2**20) -> Iterator[str]:
        for page in self.iter_pages(run_id, max_bytes):
            yield from page

    def put_spectrum(self, run_id: str, step: int, values: Sequence[float]) -> None:
        """One Jacobian spectrum (singular values, largest first), in its own transaction."""
        blob = np.asarray(values, dtype=np.float32).tobytes()
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO spectra (run_id, step, data) VALUES (?,?,?)",
                (run_id, step, blob),
            )

    def spectra(self, run_id: str) -> list[tuple[int, npt.NDArray[np.float32]]]:
        """(step, singular values) of every Jacobian spectrum the run recorded, by step."""
        rows = self._db().execute(
            "SELECT step, data FROM spectra WHERE run_id = ? ORDER BY step", (run_id,)
        )
        return [(int(r[0]), np.frombuffer(r[1], dtype=np.float32)) for r in rows]

    def column(self, run_id: str, metric: str, width: int) -> npt.NDArray[Any]:
        """All blocks of one column, in order: steps → [N] int64, a metric → [N, width]."""
        rows = (
            self._db()
            .execute(
                "SELECT data FROM blocks WHERE run_id = ? AND metric = ? ORDER BY start_seq",
                (run_id, metric),
            )
            .fetchall()
        )
        if metric == STEP_COLUMN:
            return np.frombuffer(b"".join(r[0] for r in rows), dtype=np.int64)
        flat = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32)
        return flat.reshape(-1, width)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error: the writer takes the lock up front so two
    writers queue on `timeout` instead of failing with a deadlock midway. The fence runs first,
    under that lock, so no claim can slip between the check and the write."""

    def __init__(self, db: sqlite3.Connection, fence: Callable[[sqlite3.Connection], None]) -> None:
        self.db, self.fence = db, fence

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.fence(self.db)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
