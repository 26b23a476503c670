"""Broadcaster: live Server-Sent Events per run — one store tailer per run, fanned out.

Each subscriber has its own cursor (records seen, status version seen). It catches up from the
store, then follows the run's tailer: one poller per watched run that reads the store from
*its own* position (where the store was when it started, never a client's claim), coalesces
new records into at most ~30 updates a second and keeps the latest few MiB of them in a window
shared by every subscriber. A subscriber that falls behind the window reads the store itself,
in pages of at most MAX_EVENT_BYTES, at the pace its connection takes them: the transport's
backpressure holds the rest in SQLite, so a client that never reads pins one page, never a
backlog, and nobody (training, other clients) waits for it. Event ids are
"<records delivered>-<status version>", so a resume has no gap and no duplicate; an id past
the run's actual state is clamped to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from sse_starlette import ServerSentEvent

from depthscope.service.store import Cursor, RunRow, RunStore, to_json

POLL_S = 0.005  # how often a tailer looks for news: small next to the 33 ms below
MIN_EVENT_INTERVAL_S = 1 / 30  # live records are coalesced to at most ~30 updates a second
MAX_EVENT_BYTES = 64 * 1024  # records JSON in one event (a single bigger record goes alone)
TAIL_PAGES_PER_TICK = 8  # a tailer behind the store reads up to this many events per tick
WINDOW_BYTES = 4 * 2**20  # the latest live updates a run's tailer keeps for its subscribers
RECONNECT_MS = 5000  # the `retry` a closing server asks EventSource clients to wait


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

    def clamp(self, run: RunRow) -> Position:
        """A claim past what the run has (records or a status version from the future) is
        clamped to the run's actual state: the client gets what follows, and `end` if done."""
        return Position(min(self.records, run.n_records), min(self.version, run.status_version))


@dataclass(frozen=True)
class Update:
    """Records start..start+len-1 and the run summary read just before them."""

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
    """Read news past `pos`, at most MAX_EVENT_BYTES of records. The summary is read before
    the records: a worker commits its last records before its final status, so a terminal
    summary means no record is missing."""
    run = await asyncio.to_thread(store.get_run, run_id)
    if run is None:
        return Update(pos.records, [], None)
    records: list[str] = []
    if run.n_records > pos.records:
        records = await asyncio.to_thread(store.records_page, run_id, pos.records, MAX_EVENT_BYTES)
    return Update(pos.records, records, run)


def records_payload(records: list[str]) -> str:
    return '{"records":[' + ",".join(records) + "]}"


def records_event(data: str, pos: Position) -> ServerSentEvent:
    return ServerSentEvent(data=data, event="records", id=pos.event_id)


def status_event(run: RunRow, pos: Position, kind: str = "status") -> ServerSentEvent:
    return ServerSentEvent(data=to_json(run.to_wire()), event=kind, id=pos.event_id)


def farewell_event(pos: Position) -> ServerSentEvent:
    """The last event of a stream the server closes while shutting down."""
    data = to_json({"reason": "the server is shutting down; reconnect to resume"})
    return ServerSentEvent(data=data, event="shutdown", id=pos.event_id, retry=RECONNECT_MS)


@dataclass(eq=False)
class _Subscriber:
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set on each tailer update
    leaving: bool = False  # the server is shutting down


@dataclass(eq=False)
class _Tail:
    run_id: str
    pos: Position  # how far the tailer has read the store
    run: RunRow | None  # the latest summary it read
    window: deque[Update] = field(default_factory=deque)  # contiguous, at most WINDOW_BYTES
    window_bytes: int = 0
    subscribers: set[_Subscriber] = field(default_factory=set)
    done: bool = False  # stopped: the run ended or went, nobody watches, or the server closes
    task: asyncio.Task[None] | None = None

    def publish(self, update: Update) -> None:
        if update.records:
            self.window.append(update)
            self.window_bytes += len(update.payload)
            while self.window_bytes > WINDOW_BYTES and len(self.window) > 1:
                self.window_bytes -= len(self.window.popleft().payload)
        self.run = update.run
        self.wake_all()

    def wake_all(self) -> None:
        for sub in self.subscribers:
            sub.wake.set()

    def behind(self, pos: Position) -> bool:
        return pos.records < self.pos.records or pos.version < self.pos.version

    def news(self, pos: Position) -> Update | None:
        """The window's update holding the record after `pos` (scanning from the newest, where
        caught-up subscribers are), a status-only update, or None: read the store."""
        if pos.records < self.pos.records:
            following = None
            for update in reversed(self.window):
                if update.start <= pos.records:
                    return update if update.end > pos.records else following
                following = update
            return None
        if pos.version < self.pos.version and self.run is not None:
            return Update(pos.records, [], self.run)
        return None


