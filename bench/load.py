"""Load benchmark: 2 runs training with 4 queued behind them, 50 SSE clients on one run, 20
clients polling /series, a health prober and an RSS sampler on the server process.

Checks that nothing is lost (every SSE client gets every record exactly once, in order, the same
as the export), that /api/health stays responsive (p95) and that the server's memory stays
bounded. Loopback only, fixed request counts, stops by itself (at the latest after the
duration). Writes bench/results/load.json. Run from the repository root: `python bench/load.py`.
tests/test_hardening_load.py runs a smaller version of the same scenario.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
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


def run(s: Scenario) -> dict[str, Any]:
    """Start a server on a fresh data dir, run the scenario, stop the server."""
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp))
        try:
            return asyncio.run(scenario(url, proc.pid, s))
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
