"""histogram.js in the browser: re-binning onto a common grid moves counts, never loses them."""

from __future__ import annotations

from typing import Any

import pytest

REBIN = """async ([lo, hi, counts, gridLo, gridHi, n]) =>
  (await import('/histogram.js')).rebin(lo, hi, counts, gridLo, gridHi, n)"""


@pytest.mark.parametrize(
    ("source", "grid", "expected"),
    [
        # same grid: unchanged
        ((0.0, 4.0, [1, 2, 3, 4]), (0.0, 4.0, 4), [1, 2, 3, 4]),
        # each source bin splits evenly over two finer cells
        ((0.0, 2.0, [4, 6]), (0.0, 2.0, 4), [2, 2, 3, 3]),
        # a bin straddling two cells gives each its overlap share
        ((0.5, 1.5, [10]), (0.0, 2.0, 2), [5, 5]),
        # a zero-width histogram (every value equal) lands in one cell
        ((1.0, 1.0, [7, 0]), (0.0, 2.0, 4), [0, 0, 7, 0]),
    ],
)
def test_rebin_matches_overlap_reference(
    modules: Any, source: tuple, grid: tuple, expected: list[float]
) -> None:
    lo, hi, counts = source
    out = modules.evaluate(REBIN, [lo, hi, counts, *grid])
    assert out == pytest.approx(expected)


def test_rebin_preserves_total_count(modules: Any) -> None:
    counts = [(k * 7919) % 50 for k in range(32)]
    out = modules.evaluate(REBIN, [-0.37, 1.91, counts, -2.0, 3.0, 64])
    assert sum(out) == pytest.approx(sum(counts))
