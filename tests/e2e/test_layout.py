"""The page's layout at the widths a learner uses: the heatmap in view, the chart first on a
narrow screen, a form that folds away, and visible feedback when a run starts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .e2e_helpers import SMALL, Explorer, start, wait_ended


def box(explorer: Explorer, selector: str) -> dict[str, float]:
    found = explorer.page.locator(selector).first.bounding_box()
    assert found is not None, selector
    return dict(found)


@pytest.mark.parametrize(("width", "height"), [(1500, 1000), (1000, 800)])
def test_heatmap_in_view_without_scrolling(
    explorer: Explorer, api: httpx.Client, width: int, height: int, screenshots_dir: Path
) -> None:
    run_id = start(api, SMALL)
    wait_ended(api, run_id)
    explorer.page.set_viewport_size({"width": width, "height": height})
    explorer.open(f"#runs={run_id}")
    explorer.wait_columns(0, timeout=60)
    plot = box(explorer, "#heatmaps .plot")
    assert explorer.page.evaluate("window.scrollY") == 0
    assert plot["y"] >= 0 and plot["y"] + plot["height"] <= height, plot
    explorer.page.evaluate("() => window.scrollTo(0, 0)")
    explorer.shot(f"width-{width}", screenshots_dir, full_page=False)


def test_narrow_screen_shows_chart_first(
    explorer: Explorer, api: httpx.Client, screenshots_dir: Path
) -> None:
    run_id = start(api, SMALL)
    wait_ended(api, run_id)
    explorer.page.set_viewport_size({"width": 800, "height": 900})
    explorer.open(f"#runs={run_id}")
    explorer.wait_columns(0, timeout=60)
    heatmap, presets, form = (box(explorer, s) for s in ("#heatmaps", "#presets", "#config-form"))
    assert heatmap["y"] < presets["y"] < form["y"]
    assert heatmap["y"] < 900  # on the first screen
    explorer.shot("width-800", screenshots_dir, full_page=False)


def test_form_collapses_and_the_link_keeps_it(explorer: Explorer) -> None:
    explorer.open()
    toggle = explorer.page.locator("#toggle-form")
    assert toggle.get_attribute("aria-expanded") == "true"
    toggle.click()
    assert explorer.page.locator("#config-form").is_hidden()
    assert toggle.get_attribute("aria-expanded") == "false"
    assert "form=closed" in explorer.page.input_value("#share")
    explorer.page.reload()  # the same link, opened afresh
    explorer.page.wait_for_selector("body[data-ready=true]")
    assert explorer.page.locator("#config-form").is_hidden()
    explorer.page.click("#toggle-form")
    assert explorer.page.locator("#config-form").is_visible()


def test_run_gives_visible_feedback(explorer: Explorer, screenshots_dir: Path) -> None:
    explorer.open()
    explorer.set_field("training.steps", "20")
    explorer.page.locator("#run").scroll_into_view_if_needed()
    assert box(explorer, "#heatmap-section")["y"] < 0  # the heatmap is out of sight
    explorer.page.click("#run")
    explorer.page.wait_for_function("() => window.depthscope.state.runs.length === 1")
    toast = explorer.page.locator("#toast")
    toast.wait_for(state="visible")
    assert toast.inner_text().startswith("Started ")
    section = box(explorer, "#heatmap-section")
    assert 0 <= section["y"] < explorer.page.viewport_size["height"] / 2
    explorer.wait_columns(0, timeout=60)
    explorer.shot("run-started", screenshots_dir, full_page=False, toast=True)
