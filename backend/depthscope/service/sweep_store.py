"""Sweeps kept and run: their tables beside the runs in the same SQLite file, cells submitted as
ordinary runs, and the read-backs (a sweep with its cells' statuses and summaries).

A sweep row holds its spec; each cell is a row naming its run (runs.sweep_id points back).
Statuses are never stored for a sweep: they are derived from its cells' runs on every read, so
a restart that marks unfinished runs `interrupted` makes their sweep `interrupted` too. A cell's
summary is computed from its stored records and kept once its run has ended.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from depthscope.service.runs import RunManager
from depthscope.service.status import TERMINAL, RunStatus
from depthscope.service.store import RunStore, to_json
from depthscope.service.sweeps import (
    Cell,
    Evaluation,
    Problem,
    SweepSpec,
    SweepSpecError,
    empty_summary,
    expand,
    summarize,
    sweep_status,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY, name TEXT, spec TEXT NOT NULL, created_at REAL NOT NULL,
    cancelled INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS sweep_cells (
    sweep_id TEXT NOT NULL, idx INTEGER NOT NULL, run_id TEXT NOT NULL, vals TEXT NOT NULL,
    summary TEXT, PRIMARY KEY (sweep_id, idx)) WITHOUT ROWID;
"""
# What a summary reads from a run's records (the wire JSON), without parsing them in Python.
_EVALUATIONS = """SELECT step, json_extract(data, '$.val_loss'),
    json_extract(data, '$.val_accuracy') FROM records
    WHERE run_id = ? AND json_type(data, '$.val_loss') IS NOT NULL ORDER BY seq"""
_LAST_LOSS = (
    "SELECT json_extract(data, '$.loss') FROM records WHERE run_id = ? ORDER BY seq DESC LIMIT 1"
)
_STEP0_GRADS = """SELECT json_extract(data, '$.layers.act_grad_norm') FROM records
    WHERE run_id = ? AND seq = 0 AND step = 0"""
# The cells of a sweep with their runs' state; a deleted run leaves NULLs.
_CELLS = """SELECT c.idx, c.run_id, c.vals, c.summary, r.status, r.status_version
    FROM sweep_cells c LEFT JOIN runs r ON r.id = c.run_id WHERE c.sweep_id = ? ORDER BY c.idx"""


@dataclass(frozen=True)
class CellState:
    index: int
    run_id: str
    status: str | None  # None: the cell's run was deleted
    version: int


