"""The one transfer read on the host: a flat list filled slot by slot here, by hand, as the
device would, and the StepRecord the Transfer makes of it."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from depthscope import METRICS
from depthscope.probe.stats import WeightGroups
from depthscope.probe.transfer import HEAD, Layout, Span, Transfer

WIDTH, N = 3, 6  # units, batch × units


def layout(**changes: bool) -> Layout:
    fields = {
        "h_is_z": False,
        "g_rows": True,
        "healthy": True,
        "active": True,
        "active_is_healthy": False,
        "others": True,
        "histograms": False,
    }
    return Layout(layers=2, n=N, width=WIDTH, **{**fields, **changes})


def groups() -> WeightGroups:
    weights = [torch.zeros(WIDTH, 2), torch.zeros(WIDTH, WIDTH), torch.zeros(1, WIDTH)]
    return WeightGroups(weights)


def weight_numbers(
    wg: WeightGroups, grad: list[float], before: list[float], update: list[float]
) -> list[float]:
    """The weight slot as the device writes it: per group, [3 × members] in group order."""
    rows = [grad, before, update]
    slot = [0.0] * wg.size
    for (row, i), pos in _positions(wg).items():
        slot[pos] = rows[row][i]
    return slot


def _positions(wg: WeightGroups) -> dict[tuple[int, int], int]:
    count = len(wg.weights)
    return {(k // count, k % count): pos for k, pos in enumerate(wg.host_order)}


def fill(t: Transfer, slots: dict[str, list[float]]) -> list[float]:
    flat = [math.nan] * t.size
    for name, values in slots.items():
        span: Span = getattr(t, name)
        assert len(values) == span.stop - span.start, name
        flat[span.start : span.stop] = values
    return flat


def test_transfer_slots_tile_the_buffer() -> None:
    t = Transfer(layout(histograms=True), groups(), bins=4)
    spans = [t.head, t.sums, t.norms, t.g_norms, t.live, t.weights, *t.hist_hidden, t.hist_readout]
    assert spans[0].start == 0 and spans[-1].stop == t.size
    assert all(a.stop == b.start for a, b in itertools.pairwise(spans))
    assert t.rows == 8 and t.centred == 4 and t.normed == 6  # z, h, dL/dh, then the masks


def test_transfer_record_scales_and_divides_on_the_host() -> None:
    wg = groups()
    t = Transfer(layout(g_rows=False), wg, bins=4)
    assert t.rows == 6 and t.normed == 4  # z, h, masks: dL/dh is apart
    flat = fill(
        t,
        {
            "head": [0.7, 0.5, 1.0, 0.1, 0.2, 0.3, 12.0],
            "sums": [6.0, 12.0, 3.0, 0.0, 6.0, 3.0],  # z, h, healthy counts
            "norms": [math.sqrt(N) * v for v in (1.0, 2.0, 3.0, 4.0)],
            "g_norms": [5.0, 6.0],
            "live": [3.0, 1.0],
            "weights": weight_numbers(wg, [3.0, 4.0, 0.0], [1.0, 2.0, 0.0], [0.5, 1.0, 0.0]),
        },
    )
    r = t.record(9, flat)
    assert (r.step, r.loss, r.accuracy, r.clipped) == (9, 0.7, 0.5, True)
    assert r.grad_norm_total == pytest.approx(13.0)  # hypot(3, 4, 0, 12)
    layers = r.layers
    assert list(layers) == list(METRICS)
    assert layers["preact_mean"] == [1.0, 2.0, 0.1] and layers["act_mean"] == [0.5, 0.0, 0.1]
    assert layers["preact_std"] == pytest.approx([1.0, 2.0, 0.2])
    assert layers["act_std"] == pytest.approx([3.0, 4.0, 0.2])
    assert layers["act_grad_norm"] == [5.0, 6.0, 0.3]
    assert layers["saturation"] == [0.0, 0.5, 0.0]
    assert layers["dead"] == [0.0, pytest.approx(2 / 3), 0.0]
    assert layers["grad_norm"] == [3.0, 4.0, 0.0]
    assert layers["grad_to_weight"] == [3.0, 2.0, 0.0]  # 0 / a zeroed weight stays 0
    assert layers["update_ratio"] == [0.5, 0.5, 0.0]
    assert r.histograms is None


def test_transfer_record_without_masks_or_others() -> None:
    """A linear activation: h is z, nothing saturates or dies, only the weights count."""
    wg = groups()
    t = Transfer(layout(h_is_z=True, healthy=False, active=False, others=False), wg, bins=4)
    assert t.rows == t.normed == 4 and t.centred == 2 and t.head.stop == HEAD
    flat = fill(
        t,
        {
            "head": [0.7, math.nan, 0.0, 0.1, 0.2, 0.3],
            "sums": [6.0, -6.0, 0.0, 0.0],
            "norms": [math.sqrt(N), 0.0, 1.0, 2.0],
            "weights": weight_numbers(wg, [3.0, 4.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]),
        },
    )
    r = t.record(0, flat)
    assert r.accuracy is None and r.clipped is False and r.grad_norm_total == 5.0
    assert r.layers["act_mean"] == r.layers["preact_mean"] == [1.0, -1.0, 0.1]
    assert r.layers["act_grad_norm"] == [1.0, 2.0, 0.3]
    assert r.layers["saturation"] == r.layers["dead"] == [0.0, 0.0, 0.0]


def test_transfer_record_turns_non_finite_into_none() -> None:
    wg = groups()
    t = Transfer(layout(), wg, bins=4)
    flat = fill(
        t,
        {
            "head": [math.inf, 0.5, 0.0, 0.1, 0.2, 0.3, 0.0],
            "sums": [0.0] * 8,
            "norms": [0.0, math.nan, 0.0, 0.0, 1.0, 1.0],
            "g_norms": [],
            "live": [3.0, 3.0],
            "weights": weight_numbers(wg, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]),
        },
    )
    r = t.record(3, flat)
    assert r.loss is None
    assert r.layers["preact_std"] == [0.0, None, 0.2]
    assert r.layers["act_grad_norm"] == [1.0, 1.0, 0.3]
    assert None not in r.layers["grad_norm"]


def test_transfer_reads_histograms_per_kind_with_the_readout_last() -> None:
    wg, bins = groups(), 2
    t = Transfer(layout(histograms=True), wg, bins=bins)
    # one block of 4 rows (h1, h2, g1, g2), then the readout's 2 (logits, dL/dlogits)
    lo, hi = [0.0, 1.0, math.nan, 3.0], [1.0, 2.0, math.nan, 4.0]
    hidden = [*lo, *hi, 1, 2, 3, 4, 5, 6, 7, 8]
    readout = [9.0, -1.0, 10.0, 1.0, 5, 6, 0, 4]
    flat = fill(
        t,
        {
            "head": [0.0] * 7,
            "sums": [0.0] * 8,
            "norms": [0.0] * 6,
            "g_norms": [],
            "live": [3.0, 3.0],
            "weights": [1.0] * wg.size,
            "hist_readout": readout,
        },
    )
    (span,) = t.hist_hidden
    flat[span.start : span.stop] = hidden
    r = t.record(0, flat)
    assert r.histograms is not None
    act, grad = r.histograms["act"], r.histograms["act_grad"]
    assert act.lo == [0.0, 1.0, 9.0] and act.hi == [1.0, 2.0, 10.0]
    assert act.counts == [[1, 2], [3, 4], [5, 6]]
    assert grad.lo == [None, 3.0, -1.0] and grad.counts == [[0, 0], [7, 8], [0, 4]]
