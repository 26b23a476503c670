"""Executors: where a run trains. The run manager queues runs and bounds how many train at once;
an executor starts each one and lets the manager stop, kill and wait for it.

Every executor delivers a run's records and its outcome to the server's store the same way, so
streaming, resume, export and restart recovery do not depend on where a run trained:
`local` (worker processes on this machine, the default) or `ray` (tasks on a Ray cluster).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from depthscope.service.control import RunControl
    from depthscope.service.store import RunStore

ExecutorKind = Literal["local", "ray"]
EXECUTORS: tuple[ExecutorKind, ...] = ("local", "ray")


class Job(Protocol):
    """One run on an executor. `start` happens outside the manager's lock; the others may be
    called from any thread, `stop` even before `start`."""

    def start(self) -> None:
        """Begin training; a job stopped before it started reports `cancelled` instead."""

    def stop(self) -> None:
        """Ask the run to stop soon, keeping its records (the graceful half of a cancel)."""

    def join(self, timeout: float | None) -> bool:
        """Wait up to `timeout` seconds (None: for ever); True once the job has ended."""

    def kill(self) -> None:
        """Stop it now, whatever it is doing."""

    def failure(self) -> str:
        """Once ended: why, for a run that ended without reporting its own outcome."""


class Executor(Protocol):
    kind: ExecutorKind
    can_pause: bool  # whether its runs take pause, advance and resume (a RunControl)

    def warm_up(self) -> None:
        """Pay start-up costs (imports, connections) now rather than on the first run."""

    def control(self) -> RunControl:
        """A new run's control (stop, pause, advance), made when it is queued; only called
        where `can_pause`."""

    def prepare(self, run_id: str, config_json: str, control: RunControl | None) -> Job:
        """A job for a run the manager has just marked `running`; cheap, nothing started."""

    def describe(self) -> dict[str, Any]:
        """What /api/health reports: {"kind": ...} plus what this executor knows of its
        capacity. Never blocks (health is answered on the event loop)."""

    def shutdown(self) -> None:
        """Let go of what the executor holds; runs still active stay so in the store (they
        become `interrupted` at the next start, exactly as after a crash)."""


def make_executor(
    kind: ExecutorKind, store: RunStore, ray_address: str | None = None, **options: Any
) -> Executor:
    """The executor named by the settings. Ray is imported only when asked for."""
    if kind == "ray":
        from depthscope.service.executors.ray import RayExecutor

        return RayExecutor(store, ray_address, **options)
    from depthscope.service.executors.local import LocalExecutor

    return LocalExecutor(store)
