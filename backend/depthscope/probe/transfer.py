"""The probe's one transfer: where each reduction of a recorded step sits in the flat buffer a
backend fills, and how the host turns that buffer, read back as a list, into a StepRecord.

The slots follow the metric registry's vocabulary (metrics.py): per hidden layer one slot for
each reduction this run's structure has (h's sums are z's when h is z; a count no activation
input can fail is not computed), the readout's own few, the weights' norms, then the
histograms. A backend writes each number straight into its slot, so a step ends with one read
and nothing to concatenate; the host then finishes every metric from the reductions, as the
registry says. Imports no torch.

Slots, in order: the head (loss, accuracy, clipped, then the other parameters' gradient norm
if any), the readout's reductions, the hidden layers' reductions in the vocabulary's order
(ACTIVATION_REDUCTIONS: counts, sums, spreads and norms, so a batched backend writes each kind
into adjacent slots), the weight groups' norms, then the histograms: h and dL/dh rows, then the
readout's logits and dL/dlogits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from depthscope.probe.metrics import (
    ACTIVATION_REDUCTIONS,
    DW_NORM,
    REGISTRY,
    WEIGHT_REDUCTIONS,
    Reduced,
    Reduction,
)
from depthscope.records import HISTOGRAM_KINDS, Histogram, Number, StepRecord, finite

HEAD = 3  # loss, accuracy, clipped (then the other parameters' gradient norm, if any)
READOUT_TENSORS = {"z": "z", "u": "z", "h": "z", "dh": "dh"}  # the readout's z, u, h: its logits


@dataclass(frozen=True)
class Structure:
    """What every recorded step of a run holds, fixed by its model: sizes, which taps are the
    same tensors, what the activation's health rule can count, and how dL/dh arrives."""

    layers: int  # hidden layers
    batch: int
    width: int  # units per hidden layer
    outputs: int  # the readout's units per sample
    h_is_z: bool  # no norm after the activation, no residual add, a linear activation
    u_is: str  # the activation inputs: "z", "h" or "own" (a norm before the activation)
    healthy: bool  # the activation has a health rule (linear: healthy everywhere)
    active: bool  # ... and f' can be zero (ReLU, PReLU): units can die
    active_is_healthy: bool  # one mask answers both (ReLU)
    others: bool  # parameters besides the weights (biases, norms) count towards the total
    hooks: bool  # large layers: dL/dh is taken as backpropagation makes it, not held

    @property
    def n(self) -> int:
        return self.batch * self.width

    def computed(self, reduction: Reduction) -> bool:
        """Whether the backends compute this reduction for the hidden layers (rather than its
        being another's, or a count that nothing can fail)."""
        if reduction.of == "h" and self.h_is_z:
            return False
        if reduction.op == "healthy":
            return self.healthy
        if reduction.op == "live":
            return self.active
        return True


@dataclass(frozen=True)
class Span:
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def histogram_size(rows: int, bins: int) -> int:
    """How many numbers a block of `rows` histograms takes: lo [rows], hi [rows], then the
    counts [rows × bins]."""
    return rows * (2 + bins)


HostHistogram = tuple[float, float, list[int]]  # lo, hi, counts


def read_histograms(flat: Sequence[float], rows: int, bins: int) -> list[HostHistogram]:
    """A block of histograms read on the host: per row (lo, hi, counts). A row with a
    non-finite bound has no histogram: NaN bounds and zero counts."""
    lo, hi = flat[:rows], flat[rows : 2 * rows]
    counts = flat[2 * rows : rows * (2 + bins)]
    found: list[HostHistogram] = []
    for r in range(rows):
        if math.isfinite(lo[r]) and math.isfinite(hi[r]):
            found.append((lo[r], hi[r], [int(c) for c in counts[r * bins : (r + 1) * bins]]))
        else:
            found.append((math.nan, math.nan, [0] * bins))
    return found


class WeightSlots:
    """Where the weights' three norms (gradient, value before, update) go: weights of equal
    size form a group (a batched backend reduces each group in one op), and each group's
    [3 × members] norms are adjacent. `spread` puts them back in weight order."""

    def __init__(self, sizes: Sequence[int]) -> None:
        groups: dict[int, list[int]] = {}
        for i, size in enumerate(sizes):
            groups.setdefault(size, []).append(i)
        self.count = len(sizes)
        self.groups = list(groups.values())
        self.spans: list[tuple[int, int]] = []  # per group, within the weights' span
        where: dict[tuple[int, int], int] = {}
        pos = 0
        for g in self.groups:
            self.spans.append((pos, pos + 3 * len(g)))
            for row in range(3):
                for i in g:
                    where[row, i] = pos
                    pos += 1
        self.size = pos
        # per row (gradient, value before, update) and weight: its position in the span
        self.positions = [[where[row, i] for i in range(self.count)] for row in range(3)]
        self.host_order = [p for row in self.positions for p in row]

    def spread(self, values: Sequence[float]) -> list[list[float]]:
        """The weights' span as [row][weight] in weight order."""
        ordered = [values[k] for k in self.host_order]
        count = self.count
        return [ordered[r * count : (r + 1) * count] for r in range(3)]


