"""The guided lesson in the browser: each step opens its presets' runs (started or reused) in its
view and metric with its text, and a step shared as a link reopens the same step and runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from .e2e_helpers import Explorer


def canonical(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def wait_lesson_step(explorer: Explorer, index: int, runs: int) -> dict[str, Any]:
    explorer.page.wait_for_function(
        """([i, n]) => { const s = window.depthscope.state;
            const card = document.getElementById('lesson-card');
            return s.lstep === i && s.runs.length === n && !card.hidden
                && card.querySelector('.lesson-message').textContent === ''; }""",
        arg=[index, runs],
        timeout=20_000,
    )
    state: dict[str, Any] = explorer.page.evaluate("() => window.depthscope.state")
    return state


def configs_of(api: httpx.Client, ids: list[str]) -> list[str]:
    return [canonical(api.get(f"/api/runs/{run_id}").json()["config"]) for run_id in ids]


def test_lesson_steps_open_their_runs_view_and_metric(
    explorer: Explorer, api: httpx.Client, screenshots_dir: Path
) -> None:
    lesson = api.get("/api/lessons").json()[0]
    presets = {p["id"]: p for p in api.get("/api/presets").json()}
    explorer.open()
    titles = explorer.page.locator("button.lesson-start strong").all_inner_texts()
    assert titles == [lesson["title"] for lesson in api.get("/api/lessons").json()]
    explorer.page.locator("button.lesson-start").first.click()
    seen: dict[str, str] = {}  # preset id -> the run that shows it
    for index, step in enumerate(lesson["steps"][:3]):
        if index:
            explorer.page.click("#lesson-card .lesson-next")
        state = wait_lesson_step(explorer, index, len(step["runs"]))
        assert state["lesson"] == lesson["id"]
        assert (state["view"], state["metric"]) == (step["view"], step["metric"])
        expected = [canonical(presets[p]["config"]) for p in step["runs"]]
        assert configs_of(api, state["runs"]) == expected  # A then B, from the presets
        for preset, run_id in zip(step["runs"], state["runs"], strict=True):
            assert seen.setdefault(preset, run_id) == run_id  # a run shown before is reused
        card = explorer.page.locator("#lesson-card")
        assert step["title"] in card.inner_text() and step["text"] in card.inner_text()
        assert f"step {index + 1} of {len(lesson['steps'])}" in card.inner_text()
        assert f"lesson={lesson['id']}" in explorer.page.url
    explorer.wait_columns(20, nth=0, timeout=60)  # the ratio of both runs has data to show
    explorer.shot("lesson", screenshots_dir)
    explorer.page.click("#lesson-card .lesson-prev")
    state = wait_lesson_step(explorer, 1, 2)
    assert state["runs"] == [seen[p] for p in lesson["steps"][1]["runs"]]
    explorer.page.click("#lesson-card .lesson-close")
    explorer.page.wait_for_function(
        "() => document.getElementById('lesson-card').hidden && !window.depthscope.state.lesson"
    )
    assert "lesson=" not in explorer.page.url


def test_lesson_step_shared_as_a_link_reopens_it(
    explorer: Explorer, api: httpx.Client, browser: Any, server_url: str
) -> None:
    lesson = api.get("/api/lessons").json()[0]
    last = len(lesson["steps"]) - 1
    explorer.open(f"#lesson={lesson['id']}&lstep={last}")  # a link names only the step
    state = wait_lesson_step(explorer, last, len(lesson["steps"][last]["runs"]))
    assert (state["view"], state["metric"]) == (
        lesson["steps"][last]["view"],
        lesson["steps"][last]["metric"],
    )
    link = explorer.page.url
    runs_before = len(api.get("/api/runs").json())

    other = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        page = other.new_page()
        page.goto(link)
        page.wait_for_selector("body[data-ready=true]", timeout=20_000)
        page.wait_for_function(
            "([i, runs]) => { const s = window.depthscope.state; return s.lstep === i"
            " && s.runs.join() === runs.join()"
            " && !document.getElementById('lesson-card').hidden; }",
            arg=[last, state["runs"]],
            timeout=20_000,
        )
        assert lesson["steps"][last]["title"] in page.locator("#lesson-card").inner_text()
        assert page.locator("#lesson-card .lesson-next").is_disabled()  # the last step
    finally:
        other.close()
    assert len(api.get("/api/runs").json()) == runs_before  # the link's runs were reused


def test_lesson_state_round_trips_and_bad_values_fall_back(modules: Any) -> None:
    decoded = modules.evaluate(
        """async () => {
          const m = await import('/state.js');
          const s = { ...m.defaultState(), runs: ['a'], lesson: 'gradient-flow', lstep: 4 };
          return [m.decodeState(m.encodeState(s)), m.decodeState('#lesson=<x>&lstep=-3'),
                  m.encodeState(m.defaultState())];
        }"""
    )
    assert decoded[0]["lesson"] == "gradient-flow" and decoded[0]["lstep"] == 4
    assert decoded[1]["lesson"] is None and decoded[1]["lstep"] == 0
    assert decoded[2] == "#"  # no lesson: nothing in the link


def test_lesson_reuses_the_linked_run_else_the_newest_fit(modules: Any) -> None:
    config = {"model": {"depth": 3, "width": 8}, "training": {"lr": 0.1}}
    same = {"training": {"lr": 0.1}, "model": {"width": 8, "depth": 3}}  # other key order
    picks = modules.evaluate(
        """async ([config, same]) => {
          const { reusableRun } = await import('/lesson.js');
          const other = { ...config, model: { depth: 4, width: 8 } };
          const runs = [
            { id: 'new-failed', config, status: 'failed' },
            { id: 'newer', config: same, status: 'running' },
            { id: 'older', config, status: 'completed' },
            { id: 'elsewhere', config: other, status: 'completed' },
          ];
          return [reusableRun(config, runs, 'older'), reusableRun(config, runs, 'elsewhere'),
                  reusableRun(config, runs, undefined), reusableRun(config, runs.slice(0, 1))];
        }""",
        [config, same],
    )
    assert picks == ["older", "newer", "newer", None]
