"""The analysis views in the browser: the diagnosis above the heatmap and in the run list's
tooltip, the mean-field theory over the depth profile at step 0, the spectrum's quantile lines,
and the phase diagram of the init scan, whose cells start runs."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import pytest

from .e2e_helpers import Explorer


def finished(api: httpx.Client, config: dict[str, Any]) -> str:
    created = api.post("/api/runs", json=config)
    assert created.status_code == 201, created.text
    run_id: str = created.json()["id"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if api.get(f"/api/runs/{run_id}").json()["terminal"]:
            return run_id
        time.sleep(0.1)
    raise AssertionError(f"{run_id} did not finish")


def small(model: dict[str, Any], steps: int = 40, **recording: Any) -> dict[str, Any]:
    return {
        "model": model,
        "training": {"steps": steps, "batch_size": 64},
        "data": {"dataset": "moons", "n_samples": 512},
        "recording": {"histogram_every": 0, **recording},
    }


def test_theory_diagnosis_shows_above_the_heatmap_and_in_the_run_list(
    explorer: Explorer, api: httpx.Client
) -> None:
    run_id = finished(
        api, small({"depth": 10, "width": 32, "activation": "sigmoid", "init": "normal"})
    )
    explorer.open(f"#runs={run_id}")
    page = explorer.page
    page.wait_for_selector("#diagnosis:not([hidden]) li[data-kind=vanishing_gradients]")
    text = page.inner_text("#diagnosis")
    expected = api.get(f"/api/runs/{run_id}/diagnosis").json()["findings"]
    for finding in expected:
        assert finding["message"] in text
    assert "switch to the ReLU family with He init" in text
    # Findings with one cause share their fixes: each fix shows once, later ones point above.
    shown = page.eval_on_selector_all("#diagnosis .fixes li", "els => els.map(e => e.textContent)")
    assert sorted(shown) == sorted({s for f in expected for s in f["suggestions"]})
    if sum(len(f["suggestions"]) for f in expected) > len(shown):
        assert page.locator("#diagnosis .fixes-above").count() > 0
    page.wait_for_function(
        "id => document.querySelector(`[data-run='${id}'] .status`)"
        "?.title.includes('block1 receives')",
        arg=run_id,
    )
    explorer.shot("theory-diagnosis")


def profile_traces(explorer: Explorer) -> list[dict[str, Any]]:
    traces: list[dict[str, Any]] = explorer.page.evaluate(
        "() => document.getElementById('profile').data.map(t => ({name: t.name, y: t.y}))"
    )
    return traces


def test_theory_is_drawn_over_the_depth_profile_at_step_zero(
    explorer: Explorer, api: httpx.Client
) -> None:
    model = {
        "depth": 8,
        "width": 128,
        "activation": "tanh",
        "init": "scaled_normal",
        "init_gain": 1.2,
        "bias_std": 0.2,
    }
    run_id = finished(api, small(model, steps=20))
    theory = api.get(f"/api/runs/{run_id}/theory").json()
    explorer.open(f"#runs={run_id}&metric=act_std&step=0")
    page = explorer.page
    page.wait_for_function(
        "() => document.getElementById('profile').data?.some(t => t.name === 'mean-field theory')"
    )
    traces = {t["name"]: t["y"] for t in profile_traces(explorer)}
    assert traces["mean-field theory"] == pytest.approx(theory["predicted"]["act_std"])
    assert traces["finite-width band (2σ)"] == pytest.approx(theory["predicted"]["act_std_hi"])
    measured = next(y for name, y in traces.items() if name.endswith("(step 0)"))
    assert measured[:8] == pytest.approx(theory["measured"]["act_std"])
    explorer.shot("theory-profile")
    # the gradient: the prediction anchored at the last block's measured norm
    page.select_option("#metric", "act_grad_norm")
    page.wait_for_function(
        "() => document.getElementById('profile').data?.some(t => t.name === 'mean-field theory')"
        " && document.getElementById('profile').layout.yaxis.title.text.startsWith('act_grad')"
    )
    traces = {t["name"]: t["y"] for t in profile_traces(explorer)}
    grads = next(y for name, y in traces.items() if name.endswith("(step 0)"))
    assert traces["mean-field theory"][-1] == pytest.approx(grads[7])
    ratio = np.log(np.array(traces["mean-field theory"]) / grads[7])
    assert ratio == pytest.approx(theory["predicted"]["log_act_grad_norm"], abs=1e-9)
    # at a later step the theory gives way to a note saying where it applies
    page.evaluate("() => window.depthscope.state.step = 10")
    page.fill("#step", "10")
    page.dispatch_event("#step", "input")
    page.wait_for_selector("#profile-theory:not([hidden])")
    assert "step 0" in page.inner_text("#profile-theory")


def test_theory_spectrum_draws_quantile_lines_over_training(
    explorer: Explorer, api: httpx.Client
) -> None:
    model = {"depth": 6, "width": 32, "activation": "tanh", "init": "orthogonal"}
    run_id = finished(api, small(model, steps=30, spectrum_every=10))
    body = api.get(f"/api/runs/{run_id}/spectrum").json()
    explorer.open(f"#runs={run_id}")
    page = explorer.page
    page.wait_for_selector("#spectrum:not([hidden])")
    traces = page.evaluate(
        "() => document.getElementById('spectrum').data.map(t => ({name: t.name, x: t.x, y: t.y}))"
    )
    by_name = {t["name"]: t for t in traces}
    assert by_name["median"]["x"] == body["steps"] == [0, 10, 20, 29]
    squared = [np.square(np.array(v, dtype=float)) for v in body["singular_values"]]
    assert by_name["median"]["y"] == pytest.approx([float(np.median(s)) for s in squared])
    assert by_name["max"]["y"] == pytest.approx([float(s.max()) for s in squared])
    assert by_name["theory mean ± sd (step 0)"]["y"] == pytest.approx([body["theory"]["mean"]])
    assert "Theory at step 0" in page.inner_text("#spectrum-note")


def test_theory_phase_diagram_scans_and_a_click_starts_that_run(
    explorer: Explorer, api: httpx.Client
) -> None:
    explorer.open()
    page = explorer.page
    for name, value in {
        "depth": "6",
        "width": "32",
        "sw_min": "0.5",
        "sw_max": "3",
        "sw_num": "4",
        "sb_min": "0",
        "sb_max": "0.3",
        "sb_num": "3",
    }.items():
        page.fill(f"#scan-{name}", value)
    page.click("#phase-form button[type=submit]")
    page.wait_for_selector("#phase[data-cells='12']")
    reference = api.post(
        "/api/scans/init",
        json={
            "activation": "tanh",
            "depth": 6,
            "width": 32,
            "sigma_w": {"min": 0.5, "max": 3, "num": 4},
            "sigma_b": {"min": 0, "max": 0.3, "num": 3},
        },
    ).json()
    drawn = page.evaluate(
        "() => document.getElementById('phase').data"
        ".map(t => ({type: t.type, x: t.x, y: t.y, z: t.z ?? null}))"
    )
    heatmap, line = drawn
    assert heatmap["z"] == reference["log_grad_ratio"]  # the same seed: the same networks
    assert line["x"] == pytest.approx(reference["critical_sigma_w"])
    explorer.shot("theory-phase")
    before = set(explorer.selected())
    plot = page.locator("#phase .nsewdrag").first
    box = plot.bounding_box()
    assert box is not None
    corner = {"x": box["width"] * 0.9, "y": box["height"] * 0.9}  # bottom right: the last sigma_w
    plot.hover(position=corner)  # Plotly finds the cell on hover, then reports it on click
    plot.click(position=corner)
    page.wait_for_function(
        "b => window.depthscope.state.runs.some(id => !b.includes(id))", arg=list(before)
    )
    new = next(i for i in explorer.selected() if i not in before)
    model = api.get(f"/api/runs/{new}").json()["config"]["model"]
    assert model["init"] == "scaled_normal" and model["activation"] == "tanh"
    assert model["depth"] == 6 and model["width"] == 32
    assert model["init_gain"] == pytest.approx(3.0)  # the top-right cell
    assert model["bias_std"] == pytest.approx(0.0)  # the bottom row


def test_theory_spectrum_quantiles_helper(modules: Any) -> None:
    got = modules.evaluate(
        """async () => {
            const m = await import('/spectrum.js');
            return m.spectrumQuantiles([[2, null, 1, 3]]);
        }"""
    )
    # squares 1, 4, 9: min, 10%, median, 90%, max
    assert [row[0] for row in got] == pytest.approx([1, 1.6, 4, 8, 9])
