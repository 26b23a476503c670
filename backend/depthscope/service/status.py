"""A run's status: the one vocabulary of the store, the run manager, the API and the stream."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run stands. Active states can still change; a terminal one is final."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"  # between steps, by request (POST /api/runs/{id}/pause)
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"

    @property
    def terminal(self) -> bool:
        return self not in ACTIVE


ACTIVE: tuple[RunStatus, ...] = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED)
TERMINAL: tuple[RunStatus, ...] = tuple(s for s in RunStatus if s not in ACTIVE)


def sql_list(statuses: tuple[RunStatus, ...]) -> str:
    """`('a', 'b')` for an SQL `IN`: the values are this module's constants, never user input."""
    return "(" + ", ".join(f"'{s.value}'" for s in statuses) + ")"
