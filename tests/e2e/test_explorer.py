"""The explorer end to end: a real server, headless Chromium, a person's main
flows: a preset, comparing runs, sharing a link, cancelling, bad input, divergence."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from depthscope.presets import PRESETS

from .e2e_helpers import (
    LONG,
    SMALL,
    Console,
    Explorer,
    advance,
    merged,
    start,
    start_paused,
    wait_ended,
)

PRESET_IDS = [p.id for p in PRESETS]  # the order of the preset buttons

# A small net that would train for a long time: something to watch live and to cancel.
LONG_RUN = {
    "model.depth": "3",
    "model.width": "8",
    "training.steps": "100000",
    "training.batch_size": "16",
}


def start_from_form(explorer: Explorer, fields: dict[str, str]) -> str:
    before = explorer.selected()
    for name, value in fields.items():
        explorer.set_field(name, value)
    explorer.page.click("#run")
    explorer.page.wait_for_function(
        "b => { const r = window.depthscope.state.runs; return r.length && r[0] !== b; }",
        arg=before[0] if before else "",
        timeout=10_000,
    )
    return explorer.selected()[0]


def test_home_form_matches_schema_and_presets(
    explorer: Explorer, api: httpx.Client, screenshots_dir: Path
) -> None:
    explorer.open()
    schema = api.get("/api/schema").json()
    for section, ref in schema["properties"].items():
        definition = schema["$defs"][ref["$ref"].split("/")[-1]]
        for key, prop in definition["properties"].items():
            field = explorer.page.locator(f"#f-{section}-{key}")
            assert field.count() == 1, f"{section}.{key} has no form field"
            if "enum" in prop:
                options = field.locator("option").all_inner_texts()
                assert options == [str(c) for c in prop["enum"]]
            if "maximum" in prop:
                assert float(field.get_attribute("max")) == prop["maximum"]
    presets = api.get("/api/presets").json()
    titles = explorer.page.locator("button.preset strong").all_inner_texts()
    assert titles == [p["title"] for p in presets]
    # Every control has an accessible name: a label, or aria-label on buttons.
    unlabelled = explorer.page.evaluate(
        """() => [...document.querySelectorAll('input, select')]
            .filter(e => e.type !== 'hidden' && !e.labels?.length && !e.getAttribute('aria-label'))
            .map(e => e.id || e.name)"""
    )
    assert unlabelled == []
    explorer.shot("home", screenshots_dir)


def test_preset_heatmap_fills_to_every_recorded_step(
    explorer: Explorer, api: httpx.Client, screenshots_dir: Path
) -> None:
    explorer.open()
    started = time.monotonic()
    run_id = explorer.run_preset(0)
    explorer.wait_columns(0, timeout=20)
    assert time.monotonic() - started < 20
    # A preset trains in seconds: by its end the stream has delivered a column per step.
    summary = wait_ended(api, run_id)
    assert summary["status"] == "completed"
    assert explorer.wait_columns(summary["steps_done"] - 1, timeout=20) == summary["steps_done"]
    # One heatmap row per layer (input at the bottom); hovering names layer, step and value.
    heat = explorer.page.evaluate("document.querySelector('#heatmaps .plot').heat")
    assert heat["layers"] == summary["layers"]
    assert heat["colourbar"] == "log10 grad_norm" and heat["zmin"] < heat["zmax"]
    tip = explorer.page.locator(".hm-tip")
    for attempt in range(20):  # the plot may be rebuilt under a still cursor while it trains
        box = explorer.page.locator("#heatmaps .plot .nsewdrag").first.bounding_box()
        assert box is not None
        # the top row is the readout
        explorer.page.mouse.move(box["x"] + box["width"] / 2 + attempt % 2, box["y"] + 3)
        if tip.is_visible():
            break
        time.sleep(0.25)
    assert tip.inner_text().startswith("layer readout · step ")
    assert "grad_norm = " in tip.inner_text()
    # The same from the keyboard: focus the plot, Home = first step, Down = one layer lower.
    explorer.page.mouse.move(0, 0)
    explorer.page.focus("#heatmaps .plot")
    explorer.page.keyboard.press("Home")
    explorer.page.keyboard.press("ArrowDown")
    assert tip.inner_text().startswith(f"layer {summary['layers'][-2]} · step 0\n")
    explorer.page.wait_for_function(
        "document.querySelector('#curves').data?.[0]?.x?.length > 0", timeout=10_000
    )
    explorer.shot("single-run", screenshots_dir)


def test_heatmap_grows_live_column_by_column(explorer: Explorer, api: httpx.Client) -> None:
    # A paused run advanced by hand: each advance must show up as exactly that many new columns,
    # whatever the speed of this machine.
    run_id = start_paused(api, merged(SMALL, training={"steps": 100_000}), steps=7)["id"]
    explorer.open(f"#runs={run_id}")
    assert explorer.wait_columns(6, timeout=20) == 7
    for done in (12, 40):
        advance(api, run_id, done - explorer.columns())
        assert explorer.wait_columns(done - 1, timeout=20) == done
    heat = explorer.page.evaluate("document.querySelector('#heatmaps .plot').heat")
    assert heat["lastStep"] == 39


def test_compare_two_presets_shared_scale_and_ratio(
    explorer: Explorer, api: httpx.Client, screenshots_dir: Path
) -> None:
    explorer.open()
    a = explorer.run_preset(0)
    b = explorer.run_preset(1)
    assert explorer.selected()[:2] == [b, a]
    explorer.page.check("input[name=view][value=compare]")
    explorer.wait_columns(0, nth=1, timeout=20)
    explorer.wait_columns(0, nth=0, timeout=20)
    scales = explorer.page.evaluate(
        "[...document.querySelectorAll('#heatmaps .plot')].map(d => [d.heat.zmin, d.heat.zmax])"
    )
    assert len(scales) == 2 and scales[0] == scales[1], "side by side must share one colour scale"
    explorer.shot("compare", screenshots_dir)
    explorer.page.check("input[name=view][value=ratio]")
    explorer.page.wait_for_selector("#heatmaps .plot.ratio")
    explorer.wait_columns(0, timeout=20)
    ratio = explorer.page.evaluate("document.querySelector('#heatmaps .plot.ratio').heat")
    assert ratio["zmid"] == 0 and ratio["zmin"] == -ratio["zmax"]
    assert ratio["colourbar"] == "log10 B − log10 A"
    explorer.shot("ratio", screenshots_dir)


def test_share_link_round_trips(
    explorer: Explorer, api: httpx.Client, browser: Any, console: Console
) -> None:
    explorer.open()
    run_id = explorer.run_preset(0)
    explorer.wait_columns(0, timeout=20)
    explorer.page.select_option("#metric", "act_std")
    explorer.page.select_option("#hist-kind", "act_grad")
    explorer.set_field("model.depth", "7")
    explorer.page.dispatch_event("#config-form", "change")
    link = explorer.page.input_value("#share")
    state = explorer.page.evaluate("JSON.parse(JSON.stringify(window.depthscope.state))")
    other = browser.new_page()
    other.on("console", lambda m: m.type == "error" and console.errors.append(m.text))
    try:
        other.goto(link)
        other.wait_for_selector("body[data-ready=true]")
        assert other.evaluate("window.depthscope.state") == state
        assert other.input_value("#metric") == "act_std"
        assert other.input_value("#f-model-depth") == "7"
        other.wait_for_function(
            "id => document.querySelector(`#heatmaps .plot[data-run='${id}']`)"
            "?.dataset.columns > 0",
            arg=run_id,
        )
    finally:
        other.close()


def test_histogram_of_the_activation_input_with_its_percentiles(explorer: Explorer) -> None:
    """The batch-norm preset's u histograms at block1, with 15th/50th/85th percentile lines
    that rise in order and lie inside each snapshot's range (Ioffe & Szegedy, Fig. 1 b, c)."""
    explorer.open()
    explorer.run_preset(PRESET_IDS.index("batchnorm"))
    explorer.wait_columns(30, timeout=30)
    explorer.page.select_option("#hist-kind", "preact")
    explorer.page.wait_for_function(
        "() => document.querySelector('#histogram').data?.length === 4"
        " && document.querySelector('#histogram').data[1].y.length > 2"
        # the switch of kind has been drawn, not still the h histogram from before it
        " && document.querySelector('#histogram').innerText.includes('activation input u')",
        timeout=15_000,
    )
    traces = explorer.page.evaluate(
        "document.querySelector('#histogram').data.map(t => ({type: t.type, y: t.y}))"
    )
    heat, *lines = traces
    assert heat["type"] == "heatmap" and [t["type"] for t in lines] == ["scatter"] * 3
    low, mid, high = (t["y"] for t in lines)
    assert all(a < b < c for a, b, c in zip(low, mid, high, strict=True))
    grid = heat["y"]  # cell centres over the union of the snapshots' ranges
    lo, hi = grid[0] - (grid[1] - grid[0]) / 2, grid[-1] + (grid[1] - grid[0]) / 2
    assert all(lo <= a and c <= hi for a, c in zip(low, high, strict=True))
    assert "activation input u" in explorer.page.inner_text("#histogram")


