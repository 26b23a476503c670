"""The store's decision-boundary tables: one layout per run, one probability grid per frame.

A run on 2-D inputs gets one `boundary_layouts` row (grid axes, training points, class count,
as JSON: written once, read with every frame) and one `boundaries` row per frame, keyed by run
and step: the grid as float32 bytes, and for more than two classes the predicted class per cell
as uint8 bytes. RunStore mixes this in, so the frames share its connection and transactions.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

BOUNDARY_SCHEMA = """
CREATE TABLE IF NOT EXISTS boundary_layouts (
    run_id TEXT PRIMARY KEY, data TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS boundaries (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, prob BLOB NOT NULL, classes BLOB,
    PRIMARY KEY (run_id, step)) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class StoredBoundary:
    """One frame as read back: the run's layout, the frame's step, its grids."""

    layout: dict[str, Any]  # {"x", "y", "points": {"x", "y", "label"}, "n_classes"}
    step: int
    prob: npt.NDArray[np.float32]  # [len(y), len(x)]
    classes: npt.NDArray[np.uint8] | None  # same shape; None for two classes


class BoundaryTables:
    """Mixed into RunStore, which provides the connection and the write transaction."""

    def _db(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def put_boundary_layout(self, run_id: str, layout: dict[str, Any]) -> None:
        text = json.dumps(layout, allow_nan=False, separators=(",", ":"))
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO boundary_layouts (run_id, data) VALUES (?, ?)",
                (run_id, text),
            )

    def put_boundary(
        self,
        run_id: str,
        step: int,
        prob: npt.NDArray[Any],
        classes: npt.NDArray[Any] | None = None,
    ) -> None:
        """One frame; a second frame at the same step replaces the first."""
        blob = np.ascontiguousarray(prob, dtype=np.float32).tobytes()
        labels = None if classes is None else np.asarray(classes, dtype=np.uint8).tobytes()
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO boundaries (run_id, step, prob, classes) VALUES (?,?,?,?)",
                (run_id, step, blob, labels),
            )

    def boundary_steps(self, run_id: str) -> list[int]:
        rows = self._db().execute(
            "SELECT step FROM boundaries WHERE run_id = ? ORDER BY step", (run_id,)
        )
        return [r[0] for r in rows]

    def boundary_at(self, run_id: str, step: int | None = None) -> StoredBoundary | None:
        """The frame at the latest step at or before `step` (None: the latest of all)."""
        db = self._db()
        layout = db.execute(
            "SELECT data FROM boundary_layouts WHERE run_id = ?", (run_id,)
        ).fetchone()
        limit = 2**62 if step is None else step
        row = db.execute(
            "SELECT step, prob, classes FROM boundaries WHERE run_id = ? AND step <= ? "
            "ORDER BY step DESC LIMIT 1",
            (run_id, limit),
        ).fetchone()
        if layout is None or row is None:
            return None
        data = json.loads(layout[0])
        shape = (len(data["y"]), len(data["x"]))
        prob = np.frombuffer(row[1], dtype=np.float32).reshape(shape)
        classes = None if row[2] is None else np.frombuffer(row[2], dtype=np.uint8).reshape(shape)
        return StoredBoundary(data, row[0], prob, classes)

    def has_boundary_layout(self, run_id: str) -> bool:
        row = (
            self._db()
            .execute("SELECT 1 FROM boundary_layouts WHERE run_id = ?", (run_id,))
            .fetchone()
        )
        return row is not None

    @staticmethod
    def _delete_boundaries(db: sqlite3.Connection, run_id: str) -> None:
        db.execute("DELETE FROM boundaries WHERE run_id = ?", (run_id,))
        db.execute("DELETE FROM boundary_layouts WHERE run_id = ?", (run_id,))
