"""The HTML report: standalone (plotly.js inlined, no network), carries the run's data, scales."""

from __future__ import annotations

import html
import json
import math
import re
from typing import Any

import numpy as np
import plotly.offline
import pytest
from depthscope import RunConfig, iter_records
from depthscope.probe.metrics import REGISTRY
from depthscope.records import METRICS
from depthscope.report import (
    MAX_COLUMNS,
    downsample_indices,
    findings_of,
    heatmap_matrix,
    log10_or_none,
    profile_indices,
    render_report,
)

SMALL = {
    "model": {"depth": 3, "width": 8},
    "training": {"steps": 12, "batch_size": 16},
    "data": {"n_samples": 64},
    "recording": {"eval_every": 5, "histogram_every": 4},
}


@pytest.fixture(scope="module")
def small_run() -> tuple[RunConfig, list[dict[str, Any]]]:
    config = RunConfig.model_validate(SMALL)
    return config, [r.to_wire() for r in iter_records(config)]


def fake_record(step: int, n_layers: int, value: float | None) -> dict[str, Any]:
    return {
        "step": step,
        "loss": 1.0,
        "accuracy": None,
        "grad_norm_total": 1.0,
        "clipped": False,
        "layers": {m: [value] * n_layers for m in METRICS},
    }


def test_log10_or_none_matches_math() -> None:
    for value in (1e-12, 0.5, 1.0, 3.0, 1e9):
        assert log10_or_none(value) == pytest.approx(math.log10(value))
    for value in (0.0, -1.0, None, math.inf, math.nan):
        assert log10_or_none(value) is None


@pytest.mark.parametrize(("n", "k"), [(0, 5), (3, 5), (10, 2), (101, 10), (100_000, 1000)])
def test_downsample_indices_keeps_ends_within_bound(n: int, k: int) -> None:
    picked = downsample_indices(n, k)
    assert len(picked) <= k
    assert picked == sorted(set(picked))
    if n:
        assert picked[0] == 0 and picked[-1] == n - 1
    if n <= k:
        assert picked == list(range(n))


def test_downsample_indices_spreads_evenly() -> None:
    # 101 points down to 11: every tenth, exactly.
    assert downsample_indices(101, 11) == list(range(0, 101, 10))
    assert profile_indices(9, 3) == [0, 4, 8]


def test_heatmap_matrix_is_layer_by_step_log10() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0.01, 100, size=(6, 4))  # steps × layers
    records = [fake_record(i, 4, 0.0) for i in range(6)]
    for i, record in enumerate(records):
        record["layers"]["grad_norm"] = values[i].tolist()
    got = np.array(heatmap_matrix(records, "grad_norm", log=True), dtype=float)
    np.testing.assert_allclose(got, np.log10(values).T)
    assert heatmap_matrix(records, "grad_norm", log=False) == values.T.tolist()


def test_render_report_is_standalone(small_run: tuple[RunConfig, list[dict[str, Any]]]) -> None:
    config, records = small_run
    layers = ["block1", "block2", "block3", "readout"]
    outcome = {"status": "completed", "steps_done": 12, "final": {}, "divergence": None}
    page = render_report(config.model_dump(), layers, records, outcome)
    # No external script or stylesheet: the file opens offline.
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=[\"']https?:", page)
    # plotly.js inlined once, from the package's bundled copy.
    assert page.count(plotly.offline.get_plotlyjs()[:200]) == 1
    # The run's numbers are in it: the last loss and the layer names, as plotly serializes them.
    assert json.dumps(records[-1]["loss"]) in page
    assert all(name in page for name in layers)
    # One heatmap per metric of the registry, three profiles, plus the loss curves.
    assert page.count("Plotly.newPlot") == 1 + len(REGISTRY) + 3
    assert all(m.title.replace("/", "\\u002f") in page for m in REGISTRY)  # as plotly writes it


def test_render_report_downsamples_long_runs() -> None:
    records = [fake_record(i, 2, 1.0) for i in range(MAX_COLUMNS * 3)]
    outcome = {"status": "completed", "steps_done": len(records), "final": {}, "divergence": None}
    page = render_report({}, ["block1", "readout"], records, outcome)
    assert f"heatmaps show {MAX_COLUMNS} of them" in page


def test_render_report_shows_nulls_of_a_diverged_run() -> None:
    records = [fake_record(0, 2, 1.0), fake_record(1, 2, None)]
    outcome = {
        "status": "diverged",
        "steps_done": 2,
        "final": {},
        "divergence": {"step": 1, "layer": "block1", "layer_index": 0, "metric": "grad_norm"},
    }
    page = render_report({}, ["block1", "readout"], records, outcome)
    assert "diverged" in page and "null" in page
    assert "NaN" not in page.replace(plotly.offline.get_plotlyjs(), "")


def test_render_report_summary_is_readable() -> None:
    outcome = {
        "status": "completed",
        "steps_done": 3,
        "final": {"loss": 0.123456789, "val_accuracy": None},
        "divergence": None,
    }
    page = render_report({}, ["readout"], [fake_record(0, 1, 1.0)], outcome)
    assert "<th>status</th><td>completed</td>" in page
    assert "<td>loss 0.1235, val_accuracy -</td>" in page


def test_report_shows_the_diagnosis_with_its_numbers() -> None:
    """A vanishing-gradient run (the deep naive sigmoid, short) reports it in words."""
    config = RunConfig.model_validate(
        {
            **SMALL,
            "model": {"depth": 8, "width": 16, "activation": "sigmoid", "init": "normal"},
        }
    )
    records = [r.to_wire() for r in iter_records(config)]
    layers = [f"block{i}" for i in range(1, 9)] + ["readout"]
    page = render_report(config.model_dump(), layers, records, {"status": "completed"})
    assert "<h2>Diagnosis</h2>" in page
    assert "vanishing gradients" in page and "block1 receives" in page
    assert "switch to the ReLU family with He init" in page
    # Several findings share the cause, and so the fixes: each fix is written once.
    findings = findings_of(config.model_dump(), layers, records, {"status": "completed"})
    fixes = {s for f in findings for s in f.suggestions}
    assert sum(len(f.suggestions) for f in findings) > len(fixes)  # the case this is about
    for fix in fixes:
        assert page.count(f"<li>{html.escape(fix)}</li>") == 1, fix
    assert "listed above." in page


def test_report_without_findings_says_so(small_run: tuple[RunConfig, list[dict[str, Any]]]) -> None:
    config, records = small_run
    layers = ["block1", "block2", "block3", "readout"]
    page = render_report(config.model_dump(), layers, records, {"status": "completed"})
    assert "<h2>Diagnosis</h2>" in page
