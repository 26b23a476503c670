"""Batched tensor statistics for the probe: row moments, row histograms, norms by shape group.

Each function reduces many layers at once and returns tensors still on the device. Scratch
space comes from a `Buffers` pool kept from step to step: on the CPU a fresh multi-megabyte
tensor pays a page fault for every 4 KiB it touches, which costs more than the arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

TINY = 1e-30


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

    def cat(self, name: str, tensors: Sequence[Tensor]) -> Tensor:
        """Per-layer tensors of one shape, concatenated into [layers, numel] in buffer `name`."""
        first = tensors[0]
        out = self.get(name, (len(tensors) * first.shape[0], *first.shape[1:]), first)
        torch.cat(list(tensors), out=out)
        return out.view(len(tensors), -1)

    def stack(self, name: str, tensors: Sequence[Tensor]) -> Tensor:
        """Tensors of one shape stacked into [members, numel] in buffer `name`."""
        first = tensors[0]
        out = self.get(name, (len(tensors), *first.shape), first)
        torch.stack(list(tensors), out=out)
        return out.view(len(tensors), -1)


def moments_(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population std of each row of `x` [rows, n]. Centres `x` in place.

    The std is the norm of values centred on their exact mean: a deep sigmoid net's activations
    collapse to a near-constant, where E[x²] − E[x]² in float32 would return noise."""
    n = x.shape[1]
    mean = x.mean(1, keepdim=True)
    x.sub_(mean)
    return mean.squeeze(1), torch.linalg.vector_norm(x, dim=1) / math.sqrt(n)


def histograms(x: Tensor, bins: int, scratch: Buffers) -> tuple[Tensor, Tensor, Tensor]:
    """Equal-width histograms of each row of `x` [rows, n] between the row's min and max:
    lo [rows], hi [rows], counts [rows, bins]. A row holding a non-finite value has no
    histogram: NaN bounds and zero counts."""
    lo, hi, counts = raw_histograms(x, bins, scratch)
    ok = torch.isfinite(lo) & torch.isfinite(hi)
    nan = torch.full_like(lo, math.nan)
    return torch.where(ok, lo, nan), torch.where(ok, hi, nan), counts * ok.unsqueeze(1)


def raw_histograms(x: Tensor, bins: int, scratch: Buffers) -> tuple[Tensor, Tensor, Tensor]:
    """`histograms` without the masking of non-finite rows, which is left to whoever reads the
    numbers on the host (a row is empty where its lo or hi is not finite): a row's counts,
    garbage or not, stay in that row. Fewer small ops per call."""
    rows = x.shape[0]
    lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)  # propagate NaN; ±inf shows
    scale = bins / (hi - lo).clamp_min(TINY)
    # bin = clamp((x - lo) * scale) + row * bins, built in place in float (exact below 2^24);
    # NaN (a non-finite row) goes to the row's first bin.
    key = f"{rows}x{x.shape[1]}"  # hidden layers and readout alternate: one buffer each
    idx = scratch.get(f"hist_bin{key}", x.shape, x)
    torch.addcmul(-lo * scale, x, scale, out=idx)
    idx.clamp_(0, bins - 1).floor_().nan_to_num_(0.0, 0.0, 0.0)
    offsets = scratch.store.get(f"hist_rows{rows}x{bins}")
    if offsets is None or offsets.device != x.device or offsets.dtype != x.dtype:
        offsets = torch.arange(rows, device=x.device, dtype=x.dtype).unsqueeze(1) * bins
        scratch.store[f"hist_rows{rows}x{bins}"] = offsets
    idx.add_(offsets)
    index = scratch.get(f"hist_index{key}", x.shape, x, torch.long)
    index.copy_(idx)
    counts = torch.bincount(index.flatten(), minlength=rows * bins)
    return lo.view(-1), hi.view(-1), counts.view(rows, bins)