def test_heatmap_keeps_a_zoom_when_old_columns_thin_out(
    explorer: Explorer, api: httpx.Client
) -> None:
    # Past MAX_COLUMNS (2048) a run's columns are compacted, every other one kept: the heatmap
    # repaints them on the same plot, and the zoom the user made stays where they put it.
    run_id = start_paused(api, merged(LONG, recording={"eval_every": 0}), steps=20)["id"]
    explorer.open(f"#runs={run_id}")
    explorer.wait_columns(19, timeout=20)
    plot = "document.querySelector('#heatmaps .plot')"
    explorer.page.evaluate(
        f"window.zoomed = {plot}; Plotly.relayout({plot}, {{'xaxis.range': [0, 5]}})"
    )
    advance(api, run_id, 2100)
    explorer.page.wait_for_function(f"() => {plot}.heat.lastStep === 2119", timeout=30_000)
    assert explorer.columns() < 2048  # compacted
    assert explorer.page.evaluate(f"window.zoomed === {plot}")
    assert explorer.page.evaluate(f"{plot}.layout.xaxis.range") == pytest.approx([0, 5], abs=0.01)


def test_cancel_stops_the_run(explorer: Explorer, api: httpx.Client) -> None:
    explorer.open()
    run_id = start_from_form(explorer, LONG_RUN)
    shown = explorer.wait_columns(0, timeout=20)
    # While it trains, the step axis follows the data, until the user zooms: then it stays.
    x_range = "document.querySelector('#heatmaps .plot').layout.xaxis.range"
    explorer.page.wait_for_function(
        f"({x_range})[1] >= document.querySelector('#heatmaps .plot').heat.lastStep"
        " && document.querySelector('#heatmaps .plot').heat.lastStep > 20",
        timeout=10_000,
    )
    explorer.page.evaluate(
        "Plotly.relayout(document.querySelector('#heatmaps .plot'), {'xaxis.range': [0, 5]})"
    )
    explorer.wait_columns(shown + 5, timeout=20)
    # Kept to within a pixel (Plotly may round a range through pixel space when it redraws).
    assert explorer.page.evaluate(x_range) == pytest.approx([0, 5], abs=0.01)
    row = explorer.page.locator(f"tbody[data-run='{run_id}']")
    row.locator("button.cancel").click()
    explorer.page.wait_for_selector(
        f"tbody[data-run='{run_id}'][data-status=cancelled]", timeout=10_000
    )
    summary = api.get(f"/api/runs/{run_id}").json()
    assert summary["status"] == "cancelled" and 0 < summary["steps_done"] < 100_000
    explorer.shot("cancelled")
    # Export links in the row and the toolbar serve every record kept so far.
    for fmt in ("csv", "json"):
        href = explorer.page.locator(f"tbody[data-run='{run_id}'] a", has_text=fmt.upper())
        assert href.get_attribute("href") == explorer.page.get_attribute(f"#export-{fmt}", "href")
        body = api.get(str(href.get_attribute("href")))
        assert body.status_code == 200
    records = api.get(f"/api/runs/{run_id}/export?format=json").json()["records"]
    assert len(records) == summary["steps_done"]
    explorer.page.locator(f"tbody[data-run='{run_id}'] button.delete").click()
    explorer.page.locator(f"tbody[data-run='{run_id}'] button.confirm-delete").click()
    explorer.page.wait_for_selector(f"tbody[data-run='{run_id}']", state="detached")
    assert api.get(f"/api/runs/{run_id}").status_code == 404


