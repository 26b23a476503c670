"""Budget calibration: measured CPU time and memory of run pieces against budget.py's estimates.

One torch thread, CPU time (so a neighbour's load counts less than on the wall clock). For a
grid of networks it measures a step without recording, a recorded step, a recorded step with
histograms, a held-out evaluation, the model's construction, and the worker's storing of
records; and for a few configs the peak memory of training. Each is divided by what
budget.py estimates for the same piece: a ratio at most 1 means the estimate errs long, which
is what the promise ("a run takes at most about MAX_SECONDS") needs. Writes
bench/results/budget.json with every ratio and, per kind, the largest and the median.

    python bench/budget.py [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from depthscope.engine import budget
from depthscope.engine.config import RunConfig
from depthscope.engine.trainer import Trainer
from depthscope.service.store import RunStore
from depthscope.service.worker import RecordWriter

RESULTS = Path(__file__).parent / "results" / "budget.json"
QUIET = {"record_every": 100_000, "histogram_every": 0, "eval_every": 0}
RECORDED = {"record_every": 1, "histogram_every": 0, "eval_every": 0}
HISTOGRAMS = {"record_every": 1, "histogram_every": 1, "eval_every": 0}


def build(body: dict[str, dict[str, Any]]) -> RunConfig:
    """A config without the budget's own check (the pieces measured may exceed it)."""
    base = RunConfig()
    return RunConfig.model_construct(
        **{k: getattr(base, k).model_copy(update=body.get(k, {})) for k in RunConfig.model_fields}
    )


def per_step(config: RunConfig, budget_s: float) -> float:
    """CPU seconds of one step, after a warm-up step."""
    calls, start = 0, 0.0

    def stop() -> bool:
        nonlocal calls, start
        calls += 1
        if calls == 2:
            start = time.process_time()
        return calls > 5 and time.process_time() - start > budget_s

    for _ in Trainer(config).records(stop):
        pass
    return (time.process_time() - start) / max(1, calls - 2)


def steps_grid(quick: bool) -> list[dict[str, Any]]:
    depths, widths, batches = (
        ([1, 50], [1, 256], [1, 2048])
        if quick
        else (
            [1, 8, 50, 200],
            [1, 32, 256, 1024],
            [1, 128, 2048],
        )
    )
    out = []
    for depth, width, batch, optimizer in itertools.product(
        depths, widths, batches, ["sgd", "adam"]
    ):
        if 6 * depth * width**2 * batch > 3e11:  # seconds per step: skip
            continue
        for kind, recording in [("plain", QUIET), ("recorded", RECORDED), ("hist", HISTOGRAMS)]:
            if optimizer == "adam" and kind != "plain":
                continue
            body = {
                "model": {"depth": depth, "width": width},
                "training": {
                    "batch_size": batch,
                    "steps": 100_000,
                    "optimizer": optimizer,
                    "lr": 1e-5,
                },
                "data": {"n_samples": max(64, int(batch * 1.25) + 16)},
                "recording": recording,
            }
            config = build(body)
            measured = per_step(config, 0.3 if quick else 0.6)
            one = build({**body, "training": {**body["training"], "steps": 1}})
            estimate = budget.training(one).seconds
            if kind != "plain":
                estimate += budget.recording(one).seconds
            out.append(
                {
                    "kind": kind,
                    **body["model"],
                    "batch": batch,
                    "optimizer": optimizer,
                    "measured_s": measured,
                    "estimated_s": estimate,
                }
            )
    return out


def eval_grid(quick: bool) -> list[dict[str, Any]]:
    out = []
    depths, widths = ([1, 50], [32, 1024]) if quick else ([1, 8, 50, 200], [1, 32, 256, 1024])
    for depth, width, n in itertools.product(depths, widths, [500, 20_000]):
        if 2 * depth * width**2 * n > 2e11:
            continue
        config = build({"model": {"depth": depth, "width": width}, "data": {"n_samples": 5 * n}})
        trainer = Trainer(config)
        trainer.evaluate()
        k, start = 0, time.process_time()
        while k < 2 or time.process_time() - start < 0.4:
            trainer.evaluate()
            k += 1
        estimate = budget.evaluation(config).seconds / budget.evaluations(config)
        out.append(
            {
                "kind": "eval",
                "depth": depth,
                "width": width,
                "n": n,
                "measured_s": (time.process_time() - start) / k,
                "estimated_s": estimate,
            }
        )
    return out


