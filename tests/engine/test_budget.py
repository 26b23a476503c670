"""The run budget: step counts as the trainer runs them, every term counted, the issue's
runaway configs refused, and configs at the limits held to real runs (time and memory)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from depthscope import RunConfig, iter_records
from depthscope.engine import budget
from depthscope.engine.budget import MAX_BYTES, MAX_SECONDS, Cost
from pydantic import ValidationError


def build(body: dict[str, dict[str, Any]]) -> RunConfig:
    """A config without validation: to ask the budget about anything."""
    base = RunConfig()
    return RunConfig.model_construct(
        **{k: getattr(base, k).model_copy(update=body.get(k, {})) for k in RunConfig.model_fields}
    )


@pytest.mark.parametrize(
    ("steps", "record_every", "eval_every", "histogram_every"),
    [(10, 1, 0, 0), (10, 3, 0, 2), (11, 4, 3, 5), (12, 4, 6, 1), (7, 7, 0, 0), (9, 2, 4, 3)],
)
def test_budget_counts_steps_as_the_trainer_runs_them(
    steps: int, record_every: int, eval_every: int, histogram_every: int
) -> None:
    recording = {"record_every": record_every, "eval_every": eval_every}
    config = RunConfig.model_validate(
        {
            "model": {"depth": 2, "width": 4},
            "training": {"steps": steps, "batch_size": 8},
            "data": {"n_samples": 64},
            "recording": {**recording, "histogram_every": histogram_every},
        }
    )
    records = list(iter_records(config))
    assert budget.recorded_steps(config) == len(records) == config.recorded_steps()
    assert budget.evaluations(config) == sum(r.val_loss is not None for r in records)
    assert budget.histogram_steps(config) >= sum(r.histograms is not None for r in records)


def test_budget_counts_evaluation_and_recording() -> None:
    """Regression: the budget counted parameters × batch × steps only, not held-out
    evaluation (up to 20,000 samples every eval_every steps) nor recording."""
    quiet = build({"recording": {"eval_every": 0, "record_every": 100_000, "histogram_every": 0}})
    base = budget.estimate(quiet)
    evaluated = budget.estimate(build({"recording": {"eval_every": 1, "record_every": 100_000}}))
    recorded = budget.estimate(build({"recording": {"eval_every": 0, "record_every": 1}}))
    assert evaluated.terms["evaluation"].seconds > 100 * base.terms["evaluation"].seconds
    assert recorded.terms["recording"].seconds > 100 * base.terms["recording"].seconds
    assert evaluated.seconds > base.seconds and recorded.seconds > base.seconds


def test_budget_counts_a_registered_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    """A feature with passes of its own (a grid, a spectrum) adds its cost by name."""
    config = build({})
    before = budget.estimate(config)
    monkeypatch.setattr(budget, "COSTS", dict(budget.COSTS))
    grid = Cost(flops=2.0 * budget.weights(config) * 10_000, resident=2**20)
    budget.register_cost("grid_feature", lambda c: grid.times(c.training.steps))
    after = budget.estimate(config)
    assert after.terms["grid_feature"] == grid.times(config.training.steps)
    assert after.seconds == pytest.approx(before.seconds + after.terms["grid_feature"].seconds)
    assert after.bytes == before.bytes + 2**20
    huge = Cost(flops=MAX_SECONDS / budget.SECONDS_PER_FLOP)
    budget.register_cost("grid_feature", lambda c: huge)
    with pytest.raises(ValidationError, match=r"compute budget exceeded.*grid_feature"):
        RunConfig.model_validate({})


@pytest.mark.parametrize(
    ("body", "budget_name"),
    [
        (  # 136 s and 4.6 GB for one step: the evaluation and Adam's state
            {
                "model": {"depth": 200, "width": 1024},
                "training": {"steps": 1, "optimizer": "adam", "batch_size": 1000},
                "data": {"n_samples": 100_000, "input_dim": 256},
            },
            "memory budget",
        ),
        (  # about 74 h: an evaluation at every one of 40,000 steps
            {
                "model": {"depth": 1, "width": 1024},
                "training": {"steps": 40_000, "batch_size": 8},
                "data": {"n_samples": 100_000},
                "recording": {"eval_every": 1, "record_every": 100},
            },
            "compute budget",
        ),
        (  # 100,000 steps of 200 layers: per-layer overhead, whatever the size
            {
                "model": {"depth": 200, "width": 1},
                "training": {"steps": 100_000, "batch_size": 1},
                "data": {"n_samples": 16},
                "recording": {"record_every": 100},
            },
            "compute budget",
        ),
    ],
)
def test_budget_refuses_the_runaway_configs(body: dict[str, Any], budget_name: str) -> None:
    """Regression: these were accepted."""
    with pytest.raises(ValidationError, match=budget_name) as exc:
        RunConfig.model_validate(body)
    message = str(exc.value)
    assert "limit" in message and ("training.steps" in message or "model.width" in message)


def test_budget_accepts_every_preset_and_the_defaults() -> None:
    from depthscope.presets import PRESETS

    for config in [RunConfig(), *(p.config for p in PRESETS)]:
        cost = budget.estimate(config)
        assert cost.seconds < MAX_SECONDS / 10 and cost.bytes < MAX_BYTES / 10


# -- at the limits: the promise held to real runs ------------------------------------------------
def largest(body: dict[str, Any], section: str, field: str, high: int) -> dict[str, Any]:
    """`body` with `section.field` raised as far as the budget allows (bisection)."""
    low = 1

    def fits(value: int) -> bool:
        trial = {**body, section: {**body.get(section, {}), field: value}}
        cost = budget.estimate(build(trial))
        return cost.seconds <= MAX_SECONDS and cost.bytes <= MAX_BYTES

    assert fits(low)
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return {**body, section: {**body.get(section, {}), field: low}}


QUIET = {"record_every": 10_000, "histogram_every": 0, "eval_every": 0}
CORNERS = {  # each pushed to the limit along its one expensive direction
    "matmul": (
        {
            "model": {"depth": 10, "width": 1024},
            "training": {"batch_size": 256},
            "data": {"n_samples": 2048},
            "recording": QUIET,
        },
        ("training", "steps", 100_000),
    ),
    "per-layer overhead": (
        {
            "model": {"depth": 200, "width": 1},
            "training": {"batch_size": 1},
            "data": {"n_samples": 64},
            "recording": {"record_every": 1, "histogram_every": 1, "eval_every": 0},
        },
        ("training", "steps", 100_000),
    ),
    "evaluation": (
        {
            "model": {"depth": 1, "width": 1024},
            "training": {"batch_size": 8},
            "data": {"n_samples": 100_000},
            "recording": {**QUIET, "eval_every": 1},
        },
        ("training", "steps", 100_000),
    ),
    "adam's memory": (
        {
            "model": {"width": 1024},
            "training": {"batch_size": 1, "optimizer": "adam", "steps": 2},
            "data": {"n_samples": 64},
            "recording": QUIET,
        },
        ("model", "depth", 200),
    ),
    "activations' memory": (
        {
            "model": {"depth": 20, "width": 512, "norm": "batchnorm"},
            "training": {"steps": 2, "batch_size": 4096},
            "data": {"n_samples": 6000},
            "recording": {"record_every": 1, "histogram_every": 1, "eval_every": 0},
        },
        ("model", "depth", 200),
    ),
}

MEASURE = """
import json, os, sys, tempfile, time, torch
from pathlib import Path
torch.set_num_threads(1)  # as in a worker
from depthscope import RunConfig
from depthscope.engine.trainer import Trainer
from depthscope.service.store import RunStore
from depthscope.service.worker import train_into
def status(key):  # VmHWM: this process's peak (ru_maxrss would carry the forking parent's)
    line = next(x for x in open("/proc/self/status") if x.startswith(key))
    return int(line.split()[1]) * 1024
