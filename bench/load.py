"""Load benchmark, in two phases on one server, with an RSS sampler on the server process.

1. Busy: 2 runs training with 4 queued behind them, 50 SSE clients on one run, 20 clients
   polling /series, a health prober. Checks that nothing is lost (every SSE client gets every
   record exactly once, in order, the same as the export), that /api/health stays responsive
   (p95) and that the server's memory stays bounded.
2. Idle clients: the documented maximum of SSE subscribers that never read (max_streams, 512,
   spread over 8 loopback addresses to stay within the per-client cap of 64) and of exports
   that never read (max_exports, 8; one more per address is answered 429), all on a finished
   run with the largest records a config allows (depth 200, histograms every step). Measures
   the server's peak memory while they hang, and how fast /api/health and /api/runs answer.

Loopback only, fixed request counts, stops by itself (at the latest after the duration).
Writes bench/results/load.json. Run from the repository root: `python bench/load.py`.
tests/service/test_hardening_load.py runs a smaller version of the same scenarios.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from server import start_server  # bench/ is on sys.path when a bench script runs

RESULTS = Path(__file__).parent / "results" / "load.json"
TERMINAL = {"completed", "cancelled", "failed", "diverged", "interrupted"}


@dataclass(frozen=True)
class Scenario:
    watched_steps: int = 1500  # the run the SSE clients follow
    other_steps: int = 1500  # the second running run
    queued_runs: int = 4
    queued_steps: int = 200
    sse_clients: int = 50
    pollers: int = 20
    poll_gap_s: float = 0.1
    health_gap_s: float = 0.05
    duration_s: float = 240.0  # hard stop
    # phase 2: clients that never read
    idle_streams: int = 512  # the default max_streams
    idle_addresses: int = 8  # 127.0.0.1 … 127.0.0.8: 64 streams each, the per-client cap
    idle_exports: int = 8  # the default max_exports (2 per address)
    wide_steps: int = 300  # records of the finished run they read: depth 200, histograms
    idle_hold_s: float = 15.0


def config(steps: int, depth: int = 6, width: int = 32) -> dict[str, Any]:
    return {
        "model": {"depth": depth, "width": width},
        "training": {"steps": steps, "batch_size": 32},
        "data": {"n_samples": 512},
        "recording": {"histogram_every": 10, "eval_every": 50},
    }


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def sse_client(client: httpx.AsyncClient, run_id: str) -> list[int]:
    """Every record's step this client received, in arrival order, until `end`."""
    steps: list[int] = []
    event, data = "", ""
    async with client.stream("GET", f"/api/runs/{run_id}/events") as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif line == "" and data:
                if event == "records":
                    steps += [r["step"] for r in orjson.loads(data)["records"]]
                if event == "end":
                    return steps
                event, data = "", ""
    return steps


async def poller(
    client: httpx.AsyncClient, run_id: str, s: Scenario, stop: asyncio.Event
) -> list[int]:
    codes: list[int] = []
    while not stop.is_set():
        response = await client.get(
            f"/api/runs/{run_id}/series", params={"metric": "grad_norm", "max_points": 200}
        )
        codes.append(response.status_code)
        await asyncio.sleep(s.poll_gap_s)
    return codes


def prober(url: str, s: Scenario, stop: threading.Event) -> list[float]:
    """Health latencies, from a thread with its own connection: the SSE clients' parsing on
    the event loop must not count as server latency."""
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get("/api/health").raise_for_status()
            latencies.append(time.perf_counter() - started)
            stop.wait(s.health_gap_s)
    return latencies


async def sampler(pid: int, stop: asyncio.Event) -> list[int]:
    samples: list[int] = []
    while not stop.is_set():
        samples.append(rss_bytes(pid))
        await asyncio.sleep(0.25)
    return samples


async def wait_terminal(client: httpx.AsyncClient, ids: list[str], s: Scenario) -> bool:
    deadline = time.monotonic() + s.duration_s
    while time.monotonic() < deadline:
        runs = [(await client.get(f"/api/runs/{i}")).json() for i in ids]
        if all(r["status"] in TERMINAL for r in runs):
            return True
        await asyncio.sleep(0.25)
    return False


