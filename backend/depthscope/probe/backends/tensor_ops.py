"""The probe's tensor-op path for one Layout (see transfer.py): the flat output buffer, the
hidden buffer, every view of them a recorded step writes through (made once: on the CPU even
a view costs a few µs), and `fill`, which computes a step's statistics into them with batched
tensor ops on whatever device the model is on.

The probe (probe.py) makes one StepPlan per layout and calls `fill` after the update; the
flat buffer then leaves the device in one `.tolist()`. On the CPU the C kernels
(probe/backends/native.py) usually stand in for all of this.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from depthscope.engine.activations import ActivationSpec
from depthscope.engine.model import Taps, same_tensors
from depthscope.probe.stats import RowHistograms, RowMoments, WeightGroups
from depthscope.probe.transfer import Span, Transfer


class StepPlan:
    """The device side of one Layout: the flat buffer `out`, the hidden buffer `x` (kept by
    the probe from step to step), every view of them a step writes through, and the
    activation (with its modules) whose health the step checks."""

    def __init__(
        self,
        transfer: Transfer,
        x: Tensor,
        outputs: int,
        bins: int,
        activation: ActivationSpec,
        acts: Sequence[nn.Module],
        weight_groups: WeightGroups,
    ) -> None:
        t, lay = transfer, transfer.layout
        layers, width = lay.layers, lay.width
        self.transfer = t
        self.activation, self.acts, self.weight_groups = activation, acts, weight_groups
        self.u: Tensor | None = None  # the activation inputs, when a norm comes before it
        self.out = torch.empty(t.size, dtype=x.dtype, device=x.device)
        self.filled = x[: t.normed].view(-1, width)  # what the concatenation writes
        self.head, self.g_norms = self._at(t.head), self._at(t.g_norms)
        self.live = self._at(t.live)
        self.weights = t.weight_groups.slots(self._at(t.weights))
        sums = self._at(t.sums)
        self.moments = RowMoments(
            x[: t.summed], t.centred, t.normed, sums[: t.summed], self._at(t.norms)
        )
        self.mask_counts = sums[t.mask_row :]  # healthy counts, when not summed as rows
        # per layer [batch, units]: z, h, the healthy mask
        self.z = x[:layers].view(layers, -1, width)
        self.h = x[t.centred - layers : t.centred].view(self.z.shape)
        self.mask = x[t.mask_row : t.rows].view(self.z.shape) if lay.healthy else None
        # histograms: (rows, or None for the hooks' copy of dL/dh; their RowHistograms)
        blocks = (
            []
            if not lay.histograms
            else [(x[t.centred - layers : t.centred + layers], 2 * layers)]
            if lay.g_rows
            else [(x[t.centred - layers : t.centred], layers), (None, layers)]
        )
        self.hidden_histograms = [
            (rows, RowHistograms(count, lay.n, bins, self._at(span)))
            for (rows, count), span in zip(blocks, t.hist_hidden, strict=True)
        ]
        self.readout = torch.empty(
            2 if lay.histograms else 0, outputs, dtype=x.dtype, device=x.device
        )
        self.readout_histograms = RowHistograms(
            self.readout.shape[0], outputs, bins, self._at(t.hist_readout)
        )

    def _at(self, span: Span) -> Tensor:
        return self.out[span.start : span.stop]

    # -- a step ---------------------------------------------------------------------------
    def fill(
        self,
        taps: Taps,
        scalars: Sequence[Tensor],
        others: Sequence[Tensor],
        dlogits: Tensor,
        hidden_grads: Sequence[Tensor] | None,
        g_copy: Tensor | None,
        g_norms: Sequence[Tensor] | None,
    ) -> None:
        """Compute a step's statistics into `out` (see transfer.py for its slots): from the
        0-d `scalars` (loss, accuracy, clipped) and `others` (the other parameters' gradient
        norm, if any), the taps, dL/dlogits and dL/dh: as rows of the hidden buffer
        (`hidden_grads`, when the layout has them), as the hooks copied it (`g_copy`), or
        just its norms (`g_norms`). The weight groups hold the copies before the update.
        Under `torch.no_grad()`: `out=` does not take tensors that require grad."""
        assert taps.logits is not None
        lay = self.transfer.layout
        filled = [*taps.z] if lay.h_is_z else [*taps.z, *taps.h]
        if hidden_grads is not None:
            filled += hidden_grads
        torch.cat(filled, out=self.filled)
        if lay.histograms:  # first: the moments below centre z and h in place
            self._histograms(taps.logits, dlogits, g_copy)
        self._health(taps)  # before centring too: the activation input may be z
        self.moments()
        if g_copy is not None:  # dL/dh as the hooks copied it, or just its norms
            torch.linalg.vector_norm(g_copy, dim=1, out=self.g_norms)
        elif g_norms is not None:
            torch.stack(list(g_norms), out=self.g_norms)
        out_std, out_mean = torch.std_mean(taps.logits, correction=0)
        head = [*scalars, out_mean, out_std, torch.linalg.vector_norm(dlogits), *others]
        torch.stack(head, out=self.head)
        self.weight_groups.norms_(self.weights)

    def _health(self, taps: Taps) -> None:
        """The activation's masks over its inputs u: the healthy one into the mask rows of
        the hidden buffer (summed there with the moments, unless it is also the active
        mask), and per layer how many units are active (f' != 0) for at least one sample
        into the live slot."""
        if self.mask is None:
            return
        if same_tensors(taps.u, taps.z):
            u = self.z
        elif same_tensors(taps.u, taps.h):
            u = self.h
        else:  # a normalization before the activation
            if self.u is None:
                self.u = torch.empty_like(self.z)
            u = self.u
            torch.cat(taps.u, out=u.view(-1, self.z.shape[-1]))
        health = self.activation.health(u, self.acts, self.mask)
        if health.healthy is not None and health.healthy.data_ptr() != self.mask.data_ptr():
            self.mask.copy_(health.healthy)
        if health.active is not None:  # per unit, how many samples pass gradient
            per_unit = torch.sum(health.active, 1)  # [layers, units]
            torch.linalg.vector_norm(per_unit, ord=0, dim=1, out=self.live)  # units > 0
            if self.transfer.layout.active_is_healthy:  # one read of the mask, not two
                torch.sum(per_unit, 1, out=self.mask_counts)

    def _histograms(self, logits: Tensor, dlogits: Tensor, g_copy: Tensor | None) -> None:
        """Histograms of h_l and dL/dh_l (adjacent rows of the hidden buffer, or h rows and
        the hooks' copy), then of the readout's logits and dL/dlogits."""
        for rows, histograms in self.hidden_histograms:
            if rows is None:  # dL/dh, as the hooks copied it
                if g_copy is None:
                    raise RuntimeError("histograms need attach(histograms=True)")
                rows = g_copy
            histograms(rows)
        torch.stack([logits.view(-1), dlogits.view(-1)], out=self.readout)
        self.readout_histograms(self.readout)
