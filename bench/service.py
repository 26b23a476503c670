"""The service path: the same run through `POST /api/runs` as through `depthscope.train()`.

Through the service a run trains in a worker process forked from the run manager's fork
server, appends its records to the SQLite store in batches, and one SSE subscriber (this
script) reads every record as it is committed, until the stream's `end`. The time
reported is the wall clock from the POST to the subscriber's `end`: what a user of the API
waits. The other side is `depthscope.train(config)` in this process, one torch thread (as the
worker uses), timed by the wall clock too, asked for the decision-boundary frames and Jacobian
spectra the service computes and stores beside the records (the same training work on both
sides: what the ratio shows is the service's own cost). The two alternate, in-process first and
last, and each run through the service is set against the mean of the in-process runs just
before and after it, which cancels this machine's drift in speed (identical runs here differ by
a fifth from one minute to the next) as far as it is steady over a few seconds; the ratio is
the median of those (target: within 1.1x). Beside it, the run's own
duration as the store recorded it (started_at to finished_at): the worker's share, without the
queue, the fork and the stream's last poll. Writes bench/results/service.json.

    python bench/service.py [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import depthscope
import httpx
import torch
from server import start_server  # bench/ is on sys.path when a bench script runs

NETWORKS = [(10, 64, 128), (20, 128, 256), (50, 64, 128), (100, 32, 64)]  # depth, width, batch
STEP_MS = {10: 2.0, 20: 11.0, 50: 9.0, 100: 9.0}  # about, on the CPU here: sizes the runs
RUN_SECONDS, QUICK_SECONDS = 2.0, 1.0
# Runs through the service per network, each between two in-process ones. Wall clock on a
# shared 2-core machine whose speed swings by a third (a plain Python loop too): single ratios
# spread by ±0.15, and 13 of them left the median ±0.05 from one bench run to the next.
SERVED, QUICK_SERVED = 21, 2
TARGET = 1.1
RECORD_OPENING = '{"step":'  # StepRecord.to_wire puts the step first


def config(depth: int, width: int, batch: int, steps: int) -> dict[str, Any]:
    """Every statistic at every step, held-out evaluation every 50 steps (no histograms)."""
    return {
        "model": {"depth": depth, "width": width, "activation": "relu", "init": "he_normal"},
        "training": {"batch_size": batch, "steps": steps},
        "recording": {"record_every": 1, "histogram_every": 0, "eval_every": 50},
    }


def subscribe(client: httpx.Client, url: str, run_id: str) -> tuple[float, int]:
    """Read the run's event stream to its `end`: when `end` arrived (closing the response
    afterwards is not the user's wait), and how many records came before it. Each record is
    counted by its opening (`{"step":`, how every wire record begins), not parsed: parsing is
    the subscriber's own work, and here it would run on the worker's two cores."""
    seen = 0
    with client.stream("GET", f"{url}/api/runs/{run_id}/events", timeout=120) as response:
        event = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                if event == "end":
                    return time.perf_counter(), seen
            elif line.startswith("data:") and event == "records":
                seen += line.count(RECORD_OPENING)
    raise RuntimeError(f"run {run_id}: the stream closed before its end")


def through_service(
    client: httpx.Client, url: str, body: dict[str, Any], db: Path
) -> dict[str, float]:
    started = time.perf_counter()
    response = client.post(f"{url}/api/runs", json=body, timeout=30)
    response.raise_for_status()
    run_id = response.json()["id"]
    ended, seen = subscribe(client, url, run_id)
    wall = ended - started
    status = client.get(f"{url}/api/runs/{run_id}", timeout=30).json()["status"]
    if status != "completed" or seen != body["training"]["steps"]:
        raise RuntimeError(f"run {run_id}: {status}, {seen} records streamed")
    with sqlite3.connect(db) as con:
        start, finish = con.execute(
            "SELECT started_at, finished_at FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
    return {"wall_s": wall, "worker_s": finish - start}


def in_process(body: dict[str, Any]) -> float:
    """depthscope.train() computing what the service stores beside the records (boundary
    frames, spectra), so that the ratio is the service's own cost, not theirs."""
    frames: list[Any] = []
    started = time.perf_counter()
    result = depthscope.train(
        depthscope.RunConfig.model_validate(body),
        on_boundary=frames.append,
        on_spectrum=lambda step, values: frames.append(values),
    )
    assert result.status == "completed" and frames
    return time.perf_counter() - started


def measure(
    client: httpx.Client,
    url: str,
    db: Path,
    network: tuple[int, int, int],
    seconds: float,
    served_runs: int,
) -> dict[str, Any]:
    depth, width, batch = network
    steps = max(50, round(seconds * 1000 / STEP_MS[depth] / 50) * 50)
    body = config(depth, width, batch, steps)
    in_process(body), through_service(client, url, body, db)  # warm-up: imports, the fork server
    trained, served, worker = [in_process(body)], [], []
    for _ in range(served_runs):
        run = through_service(client, url, body, db)
        trained.append(in_process(body))
        served.append(run["wall_s"])
        worker.append(run["worker_s"])
    around = [(before + after) / 2 for before, after in itertools.pairwise(trained)]
    ratios = [s / t for s, t in zip(served, around, strict=True)]
    ratio = statistics.median(ratios)
    # The host only ever slows a run down, so each side's fastest run is the least disturbed:
    # their ratio, beside the median, shows how much of a cell's spread is the machine's.
    fastest = min(served) / min(trained)
    return {
        "network": f"{depth}/{width}/{batch}",
        "steps": steps,
        "served_runs": served_runs,
        "train_s_median": statistics.median(trained),
        "service_s_median": statistics.median(served),
        "worker_s_median": statistics.median(worker),
        "ratio_median": ratio,
        "ratios": ratios,
        "fastest_over_fastest": fastest,
        "worker_over_train": statistics.median(
            [w / t for w, t in zip(worker, around, strict=True)]
        ),
        "target": TARGET,
        "meets_target": ratio <= TARGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="short runs, two through the service, one network"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "service.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the worker does
    networks = NETWORKS[:1] if args.quick else NETWORKS
    seconds, runs = (QUICK_SECONDS, QUICK_SERVED) if args.quick else (RUN_SECONDS, SERVED)
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as data:
        proc, url = start_server(Path(data))
        # One client for every request, as an API user keeps one: making an httpx.Client
        # costs tens of milliseconds here (its TLS context), which is not the service's.
        client = httpx.Client()
        try:
            for network in networks:
                row = measure(client, url, Path(data) / "runs.db", network, seconds, runs)
                results.append(row)
                print(
                    f"{row['network']:<10} {row['steps']} steps: "
                    f"train() {row['train_s_median']:.2f} s,"
                    f" POST /api/runs to the stream's end {row['service_s_median']:.2f} s"
                    f" (worker {row['worker_s_median']:.2f} s): ratio {row['ratio_median']:.3f}"
                    f" (fastest over fastest {row['fastest_over_fastest']:.3f})"
                    f"{'' if row['meets_target'] else f'  (over {TARGET})'}",
                    flush=True,
                )
        finally:
            client.close()
            proc.terminate()
            proc.wait(30)
    report = {
        "what": "median ratio of wall time: each run through POST /api/runs (worker process, "
        "store writes, one SSE subscriber to the end) / the mean of the depthscope.train() "
        "runs in-process just before and after it, computing the same boundary frames and "
        "spectra",
        "config": "ReLU, He init, every statistic at every step, held-out eval every 50 steps",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "load_average": list(os.getloadavg()),
        },
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
