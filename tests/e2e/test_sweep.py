"""The sweep view in Chromium: a sweep from the form plus two axes drawn as a grid and lines,
a cell opens its run, two picked cells compare, a preset starts in one click, a refused axis
shows the server's message; the view's pure helpers as ES modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .e2e_helpers import Console, Explorer

TINY = {"model-depth": "2", "model-width": "8", "training-steps": "40", "data-n_samples": "256"}


@pytest.fixture
def sweeps(api: httpx.Client) -> Iterator[httpx.Client]:
    """The API client; every sweep a test made is deleted afterwards (its runs with it)."""
    before = {s["id"] for s in api.get("/api/sweeps").json()}
    yield api
    for sweep in api.get("/api/sweeps").json():
        if sweep["id"] not in before:
            api.delete(f"/api/sweeps/{sweep['id']}")


def fill_tiny_form(explorer: Explorer) -> None:
    for name, value in TINY.items():
        explorer.set_field(name.replace("-", ".", 1), value)
    explorer.page.locator("#f-data-dataset").select_option("moons")


def start_from_form(explorer: Explorer, first: str, second: str) -> None:
    explorer.page.select_option("#sweep-field-0", "training.lr")
    explorer.page.fill("#sweep-values-0", first)
    explorer.page.select_option("#sweep-field-1", "model.norm")
    explorer.page.fill("#sweep-values-1", second)
    explorer.page.click("#sweep-start")


def wait_sweep(explorer: Explorer, status: str, timeout: float = 60) -> None:
    explorer.page.wait_for_function(
        "s => document.body.dataset.sweep === s", arg=status, timeout=timeout * 1000
    )


def cells(explorer: Explorer) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = explorer.page.evaluate(
        """() => [...document.querySelectorAll('button.sweep-cell')].map(b => ({
            index: Number(b.dataset.index), run: b.dataset.run, status: b.dataset.status,
            text: b.textContent, background: b.style.background }))"""
    )
    return found


def test_sweep_from_the_form_draws_a_grid_and_one_line_per_norm(
    explorer: Explorer, sweeps: httpx.Client, screenshots_dir: Path
) -> None:
    explorer.open()
    fill_tiny_form(explorer)
    start_from_form(explorer, "0.05, 0.5", "none, batchnorm")
    wait_sweep(explorer, "completed")
    sweep_id = explorer.page.eval_on_selector("#sweep-select", "s => s.value")
    sweep = sweeps.get(f"/api/sweeps/{sweep_id}").json()
    assert sweep["base"]["model"]["depth"] == 2 and sweep["base"]["training"]["steps"] == 40
    assert [c["values"] for c in sweep["cells"]] == [
        {"training.lr": 0.05, "model.norm": "none"},
        {"training.lr": 0.05, "model.norm": "batchnorm"},
        {"training.lr": 0.5, "model.norm": "none"},
        {"training.lr": 0.5, "model.norm": "batchnorm"},
    ]
    shown = {c["index"]: c for c in cells(explorer)}
    assert len(shown) == 4
    for cell in sweep["cells"]:
        drawn = shown[cell["index"]]
        assert drawn["run"] == cell["run_id"] and drawn["status"] == cell["status"]
        accuracy = cell["summary"]["best_val_accuracy"]
        assert drawn["text"] == ("diverged" if cell["summary"]["diverged"] else f"{accuracy:.3g}")
        assert drawn["background"].startswith("rgb")
    lines = explorer.page.eval_on_selector("#sweep-lines", "d => d.data.map(t => [t.name, t.y])")
    assert [name for name, _ in lines] == ["model.norm=none", "model.norm=batchnorm"]
    by_index = {c["index"]: c["summary"]["best_val_accuracy"] for c in sweep["cells"]}
    assert lines[1][1] == [by_index[1], by_index[3]]  # batchnorm along lr
    explorer.page.select_option("#sweep-summary", "final_loss")
    assert "final training loss" in explorer.page.inner_text(".sweep-legend")
    explorer.page.select_option("#sweep-summary", "best_val_accuracy")
    for folder in {explorer.artifacts / "screenshots", screenshots_dir}:
        folder.mkdir(parents=True, exist_ok=True)
        explorer.page.locator("#sweeps").screenshot(path=str(folder / "sweep.png"))


def test_sweep_cell_opens_its_run_and_two_picked_cells_compare(
    explorer: Explorer, sweeps: httpx.Client
) -> None:
    explorer.open()
    fill_tiny_form(explorer)
    start_from_form(explorer, "0.05, 0.1", "none")
    wait_sweep(explorer, "completed")
    first, second = (c["run"] for c in cells(explorer))
    explorer.page.click(f"button.sweep-cell[data-run='{first}']")
    explorer.page.wait_for_function("r => window.depthscope.state.runs.join() === r", arg=first)
    assert explorer.page.evaluate("window.depthscope.state.view") == "single"
    explorer.wait_columns(0)  # its heatmap is drawn
    explorer.page.click("#sweep-compare")
    explorer.page.click(f"button.sweep-cell[data-run='{second}']")
    explorer.page.click(f"button.sweep-cell[data-run='{first}']")
    explorer.page.wait_for_function(
        "r => window.depthscope.state.runs.join() === r", arg=f"{second},{first}"
    )
    assert explorer.page.evaluate("window.depthscope.state.view") == "compare"
    assert explorer.page.get_attribute("#sweep-compare", "aria-pressed") == "false"


def test_sweep_preset_starts_in_one_click_then_cancel_and_delete(
    explorer: Explorer, sweeps: httpx.Client
) -> None:
    explorer.open()
    explorer.page.click("button.sweep-preset[data-preset='batchnorm-lr']")
    explorer.page.wait_for_function(
        "() => document.querySelectorAll('button.sweep-cell').length === 8"
    )
    sweep_id = explorer.page.eval_on_selector("#sweep-select", "s => s.value")
    sweep = sweeps.get(f"/api/sweeps/{sweep_id}").json()
    assert sweep["name"] == "batch norm x learning rate" and sweep["n_cells"] == 8
    explorer.page.click("#sweep-cancel")
    wait_sweep(explorer, "cancelled", timeout=10)
    explorer.page.once("dialog", lambda dialog: dialog.accept())
    explorer.page.click("#sweep-delete")
    explorer.page.wait_for_function(
        "() => document.querySelectorAll('button.sweep-cell').length === 0"
    )
    assert sweeps.get(f"/api/sweeps/{sweep_id}").status_code == 404
    run_ids = {r["id"] for r in sweeps.get("/api/runs").json()}
    assert not run_ids & {c["run_id"] for c in sweep["cells"]}  # its runs went with it


def test_sweep_refused_axis_shows_the_field_and_value(
    explorer: Explorer, sweeps: httpx.Client, console: Console
) -> None:
    console.allowed.append("422")
    explorer.open()
    fill_tiny_form(explorer)
    start_from_form(explorer, "0.05, 99", "none")
    explorer.page.wait_for_selector("#sweep-error:not([hidden])")
    text = explorer.page.inner_text("#sweep-error")
    assert "422" in text and "axes.0.values.1" in text and "training.lr = 99" in text


def test_sweep_helpers_place_cells_and_colour_the_ends(modules: Any) -> None:
    result = modules.evaluate(
        """async () => {
            const m = await import('/sweep.js');
            const axes = [{field: 'a', values: [1, 2, 3]}, {field: 'b', values: ['x', 'y']}];
            const cells = [0, 1, 2, 3, 4, 5].map(i => ({index: i, summary: {}}));
            const grid = m.gridOf({axes, cells});
            const lines = m.linesOf({axes, cells});
            return {
                at: [0, 1, 5].map(i => m.cellPosition(i, [3, 2])),
                grid: grid.map(p => p.rows.map(r => r.map(c => c.index))),
                lines: lines.map(l => l.cells.map(c => c.index)),
                lo: m.colourFor(0, 0, 1), hi: m.colourFor(1, 0, 1),
                labels: m.axisLabels({values: ['relu'], with: {'model.init': ['he_normal']}}),
            };
        }"""
    )
    assert result["at"] == [[0, 0], [0, 1], [2, 1]]
    assert result["grid"] == [[[0, 2, 4], [1, 3, 5]]]  # rows follow axis b, columns axis a
    assert result["lines"] == [[0, 2, 4], [1, 3, 5]]
    assert result["lo"] == "rgb(68,1,84)" and result["hi"] == "rgb(253,231,37)"  # Viridis ends
    assert result["labels"] == ["relu (he_normal)"]