class Transfer:
    """The slots of one layout (a run's Structure, with or without histograms) in the flat
    buffer, and the host's reading of them."""

    def __init__(
        self, structure: Structure, weights: WeightSlots, bins: int, histograms: bool
    ) -> None:
        s = self.structure = structure
        self.weight_slots, self.bins, self.histograms = weights, bins, histograms
        layers = s.layers
        self.size = 0
        self.head = self._span(HEAD + (1 if s.others else 0))
        self.accuracy = self.head.start + 1
        self.readout: dict[Reduction, int] = {}  # the readout's reductions: one slot each
        for r in ACTIVATION_REDUCTIONS:
            source = _readout_source(r)
            if source is not None and source not in self.readout:
                self.readout[source] = self._span(1).start
        self.hidden: dict[Reduction, Span] = {
            r: self._span(layers) for r in ACTIVATION_REDUCTIONS if s.computed(r)
        }
        self.weights = self._span(weights.size)
        rows = 2 * layers if histograms else 0  # h rows, then dL/dh rows
        self.hist_hidden = self._span(histogram_size(rows, bins))
        self.hist_readout = self._span(histogram_size(2 if histograms else 0, bins))
        self._readers = [self._reader(r) for r in ACTIVATION_REDUCTIONS]
        self._n = [float(s.n)] * layers + [float(s.batch * s.outputs)]
        self._units = [float(s.width)] * layers + [float(s.outputs)]

    def _span(self, count: int) -> Span:
        self.size += count
        return Span(self.size - count, self.size)

    def span(self, *reductions: Reduction) -> Span:
        """The hidden layers' slots of these reductions together, which must be adjacent in
        this order (a batched backend writes them with one op)."""
        spans = [self.hidden[r] for r in reductions]
        for a, b in itertools.pairwise(spans):
            if a.stop != b.start:
                raise ValueError(f"slots of {[str(r) for r in reductions]} are not adjacent")
        return Span(spans[0].start, spans[-1].stop)

    def slot(self, reduction: Reduction) -> Span | None:
        """Where the hidden layers' values of a reduction are: its own slots, those of the
        reduction it equals (h's are z's when h is z), or None for a count nothing fails."""
        if reduction in self.hidden:
            return self.hidden[reduction]
        if reduction.of == "h" and self.structure.h_is_z:
            return self.hidden.get(Reduction("z", reduction.op))
        return None

    def _reader(self, r: Reduction) -> tuple[Reduction, Span | None, float, int | None, float]:
        """How the host gathers a reduction: the hidden layers' span (None: every layer
        `full`), then the readout's slot (None: `full_readout`)."""
        s = self.structure
        full = float(s.n) if r.full == "n" else float(s.width)
        full_readout = float(s.batch * s.outputs) if r.full == "n" else float(s.outputs)
        source = _readout_source(r)
        return r, self.slot(r), full, None if source is None else self.readout[source], full_readout

    # -- the host's reading ------------------------------------------------------------------
    def reduced(self, flat: Sequence[float]) -> Reduced:
        """Every reduction per layer, input to output, from the numbers the backend wrote."""
        layers = self.structure.layers
        values: dict[Reduction, list[float]] = {}
        for r, span, full, at, full_readout in self._readers:
            row = list(flat[span.start : span.stop]) if span is not None else [full] * layers
            row.append(flat[at] if at is not None else full_readout)
            values[r] = row
        rows = self.weight_slots.spread(flat[self.weights.start : self.weights.stop])
        for r, row in zip(WEIGHT_REDUCTIONS, rows, strict=True):
            values[r] = row
        return Reduced(values, self._n, self._units)

    def record(self, step: int, flat: Sequence[float]) -> StepRecord:
        """The StepRecord of the numbers the backend wrote, read back as a list."""
        head = flat[self.head.start : self.head.stop]
        loss, accuracy, clipped = head[:HEAD]
        reduced = self.reduced(flat)
        layers: dict[str, list[Number]] = {}
        for metric in REGISTRY:
            values = metric.finish(reduced)
            if all(map(math.isfinite, values)):  # the usual case: no check value by value
                layers[metric.name] = cast("list[Number]", values)
            else:
                layers[metric.name] = [finite(v) for v in values]
        total = math.hypot(*reduced[DW_NORM], *head[HEAD:])
        return StepRecord(
            step=step,
            loss=finite(loss),
            accuracy=finite(accuracy),
            grad_norm_total=finite(total),
            clipped=bool(clipped),
            layers=layers,
            histograms=self._histograms(flat) if self.histograms else None,
        )

    def _histograms(self, flat: Sequence[float]) -> dict[str, Histogram]:
        layers, bins = self.structure.layers, self.bins
        hidden = read_histograms(
            flat[self.hist_hidden.start : self.hist_hidden.stop], 2 * layers, bins
        )
        logits, dlogits = read_histograms(
            flat[self.hist_readout.start : self.hist_readout.stop], 2, bins
        )
        by_kind = {"act": [*hidden[:layers], logits], "act_grad": [*hidden[layers:], dlogits]}
        return {
            kind: Histogram(
                lo=[finite(h[0]) for h in by_kind[kind]],
                hi=[finite(h[1]) for h in by_kind[kind]],
                counts=[h[2] for h in by_kind[kind]],
            )
            for kind in HISTOGRAM_KINDS
        }


def _readout_source(r: Reduction) -> Reduction | None:
    """The reduction the readout computes for `r` (its z, u and h are all its logits), or None
    for a count, which the linear readout never fails."""
    if r.full is not None:
        return None
    return Reduction(READOUT_TENSORS[r.of], r.op)
