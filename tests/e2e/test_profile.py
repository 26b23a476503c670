"""profile.js in the browser: which layers its lines leave out, the step it falls back to,
ticks under their points and a 0..1 axis for fractions."""

from __future__ import annotations

from typing import Any

import httpx

from .e2e_helpers import SMALL, Explorer, merged, start, wait_ended

UNDRAWN = """async ([layers, values, logAxis]) => {
  const m = await import('/profile.js');
  return m.undrawn(layers, values, logAxis);
}"""
LAYERS = ["block1", "block2", "block3", "block4", "block5", "readout"]


def test_profile_names_non_finite_layers(modules: Any) -> None:
    values = [1.0, None, 2.0, None, 3.0, 4.0]
    assert modules.evaluate(UNDRAWN, [LAYERS, values, True]) == ["block2, block4 non-finite"]


def test_profile_names_neighbouring_layers_as_ranges(modules: Any) -> None:
    values = [None, None, None, 1.0, 2.0, None]
    assert modules.evaluate(UNDRAWN, [LAYERS, values, False]) == [
        "block1–block3, readout non-finite"
    ]


def test_profile_counts_what_four_ranges_leave_out(modules: Any) -> None:
    layers = [f"block{i + 1}" for i in range(20)]
    values = [None if i % 2 == 0 else 1.0 for i in range(20)]  # ten ranges of one
    assert modules.evaluate(UNDRAWN, [layers, values, False]) == [
        "block1, block3, block5, block7, 6 more non-finite"
    ]


def test_profile_names_values_a_log_axis_cannot_draw(modules: Any) -> None:
    values = [0.0, 1.0, None, 2.0, -1.0, 3.0]
    assert modules.evaluate(UNDRAWN, [LAYERS, values, True]) == [
        "block3 non-finite",
        "block1, block5 ≤ 0, off the log axis",
    ]
    # on a linear axis zero and negative values are drawn
    assert modules.evaluate(UNDRAWN, [LAYERS, values, False]) == ["block3 non-finite"]
    assert modules.evaluate(UNDRAWN, [LAYERS, [1.0] * 6, True]) == []


def test_profile_column_falls_back_to_the_last_finite_step(modules: Any) -> None:
    got = modules.evaluate(
        """async () => {
          const { Columns } = await import('/rundata.js');
          const { profileColumn } = await import('/profile.js');
          const c = new Columns();
          c.push(0, [1, 2]);
          c.push(1, [3, null]);
          c.push(2, [null, null]);  // the diverged last step: nothing to draw
          return [profileColumn(c, -1), profileColumn(c, 2), profileColumn(c, 0)];
        }"""
    )
    assert got == [
        {"at": 1, "fellBack": True},  # following the latest: the last step with a number
        {"at": 2, "fellBack": False},  # a chosen step is shown as it is
        {"at": 0, "fellBack": False},
    ]


def open_profile(explorer: Explorer, api: httpx.Client, hash_: str, depth: int) -> list[str]:
    run_id = start(api, merged(SMALL, model={"depth": depth}))
    wait_ended(api, run_id)
    explorer.open(f"#runs={run_id}{hash_}")
    explorer.page.wait_for_function(
        "n => document.querySelectorAll('#profile .scatterlayer .point').length === n",
        arg=depth + 1,
    )
    return list(api.get(f"/api/runs/{run_id}").json()["layers"])


def test_profile_tick_labels_sit_under_their_points(explorer: Explorer, api: httpx.Client) -> None:
    layers = open_profile(explorer, api, "", depth=14)
    got = explorer.page.evaluate(
        """() => {
          const centre = (e) => {
            const b = e.getBoundingClientRect();
            return [b.left + b.width / 2, b.right];
          };
          const all = (selector) => [...document.querySelectorAll(`#profile ${selector}`)];
          return {
            div: document.querySelector('#profile').getBoundingClientRect().right,
            points: all('.scatterlayer .point').map((p) => centre(p)[0]),
            ticks: all('.xtick text').map((t) => [t.textContent, ...centre(t)]),
          };
        }"""
    )
    points, ticks = got["points"], got["ticks"]
    spacing = (points[-1] - points[0]) / (len(points) - 1)
    assert ticks[-1][0] == "readout" and len(ticks) >= 3
    for name, middle, right in ticks:
        # each label is centred under its own point, and none runs off the chart's right edge
        assert abs(middle - points[layers.index(name)]) < spacing / 2, (name, middle)
        assert right <= got["div"], name
    lefts = [middle for _, middle, _ in ticks]
    assert lefts == sorted(lefts)


def test_fraction_metrics_get_a_unit_axis(explorer: Explorer, api: httpx.Client) -> None:
    open_profile(explorer, api, "&metric=saturation", depth=3)
    yaxis = explorer.page.evaluate("() => document.querySelector('#profile').layout.yaxis")
    assert yaxis.get("type", "linear") == "linear"
    assert yaxis["range"][0] <= 0 and 1 <= yaxis["range"][1] < 1.1
    labels = explorer.page.locator("#profile .ytick text").all_text_contents()
    assert labels[0] == "0" and labels[-1] == "1"
