"""Broadcaster: catch-up, live fan-out, per-subscriber cursors, byte-bounded events, shutdown."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from conftest import tiny_config
from depthscope import RunConfig, StepRecord, iter_records
from depthscope.records import METRICS, Histogram
from depthscope.service import stream as stream_module
from depthscope.service.store import RunStore
from depthscope.service.stream import MAX_EVENT_BYTES, Broadcaster, Position
from sse_starlette import ServerSentEvent

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def records() -> list[StepRecord]:
    return list(iter_records(RunConfig.model_validate(tiny_config(30))))


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    store = RunStore(tmp_path / "runs.db")
    store.create_run("r", {}, ["block1", "block2", "readout"])
    store.transition("r", "running", only_from=("queued",))
    return store


def big_record(step: int, layers: int = 201) -> StepRecord:
    """A record as wide as the largest config makes (depth 200, histograms): ~80 KB of JSON."""
    values: list[float | None] = [0.123456789 + i for i in range(layers)]
    histogram = Histogram(values, values, [[1000 + i] * 32 for i in range(layers)])
    return StepRecord(
        step=step,
        loss=0.5,
        accuracy=0.5,
        grad_norm_total=1.0,
        clipped=False,
        layers={m: values for m in METRICS},
        histograms={"act": histogram, "act_grad": histogram},
    )


def steps(events: list[ServerSentEvent]) -> list[int]:
    return [
        r["step"]
        for e in events
        if e.event == "records"
        for r in json.loads(str(e.data))["records"]
    ]


async def collect(stream: AsyncIterator[ServerSentEvent]) -> list[ServerSentEvent]:
    return [event async for event in stream]


async def take(stream: AsyncIterator[ServerSentEvent], n: int) -> list[ServerSentEvent]:
    return [await asyncio.wait_for(stream.__anext__(), 10) for _ in range(n)]


def test_position_parses_ids_and_ignores_foreign_ones() -> None:
    assert Position.parse("12-3") == Position(12, 3)
    assert Position.parse(None) == Position(0, -1)
    assert Position.parse("garbage") == Position(0, -1)
    assert Position.parse("1-2-3") == Position(0, -1)
    assert Position(7, 2).event_id == "7-2"


def test_position_clamps_claims_past_the_run(store: RunStore, records: list[StepRecord]) -> None:
    store.append("r", records[:10])
    run = store.get_run("r")
    assert run is not None
    assert Position(999, 999_999).clamp(run) == Position(10, run.status_version)
    assert Position(4, 0).clamp(run) == Position(4, 0)


async def test_broadcaster_late_joiner_gets_everything_then_end(
    store: RunStore, records: list[StepRecord]
) -> None:
    store.append("r", records)
    store.transition("r", "completed")
    events = await collect(Broadcaster(store).events("r", None))
    # a finished run: its records, then its final status, then end
    assert [e.event for e in events[-2:]] == ["status", "end"]
    assert {e.event for e in events[:-2]} == {"records"}
    assert steps(events) == list(range(30))
    assert events[-1].id == f"30-{store.get_run('r').status_version}"  # type: ignore[union-attr]
    resumed = await collect(Broadcaster(store).events("r", events[1].id))
    assert steps(events[:2]) + steps(resumed) == list(range(30))


async def test_stream_client_claiming_an_id_ahead_does_not_freeze_the_shared_tail(
    store: RunStore, records: list[StepRecord]
) -> None:
    """Regression: the first subscriber's Last-Event-ID set the shared tailer's position, so a
    claim ahead of the store left every later client without live records or `end`."""
    store.append("r", records[:10])
    broadcaster = Broadcaster(store)
    liar = broadcaster.events("r", "1000-999")  # clamped to (10, the current version)
    liar_first = asyncio.create_task(liar.__anext__())
    await asyncio.sleep(0.05)  # the liar is the first to watch: it started the run's tailer
    honest = broadcaster.events("r", None)
    honest_events = await take(honest, 2)  # records 0..9 and the status
    for i in range(10, 30, 5):
        store.append("r", records[i : i + 5])
        await asyncio.sleep(0.05)
    store.transition("r", "completed")
    honest_events += await asyncio.wait_for(collect(honest), 10)
    liar_events = [await asyncio.wait_for(liar_first, 10)]
    liar_events += await asyncio.wait_for(collect(liar), 10)
    assert steps(honest_events) == list(range(30)) and honest_events[-1].event == "end"
    assert steps(liar_events) == list(range(10, 30)) and liar_events[-1].event == "end"


async def test_stream_tailer_reads_from_a_thread_when_the_loops_read_would_wait(
    store: RunStore, records: list[StepRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    peeked, peek = [], store.peek

    def locked_every_other_time(run_id: str) -> object:
        peeked.append(run_id)
        if len(peeked) % 2:
            raise sqlite3.OperationalError("database is locked")
        return peek(run_id)

    monkeypatch.setattr(store, "peek", locked_every_other_time)
    stream = Broadcaster(store).events("r", None)
    got = await take(stream, 1)  # the status: the run has no records yet
    for i in range(0, 30, 5):
        store.append("r", records[i : i + 5])
        await asyncio.sleep(0.03)
    store.transition("r", "completed")
    got += await asyncio.wait_for(collect(stream), 10)
    assert steps(got) == list(range(30)) and got[-1].event == "end"
    assert len(peeked) >= 4  # the tailer asked on the loop first, each time


async def test_stream_sends_a_runs_end_without_waiting_out_the_coalescing(
    store: RunStore, records: list[StepRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Updates at most every 5 s here: the last records wait for company, but the run's final
    # status follows them within 50 ms and must not wait with them.
    monkeypatch.setattr(stream_module, "MIN_EVENT_INTERVAL_S", 5.0)
    stream = Broadcaster(store).events("r", None)
    got = await take(stream, 1)  # the status: no records yet
    store.append("r", records[:10])
    got += await take(stream, 1)  # the first update goes out at once
    store.append("r", records[10:])
    await asyncio.sleep(0.05)  # the tailer has seen them, and waits to coalesce
    store.transition("r", "completed")
    got += await asyncio.wait_for(collect(stream), 2)
    assert steps(got) == list(range(30)) and got[-1].event == "end"


@pytest.mark.parametrize("claimed", ["30-999999", "5-999999", "999999-0"])
async def test_stream_future_id_on_a_finished_run_still_ends(
    store: RunStore, records: list[StepRecord], claimed: str
) -> None:
    """Regression: a status version from the future kept a finished run's stream open
    forever (pings, and a tailer polling SQLite every 5 ms)."""
    store.append("r", records)
    store.transition("r", "completed")
    events = await asyncio.wait_for(collect(Broadcaster(store).events("r", claimed)), 5)
    assert events[-1].event == "end"
    start = min(Position.parse(claimed).records, 30)
    assert steps(events) == list(range(start, 30))


@pytest.mark.parametrize("layers", [201, 21])
async def test_stream_catch_up_events_are_sized_by_bytes(store: RunStore, layers: int) -> None:
    """Regression: catch-up events held up to 500 records (40 MB at depth 200 with
    histograms) in every subscriber that did not read. Now at most MAX_EVENT_BYTES of
    records, or one record alone when it is bigger (depth 200 with histograms: ~100 KB)."""
    wide = [big_record(i, layers) for i in range(40)]
    store.append("r", wide)
    store.transition("r", "completed")
    events = await collect(Broadcaster(store).events("r", None))
    batches = [json.loads(str(e.data))["records"] for e in events if e.event == "records"]
    for event, batch in zip([e for e in events if e.event == "records"], batches, strict=True):
        assert len(str(event.data)) <= MAX_EVENT_BYTES + 100 or len(batch) == 1
    assert steps(events) == list(range(40))
    assert len(batches) == 40 if layers == 201 else 1 < len(batches) < 40


async def test_stream_slow_subscriber_catches_up_from_the_store_never_dropped(
    store: RunStore, records: list[StepRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscriber that stops reading falls behind the tailer's window and later reads the
    store at its own pace: nobody waits for it, and it still gets everything, then `end`."""
    monkeypatch.setattr(stream_module, "WINDOW_BYTES", 3000)  # a window of a few records
    broadcaster = Broadcaster(store)
    fast, slow = broadcaster.events("r", None), broadcaster.events("r", None)
    fast_events, slow_events = await take(fast, 1), await take(slow, 1)  # their first status
    for i in range(30):
        store.append("r", records[i : i + 1])
        fast_events += await take(fast, 1)  # one update per record: the window turns over
    store.transition("r", "completed")
    fast_events += await asyncio.wait_for(collect(fast), 10)
    assert steps(fast_events) == list(range(30)) and fast_events[-1].event == "end"
    slow_events += await asyncio.wait_for(collect(slow), 10)
    assert steps(slow_events) == list(range(30)) and slow_events[-1].event == "end"