config = RunConfig.model_validate_json(sys.argv[1])  # validated: the budget accepts it
store = RunStore(Path(tempfile.mkdtemp()) / "runs.db")
store.create_run("r", {}, [])
base, start = status("VmRSS"), time.process_time()
Trainer(config)  # what building the run costs, once
built = time.process_time() - start
class Stop:  # a few seconds of steps, at least two
    def __init__(self):
        self.start, self.asked = time.process_time(), 0
    def is_set(self):
        self.asked += 1
        return self.asked > 3 and time.process_time() - self.start > 3 + built
stop = Stop()
result = train_into(store, "r", config, stop)  # everything a worker does: records, frames, spectra
spent = time.process_time() - stop.start - built
per_step = spent / max(1, result.steps_done)
peak = status("VmHWM") - base
print(json.dumps({"seconds": built + per_step * config.training.steps, "bytes": peak}))
"""


def corner_configs() -> Iterator[tuple[str, RunConfig]]:
    for name, (body, (section, field, high)) in CORNERS.items():
        config = RunConfig.model_validate(largest(body, section, field, high))
        assert budget.estimate(config).seconds > 0.5 * MAX_SECONDS or (
            budget.estimate(config).bytes > 0.5 * MAX_BYTES
        ), name  # really at a limit
        yield name, config


@pytest.mark.slow
def test_budget_runs_at_the_limits_keep_the_promise() -> None:
    """Each corner config, the largest the budget accepts along one direction, trains for a
    few seconds of CPU time on one thread; its whole run, extrapolated from those steps,
    takes at most MAX_SECONDS, and its worker's peak memory stays within MAX_BYTES."""
    corners = list(corner_configs())
    results = []
    for name, config in corners:  # each in a fresh process: its own peak memory
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, config.model_dump_json()],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, (name, done.stderr[-2000:])
        results.append(json.loads(done.stdout.splitlines()[-1]))
    for (name, config), measured in zip(corners, results, strict=True):
        estimate = budget.estimate(config)
        assert measured["seconds"] <= MAX_SECONDS, (name, measured, estimate.seconds)
        assert measured["bytes"] <= MAX_BYTES, (name, measured, estimate.bytes)
        assert measured["seconds"] <= estimate.seconds, (name, measured, estimate.seconds)
        assert measured["bytes"] <= estimate.bytes + 50 * 2**20, (name, measured, estimate.bytes)
    timed = [m["seconds"] for (n, _), m in zip(corners, results, strict=True) if "memory" not in n]
    assert max(timed) > 0.05 * MAX_SECONDS  # the corners are not trivially small


