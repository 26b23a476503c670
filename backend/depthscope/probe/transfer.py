"""The probe's one transfer: where each reduction of a recorded step sits in the flat buffer a
backend fills, and how the host turns that buffer, read back as a list, into a StepRecord.

The slots follow the metric registry's vocabulary (metrics.py): per hidden layer one slot for
each reduction this run's structure has (h's sums are z's when h is z; a count no activation
input can fail is not computed), the readout's own few, the weights' norms, then the
histograms. A backend writes each number straight into its slot, so a step ends with one read
and nothing to concatenate; the host then finishes every metric from the reductions, as the
registry says, on numpy arrays: one gather puts every reduction of every layer in a table,
and each metric is an array op or two over it. Imports no torch.

Slots, in order: the head (loss, accuracy, clipped, then the other parameters' gradient norm
if any), the readout's reductions, the hidden layers' reductions in the vocabulary's order
(ACTIVATION_REDUCTIONS: counts, sums, spreads and norms, so a batched backend writes each kind
into adjacent slots), the weight groups' norms, then the histograms: h and dL/dh rows, the
readout's logits and dL/dlogits, then the activation inputs u.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from depthscope.probe.metrics import (
    ACTIVATION_REDUCTIONS,
    DW_NORM,
    REDUCTIONS,
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
        if reduction.of == "u" and reduction.op in ("sum", "spread"):
            return self.u_is == "own"  # else u is z or h, whose own are computed
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


class HostHistograms(NamedTuple):
    """A block of histograms on the host, per row: lo, hi and the counts [rows, bins]."""

    lo: npt.NDArray[np.float64]
    hi: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]


def read_histograms(flat: npt.ArrayLike, rows: int, bins: int) -> HostHistograms:
    """A block of histograms read on the host. A row with a non-finite bound has no
    histogram: NaN bounds and zero counts."""
    block = np.asarray(flat, dtype=np.float64)
    lo, hi = block[:rows].copy(), block[rows : 2 * rows].copy()
    counts = block[2 * rows : rows * (2 + bins)].reshape(rows, bins).astype(np.int64)
    empty = ~(np.isfinite(lo) & np.isfinite(hi))
    if empty.any():
        lo[empty], hi[empty], counts[empty] = math.nan, math.nan, 0
    return HostHistograms(lo, hi, counts)


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
        # the activation inputs u, one row per hidden layer (the readout's is its logits)
        self.hist_u = self._span(histogram_size(layers if histograms else 0, bins))
        # The host's reading: the buffer, then the sizes the counts are fractions of, in one
        # float64 vector; `_index` gathers every reduction of every layer from it at once.
        self._ext = np.zeros(self.size + 4)
        self._ext[self.size :] = [s.n, s.width, s.batch * s.outputs, s.outputs]
        self._index = np.array([self._positions(r) for r in REDUCTIONS], dtype=np.int64)
        self._n = np.array([s.n] * layers + [s.batch * s.outputs], dtype=np.float64)
        self._units = np.array([s.width] * layers + [s.outputs], dtype=np.float64)
        self._values = np.empty((len(REGISTRY), layers + 1))  # every metric, every layer

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
        if reduction.of == "u" and reduction.full is None:  # u is z or h
            return self.slot(Reduction(self.structure.u_is, reduction.op))
        if reduction.of == "h" and self.structure.h_is_z:
            return self.hidden.get(Reduction("z", reduction.op))
        return None

    def _positions(self, r: Reduction) -> list[int]:
        """Where the host finds a reduction of each layer, hidden blocks then the readout, in
        the buffer extended with the sizes (a count nothing fails is a whole size)."""
        s, size, layers = self.structure, self.size, self.structure.layers
        if r in WEIGHT_REDUCTIONS:
            row = self.weight_slots.positions[WEIGHT_REDUCTIONS.index(r)]
            return [self.weights.start + p for p in row]
        span = self.slot(r)
        whole = size if r.full == "n" else size + 1  # the hidden layers' n, or their units
        hidden = list(range(span.start, span.stop)) if span is not None else [whole] * layers
        source = _readout_source(r)
        readout = self.readout[source] if source is not None else whole + 2
        assert len(hidden) == s.layers
        return [*hidden, readout]

    # -- the host's reading ------------------------------------------------------------------
    def reduced(self, flat: npt.ArrayLike, previous: Reduced | None = None) -> Reduced:
        """Every reduction per layer, input to output, from the numbers the backend wrote;
        `previous`: the previous recorded step's (without its own previous)."""
        ext = self._ext
        ext[: self.size] = flat
        table = ext[self._index]  # [reductions, layers + 1], a copy
        values = dict(zip(REDUCTIONS, table, strict=True))
        return Reduced(values, self._n, self._units, previous)

    def record(self, step: int, flat: npt.ArrayLike) -> StepRecord:
        """The StepRecord of the numbers the backend wrote (a list, or an array), as the first
        recorded step (nothing before it to have moved from)."""
        return self.read(step, flat, None)[0]

    def read(
        self, step: int, flat: npt.ArrayLike, previous: Reduced | None
    ) -> tuple[StepRecord, Reduced]:
        """The StepRecord of the numbers the backend wrote, after the recorded step whose
        reductions were `previous` (None: the first), and this step's reductions."""
        reduced = self.reduced(flat, previous)
        head = self._ext[self.head.start : self.head.stop].tolist()
        loss, accuracy, clipped = head[:HEAD]
        values = self._values  # rows filled in place: np.stack's Python costs more, cold
        for i, metric in enumerate(REGISTRY):
            values[i] = metric.finish(reduced)
        finite_values = np.isfinite(values)
        all_finite = bool(finite_values.all())
        table = values.astype(np.float32)  # a copy, for the store's blocks
        if not all_finite:
            table[~finite_values] = math.nan  # as the lists' None
        rows: list[list[float]] = values.tolist()  # copies: the buffer is the next step's
        layers: dict[str, list[Number]] = {}
        for metric, row in zip(REGISTRY, rows, strict=True):
            layers[metric.name] = row if all_finite else [finite(v) for v in row]  # type: ignore[assignment]
        total = math.hypot(*reduced[DW_NORM].tolist(), *head[HEAD:])
        record = StepRecord(
            step=step,
            loss=finite(loss),
            accuracy=finite(accuracy),
            grad_norm_total=finite(total),
            clipped=bool(clipped),
            layers=layers,
            histograms=self._histograms() if self.histograms else None,
            known_finite=all_finite and math.isfinite(loss) and math.isfinite(total),
            table=table,
        )
        return record, Reduced(reduced.values, reduced.n, reduced.units)  # without its previous

    def _histograms(self) -> dict[str, Histogram]:
        """The step's histograms, from the buffer `reduced` copied in."""
        layers, bins, ext = self.structure.layers, self.bins, self._ext
        hidden = read_histograms(
            ext[self.hist_hidden.start : self.hist_hidden.stop], 2 * layers, bins
        )
        readout = read_histograms(ext[self.hist_readout.start : self.hist_readout.stop], 2, bins)
        u = read_histograms(ext[self.hist_u.start : self.hist_u.stop], layers, bins)
        # per kind: its hidden rows (of which block), and the readout's row (the logits' for u)
        rows = {
            "act": (hidden, slice(0, layers), 0),
            "act_grad": (hidden, slice(layers, 2 * layers), 1),
            "preact": (u, slice(0, layers), 0),
        }
        found: dict[str, Histogram] = {}
        for kind in HISTOGRAM_KINDS:
            block, hidden_rows, readout_row = rows[kind]
            lo = [*block.lo[hidden_rows].tolist(), float(readout.lo[readout_row])]
            hi = [*block.hi[hidden_rows].tolist(), float(readout.hi[readout_row])]
            counts = [*block.counts[hidden_rows].tolist(), readout.counts[readout_row].tolist()]
            found[kind] = Histogram(
                lo=[finite(v) for v in lo], hi=[finite(v) for v in hi], counts=counts
            )
        return found


def _readout_source(r: Reduction) -> Reduction | None:
    """The reduction the readout computes for `r` (its z, u and h are all its logits), or None
    for a count, which the linear readout never fails."""
    if r.full is not None:
        return None
    return Reduction(READOUT_TENSORS[r.of], r.op)