async def test_stream_tail_window_is_bounded_by_bytes(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "WINDOW_BYTES", 300_000)
    broadcaster = Broadcaster(store)
    watcher = broadcaster.events("r", None)
    await take(watcher, 1)
    for i in range(12):
        store.append("r", [big_record(i)])
        await take(watcher, 1)
    tail = broadcaster._tails["r"]
    assert tail.window_bytes <= 300_000 and len(tail.window) < 12
    assert tail.window_bytes == sum(len(u.payload) for u in tail.window)
    await watcher.aclose()


async def test_stream_ends_with_a_shutdown_event_when_the_server_closes(
    store: RunStore, records: list[StepRecord]
) -> None:
    """Regression: on SIGTERM open streams were cut mid-body; now each gets a final event."""
    store.append("r", records[:5])
    broadcaster = Broadcaster(store)
    signalled, closed = anyio.Event(), broadcaster.events("r", None)
    by_signal = broadcaster.events("r", None, signalled)
    await take(by_signal, 2)
    await take(closed, 2)
    signalled.set()  # what sse-starlette does when uvicorn is told to exit
    rest = await asyncio.wait_for(collect(by_signal), 5)
    assert [e.event for e in rest] == ["shutdown"] and rest[0].id == "5-1"
    assert rest[0].retry == stream_module.RECONNECT_MS
    await broadcaster.close()  # the lifespan's end: every remaining stream says goodbye too
    assert [e.event for e in await asyncio.wait_for(collect(closed), 5)] == ["shutdown"]


async def test_stream_deleted_run_ends_its_streams(
    store: RunStore, records: list[StepRecord]
) -> None:
    store.append("r", records[:5])
    watcher = Broadcaster(store).events("r", None)
    await take(watcher, 2)
    store.delete_run("r")
    assert await asyncio.wait_for(collect(watcher), 5) == []