def test_budget_rates_are_ordered_sensibly() -> None:
    """Any pair of configs that differ only by more work costs more (a sanity net for edits
    to the terms)."""
    small = {"model": {"depth": 4, "width": 32}, "training": {"steps": 100, "batch_size": 16}}
    for (section, field), factor in itertools.product(
        [("model", "depth"), ("model", "width"), ("training", "steps"), ("training", "batch_size")],
        [2, 10],
    ):
        bigger = {**small, section: {**small[section], field: small[section][field] * factor}}
        assert budget.estimate(build(bigger)).seconds > budget.estimate(build(small)).seconds


def test_budget_counts_decision_boundary_grids_of_2d_classification_runs() -> None:
    every = {"recording": {"boundary_every": 1}, "training": {"steps": 200}}
    planar = budget.estimate(build(every)).terms["boundary"]
    rare = budget.estimate(build({**every, "recording": {"boundary_every": 100}}))
    teacher = budget.estimate(build({**every, "data": {"dataset": "teacher"}}))
    assert planar.seconds > 50 * rare.terms["boundary"].seconds > 0
    assert teacher.terms["boundary"] == Cost()  # regression: no boundary is drawn


def test_budget_counts_the_jacobian_spectra_a_worker_takes() -> None:
    """Two spectra by default, one more per spectrum_every; none for a network too large."""

    def spectra(**recording: int) -> float:
        config = RunConfig.model_validate(
            {
                "model": {"depth": 30, "width": 256},
                "training": {"steps": 100, "batch_size": 8},
                "recording": recording,
            }
        )
        return budget.estimate(config).terms["spectra"].seconds

    two, eleven = spectra(), spectra(spectrum_every=10)
    assert two > 0 and eleven == pytest.approx(two * 11 / 2)  # steps 0, 10, ..., 90 and 99
    wide = RunConfig.model_validate(
        {"model": {"depth": 20, "width": 1024}, "training": {"steps": 1, "batch_size": 1}}
    )
    assert budget.estimate(wide).terms["spectra"].seconds == 0  # skipped: 4 x 19 x 1024^3
