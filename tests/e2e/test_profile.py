"""profile.js in the browser: the depth profile says which layers its lines leave out."""

from __future__ import annotations

from typing import Any

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
