"""Batched tensor statistics for the probe: row moments, row histograms, norms by shape group.

Each reduces many layers at once and writes its results with `out=` into a slice of the
caller's flat buffer, so that a step's numbers are already in one tensor (one transfer, no
final concatenation). Scratch space is made once and kept from step to step (the probe's own
buffers come from a `Buffers` pool): on the CPU a fresh multi-megabyte tensor pays a page
fault for every 4 KiB it touches, which costs more than the arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from depthscope.probe.metrics import TINY
from depthscope.probe.transfer import WeightSlots


def or_zeros(grad: Tensor | None, like: Tensor) -> Tensor:
    """A gradient autograd left out (None: the tensor did not affect the loss) as zeros."""
    return grad if grad is not None else torch.zeros_like(like)


class Buffers:
    """Scratch tensors kept from step to step, by name. Contents are undefined on return.
    Call under `torch.no_grad()`: `out=` does not take tensors that require grad."""

    def __init__(self) -> None:
        self.store: dict[str, Tensor] = {}

    def get(
        self, name: str, shape: Sequence[int], like: Tensor, dtype: torch.dtype | None = None
    ) -> Tensor:
        dtype = like.dtype if dtype is None else dtype
        buf = self.store.get(name)
        if (
            buf is None
            or buf.shape != tuple(shape)
            or buf.dtype != dtype
            or buf.device != like.device
        ):
            buf = torch.empty(tuple(shape), dtype=dtype, device=like.device)
            self.store[name] = buf
        return buf


Rows = tuple[int, int]  # rows start .. stop of a buffer


class RowMoments:
    """Bound once to a [rows, n] buffer `x` and to slots for the results; each call reduces
    the buffer's current contents: the sum of each `summed` row into `sums`, then the
    `centred` rows (summed ones) are centred in place on their means, and the norm of each
    `normed` row goes into `norms`: about the row's mean for the centred rows, about zero for
    the rest.

    The spread is the norm of values centred on their exact mean: a deep sigmoid net's
    activations collapse to a near-constant, where E[x²] − E[x]² in float32 would return noise.
    Views are made here, once: on the CPU each costs a few µs a step."""

    def __init__(
        self, x: Tensor, summed: Rows, centred: Rows, normed: Rows, sums: Tensor, norms: Tensor
    ) -> None:
        if not summed[0] <= centred[0] <= centred[1] <= summed[1]:
            raise ValueError(f"centred rows {centred} must be summed ({summed})")
        self.summed, self.sums, self.norms = x[slice(*summed)], sums, norms
        self.centred = x[slice(*centred)]
        first = centred[0] - summed[0]
        self.means_from = sums[first : first + centred[1] - centred[0]].unsqueeze(1)
        self.normed = x[slice(*normed)]
        self.inv_n = 1.0 / x.shape[1]

    def __call__(self) -> None:
        torch.sum(self.summed, 1, out=self.sums)
        self.centred.sub_(self.means_from, alpha=self.inv_n)
        torch.linalg.vector_norm(self.normed, dim=1, out=self.norms)


class RowHistograms:
    """Equal-width histograms of each row of a [rows, n] tensor between the row's min and
    max, written into three views of the caller's buffer: lo [rows], hi [rows] and the counts
    [rows × bins] (transfer.py's histogram block, or a part of it).

    A row holding a non-finite value gets a non-finite lo or hi (NaN propagates, ±inf shows)
    and meaningless counts; `transfer.read_histograms` empties it on the host. The input is
    not modified. Scratch space and views are made once, here.

    Counting: `bincount` on the CPU (fastest there); elsewhere it reads its input's min and max
    back to the host to size its output, a sync the probe's one-transfer rule forbids, so off
    the CPU (or with `scatter=True`) the counts are a scatter-add of ones into the slot."""

    def __init__(
        self,
        n: int,
        bins: int,
        lo: Tensor,
        hi: Tensor,
        counts: Tensor,
        scatter: bool | None = None,
    ) -> None:
        rows, out = lo.shape[0], lo
        self.bins = bins
        self.scatter = out.device.type != "cpu" if scatter is None else scatter
        self.ones = torch.ones(rows * n if self.scatter else 0, dtype=out.dtype, device=out.device)
        self.lo, self.hi = lo, hi
        self.lo2, self.hi2 = self.lo.unsqueeze(1), self.hi.unsqueeze(1)
        self.counts = counts
        self.frac = torch.empty(rows, n, dtype=out.dtype, device=out.device)
        # int32, not int64: half the memory and copy time, and bincount takes it as fast
        self.index = torch.empty(rows, n, dtype=torch.int32, device=out.device)
        self.flat_index = self.index.view(-1)
        self.offsets = torch.arange(rows, dtype=out.dtype, device=out.device).unsqueeze(1) * bins

    def __call__(self, x: Tensor) -> None:
        bins = self.bins
        torch.amin(x, 1, out=self.lo)
        torch.amax(x, 1, out=self.hi)
        scale = bins / (self.hi2 - self.lo2).clamp_min_(TINY)
        # bin = floor(clamp((x - lo) × scale)) + the row's offset, in place in float (whole
        # numbers below 2^24 are exact); NaN (a non-finite row) goes to the row's first bin.
        # A sub and a mul beat one broadcasting addcmul on the CPU by 3×.
        torch.sub(x, self.lo2, out=self.frac).mul_(scale)
        self.frac.clamp_(0, bins - 1).nan_to_num_(0.0, 0.0, 0.0).floor_().add_(self.offsets)
        self.index.copy_(self.frac)
        if self.scatter:  # whole numbers below 2^24: exact in float whatever the order
            self.counts.zero_().index_add_(0, self.flat_index, self.ones)
        else:
            self.counts.copy_(torch.bincount(self.flat_index, minlength=self.counts.numel()))


HostHistogram = tuple[float, float, list[int]]  # lo, hi, counts


def read_histograms(flat: Sequence[float], rows: int, bins: int) -> list[HostHistogram]:
    """What `RowHistograms` wrote, read on the host: per row (lo, hi, counts). A row with a
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


def histogram_views(
    block: Tensor, rows: int, first: int, count: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Rows first .. first + count of a block of `rows` histograms (transfer.py's format: lo,
    hi, then the counts) as the (lo, hi, counts) views a RowHistograms writes through."""
    bins = (block.shape[0] - 2 * rows) // rows if rows else 0
    lo, hi, counts = block[:rows], block[rows : 2 * rows], block[2 * rows :]
    stop = first + count
    return lo[first:stop], hi[first:stop], counts[first * bins : stop * bins]


class WeightGroups:
    """Per weight matrix (or any parameter): the norm of its gradient, of its value before the
    update, and of the update, in a few ops whatever the depth. Tensors of equal size (a deep
    net's hidden weights; often the first and the readout too) share one [3, members, numel]
    buffer (gradients, values before, updates) reduced in one op; on the CPU this beats
    `_foreach_norm`, which loops tensor by tensor. The gradients are copied before clipping,
    so their norms are the pre-clip ones."""

    def __init__(self, weights: Sequence[Tensor], layout: WeightSlots | None = None) -> None:
        self.layout = layout or WeightSlots([w.numel() for w in weights])
        self.weights = list(weights)
        self.groups = self.layout.groups
        # members whose shape differs from their group's first are stacked through a view
        self.shapes = [weights[g[0]].shape for g in self.groups]
        self.reshaped = [
            any(weights[i].shape != weights[g[0]].shape for i in g) for g in self.groups
        ]
        device = self.weights[0].device
        self.buffers = [
            torch.empty(3, len(g), self.weights[g[0]].numel(), device=device) for g in self.groups
        ]
        # Made once (a step's Python overhead is a few µs per view): per group, the slot of
        # gradients and values before together (rows 0 and 1 are one stack) and the slot of
        # values after, and the weights' own members, detached views that see the updates.
        self.first_two = [
            buf[:2].view(2 * len(g), *shape)
            for buf, g, shape in zip(self.buffers, self.groups, self.shapes, strict=True)
        ]
        self.after = [
            buf[2].view(len(g), *shape)
            for buf, g, shape in zip(self.buffers, self.groups, self.shapes, strict=True)
        ]
        self.members = [self._members(self.weights, g) for g in range(len(self.groups))]
        self.pairs = [(buf[2], buf[1]) for buf in self.buffers]  # (after, before)

    def _members(self, tensors: Sequence[Tensor], g: int, detach: bool = True) -> list[Tensor]:
        shape, group = self.shapes[g], self.groups[g]
        members = [tensors[i].detach() if detach else tensors[i] for i in group]
        return [m.view(shape) for m in members] if self.reshaped[g] else members

    def before_update(self, grads: Sequence[Tensor]) -> None:
        """Copy the gradients (aligned with the weights) and the current values."""
        for g, (slot, values) in enumerate(zip(self.first_two, self.members, strict=True)):
            torch.stack(self._members(grads, g, detach=False) + values, out=slot)

    def slots(self, out: Tensor) -> list[Tensor]:
        """Views of `out` [size], one [3, members] slot per group, for `norms_` (made once)."""
        return [out[a:b].view(3, -1) for a, b in self.layout.spans]

    def norms_(self, slots: Sequence[Tensor]) -> None:
        """After the update: per group, its [3 × members] norms of gradient, value before and
        update, written into its slot (see `slots`); WeightSlots.spread puts a host copy of
        them back in weight order."""
        for buf, after, members, (delta, before), slot in zip(
            self.buffers, self.after, self.members, self.pairs, slots, strict=True
        ):
            torch.stack(members, out=after)
            delta.sub_(before)
            torch.linalg.vector_norm(buf, dim=2, out=slot)


def accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Fraction of correct classes, 0-d on the device; NaN for regression (float targets)."""
    if targets.is_floating_point():
        return torch.full((), math.nan, device=logits.device)
    return torch.mean(logits.argmax(1) == targets, dtype=logits.dtype)  # no float copy
