"""The device side of one Layout (see transfer.py): the flat output buffer, the hidden buffer
and every view of them a recorded step writes through, made once per layout.

On the CPU even a view costs a few µs, so the probe (probe.py) never slices its buffers per
step: it fills the views a StepPlan made when the layout was first seen.
"""

from __future__ import annotations

import torch
from torch import Tensor

from depthscope.stats import RowHistograms, RowMoments
from depthscope.transfer import Span, Transfer


class StepPlan:
    """The device side of one Layout: the flat buffer `out`, the hidden buffer `x`, and every
    view of them a step writes through, made once (on the CPU a view costs a few µs)."""

    def __init__(self, transfer: Transfer, x: Tensor, outputs: int, bins: int) -> None:
        t, lay = transfer, transfer.layout
        layers, width = lay.layers, lay.width
        self.transfer = t
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
