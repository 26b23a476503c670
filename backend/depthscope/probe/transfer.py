"""The probe's one transfer: where each number of a recorded step sits in the flat buffer the
device fills, and how the host turns that buffer, read back as a list, into a StepRecord.

The device side (probe.py) writes every statistic with `out=` into its slot of one flat
tensor, so a step ends with one `.tolist()` and nothing to concatenate. The host side does
the divisions, ratios and the total norm: for a few dozen numbers Python is cheaper than one
device op each.

Slots, in order: the head (loss, accuracy, clipped, the readout's mean, std and gradient
norm, then the other parameters' gradient norm if any), the hidden buffer's row sums and row
norms, the dL/dh norms when dL/dh is not in the hidden buffer, the live-unit counts, the weight
groups' norms, then the histograms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

from depthscope.probe.stats import (
    TINY,
    HostHistogram,
    WeightGroups,
    histogram_size,
    read_histograms,
)
from depthscope.records import HISTOGRAM_KINDS, METRICS, Histogram, Number, StepRecord, finite

HEAD = 6  # loss, accuracy, clipped, readout mean, readout std, norm of dL/dlogits


@dataclass(frozen=True)
class Layout:
    """What a recorded step holds, decided by the model and by whether histograms are taken.

    The hidden buffer stacks per-layer rows of batch × units numbers: z, then h unless it is
    z, then dL/dh unless it is kept apart (only its norms without a histogram; a copy made by
    hooks on large layers), then the activation's healthy mask."""

    layers: int  # hidden layers
    n: int  # batch × units
    width: int  # units
    h_is_z: bool
    g_rows: bool  # dL/dh rows are in the hidden buffer (else apart: norms, or a hooks' copy)
    healthy: bool  # the activation has a healthy mask (linear: healthy everywhere)
    active: bool  # ... and a mask of where f' != 0 (ReLU, PReLU: units can die)
    active_is_healthy: bool  # one mask answers both (ReLU): counted per unit, not per row
    others: bool  # parameters besides the weights (biases, norms) count towards the total
    histograms: bool


@dataclass(frozen=True)
class Span:
    start: int
    stop: int


class Transfer:
    """The slots of one Layout in the flat buffer, and the host's reading of them."""

    def __init__(self, layout: Layout, weight_groups: WeightGroups, bins: int) -> None:
        self.layout, self.weight_groups, self.bins = layout, weight_groups, bins
        layers = layout.layers
        self.centred = layers if layout.h_is_z else 2 * layers  # activation rows: z, h
        self.normed = self.centred + (layers if layout.g_rows else 0)
        self.rows = self.normed + (layers if layout.healthy else 0)  # of the hidden buffer
        # rows the moments' row sum covers: the mask rows too, unless they are counted apart
        self.summed = self.normed if layout.active_is_healthy else self.rows
        self.mask_row = self.normed
        self.size = 0
        self.head = self._span(HEAD + (1 if layout.others else 0))
        self.sums = self._span(self.rows)
        self.norms = self._span(self.normed)
        self.g_norms = self._span(0 if layout.g_rows else layers)
        self.live = self._span(layers if layout.active else 0)
        self.weights = self._span(weight_groups.size)
        # histograms: h and dL/dh rows (adjacent in the hidden buffer, else two blocks), then
        # the readout's logits and dL/dlogits
        blocks = (
            (0, 0)
            if not layout.histograms
            else (2 * layers, 0)
            if layout.g_rows
            else (layers, layers)
        )
        self.hist_hidden = [self._span(histogram_size(rows, bins)) for rows in blocks if rows]
        self.hist_readout = self._span(histogram_size(2, bins) if layout.histograms else 0)

    def _span(self, count: int) -> Span:
        self.size += count
        return Span(self.size - count, self.size)

    def record(self, step: int, flat: list[float]) -> StepRecord:
        """The StepRecord of the numbers the device wrote, read back as a list."""
        lay, count = self.layout, self.layout.layers
        head = flat[self.head.start : self.head.stop]
        loss, accuracy, clipped, out_mean, out_std, dlogits = head[:HEAD]
        sums = flat[self.sums.start : self.sums.stop]
        norms = flat[self.norms.start : self.norms.stop]
        n, width = lay.n, lay.width
        root = math.sqrt(n)
        z_mean = [s / n for s in sums[:count]]
        z_std = [v / root for v in norms[:count]]
        if lay.h_is_z:
            h_mean, h_std = z_mean, z_std
        else:
            h_mean = [s / n for s in sums[count : 2 * count]]
            h_std = [v / root for v in norms[count : 2 * count]]
        if lay.g_rows:
            g_norm = norms[self.centred : self.normed]
        else:
            g_norm = flat[self.g_norms.start : self.g_norms.stop]
        if lay.healthy:
            saturation = [1.0 - c / n for c in sums[self.mask_row : self.rows]]
        else:
            saturation = [0.0] * count
        if lay.active:
            dead = [1.0 - c / width for c in flat[self.live.start : self.live.stop]]
        else:
            dead = [0.0] * count
        grad, before, update = self.weight_groups.spread(
            flat[self.weights.start : self.weights.stop]
        )
        rows = {  # the readout is linear: never saturated or dead
            "grad_norm": grad,
            "act_grad_norm": [*g_norm, dlogits],
            "grad_to_weight": [g / max(w, TINY) for g, w in zip(grad, before, strict=True)],
            "update_ratio": [u / max(w, TINY) for u, w in zip(update, before, strict=True)],
            "weight_norm": before,
            "act_mean": [*h_mean, out_mean],
            "act_std": [*h_std, out_std],
            "preact_mean": [*z_mean, out_mean],
            "preact_std": [*z_std, out_std],
            "saturation": [*saturation, 0.0],
            "dead": [*dead, 0.0],
        }
        layers: dict[str, list[Number]] = {}
        for metric in METRICS:
            values = rows[metric]
            if all(map(math.isfinite, values)):  # the usual case: no check value by value
                layers[metric] = cast("list[Number]", values)
            else:
                layers[metric] = [finite(v) for v in values]
        total = math.hypot(*grad, *head[HEAD:])
        return StepRecord(
            step=step,
            loss=finite(loss),
            accuracy=finite(accuracy),
            grad_norm_total=finite(total),
            clipped=bool(clipped),
            layers=layers,
            histograms=self._histograms(flat) if lay.histograms else None,
        )

    def _histograms(self, flat: list[float]) -> dict[str, Histogram]:
        layers, bins = self.layout.layers, self.bins
        found: list[HostHistogram] = []
        for span in self.hist_hidden:
            found += read_histograms(
                flat[span.start : span.stop], (span.stop - span.start) // (2 + bins), bins
            )
        logits, dlogits = read_histograms(
            flat[self.hist_readout.start : self.hist_readout.stop], 2, bins
        )
        by_kind = {"act": [*found[:layers], logits], "act_grad": [*found[layers:], dlogits]}
        return {
            kind: Histogram(
                lo=[finite(h[0]) for h in by_kind[kind]],
                hi=[finite(h[1]) for h in by_kind[kind]],
                counts=[h[2] for h in by_kind[kind]],
            )
            for kind in HISTOGRAM_KINDS
        }
