"""The one transfer read on the host: a flat list filled slot by slot here, by hand, as a backend
would, and the StepRecord the Transfer makes of it."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from depthscope import METRICS
from depthscope.probe.metrics import (
    DH_NORM,
    H_SPREAD,
    H_SUM,
    U_HEALTHY,
    U_LIVE,
    Z_SPREAD,
    Z_SUM,
    Reduction,
)
from depthscope.probe.transfer import HEAD, Span, Structure, Transfer, WeightSlots

WIDTH, BATCH, OUTPUTS = 3, 2, 1  # units, samples, readout units
N = BATCH * WIDTH


def structure(**changes: Any) -> Structure:
    fields: dict[str, Any] = {
        "layers": 2,
        "batch": BATCH,
        "width": WIDTH,
        "outputs": OUTPUTS,
        "h_is_z": False,
        "u_is": "z",
        "healthy": True,
        "active": True,
        "active_is_healthy": False,
        "others": True,
        "hooks": False,
    }
    return Structure(**{**fields, **changes})


def slots() -> WeightSlots:
    return WeightSlots([WIDTH * 2, WIDTH * WIDTH, WIDTH])  # three sizes: three groups


def transfer(histograms: bool = False, bins: int = 4, **changes: Any) -> Transfer:
    return Transfer(structure(**changes), slots(), bins, histograms)


def weight_numbers(
    ws: WeightSlots, grad: list[float], before: list[float], update: list[float]
) -> list[float]:
    """The weights' span as a backend writes it: per group, [3 × members] in group order."""
    rows, span = [grad, before, update], [0.0] * ws.size
    for row in range(3):
        for i, pos in enumerate(ws.positions[row]):
            span[pos] = rows[row][i]
    return span


def fill(
    t: Transfer,
    head: list[float],
    hidden: dict[Reduction, list[float]],
    readout: dict[Reduction, float],
    weights: list[float],
) -> list[float]:
    flat = [math.nan] * t.size
    flat[t.head.start : t.head.stop] = head
    assert set(hidden) == set(t.hidden)  # exactly the reductions this structure computes
    for r, values in hidden.items():
        span = t.hidden[r]
        flat[span.start : span.stop] = values
    for r, value in readout.items():
        flat[t.readout[r]] = value
    flat[t.weights.start : t.weights.stop] = weights
    return flat


def test_transfer_slots_tile_the_buffer() -> None:
    t = transfer(histograms=True)
    readout = [Span(at, at + 1) for at in t.readout.values()]
    spans = [
        t.head,
        *readout,
        *t.hidden.values(),
        t.weights,
        t.hist_hidden,
        t.hist_readout,
        t.hist_u,
    ]
    assert spans[0].start == 0 and spans[-1].stop == t.size
    assert all(a.stop == b.start for a, b in itertools.pairwise(spans))
    assert list(t.readout) == [Z_SUM, Z_SPREAD, DH_NORM]  # the logits' and dL/dlogits'
    assert len(t.hist_hidden) == 4 * (2 + 4)  # h rows and dL/dh rows
    # a batched backend's kinds of reduction sit together
    assert t.span(U_HEALTHY, Z_SUM, H_SUM).stop == t.span(Z_SPREAD, H_SPREAD, DH_NORM).start
    with pytest.raises(ValueError, match="not adjacent"):
        t.span(Z_SUM, Z_SPREAD)


def test_transfer_record_finishes_every_metric_on_the_host() -> None:
    t = transfer()
    ws = t.weight_slots
    flat = fill(
        t,
        head=[0.7, 0.5, 1.0, 12.0],  # loss, accuracy, clipped, the others' gradient norm
        hidden={
            Z_SUM: [6.0, 12.0],
            H_SUM: [3.0, 0.0],
            Z_SPREAD: [math.sqrt(N) * v for v in (1.0, 2.0)],
            H_SPREAD: [math.sqrt(N) * v for v in (3.0, 4.0)],
            DH_NORM: [5.0, 6.0],
            U_HEALTHY: [6.0, 3.0],
            U_LIVE: [3.0, 1.0],
        },
        readout={Z_SUM: 0.2, Z_SPREAD: 0.4 * math.sqrt(BATCH * OUTPUTS), DH_NORM: 0.3},
        weights=weight_numbers(ws, [3.0, 4.0, 0.0], [1.0, 2.0, 0.0], [0.5, 1.0, 0.0]),
    )
    r = t.record(9, flat)
    assert (r.step, r.loss, r.accuracy, r.clipped) == (9, 0.7, 0.5, True)
    assert r.grad_norm_total == pytest.approx(13.0)  # hypot(3, 4, 0, 12)
    layers = r.layers
    assert list(layers) == list(METRICS)
    assert layers["preact_mean"] == [1.0, 2.0, 0.1] and layers["act_mean"] == [0.5, 0.0, 0.1]
    assert layers["preact_std"] == pytest.approx([1.0, 2.0, 0.4])
    assert layers["act_std"] == pytest.approx([3.0, 4.0, 0.4])
    assert layers["act_grad_norm"] == [5.0, 6.0, 0.3]
    assert layers["saturation"] == [0.0, 0.5, 0.0]  # the readout is linear
    assert layers["dead"] == [0.0, pytest.approx(2 / 3), 0.0]
    assert layers["grad_norm"] == [3.0, 4.0, 0.0]
    assert layers["grad_to_weight"] == [3.0, 2.0, 0.0]  # 0 / a zeroed weight stays 0
    assert layers["update_ratio"] == [0.5, 0.5, 0.0]
    assert r.histograms is None and r.known_finite