async def scenario(url: str, server_pid: int, s: Scenario) -> dict[str, Any]:
    # Idle connections are dropped before uvicorn's 5 s keep-alive closes them under a request.
    limits = httpx.Limits(max_connections=s.sse_clients + s.pollers + 10, keepalive_expiry=2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        baseline_rss = rss_bytes(server_pid)
        sizes = [s.watched_steps, s.other_steps] + [s.queued_steps] * s.queued_runs
        ids = []
        for steps in sizes:
            created = await client.post("/api/runs", json=config(steps))
            created.raise_for_status()
            ids.append(created.json()["id"])
        counts = (await client.get("/api/health")).json()
        stop = asyncio.Event()
        watchers = [asyncio.create_task(sse_client(client, ids[0])) for _ in range(s.sse_clients)]
        pollers = [asyncio.create_task(poller(client, ids[0], s, stop)) for _ in range(s.pollers)]
        health_stop = threading.Event()
        health = asyncio.create_task(asyncio.to_thread(prober, url, s, health_stop))
        rss = asyncio.create_task(sampler(server_pid, stop))
        finished = await wait_terminal(client, ids, s)
        got = await asyncio.wait_for(asyncio.gather(*watchers), timeout=30) if finished else []
        stop.set()
        health_stop.set()
        codes = [c for p in await asyncio.gather(*pollers) for c in p]
        latencies, samples = await health, await rss
        exported = (await client.get(f"/api/runs/{ids[0]}/export")).json()
        runs = [(await client.get(f"/api/runs/{i}")).json() for i in ids]
    expected = [r["step"] for r in exported["records"]]
    return {
        "finished": finished,
        "statuses": [r["status"] for r in runs],
        "queued_at_start": counts["queued"],
        "running_at_start": counts["running"],
        "records_expected": len(expected),
        "sse_clients_complete": sum(steps == expected for steps in got),
        "sse_clients": s.sse_clients,
        "series_requests": len(codes),
        "series_non_200": sum(code != 200 for code in codes),
        "health_requests": len(latencies),
        "health_p50_ms": 1000 * statistics.median(latencies),
        "health_p95_ms": 1000 * statistics.quantiles(latencies, n=20)[-1],
        "health_max_ms": 1000 * max(latencies),
        "rss_baseline_mb": baseline_rss / 2**20,
        "rss_max_mb": max(samples) / 2**20,
        "rss_growth_mb": (max(samples) - baseline_rss) / 2**20,
    }


def wide_config(steps: int) -> dict[str, Any]:
    """The largest records a config allows: 201 layers, histograms on every step."""
    return {
        "model": {"depth": 200, "width": 8},
        "training": {"steps": steps, "batch_size": 32},
        "data": {"n_samples": 512},
        "recording": {"histogram_every": 1, "eval_every": 0},
    }


def idle_request(url: str, path: str, address: str) -> tuple[socket.socket, str]:
    """Send GET `path` from `address` on a socket with a tiny receive buffer, read only the
    status line, and leave the rest unread (the server's transport fills and stays full)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind((address, 0))
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    sock.settimeout(30)
    status = sock.recv(12).decode(errors="replace")  # 'HTTP/1.1 200'
    return sock, status[9:12]


def timed_get(url: str, path: str) -> float:
    started = time.perf_counter()
    httpx.get(f"{url}{path}", timeout=120).raise_for_status()
    return time.perf_counter() - started


def idle_phase(url: str, server_pid: int, s: Scenario) -> dict[str, Any]:
    """Phase 2: the documented maximum of non-reading streams and exports on one server."""
    run_id = httpx.post(f"{url}/api/runs", json=wide_config(s.wide_steps), timeout=30).json()["id"]
    deadline = time.monotonic() + s.duration_s
    while httpx.get(f"{url}/api/runs/{run_id}", timeout=30).json()["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise RuntimeError("the wide run did not finish")
        time.sleep(0.25)
    record_bytes = len(httpx.get(f"{url}/api/runs/{run_id}/export", timeout=60).content)
    baseline = rss_bytes(server_pid)
    addresses = [f"127.0.0.{i + 1}" for i in range(s.idle_addresses)]
    sockets: list[socket.socket] = []
    statuses: list[str] = []
    try:
        for i in range(s.idle_streams):
            sock, status = idle_request(
                url, f"/api/runs/{run_id}/events", addresses[i % len(addresses)]
            )
            sockets.append(sock)
            statuses.append(status)
        export_statuses: list[str] = []
        for i in range(s.idle_exports + len(addresses)):  # the last ones are beyond the caps
            address = addresses[i % len(addresses)]
            sock, status = idle_request(url, f"/api/runs/{run_id}/export", address)
            sockets.append(sock)
            export_statuses.append(status)
        samples, health, listing = [], [], []
        hold_until = time.monotonic() + s.idle_hold_s
        while time.monotonic() < hold_until:
            samples.append(rss_bytes(server_pid))
            health.append(timed_get(url, "/api/health"))
            listing.append(timed_get(url, "/api/runs"))
            time.sleep(0.25)
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
    time.sleep(3)
    return {
        "idle_run_export_mb": record_bytes / 2**20,
        "idle_streams_open": statuses.count("200"),
        "idle_streams_refused": len(statuses) - statuses.count("200"),
        "idle_exports_open": export_statuses.count("200"),
        "idle_exports_429": export_statuses.count("429"),
        "idle_rss_before_mb": baseline / 2**20,
        "idle_rss_max_mb": max(samples) / 2**20,
        "idle_rss_growth_mb": (max(samples) - baseline) / 2**20,
        "idle_rss_after_mb": rss_bytes(server_pid) / 2**20,
        "idle_health_max_ms": 1000 * max(health),
        "idle_runs_list_max_ms": 1000 * max(listing),
    }


def run(s: Scenario) -> dict[str, Any]:
    """Start a server on a fresh data dir, run both phases, stop the server."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            result = asyncio.run(scenario(url, proc.pid, s))
            if s.idle_streams or s.idle_exports:
                result.update(idle_phase(url, proc.pid, s))
            return result
        finally:
            proc.terminate()
            proc.wait(15)


def main() -> None:
    s = Scenario()
    result = run(s)
    result.update(
        scenario=asdict(s),
        machine={"cpus": os.cpu_count(), "python": platform.python_version()},
        load_average=os.getloadavg(),
        date=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
