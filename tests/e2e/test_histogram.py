"""histogram.js in the browser: re-binning onto a common grid moves counts, never loses them."""

from __future__ import annotations

from typing import Any

import pytest
import torch

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


PERCENTILE = """async ([lo, hi, counts, q]) =>
  (await import('/histogram.js')).percentile(lo, hi, counts, q)"""


@pytest.mark.parametrize(
    ("source", "q", "expected"),
    [
        ((0.0, 4.0, [1, 1, 1, 1]), 0.5, 2.0),
        ((0.0, 4.0, [1, 1, 1, 1]), 0.15, 0.6),
        ((0.0, 4.0, [0, 10, 0, 0]), 0.5, 1.5),  # all in one bin: spread evenly over it
        ((-1.0, 1.0, [3, 0, 0, 1]), 0.85, 0.7),  # the last bin [0.5, 1] holds the top quarter
        ((0.0, 1.0, [0, 0]), 0.5, None),  # nothing counted
    ],
)
def test_percentile_interpolates_within_bins(
    modules: Any, source: tuple, q: float, expected: float | None
) -> None:
    out = modules.evaluate(PERCENTILE, [*source, q])
    assert out == (None if expected is None else pytest.approx(expected))


def test_percentile_of_a_32_bin_histogram_is_within_a_bin_of_the_samples(modules: Any) -> None:
    """Against torch's quantile of the values a 32-bin histogram (the probe's) counted."""
    values = torch.randn(4000, generator=torch.Generator().manual_seed(0)) ** 3
    lo, hi = float(values.min()), float(values.max())
    counts = torch.histc(values, bins=32, min=lo, max=hi).long().tolist()
    width = (hi - lo) / 32
    for q in (0.15, 0.5, 0.85):
        out = modules.evaluate(PERCENTILE, [lo, hi, counts, q])
        assert abs(out - float(torch.quantile(values, q))) <= width