class Sweeps:
    """The sweep service: create, read, cancel and delete sweeps; the HTTP layer's one door."""

    def __init__(self, store: RunStore, manager: RunManager, max_work: float) -> None:
        self.store, self.manager, self.max_work = store, manager, max_work
        store.connection().executescript(_SCHEMA)

    # -- changes ------------------------------------------------------------------------------
    def create(self, spec: SweepSpec) -> dict[str, Any]:
        """Validate and expand `spec`, queue its cells; SweepSpecError, QueueFullError and
        StoreFullError say why not (and then nothing was created)."""
        cells = expand(spec, self.max_work)
        _check_device(spec, cells)
        sweep_id = secrets.token_hex(6)
        rows = self.manager.submit_cells([c.config for c in cells], sweep_id)
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO sweeps (id, name, spec, created_at) VALUES (?,?,?,?)",
                (sweep_id, spec.name, to_json(spec.to_wire()), time.time()),
            )
            db.executemany(
                "INSERT INTO sweep_cells (sweep_id, idx, run_id, vals) VALUES (?,?,?,?)",
                [
                    (sweep_id, c.index, r.id, to_json(c.values))
                    for c, r in zip(cells, rows, strict=True)
                ],
            )
        view = self.view(sweep_id)
        assert view is not None
        return view

    def cancel(self, sweep_id: str) -> dict[str, Any] | None:
        """Queued cells are cancelled at once, running ones within a second."""
        with self.store.transaction() as db:
            if (
                db.execute("UPDATE sweeps SET cancelled = 1 WHERE id = ?", (sweep_id,)).rowcount
                == 0
            ):
                return None
        self._stop_cells(sweep_id)
        return self.view(sweep_id)

    def delete(self, sweep_id: str) -> bool:
        """The sweep and every run of its cells, which are stopped first."""
        if self._row(sweep_id) is None:
            return False
        run_ids = self._stop_cells(sweep_id)
        for run_id in run_ids:
            self.store.delete_run(run_id)
        with self.store.transaction() as db:
            db.execute("DELETE FROM sweep_cells WHERE sweep_id = ?", (sweep_id,))
            db.execute("DELETE FROM sweeps WHERE id = ?", (sweep_id,))
        return True

    def _stop_cells(self, sweep_id: str) -> list[str]:
        states = self.cell_states(sweep_id) or []
        active = [c.run_id for c in states if c.status is not None and c.status not in TERMINAL]
        self.manager.cancel_many(active)
        return [c.run_id for c in states]

    # -- reads --------------------------------------------------------------------------------
    def view(self, sweep_id: str) -> dict[str, Any] | None:
        """The sweep with every cell's status and summary (GET /api/sweeps/{id})."""
        row = self._row(sweep_id)
        if row is None:
            return None
        spec = json.loads(row["spec"])
        cells = [
            self._cell(sweep_id, r, spec["target_accuracy"]) for r in self._cell_rows(sweep_id)
        ]
        return {**self._head(row, spec, [c["status"] for c in cells]), "cells": cells}

    def list_sweeps(self) -> list[dict[str, Any]]:
        """Every sweep, newest first, without its cells."""
        db = self.store.connection()
        statuses: dict[str, list[str | None]] = {}
        for sweep_id, status in db.execute(
            "SELECT c.sweep_id, r.status FROM sweep_cells c LEFT JOIN runs r ON r.id = c.run_id"
        ):
            statuses.setdefault(sweep_id, []).append(status)
        rows = db.execute("SELECT * FROM sweeps ORDER BY created_at DESC, id").fetchall()
        return [self._head(r, json.loads(r["spec"]), statuses.get(r["id"], [])) for r in rows]

    def cell_states(self, sweep_id: str) -> list[CellState] | None:
        """What the event stream polls: each cell's run status and its version."""
        if self._row(sweep_id) is None:
            return None
        return [
            CellState(r["idx"], r["run_id"], r["status"], r["status_version"] or 0)
            for r in self._cell_rows(sweep_id)
        ]

    def cells(self, sweep_id: str, indices: set[int]) -> list[dict[str, Any]]:
        row = self._row(sweep_id)
        if row is None:
            return []
        target = json.loads(row["spec"])["target_accuracy"]
        rows = [r for r in self._cell_rows(sweep_id) if r["idx"] in indices]
        return [self._cell(sweep_id, r, target) for r in rows]

    # -- internals ----------------------------------------------------------------------------
    def _row(self, sweep_id: str) -> Any:
        return (
            self.store.connection()
            .execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,))
            .fetchone()
        )

    def _cell_rows(self, sweep_id: str) -> list[Any]:
        return self.store.connection().execute(_CELLS, (sweep_id,)).fetchall()

    def _head(self, row: Any, spec: dict[str, Any], statuses: list[str | None]) -> dict[str, Any]:
        counts = Counter("deleted" if s is None else s for s in statuses)
        return {
            "id": row["id"],
            "name": row["name"],
            "status": sweep_status(statuses, bool(row["cancelled"])),
            "created_at": _iso(row["created_at"]),
            "target_accuracy": spec["target_accuracy"],
            "base": spec["base"],
            "axes": spec["axes"],
            "n_cells": len(statuses),
            "counts": dict(counts),
        }

    def _cell(self, sweep_id: str, row: Any, target: float | None) -> dict[str, Any]:
        status: str | None = row["status"]
        if row["summary"] is not None:
            summary = json.loads(row["summary"])
        elif status is None or status == RunStatus.QUEUED:
            summary = empty_summary()
        else:
            summary = self._summarize(row["run_id"], status, target)
            if status in TERMINAL:  # its records are complete: keep the summary
                with self.store.transaction() as db:
                    db.execute(
                        "UPDATE sweep_cells SET summary = ? WHERE sweep_id = ? AND idx = ?",
                        (to_json(summary), sweep_id, row["idx"]),
                    )
        return {
            "index": row["idx"],
            "values": json.loads(row["vals"]),
            "run_id": row["run_id"],
            "status": "deleted" if status is None else status,
            "summary": summary,
        }

    def _summarize(self, run_id: str, status: str, target: float | None) -> dict[str, Any]:
        """summarize() over a run's stored records, read with SQLite's JSON functions."""
        db = self.store.connection()
        evaluations = [Evaluation(*r) for r in db.execute(_EVALUATIONS, (run_id,))]
        last = db.execute(_LAST_LOSS, (run_id,)).fetchone()
        first = db.execute(_STEP0_GRADS, (run_id,)).fetchone()
        grads = None if first is None or first[0] is None else json.loads(first[0])
        return summarize(status, None if last is None else last[0], evaluations, grads, target)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _check_device(spec: SweepSpec, cells: list[Cell]) -> None:
    """As for a single run: a cell on CUDA needs a server with a CUDA device."""
    import torch

    if torch.cuda.is_available() or all(c.config.training.device == "cpu" for c in cells):
        return
    loc: tuple[str | int, ...] = ("base", "training", "device")
    for i, axis in enumerate(spec.axes):
        if axis.field == "training.device":
            loc = ("axes", i, "values", axis.values.index("cuda"))
    msg = "training.device is 'cuda' but this server has no CUDA device; use 'cpu'"
    raise SweepSpecError([Problem(loc, msg, "cuda")])
