"""The live stream against a real uvicorn process: order, resume, slow clients, restarts."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Event, ServerProcess, read_events, tiny_config

pytestmark = pytest.mark.server


def create(url: str, steps: int) -> str:
    response = httpx.post(f"{url}/api/runs", json=tiny_config(steps), timeout=10)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


def wait_for(url: str, run_id: str, check: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = httpx.get(f"{url}/api/runs/{run_id}", timeout=10).json()
        if check(run):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never got there: {run}")


def stream(url: str, run_id: str, last_id: str | None = None, limit: int = 0) -> list[Event]:
    """All events to `end` (or the first `limit` events)."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    events: list[Event] = []
    with httpx.stream(
        "GET", f"{url}/api/runs/{run_id}/events", headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in read_events(response):
            events.append(event)
            if len(events) == limit:
                break
    return events


def steps_of(events: list[Event]) -> list[int]:
    return [
        r["step"] for e in events if e.event == "records" for r in json.loads(e.data)["records"]
    ]


def test_server_events_full_lifecycle_in_order(module_server: str) -> None:
    run_id = create(module_server, 40)
    events = stream(module_server, run_id)
    assert events[0].event == "status" and events[-1].event == "end"
    assert steps_of(events) == list(range(40))  # every record once, in order
    statuses = [json.loads(e.data)["status"] for e in events if e.event == "status"]
    assert statuses[-1] == "completed" and len(statuses) == len(set(statuses))
    assert json.loads(events[-1].data)["status"] == "completed"
    ids = [tuple(map(int, e.id.split("-"))) for e in events]
    assert all(e.id for e in events) and ids == sorted(ids)
    last_status = max(i for i, e in enumerate(events) if e.event == "status")
    assert all(
        e.event != "records" for e in events[last_status:]
    )  # records before the final status


def test_server_events_resume_with_last_event_id_has_no_gap_or_duplicate(
    module_server: str,
) -> None:
    run_id = create(module_server, 400)
    first = stream(module_server, run_id, limit=3)  # leave mid-run
    rest = stream(module_server, run_id, last_id=first[-1].id)
    steps = steps_of(first) + steps_of(rest)
    assert steps == list(range(400))
    assert rest[-1].event == "end"
    statuses = [json.loads(e.data)["status"] for e in first + rest if e.event == "status"]
    assert len(statuses) == len(set(statuses))  # no status repeated either
    again = stream(module_server, run_id)  # a late joiner gets everything
    assert steps_of(again) == list(range(400))


def test_server_silent_subscriber_does_not_stall_training(module_server: str) -> None:
    run_id = create(module_server, 1500)
    host, port = module_server.removeprefix("http://").split(":")
    silent = socket.create_connection((host, int(port)))
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = f"GET /api/runs/{run_id}/events HTTP/1.1\r\nHost: {host}\r\n\r\n"
    silent.sendall(request.encode())  # … and never read a byte
    try:
        run = wait_for(module_server, run_id, lambda r: r["terminal"], timeout=90)
        assert run["status"] == "completed" and run["records"] == 1500
        assert steps_of(stream(module_server, run_id)) == list(range(1500))
    finally:
        silent.close()


def test_server_health_answers_while_two_runs_train(module_server: str) -> None:
    # Training happens in worker processes, so the server's loop stays free; how fast it
    # answers under load is measured by bench/load.py, not timed here.
    ids = [create(module_server, 3000) for _ in range(2)]
    wait_for(module_server, ids[1], lambda r: r["records"] > 0)
    with httpx.Client(base_url=module_server, timeout=10) as client:
        for _ in range(20):
            assert client.get("/api/health").json()["running"] == 2
        records = [client.get(f"/api/runs/{i}").json()["records"] for i in ids]
        assert client.get("/api/health").json()["running"] == 2
        later = [client.get(f"/api/runs/{i}").json()["records"] for i in ids]
        assert all(b >= a for a, b in zip(records, later, strict=True))
        for run_id in ids:
            client.post(f"/api/runs/{run_id}/cancel")


@pytest.mark.parametrize(
    "kill", [pytest.param(False, marks=pytest.mark.slow), True], ids=["terminate", "kill-9"]
)
def test_server_restart_marks_run_interrupted_with_records(
    server_process: ServerProcess, kill: bool
) -> None:
    url = server_process.start()
    run_id = create(url, 100_000 // 32)
    wait_for(url, run_id, lambda r: r["records"] >= 20)
    server_process.stop(kill=kill)
    time.sleep(0.5)  # a killed server's orphaned worker notices and stops
    url = server_process.start()
    run = httpx.get(f"{url}/api/runs/{run_id}").json()
    assert run["status"] == "interrupted" and run["records"] >= 20 and run["error"]
    exported = httpx.get(f"{url}/api/runs/{run_id}/export").json()
    steps = [r["step"] for r in exported["records"]]
    assert steps == list(range(len(steps))) and len(steps) == run["records"]
    time.sleep(0.3)
    assert httpx.get(f"{url}/api/runs/{run_id}").json()["records"] == run["records"]


def test_server_sigterm_ends_open_streams_with_a_final_event(
    server_process: ServerProcess,
) -> None:
    """Regression: on SIGTERM open streams were cut mid-body. Now each gets a `shutdown`
    event and a complete chunked body (httpx raises on a cut one)."""
    url = server_process.start()
    run_id = create(url, 100_000 // 32)
    wait_for(url, run_id, lambda r: r["records"] >= 5)
    events: list[Event] = []
    with httpx.stream("GET", f"{url}/api/runs/{run_id}/events", timeout=30) as response:
        lines = response.iter_lines()  # one iterator: a response streams once
        events += read_events_from(lines, until="records")
        assert server_process.process is not None
        server_process.process.send_signal(signal.SIGTERM)
        events += read_events_from(lines, until="shutdown")
        assert list(lines) == []  # and then the body ends, cleanly
    assert events[-1].event == "shutdown" and json.loads(events[-1].data)["reason"]
    records, _ = map(int, events[-1].id.split("-"))
    assert records == len(steps_of(events)) > 0  # its id resumes where the client is
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert server_process.process.wait(15) in (0, -signal.SIGTERM)


def test_server_killed_unreaped_stops_its_workers_at_once(server_process: ServerProcess) -> None:
    """Regression: after a SIGKILL of the server, its workers kept writing while the dead
    server lingered as a zombie (a pid probe still found it): 375 -> 1660 records."""
    url = server_process.start()
    run_id = create(url, 100_000 // 32)
    wait_for(url, run_id, lambda r: r["records"] >= 20)
    process = server_process.process
    assert process is not None
    process.kill()  # and do not reap it yet: it stays a zombie
    db = server_process.data_dir / "runs.db"
    time.sleep(0.3)
    os.kill(process.pid, 0)  # still "exists"
    first = stored_records(db, run_id)
    time.sleep(1.0)
    assert stored_records(db, run_id) == first  # nothing more lands once the server is gone
    process.wait()
    server_process.process = None


def read_events_from(lines: Iterator[str], until: str) -> list[Event]:
    """Events from an SSE body's lines, up to and including the first named `until`."""
    events: list[Event] = []
    fields: dict[str, str] = {}
    for line in lines:
        if line == "" and "data" in fields:
            events.append(
                Event(fields.get("event", "message"), fields.get("id", ""), fields["data"])
            )
            if events[-1].event == until:
                break
            fields = {}
        elif line and not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    return events


def stored_records(db: Path, run_id: str) -> int:
    with sqlite3.connect(db) as conn:
        count: int = conn.execute(
            "SELECT COUNT(*) FROM records WHERE run_id = ?", (run_id,)
        ).fetchone()[0]
    return count
