"""Broadcaster: live Server-Sent Events per run — one store tailer per run, fanned out.

Every subscriber first catches up from the store (from its Last-Event-ID), then follows the
run's tailer, which polls the store, coalesces new records into at most ~30 `records` events a
second and hands each to every subscriber's bounded queue. A subscriber whose queue is full is
dropped (its stream ends; the browser reconnects with Last-Event-ID and catches up from the
store), so a slow client never holds back data, other clients or training. Event ids are
"<records delivered>-<status version>", so a resume has no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sse_starlette import ServerSentEvent

from depthscope.service.store import RunRow, RunStore, to_json

POLL_S = 0.005  # how often a tailer looks for new records: small next to the 33 ms below
MIN_EVENT_INTERVAL_S = 1 / 30  # records events are coalesced to at most ~30 a second
MAX_RECORDS_PER_EVENT = 500  # a long backlog goes out in several events


@dataclass(frozen=True)
class Position:
    """What a client has seen: records 0..records-1 and status version `version`."""

    records: int = 0
    version: int = -1  # -1: no status seen yet

    @property
    def event_id(self) -> str:
        return f"{self.records}-{self.version}"

    @classmethod
    def parse(cls, last_event_id: str | None) -> Position:
        try:
            records, version = (last_event_id or "").split("-")
            return cls(max(0, int(records)), max(-1, int(version)))
        except ValueError:
            return cls()  # no or foreign id: start from the beginning


@dataclass(frozen=True)
class Update:
    """One tick of news: records start..start+len-1 and, if it changed, the run summary."""

    start: int
    records: list[str]
    run: RunRow | None  # None when the run was deleted

    @property
    def end(self) -> int:
        return self.start + len(self.records)

    @functools.cached_property
    def payload(self) -> str:
        """The `records` event data, built once however many subscribers receive it."""
        return records_payload(self.records)


async def read_update(store: RunStore, run_id: str, pos: Position) -> Update:
    """Read news past `pos`. The summary is read before the records: the worker commits its
    last records before its final status, so a terminal summary means no record is missing."""
    run = await asyncio.to_thread(store.get_run, run_id)
    if run is None:
        return Update(pos.records, [], None)
    records: list[str] = []
    if run.n_records > pos.records:
        records = await asyncio.to_thread(
            store.records_since, run_id, pos.records, MAX_RECORDS_PER_EVENT
        )
    return Update(pos.records, records, run)


def records_payload(records: list[str]) -> str:
    return '{"records":[' + ",".join(records) + "]}"


def records_event(data: str, pos: Position) -> ServerSentEvent:
    return ServerSentEvent(data=data, event="records", id=pos.event_id)


def status_event(run: RunRow, pos: Position, kind: str = "status") -> ServerSentEvent:
    return ServerSentEvent(data=to_json(run.to_wire()), event=kind, id=pos.event_id)


@dataclass(eq=False)
class _Subscriber:
    queue: asyncio.Queue[Update | None]  # None: the tailer has stopped
    dropped: bool = False


@dataclass(eq=False)
class _Tail:
    run_id: str
    pos: Position
    subscribers: set[_Subscriber] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class Broadcaster:
    def __init__(self, store: RunStore, buffer: int) -> None:
        self.store, self.buffer = store, buffer
        self._tails: dict[str, _Tail] = {}

    async def events(
        self, run_id: str, last_event_id: str | None
    ) -> AsyncIterator[ServerSentEvent]:
        """The SSE stream of one client: catch up, then follow live, then `end`."""
        pos = Position.parse(last_event_id)
        sub = _Subscriber(asyncio.Queue(self.buffer))
        joined = refill = False
        try:
            while True:
                if joined and not refill:
                    if sub.dropped and sub.queue.empty():
                        return  # too slow: the client resumes from its Last-Event-ID
                    queued = await sub.queue.get()
                    if queued is None:
                        return  # the tailer stopped early: the client resumes from the store
                    update = queued
                    if update.start > pos.records:  # never expected; fill from the store
                        update = await read_update(self.store, run_id, pos)
                else:  # catching up from the store
                    update = await read_update(self.store, run_id, pos)
                refill = False
                pos, out, finished = _apply(update, pos)
                for event in out:
                    yield event
                if finished:
                    return
                if not joined and not update.records:
                    # Caught up: follow the tailer, and read the store once more, since the
                    # tailer may have passed news along just before we joined.
                    self._join(run_id, sub, pos)
                    joined = refill = True
        finally:
            self._leave(run_id, sub)

    def _join(self, run_id: str, sub: _Subscriber, pos: Position) -> None:
        tail = self._tails.get(run_id)
        if tail is None:
            tail = self._tails[run_id] = _Tail(run_id, pos)
            tail.task = asyncio.create_task(self._follow(tail), name=f"tail-{run_id}")
        tail.subscribers.add(sub)

    def _leave(self, run_id: str, sub: _Subscriber) -> None:
        tail = self._tails.get(run_id)
        if tail is not None:
            tail.subscribers.discard(sub)

    async def _follow(self, tail: _Tail) -> None:
        """The one poller of a run's records while anyone is watching."""
        last_emit = 0.0
        try:
            while tail.subscribers:
                await asyncio.sleep(POLL_S)
                wait = last_emit + MIN_EVENT_INTERVAL_S - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                update = await read_update(self.store, tail.run_id, tail.pos)
                run = update.run
                stale = run is not None and run.status_version <= tail.pos.version
                if stale and not update.records:
                    continue
                last_emit = time.monotonic()
                tail.pos, _, finished = _apply(update, tail.pos)
                for sub in list(tail.subscribers):
                    try:
                        sub.queue.put_nowait(update)
                    except asyncio.QueueFull:
                        sub.dropped = True
                        tail.subscribers.discard(sub)
                if finished:
                    return
        finally:
            if self._tails.get(tail.run_id) is tail:
                del self._tails[tail.run_id]
            for sub in tail.subscribers:  # left behind by an error or close(): let them go
                sub.dropped = True
                with contextlib.suppress(asyncio.QueueFull):
                    sub.queue.put_nowait(None)

    async def close(self) -> None:
        tasks = [t.task for t in self._tails.values() if t.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _apply(update: Update, pos: Position) -> tuple[Position, list[ServerSentEvent], bool]:
    """The events `update` means for a client at `pos`, its new position, and whether the
    stream is over. Records it already has are skipped, so overlaps never duplicate."""
    events: list[ServerSentEvent] = []
    skip = max(0, pos.records - update.start)
    fresh = update.records[skip:]
    if fresh:
        pos = Position(max(pos.records, update.start) + len(fresh), pos.version)
        data = update.payload if skip == 0 else records_payload(fresh)
        events.append(records_event(data, pos))
    run = update.run
    if run is None:
        return pos, events, True
    complete = pos.records >= run.n_records  # a final status waits for the last records
    if run.status_version > pos.version and (complete or not run.terminal):
        pos = Position(pos.records, run.status_version)
        events.append(status_event(run, pos))
    if run.terminal and complete and pos.version == run.status_version:
        events.append(status_event(run, pos, "end"))
        return pos, events, True
    return pos, events, False