def test_bad_form_value_shows_error_next_to_field(
    explorer: Explorer, console: Console, screenshots_dir: Path
) -> None:
    console.allowed.append("422")  # the browser logs the rejected POST itself
    explorer.open()
    explorer.set_field("model.depth", "500")
    explorer.page.click("#run")
    error = explorer.page.locator("#e-model-depth")
    error.wait_for(state="visible")
    assert "200" in error.inner_text()  # the server's bound, next to the field
    assert explorer.page.get_attribute("#f-model-depth", "aria-invalid") == "true"
    explorer.shot("form-error", screenshots_dir)
    # A cross-field error has no single field in its loc: shown at the top, the field marked.
    explorer.set_field("model.depth", "4")
    explorer.set_field("model.residual_every", "9")
    explorer.page.click("#run")
    top = explorer.page.locator("#form-error")
    top.wait_for(state="visible")
    assert "residual_every" in top.inner_text()
    assert explorer.page.get_attribute("#f-model-residual_every", "aria-invalid") == "true"
    assert explorer.selected() == []


def test_divergence_is_marked_and_named(
    explorer: Explorer, api: httpx.Client, screenshots_dir: Path
) -> None:
    explorer.open()
    run_id = start_from_form(
        explorer,
        {
            "model.depth": "6",
            "model.width": "16",
            "model.init": "normal",
            "model.init_std": "0.6",
            "training.lr": "0.3",
            "training.steps": "200",
            "training.batch_size": "32",
        },
    )
    banner = explorer.page.locator("#divergence")
    banner.wait_for(state="visible", timeout=30_000)
    divergence = api.get(f"/api/runs/{run_id}").json()["divergence"]
    assert divergence["message"] in banner.inner_text()  # the server's sentence, as sent
    explorer.shot("diverged", screenshots_dir)
    # The depth profile at that step, of the metric that went non-finite, says which layers
    # its line leaves out, the first of them being where the divergence was found.
    explorer.open(f"#runs={run_id}&metric={divergence['metric']}&step={divergence['step']}")
    note = explorer.page.locator("#profile-hidden")
    note.wait_for(state="visible", timeout=15_000)
    text = note.inner_text()
    assert "non-finite" in text and divergence["layer"] in text