def init_grid(quick: bool) -> list[dict[str, Any]]:
    out = []
    Trainer(build({}))  # the process's first trainer pays lazy imports: not a run's cost here
    for depth, width, init in itertools.product(
        [8, 50] if quick else [8, 50, 200], [64, 1024], ["he_normal", "orthogonal"]
    ):
        config = build({"model": {"depth": depth, "width": width, "init": init}})
        start = time.process_time()
        Trainer(config)
        estimate = budget.initialization(config).seconds + budget.data(config).seconds
        out.append(
            {
                "kind": "init",
                "depth": depth,
                "width": width,
                "init": init,
                "measured_s": time.process_time() - start,
                "estimated_s": estimate,
            }
        )
    return out


def storing() -> list[dict[str, Any]]:
    """The worker turning records into JSON and blocks and committing them (60 records)."""
    out = []
    for depth, hist in itertools.product([10, 200], [0, 1]):
        recording = {"record_every": 1, "histogram_every": hist, "eval_every": 0}
        config = build(
            {
                "model": {"depth": depth, "width": 4},
                "training": {"batch_size": 8},
                "data": {"n_samples": 64},
                "recording": recording,
            }
        )
        records = [r for _, r in zip(range(60), Trainer(config).records(), strict=False)]
        with tempfile.TemporaryDirectory() as tmp:
            store = RunStore(Path(tmp) / "runs.db")
            store.create_run("r", {}, [])
            writer = RecordWriter(store, "r")
            start = time.process_time()
            for record in records:
                writer.add(record)
            writer.flush()
            measured = (time.process_time() - start) / len(records)
            store.close()
        m = config.model
        values = (m.depth + 1) * 6 + 100 + (m.depth + 1) * 8 * hist
        out.append(
            {
                "kind": "storing",
                "depth": depth,
                "histograms": bool(hist),
                "measured_s": measured,
                "estimated_s": values * budget.SECONDS_PER_VALUE,
            }
        )
    return out


MEMORY_CONFIGS = [
    {"model": {"depth": 50, "width": 1024}, "training": {"batch_size": 1, "optimizer": "adam"}},
    {
        "model": {"depth": 20, "width": 512},
        "training": {"batch_size": 4096},
        "data": {"n_samples": 6000},
    },
    {
        "model": {"depth": 20, "width": 512, "norm": "batchnorm"},
        "training": {"batch_size": 4096},
        "data": {"n_samples": 6000},
    },
    {"model": {"depth": 4, "width": 1024}, "data": {"n_samples": 100_000}},
    {"model": {"depth": 2, "width": 16}, "data": {"n_samples": 100_000, "input_dim": 256}},
]


def peak_memory(body: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS of three steps (recorded, histograms, evaluation) in a fresh process, beyond
    what that process held after its imports (~300 MB with torch)."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent that forked us.
    code = (
        "import json, os, sys, torch; torch.set_num_threads(1)\n"
        "from budget import build; from depthscope.engine.trainer import Trainer\n"
        "def status(key):\n"
        "    line = next(x for x in open('/proc/self/status') if x.startswith(key))\n"
        "    return int(line.split()[1]) * 1024\n"
        "base = status('VmRSS'); config = build(json.loads(sys.argv[1]))\n"
        "for _, _r in zip(range(3), Trainer(config).records()): pass\n"
        "print(status('VmHWM') - base)\n"
    )
    full = {
        **body,
        "training": {"steps": 10, "lr": 1e-5, **body.get("training", {})},
        "recording": {"record_every": 1, "histogram_every": 1, "eval_every": 1},
    }
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(full)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return {
        "kind": "memory",
        "config": full,
        "measured_bytes": int(done.stdout.split()[-1]),
        "estimated_bytes": budget.estimate(build(full)).bytes,
    }


def summary(rows: list[dict[str, Any]], measured: str, estimated: str) -> dict[str, Any]:
    by_kind: dict[str, list[float]] = {}
    for row in rows:
        row["ratio"] = row[measured] / row[estimated]
        by_kind.setdefault(row["kind"], []).append(row["ratio"])
    return {
        k: {"n": len(v), "max": max(v), "median": statistics.median(v)} for k, v in by_kind.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small grid (minutes)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    times = init_grid(args.quick) + eval_grid(args.quick) + storing() + steps_grid(args.quick)
    memory = [peak_memory(body) for body in MEMORY_CONFIGS]
    result = {
        "time_ratios": summary(times, "measured_s", "estimated_s"),
        "memory_ratios": summary(memory, "measured_bytes", "estimated_bytes"),
        "rates": {
            "seconds_per_flop": budget.SECONDS_PER_FLOP,
            "seconds_per_element": budget.SECONDS_PER_ELEMENT,
            "seconds_per_launch": budget.SECONDS_PER_LAUNCH,
            "seconds_per_value": budget.SECONDS_PER_VALUE,
        },
        "times": times,
        "memory": memory,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "load_average": os.getloadavg(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("time_ratios", "memory_ratios")}, indent=2))


if __name__ == "__main__":
    main()