class Broadcaster:
    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._tails: dict[str, _Tail] = {}
        self._closed = False

    async def events(
        self, run_id: str, last_event_id: str | None, shutdown: anyio.Event | None = None
    ) -> AsyncIterator[ServerSentEvent]:
        """The SSE stream of one client: catch up, follow live, then `end` (or, when the
        server shuts down first, a `shutdown` event)."""
        run = await asyncio.to_thread(self.store.get_run, run_id)
        if run is None:
            return
        pos = Position.parse(last_event_id).clamp(run)
        sub, tail = _Subscriber(), self._watch(run)
        tail.subscribers.add(sub)
        relay = asyncio.create_task(_relay(shutdown, sub)) if shutdown is not None else None
        try:
            update: Update | None = await read_update(self.store, run_id, pos)
            while update is not None:
                pos, out, finished = _apply(update, pos)
                for event in out:
                    yield event
                if finished:
                    return
                update = await self._next(tail, sub, pos, stalled=not out)
            yield farewell_event(pos)
        finally:
            tail.subscribers.discard(sub)
            if relay is not None:
                relay.cancel()

    async def _next(
        self, tail: _Tail, sub: _Subscriber, pos: Position, stalled: bool
    ) -> Update | None:
        """What this subscriber reads next: from the tailer's window, from the store when it
        is behind the window, or, when it has everything, after the tailer's next update.
        None: the server is closing. `stalled`: the last update brought nothing new."""
        while not sub.leaving and not self._closed:
            if not stalled:
                if tail.done:
                    return await read_update(self.store, tail.run_id, pos)
                news = tail.news(pos)
                if news is not None:
                    return news
                if tail.behind(pos):
                    return await read_update(self.store, tail.run_id, pos)
            elif tail.done:
                return None  # closed under a run that is still going
            sub.wake.clear()
            await sub.wake.wait()
            stalled = False
        return None

    def _watch(self, run: RunRow) -> _Tail:
        start = Position(run.n_records, run.status_version)  # the store's, never a client's
        if run.terminal:  # nothing will change: its subscribers read the store alone
            return _Tail(run.id, start, run, done=True)
        tail = self._tails.get(run.id)
        if tail is None or tail.done:
            tail = self._tails[run.id] = _Tail(run.id, start, run)
            tail.task = asyncio.create_task(self._follow(tail), name=f"tail-{run.id}")
        return tail

    async def _follow(self, tail: _Tail) -> None:
        """The one poller of a run's records while anyone is watching."""
        last_emit = 0.0
        try:
            while tail.subscribers and not self._closed:
                await asyncio.sleep(POLL_S)
                cursor = await self._cursor(tail.run_id)
                if cursor is None:
                    tail.publish(Update(tail.pos.records, [], None))
                    return
                if (cursor.n_records, cursor.status_version) == (
                    tail.pos.records,
                    tail.pos.version,
                ):
                    if cursor.status.terminal:
                        return  # everything is read: subscribers finish from the window or store
                    continue
                await self._coalesce(tail.run_id, cursor, last_emit)
                last_emit = time.monotonic()
                for _ in range(TAIL_PAGES_PER_TICK):
                    update = await read_update(self.store, tail.run_id, tail.pos)
                    tail.pos, _, _ = _apply(update, tail.pos)
                    tail.publish(update)
                    if update.run is None or tail.pos.records >= update.run.n_records:
                        break
        finally:
            tail.done = True
            if self._tails.get(tail.run_id) is tail:
                del self._tails[tail.run_id]
            tail.wake_all()

    async def _coalesce(self, run_id: str, cursor: Cursor, last_emit: float) -> None:
        """Wait out the rest of MIN_EVENT_INTERVAL_S since the last update, to gather what
        else comes meanwhile; but a run's last news (its final status, which follows its last
        records) goes out as soon as it is in: nothing follows it, and its subscribers are
        waiting for `end`."""
        while not cursor.status.terminal:
            wait = last_emit + MIN_EVENT_INTERVAL_S - time.monotonic()
            if wait <= 0:
                return
            await asyncio.sleep(min(wait, POLL_S))
            latest = await self._cursor(run_id)
            if latest is None:
                return  # deleted: the update says so
            cursor = latest

    async def _cursor(self, run_id: str) -> Cursor | None:
        """How far the run has got: read on the event loop itself, unless that would wait."""
        try:
            return self.store.peek(run_id)
        except sqlite3.OperationalError:
            return await asyncio.to_thread(self.store.cursor, run_id)

    async def close(self) -> None:
        """Stop every tailer; their subscribers get a `shutdown` event and their streams end."""
        self._closed = True
        tasks = [t.task for t in self._tails.values() if t.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _relay(shutdown: anyio.Event, sub: _Subscriber) -> None:
    await shutdown.wait()
    sub.leaving = True
    sub.wake.set()


def _apply(update: Update, pos: Position) -> tuple[Position, list[ServerSentEvent], bool]:
    """The events `update` means for a client at `pos`, its new position, and whether the
    stream is over. Records it already has are skipped, so overlaps never duplicate."""
    events: list[ServerSentEvent] = []
    skip = max(0, pos.records - update.start)
    fresh = update.records[skip:]
    if fresh and update.start <= pos.records:
        pos = Position(pos.records + len(fresh), pos.version)
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
