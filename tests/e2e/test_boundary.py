"""The data and the decision boundary in the browser: the map is the API's grid, the points are the
training data, it updates live, follows the depth profile's step, and colours each class."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from .e2e_helpers import Explorer


def start(api: httpx.Client, **sections: dict[str, Any]) -> str:
    config: dict[str, dict[str, Any]] = {
        "model": {"depth": 3, "width": 16},
        "training": {"steps": 200, "batch_size": 32, "lr": 0.1},
        "data": {"dataset": "moons", "n_samples": 512},
        "recording": {"boundary_every": 20, "histogram_every": 0},
    }
    for name, values in sections.items():
        config[name] = {**config[name], **values}
    created = api.post("/api/runs", json=config)
    assert created.status_code == 201, created.text
    run_id: str = created.json()["id"]
    return run_id


def finish(api: httpx.Client, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run: dict[str, Any] = api.get(f"/api/runs/{run_id}").json()
        if run["terminal"]:
            return run
        time.sleep(0.1)
    raise AssertionError(f"{run_id} did not finish")


def drawn(explorer: Explorer) -> dict[str, Any]:
    """The boundary plot's traces as Plotly holds them."""
    data: dict[str, Any] = explorer.page.evaluate(
        """() => {
            const div = document.getElementById('boundary');
            return {step: Number(div.dataset.step), hidden: div.hidden,
                    traces: div.data.map(t => ({type: t.type, z: t.z ?? null, x: t.x, y: t.y,
                                                 colour: t.marker?.color ?? null, name: t.name}))};
        }"""
    )
    return data


def wait_step(explorer: Explorer, check: str, timeout: float = 30) -> None:
    explorer.page.wait_for_function(
        f"() => {{ const s = document.getElementById('boundary').dataset.step;"
        f" return s !== undefined && ({check})(Number(s)); }}",
        timeout=timeout * 1000,
    )


def test_boundary_points_over_the_probability_map_updated_live(
    explorer: Explorer, api: httpx.Client, screenshots_dir: Path
) -> None:
    run_id = start(api, training={"steps": 100_000 // 32, "batch_size": 32})
    explorer.open(f"#runs={run_id}")
    wait_step(explorer, "s => s >= 0")
    first = drawn(explorer)["step"]
    wait_step(explorer, f"s => s > {first}")  # a newer frame replaced it, live
    view = drawn(explorer)
    assert not view["hidden"] and view["step"] > first
    reference = api.get(f"/api/runs/{run_id}/boundary?step={view['step']}").json()
    heat, *points = view["traces"]
    assert heat["type"] == "heatmap" and heat["z"] == reference["prob"]  # P(class 1), rows follow y
    assert heat["x"] == reference["x"] and heat["y"] == reference["y"]
    assert len(heat["z"]) >= 32 and len(heat["z"][0]) >= 32
    assert [p["type"] for p in points] == ["scatter", "scatter"]
    labels = reference["points"]["label"]
    for c, trace in enumerate(points):
        expected = [
            x for x, label in zip(reference["points"]["x"], labels, strict=True) if label == c
        ]
        assert trace["x"] == expected
    assert points[0]["colour"] != points[1]["colour"]
    explorer.shot("boundary", screenshots_dir)
    api.post(f"/api/runs/{run_id}/cancel")


def test_boundary_follows_the_chosen_step_and_the_last_frame(
    explorer: Explorer, api: httpx.Client
) -> None:
    run_id = start(api)
    finish(api, run_id)
    explorer.open(f"#runs={run_id}&step=55")
    wait_step(explorer, "s => s === 40")  # the latest frame at or before step 55
    assert (
        drawn(explorer)["traces"][0]["z"]
        == api.get(f"/api/runs/{run_id}/boundary?step=40").json()["prob"]
    )
    explorer.page.click("#step-latest")  # follow the latest step again
    wait_step(explorer, "s => s === 200")  # the trained network, after the last step


def test_boundary_more_classes_colour_each_class(explorer: Explorer, api: httpx.Client) -> None:
    run_id = start(api, data={"dataset": "blobs", "n_samples": 512})
    finish(api, run_id)
    explorer.open(f"#runs={run_id}")
    wait_step(explorer, "s => s === 200")
    reference = api.get(f"/api/runs/{run_id}/boundary").json()
    traces = drawn(explorer)["traces"]
    maps = [t for t in traces if t["type"] == "heatmap"]
    points = [t for t in traces if t["type"] == "scatter"]
    assert len(maps) == len(points) == 4
    for c, trace in enumerate(maps):  # each class paints the cells it wins with its probability
        for i, row in enumerate(trace["z"]):
            for j, value in enumerate(row):
                wins = reference["classes"][i][j] == c
                assert value == (reference["prob"][i][j] if wins else None)
    assert len({p["colour"] for p in points}) == 4


def test_boundary_explains_runs_without_2d_inputs(explorer: Explorer, api: httpx.Client) -> None:
    run_id = start(api, data={"input_dim": 3}, training={"steps": 20})
    finish(api, run_id)
    explorer.open(f"#runs={run_id}")
    explorer.page.wait_for_function(
        "() => document.getElementById('boundary-note').textContent.includes('2-D inputs')"
    )
    assert explorer.page.evaluate("document.getElementById('boundary').hidden")
    # The page never asked for it (a 409 would be a console error, which the fixture refuses).