def test_exploding_preset_charts_are_useful(
    explorer: Explorer, api: httpx.Client, screenshots_dir: Path
) -> None:
    # Issue 16 item 6: the exploding preset left the loss chart and the latest depth profile
    # empty, opened on a metric that contradicted the help text, and named the wrong layer.
    explorer.open()
    before = explorer.selected()
    explorer.page.click("button.preset[data-preset=exploding]")
    explorer.page.wait_for_function(
        "b => window.depthscope.state.runs[0] && window.depthscope.state.runs[0] !== b",
        arg=before[0] if before else "",
    )
    run_id = explorer.selected()[0]
    banner = explorer.page.locator("#divergence")
    banner.wait_for(state="visible", timeout=30_000)
    summary = api.get(f"/api/runs/{run_id}").json()
    divergence = summary["divergence"]
    assert summary["status"] == "diverged" and divergence["message"] in banner.inner_text()
    # It opens on the backpropagated signal, which brightens towards the input as the note says.
    assert explorer.page.input_value("#metric") == "act_grad_norm"
    assert "brightening towards the input" in explorer.page.inner_text("#metric-note")
    # The callout on the heatmap names the server's layer and step, as sent.
    explorer.page.wait_for_function(
        "() => document.querySelector('#heatmaps .plot')?.layout?.annotations?.length === 1"
    )
    callout = explorer.page.evaluate(
        "() => document.querySelector('#heatmaps .plot').layout.annotations[0]"
    )
    assert callout["x"] == divergence["step"]
    assert callout["y"] == divergence["layer_index"]
    assert f"{divergence['layer']}, step {divergence['step']}" in callout["text"]
    # The loss chart draws its few finite points as markers.
    explorer.page.wait_for_function(
        "() => document.querySelector('#curves').data?.[0]?.y?.some((v) => v !== null)"
    )
    loss = explorer.page.evaluate("() => document.querySelector('#curves').data[0]")
    assert "markers" in loss["mode"]
    # At "latest" the profile falls back to the last step with finite values and says so.
    note = explorer.page.locator("#profile-hidden")
    note.wait_for(state="visible")
    expected = f"its latest step ({divergence['step']}) has no finite act_grad_norm"
    assert expected in note.inner_text()
    drawn = explorer.page.evaluate("() => document.querySelector('#profile').data[0].y")
    assert all(v is not None and v > 0 for v in drawn)
    explorer.shot("exploding", screenshots_dir)