class WeightGroups:
    """Per weight matrix (or any parameter): the norm of its gradient, of its value before the
    update, and of the update, in a few ops whatever the depth. Tensors of equal size (a deep
    net's hidden weights; often the first and the readout too) share one [3, members, numel]
    buffer (gradients, values before, updates) reduced in one op; on the CPU this beats
    `_foreach_norm`, which loops tensor by tensor. The gradients are copied before clipping,
    so their norms are the pre-clip ones."""

    def __init__(self, weights: Sequence[Tensor], track_updates: bool = True) -> None:
        """With `track_updates` False only gradient norms are kept (a [1, members, numel]
        buffer): for the biases and norm parameters, which only count towards the total."""
        self.track_updates = track_updates
        groups: dict[int, list[int]] = {}
        for i, w in enumerate(weights):
            groups.setdefault(w.numel(), []).append(i)
        self.weights = list(weights)
        self.groups = list(groups.values())
        # members whose shape differs from their group's first are stacked through a view
        self.shapes = [weights[g[0]].shape for g in self.groups]
        self.reshaped = [
            any(weights[i].shape != weights[g[0]].shape for i in g) for g in self.groups
        ]
        device = self.weights[0].device
        self.buffers = [
            torch.empty(
                3 if track_updates else 1, len(g), self.weights[g[0]].numel(), device=device
            )
            for g in self.groups
        ]
        order = torch.tensor([i for g in self.groups for i in g])
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order))
        self.inverse = inverse.to(device)
        # Made once (a step's Python overhead is a few µs per view): each group's slot in each
        # row, and the weights' own members, detached views that see the optimizer's updates.
        self.slots = [
            [
                buf[row].view(len(g), *shape)
                for buf, g, shape in zip(self.buffers, self.groups, self.shapes, strict=True)
            ]
            for row in range(self.buffers[0].shape[0])
        ]
        self.members = [self._members(self.weights, g) for g in range(len(self.groups))]
        # where (row, weight) sits among the numbers of `parts`, concatenated, for `spread`
        rows, where = len(self.slots), {}
        for pos, (row, i) in enumerate((r, i) for g in self.groups for r in range(rows) for i in g):
            where[row, i] = pos
        self.host_order = [where[r, i] for r in range(rows) for i in range(len(self.weights))]
        self.size = len(self.host_order)  # how many numbers `parts` returns in all
        self.pairs = [(buf[2], buf[1]) for buf in self.buffers] if track_updates else []
        # gradients and values before are stacked together: rows 0 and 1 are one slot
        self.first_two = (
            [
                buf[:2].view(2 * len(g), *shape)
                for buf, g, shape in zip(self.buffers, self.groups, self.shapes, strict=True)
            ]
            if track_updates
            else []
        )

    def _members(self, tensors: Sequence[Tensor], g: int, detach: bool = True) -> list[Tensor]:
        shape, group = self.shapes[g], self.groups[g]
        members = [tensors[i].detach() if detach else tensors[i] for i in group]
        return [m.view(shape) for m in members] if self.reshaped[g] else members

    def _stack(self, row: int, members: Sequence[list[Tensor]]) -> None:
        for slot, group_members in zip(self.slots[row], members, strict=True):
            torch.stack(group_members, out=slot)

    def before_update(self, grads: Sequence[Tensor]) -> None:
        """Copy the gradients (aligned with the weights) and the current values."""
        grads_by_group = [self._members(grads, g, detach=False) for g in range(len(self.groups))]
        if not self.track_updates:
            self._stack(0, grads_by_group)
            return
        for slot, own, values in zip(self.first_two, grads_by_group, self.members, strict=True):
            torch.stack(own + values, out=slot)

    def parts(self) -> list[Tensor]:
        """After the update: per group, its [3 × members] norms of gradient, value before,
        update (or [members] gradient norms without `track_updates`), flattened. `spread`
        puts a host copy of them back in weight order."""
        if self.track_updates:
            self._stack(2, self.members)
            for after, before in self.pairs:
                after.sub_(before)
        return [torch.linalg.vector_norm(buf, dim=2).view(-1) for buf in self.buffers]

    def spread(self, values: Sequence[float]) -> list[list[float]]:
        """The numbers of `parts`, concatenated, as [row][weight] in the weights' order."""
        ordered = [values[k] for k in self.host_order]
        count = len(self.weights)
        return [ordered[r * count : (r + 1) * count] for r in range(len(self.slots))]

    def norms(self) -> Tensor:
        """After the update: [3, weights] norms of gradient, value before, update (or [1,
        weights] gradient norms without `track_updates`)."""
        rows = self.buffers[0].shape[0]
        flat = torch.cat([part.view(rows, -1) for part in self.parts()], dim=1)
        return flat.index_select(1, self.inverse)
