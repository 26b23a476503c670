"""heatmap.js in the browser: the ratio view's hints, layer pairing and non-finite cells, the
tooltip, and clicking a cell to link the depth profile and the histogram."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from .e2e_helpers import SMALL, Explorer, merged, start, wait_ended

NON_FINITE = [228, 0, 124, 255]  # charts.js NON_FINITE, #e4007c


def plot_area(explorer: Explorer, nth: int = 0) -> dict[str, float]:
    box = explorer.page.locator("#heatmaps .plot .nsewdrag").nth(nth).bounding_box()
    assert box is not None
    return dict(box)


def point_at(explorer: Explorer, fx: float, fy: float, nth: int = 0) -> tuple[float, float]:
    """Page coordinates of the fractions (fx from the left, fy from the bottom) of a plot area."""
    box = plot_area(explorer, nth)
    return box["x"] + fx * box["width"], box["y"] + (1 - fy) * box["height"]


def ended_runs(api: httpx.Client, *configs: dict[str, Any]) -> list[str]:
    ids = [start(api, c) for c in configs]
    for run_id in ids:
        wait_ended(api, run_id)
    return ids


def test_plotly_is_the_pinned_version(explorer: Explorer) -> None:
    # The heatmap relies on plotly.js 4's hoveranywhere / clickanywhere: the page runs the
    # plotly.js that the pinned plotly package ships.
    explorer.open()
    assert version("plotly") == "7.1.0"
    assert explorer.page.evaluate("Plotly.version") == "4.1.1"


def test_ratio_with_one_run_shows_hint(explorer: Explorer, api: httpx.Client) -> None:
    (run_id,) = ended_runs(api, SMALL)
    explorer.open(f"#runs={run_id}&view=ratio")
    note = explorer.page.locator("#heatmap-note")
    note.wait_for(state="visible")
    assert "needs two runs" in note.inner_text()
    # The one run's own heatmap stays, on its own colour scale and legend.
    explorer.wait_columns(0, timeout=60)
    heat = explorer.page.evaluate("document.querySelector('#heatmaps .plot').heat")
    assert heat["colourbar"] == "log10 grad_norm" and "zmid" not in heat
    assert "B minus" not in explorer.page.inner_text("#legend-note")


def test_ratio_of_different_depths_aligns_layers_by_name(
    explorer: Explorer, api: httpx.Client
) -> None:
    a, b = ended_runs(api, merged(SMALL, model={"depth": 2}), merged(SMALL, model={"depth": 4}))
    explorer.open(f"#runs={a},{b}&view=ratio")
    explorer.page.wait_for_selector("#heatmaps .plot.ratio")
    explorer.wait_columns(0, timeout=60)
    heat = explorer.page.evaluate("document.querySelector('#heatmaps .plot.ratio').heat")
    assert heat["pairs"] == [["block1", "block1"], ["block2", "block2"], ["readout", "readout"]]
    assert heat["layers"] == ["block1", "block2", "readout"]
    note = explorer.page.inner_text("#heatmap-note")
    assert "paired by name" in note and "left out: B's block3–block4" in note


def test_ratio_paints_non_finite_cells_magenta(explorer: Explorer, api: httpx.Client) -> None:
    model = {"depth": 6, "width": 16}
    healthy = merged(SMALL, model=model, training={"lr": 0.01})
    diverging = merged(
        SMALL, model={**model, "init": "normal", "init_std": 0.6}, training={"lr": 0.3}
    )
    a, b = ended_runs(api, healthy, diverging)
    summary = api.get(f"/api/runs/{b}").json()
    assert summary["status"] == "diverged" and summary["divergence"]["step"] > 0
    explorer.open(f"#runs={a},{b}&view=ratio")
    explorer.page.wait_for_selector("#heatmaps .plot.ratio")
    explorer.page.wait_for_function(
        "s => document.querySelector('#heatmaps .plot.ratio')?.heat?.lastStep === s",
        arg=summary["divergence"]["step"],
    )
    # The image's last column is B's divergence step: every gradient there is NaN in B.
    pixels = explorer.page.evaluate(
        """async () => {
          const div = document.querySelector('#heatmaps .plot.ratio');
          const img = new Image();
          img.src = div.layout.images[0].source;
          await img.decode();
          const c = document.createElement('canvas');
          [c.width, c.height] = [img.width, img.height];
          const ctx = c.getContext('2d');
          ctx.drawImage(img, 0, 0);
          const at = (x, y) => [...ctx.getImageData(x, y, 1, 1).data];
          const n = div.heat.columns;
          return { last: [0, 1, 2].map((y) => at(n - 1, y)), first: at(0, 0) };
        }"""
    )
    assert pixels["last"] == [NON_FINITE] * 3
    assert pixels["first"] != NON_FINITE


def hover_tip(explorer: Explorer, fx: float, fy: float) -> str:
    tip = explorer.page.locator(".hm-tip")
    for attempt in range(10):
        x, y = point_at(explorer, fx, fy)
        explorer.page.mouse.move(x + attempt % 2, y)
        if tip.is_visible():
            return str(tip.inner_text())
        explorer.page.wait_for_timeout(150)
    raise AssertionError("no tooltip")


def test_metric_change_from_keyboard_hides_old_tooltip(
    explorer: Explorer, api: httpx.Client
) -> None:
    (run_id,) = ended_runs(api, SMALL)
    explorer.open(f"#runs={run_id}")
    explorer.wait_columns(0, timeout=60)
    assert "grad_norm = " in hover_tip(explorer, 0.5, 0.5)
    # The pointer stays over the heatmap while the metric changes from the keyboard.
    explorer.page.focus("#metric")
    explorer.page.keyboard.press("ArrowDown")
    explorer.page.wait_for_function("() => window.depthscope.state.metric === 'act_grad_norm'")
    explorer.page.wait_for_function(
        "document.querySelector('#heatmaps .plot').heat.colourbar === 'log10 act_grad_norm'"
    )
    tip = explorer.page.locator(".hm-tip")
    assert tip.is_hidden() or "grad_norm = " not in tip.inner_text()


def test_tooltip_formats_small_numbers(explorer: Explorer, api: httpx.Client) -> None:
    (run_id,) = ended_runs(api, merged(SMALL, training={"lr": 0.0001}))
    explorer.open(f"#runs={run_id}&metric=update_ratio")
    explorer.wait_columns(0, timeout=60)
    text = hover_tip(explorer, 0.5, 0.5)
    value = re.search(r"update_ratio = (\S+)", text)
    assert value is not None, text
    assert re.fullmatch(r"-?\d(\.\d{1,3})?e-\d+", value.group(1)), value.group(1)  # e.g. 7.94e-5
    assert float(value.group(1)) < 1e-3


def test_clicking_a_heatmap_cell_links_profile_and_histogram(
    explorer: Explorer, api: httpx.Client, screenshots_dir: Path
) -> None:
    (run_id,) = ended_runs(api, SMALL)  # 30 recorded steps, layers block1-block3 and readout
    explorer.open(f"#runs={run_id}")
    explorer.wait_columns(29)
    # The middle of the block2 row (second of four from the bottom), a third of the way along.
    x, y = point_at(explorer, 1 / 3 + 0.01, 1.5 / 4)
    explorer.page.mouse.click(x, y)
    explorer.page.wait_for_function("() => window.depthscope.state.step >= 0")
    state = explorer.page.evaluate("window.depthscope.state")
    assert state["step"] == 10 and state["layer"] == 1
    step_value = "() => document.getElementById('step-value').value"
    explorer.page.wait_for_function(f"{step_value} === 'step 10'")
    explorer.page.wait_for_function("() => document.querySelector('#hist-layer').value === '1'")
    assert "at block2" in explorer.page.evaluate(
        "document.querySelector('#histogram').layout.title.text"
    )
    # The chosen step is marked on the heatmap; the readout row picks the readout (-1).
    shapes = explorer.page.evaluate("document.querySelector('#heatmaps .plot').layout.shapes")
    assert {s["x0"] for s in shapes if s["type"] == "line"} == {10}
    explorer.shot("linked-views", screenshots_dir)
    x, y = point_at(explorer, 0.9, 3.5 / 4)
    explorer.page.mouse.click(x, y)
    explorer.page.wait_for_function("() => window.depthscope.state.layer === -1")
    explorer.page.wait_for_function("() => document.querySelector('#hist-layer').value === '3'")
    # From the keyboard: Enter picks the cell under the cursor.
    explorer.page.focus("#heatmaps .plot")
    explorer.page.keyboard.press("Home")
    explorer.page.keyboard.press("ArrowDown")
    explorer.page.keyboard.press("Enter")
    explorer.page.wait_for_function("() => window.depthscope.state.step === 0")
    assert explorer.page.evaluate("window.depthscope.state.layer") == 2
