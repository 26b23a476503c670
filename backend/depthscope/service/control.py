"""RunControl: the server's hold on one run's worker — stop, pause, resume, advance N steps.

All in shared memory made by the run manager's multiprocessing context and handed to the
worker process when it starts: a stop Event, a step allowance (one shared integer) and two
Events, one to wake a paused worker and one by which the worker says it is parked. The worker
reads the allowance before every step (a lock and an integer, about a microsecond); it never
polls the database for orders.

The allowance: RUN (-1) trains freely; 0 is paused; N > 0 trains N more steps, then pauses.
"""

from __future__ import annotations

from multiprocessing.context import BaseContext
from multiprocessing.sharedctypes import Synchronized

RUN = -1
MAX_ADVANCE = 100_000  # steps one advance may ask for (the most a run can have)


class RunControl:
    def __init__(self, ctx: BaseContext) -> None:
        self.stop = ctx.Event()
        self.wake = ctx.Event()  # set by the server after any change, cleared by the worker
        self.parked = ctx.Event()  # set by the worker while it waits, paused
        self.allowance: Synchronized[int] = ctx.Value("q", RUN)

    # -- the server's side -------------------------------------------------------------------
    def pause(self) -> None:
        with self.allowance.get_lock():
            self.allowance.value = 0
        self.wake.set()

    def resume(self) -> None:
        with self.allowance.get_lock():
            self.allowance.value = RUN
        self.wake.set()

    def advance(self, steps: int) -> bool:
        """Allow `steps` more steps of a paused run (added to any still allowed); False, and
        nothing changes, when the run is not paused."""
        with self.allowance.get_lock():
            if self.allowance.value == RUN:
                return False
            self.allowance.value = min(self.allowance.value + steps, MAX_ADVANCE)
        self.wake.set()
        return True

    def cancel(self) -> None:
        self.stop.set()
        self.wake.set()

    @property
    def paused(self) -> bool:
        """Whether the server has asked for a pause (the worker may not have parked yet)."""
        return self.allowance.value != RUN

    def wait_parked(self, timeout: float) -> bool:
        return self.parked.wait(timeout)

    # -- the worker's side -------------------------------------------------------------------
    def is_set(self) -> bool:
        """Whether the run must stop (the StopFlag protocol the worker already takes)."""
        return self.stop.is_set()

    def take_step(self) -> bool:
        """May the worker run its next step? Counts the step against an allowance."""
        with self.allowance.get_lock():
            value = self.allowance.value
            if value > 0:
                self.allowance.value = value - 1
            return value != 0

    def sleep(self, timeout: float) -> None:
        """Wait for news from the server (or `timeout`), then take it."""
        self.wake.wait(timeout)
        self.wake.clear()