def test_transfer_records_keep_their_numbers_after_the_next_read() -> None:
    """The host reads every step into the same buffers; a record, and the reductions kept for
    the next step's shift metrics, own their numbers."""
    t = transfer()
    ws = t.weight_slots

    def step_numbers(scale: float) -> list[float]:
        return fill(
            t,
            head=[scale, 0.5, 0.0, 1.0],
            hidden={r: [scale, 2 * scale] for r in t.hidden},
            readout={r: scale for r in t.readout},
            weights=weight_numbers(ws, [scale] * 3, [1.0] * 3, [scale] * 3),
        )

    first, reduced = t.read(0, step_numbers(1.0), None)
    kept = {name: list(values) for name, values in first.layers.items()}
    kept_sums = reduced[Z_SUM].copy()
    second, _ = t.read(1, step_numbers(3.0), reduced)
    assert first.layers == kept and first.loss == 1.0
    assert second.layers["preact_mean"] == [3.0 / N, 6.0 / N, 3.0 / (BATCH * OUTPUTS)]
    assert (reduced[Z_SUM] == kept_sums).all() and reduced.previous is None


def test_transfer_record_without_masks_or_others() -> None:
    """A linear activation: h is z, nothing saturates or dies, only the weights count."""
    t = transfer(h_is_z=True, healthy=False, active=False, others=False)
    assert set(t.hidden) == {Z_SUM, Z_SPREAD, DH_NORM} and t.head.stop == HEAD
    assert t.slot(H_SUM) == t.hidden[Z_SUM] and t.slot(U_HEALTHY) is None
    flat = fill(
        t,
        head=[0.7, math.nan, 0.0],
        hidden={Z_SUM: [6.0, -6.0], Z_SPREAD: [math.sqrt(N), 0.0], DH_NORM: [1.0, 2.0]},
        readout={Z_SUM: 0.2, Z_SPREAD: 0.0, DH_NORM: 0.3},
        weights=weight_numbers(t.weight_slots, [3.0, 4.0, 0.0], [1.0, 1.0, 1.0], [0.0] * 3),
    )
    r = t.record(0, flat)
    assert r.accuracy is None and r.clipped is False and r.grad_norm_total == 5.0
    assert r.layers["act_mean"] == r.layers["preact_mean"] == [1.0, -1.0, 0.1]
    assert r.layers["act_std"] == r.layers["preact_std"] == [1.0, 0.0, 0.0]
    assert r.layers["act_grad_norm"] == [1.0, 2.0, 0.3]
    assert r.layers["saturation"] == r.layers["dead"] == [0.0, 0.0, 0.0]


def test_transfer_record_turns_non_finite_into_none() -> None:
    t = transfer()
    hidden = {r: [1.0, 1.0] for r in t.hidden}
    hidden[Z_SPREAD] = [0.0, math.nan]
    flat = fill(
        t,
        head=[math.inf, 0.5, 0.0, 0.0],
        hidden=hidden,
        readout={Z_SUM: 0.0, Z_SPREAD: 0.0, DH_NORM: 0.3},
        weights=weight_numbers(t.weight_slots, [1.0] * 3, [1.0] * 3, [0.0] * 3),
    )
    r = t.record(3, flat)
    assert r.loss is None and not r.known_finite  # the divergence check will look
    assert r.layers["preact_std"] == [0.0, None, 0.0]
    assert r.layers["act_grad_norm"] == [1.0, 1.0, 0.3]
    assert None not in r.layers["grad_norm"]


def test_transfer_reads_histograms_per_kind_with_the_readout_last() -> None:
    bins = 2
    t = transfer(histograms=True, bins=bins)
    # one block of 4 rows (h1, h2, dL/dh1, dL/dh2), then the readout's 2 (logits, dL/dlogits)
    lo, hi = [0.0, 1.0, math.nan, 3.0], [1.0, 2.0, math.nan, 4.0]
    flat = fill(
        t,
        head=[0.0] * 4,
        hidden={r: [1.0, 1.0] for r in t.hidden},
        readout={Z_SUM: 0.0, Z_SPREAD: 0.0, DH_NORM: 0.0},
        weights=[1.0] * t.weight_slots.size,
    )
    flat[t.hist_hidden.start : t.hist_hidden.stop] = [*lo, *hi, 1, 2, 3, 4, 5, 6, 7, 8]
    flat[t.hist_readout.start : t.hist_readout.stop] = [9.0, -1.0, 10.0, 1.0, 5, 6, 0, 4]
    flat[t.hist_u.start : t.hist_u.stop] = [-2.0, -3.0, 2.0, 3.0, 8, 0, 1, 7]  # u1, u2
    r = t.record(0, flat)
    assert r.histograms is not None and set(r.histograms) == {"act", "act_grad", "preact"}
    act, grad = r.histograms["act"], r.histograms["act_grad"]
    assert act.lo == [0.0, 1.0, 9.0] and act.hi == [1.0, 2.0, 10.0]
    assert act.counts == [[1, 2], [3, 4], [5, 6]]
    assert grad.lo == [None, 3.0, -1.0] and grad.counts == [[0, 0], [7, 8], [0, 4]]
    u = r.histograms["preact"]  # the readout's activation input is its logits
    assert u.lo == [-2.0, -3.0, 9.0] and u.hi == [2.0, 3.0, 10.0]
    assert u.counts == [[8, 0], [1, 7], [5, 6]]


def test_transfer_weight_slots_group_equal_sizes() -> None:
    ws = WeightSlots([6, 9, 6])  # the first and the last share a group
    assert ws.groups == [[0, 2], [1]] and ws.size == 9
    values = [float(i) for i in range(ws.size)]
    assert ws.spread(values) == [[0.0, 6.0, 1.0], [2.0, 7.0, 3.0], [4.0, 8.0, 5.0]]
