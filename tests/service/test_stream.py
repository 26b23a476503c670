"""Broadcaster: catch-up, live fan-out, dropping a slow subscriber, gap-free resume."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import tiny_config
from depthscope import RunConfig, StepRecord, iter_records
from depthscope.service.store import RunStore
from depthscope.service.stream import Broadcaster, Position
from sse_starlette import ServerSentEvent

pytestmark = pytest.mark.anyio


@pytest.fixture
def records() -> list[StepRecord]:
    return list(iter_records(RunConfig.model_validate(tiny_config(30))))


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    store = RunStore(tmp_path / "runs.db")
    store.create_run("r", {}, ["block1", "block2", "readout"])
    store.transition("r", "running", only_from=("queued",))
    return store


def steps(events: list[ServerSentEvent]) -> list[int]:
    return [
        r["step"]
        for e in events
        if e.event == "records"
        for r in json.loads(str(e.data))["records"]
    ]


async def collect(stream: AsyncIterator[ServerSentEvent]) -> list[ServerSentEvent]:
    return [event async for event in stream]


def test_position_parses_ids_and_ignores_foreign_ones() -> None:
    assert Position.parse("12-3") == Position(12, 3)
    assert Position.parse(None) == Position(0, -1)
    assert Position.parse("garbage") == Position(0, -1)
    assert Position(7, 2).event_id == "7-2"


async def test_broadcaster_late_joiner_gets_everything_then_end(
    store: RunStore, records: list[StepRecord]
) -> None:
    store.append("r", records)
    store.transition("r", "completed")
    events = await collect(Broadcaster(store, 8).events("r", None))
    # a finished run: its records, then its final status, then end
    assert [e.event for e in events[-2:]] == ["status", "end"]
    assert {e.event for e in events[:-2]} == {"records"}
    assert steps(events) == list(range(30))
    assert events[-1].id == f"30-{store.get_run('r').status_version}"  # type: ignore[union-attr]
    resumed = await collect(Broadcaster(store, 8).events("r", events[1].id))
    assert steps(events[:2]) + steps(resumed) == list(range(30))


async def test_broadcaster_drops_slow_subscriber_never_data(
    store: RunStore, records: list[StepRecord]
) -> None:
    broadcaster = Broadcaster(store, buffer=1)
    fast_stream = broadcaster.events("r", None)
    fast = [await fast_stream.__anext__()]  # its first status
    slow = broadcaster.events("r", None)
    slow_events = [await slow.__anext__()]  # its first status; it stops reading after one more
    next_event = asyncio.create_task(slow.__anext__())
    for i in range(0, 30, 3):  # ten batches; the next is appended once the fast one has this
        store.append("r", records[i : i + 3])  # one, so the tailer passes on ten updates
        fast.append(await asyncio.wait_for(fast_stream.__anext__(), 10))
    store.transition("r", "completed")
    fast += await asyncio.wait_for(collect(fast_stream), 10)
    assert steps(fast) == list(range(30)) and fast[-1].event == "end"
    slow_events.append(await next_event)
    slow_events += await collect(slow)  # drains its one buffered update, then ends: dropped
    assert slow_events[-1].event != "end" and steps(slow_events) != list(range(30))
    rest = await collect(broadcaster.events("r", slow_events[-1].id))
    assert steps(slow_events) + steps(rest) == list(range(30)) and rest[-1].event == "end"