def test_form_defaults_follow_the_dataset(explorer: Explorer, api: httpx.Client) -> None:
    # Issue 16 item 8: the default form with dataset teacher diverged at step 2.
    explorer.open()
    assert explorer.page.input_value("#f-training-lr") == "0.05"
    explorer.set_field("data.dataset", "teacher")
    assert explorer.page.input_value("#f-training-lr") == "0.002"
    assert "0.002 for teacher" in explorer.page.inner_text("#f-training-lr-help")
    explorer.set_field("data.dataset", "moons")
    assert explorer.page.input_value("#f-training-lr") == "0.05"
    explorer.set_field("training.lr", "0.01")  # the user's own value survives a dataset change
    explorer.set_field("data.dataset", "teacher")
    assert explorer.page.input_value("#f-training-lr") == "0.01"
    explorer.page.click("#reset")
    explorer.set_field("data.dataset", "teacher")
    run_id = start_from_form(explorer, {"training.steps": "40"})
    summary = api.get(f"/api/runs/{run_id}").json()
    assert summary["config"]["training"]["lr"] == 0.002
    assert wait_ended(api, run_id)["status"] == "completed"


def test_compare_view_shows_config_difference(explorer: Explorer, api: httpx.Client) -> None:
    a = start(api, merged(SMALL, model={"activation": "relu"}))
    b = start(api, merged(SMALL, model={"activation": "tanh"}, training={"lr": 0.02}))
    explorer.open(f"#runs={a},{b}")
    diff = explorer.page.locator("#config-diff")
    assert diff.is_hidden()  # one run shown: nothing to compare
    explorer.page.check("input[name=view][value=compare]")
    diff.wait_for(state="visible")
    fields = diff.locator("li").evaluate_all("items => items.map((i) => i.dataset.field)")
    assert fields == ["model.activation", "training.lr"]
    assert "relu → tanh" in diff.inner_text() and "0.05 → 0.02" in diff.inner_text()
    explorer.page.check("input[name=view][value=ratio]")
    assert diff.is_visible()
