"""A recorded step's statistics through the C kernels (kernels.c, loaded by kernels.py).

The same numbers as the probe's tensor ops, into the same slots of the same flat buffer
(transfer.py): a NativeStep works out once per Layout where each number goes, as index arrays,
and a step then only gathers its tensors' addresses and makes a handful of calls. The buffer
lives in host memory, so reading it back is a list copy, no transfer.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import torch
from torch import Tensor

from depthscope.engine.activations import HealthRule
from depthscope.engine.model import Taps, same_tensors
from depthscope.probe.backends.kernels import HEALTH_KINDS, HIDDEN_COLUMNS, addresses, indices
from depthscope.probe.stats import WeightGroups, or_zeros
from depthscope.probe.transfer import HEAD, Span, Transfer


class NativeStep:
    """One Layout's calls into the kernels. Where every number goes (index arrays into the flat
    buffer `out`) is worked out once, here; a step only gathers its tensors' addresses.

    `host` is a ctypes view of `out`: the host writes the loss and `clipped` into it and reads
    the whole buffer back as a list, with no tensor op."""

    def __init__(
        self,
        lib: ctypes.CDLL,
        transfer: Transfer,
        weights: Sequence[Tensor],
        rule: HealthRule | None,
        batch: int,
        logits_size: int,
    ) -> None:
        t, lay = transfer, transfer.layout
        assert not lay.g_rows, "the kernels keep dL/dh apart from the hidden rows"
        self.lib, self.transfer = lib, t
        layers, count = lay.layers, len(weights)
        self.batch, self.width, self.n = batch, lay.width, lay.n
        self.out = torch.zeros(t.size, dtype=torch.float32)
        self.address = self.out.data_ptr()
        self.host = (ctypes.c_float * t.size).from_address(self.address)
        rows = range(layers)
        slot = {  # per layer, where each of ds_hidden's numbers goes
            "z_sum": [t.sums.start + i for i in rows],
            "z_norm": [t.norms.start + i for i in rows],
            "h_sum": [t.sums.start + layers + i for i in rows],
            "h_norm": [t.norms.start + layers + i for i in rows],
            "healthy": [t.sums.start + t.mask_row + i for i in rows],
            "live": [t.live.start + i if lay.active else -1 for i in rows],
            "g_norm": [t.g_norms.start + i for i in rows],
        }
        if lay.h_is_z:
            slot["h_sum"] = slot["h_norm"] = [-1] * layers
        self.hidden_where = indices([slot[column][i] for i in rows for column in HIDDEN_COLUMNS])
        self.g_single = [indices([w]) for w in slot["g_norm"]]  # one layer's, for the hooks
        self.g_lengths = indices([self.n] * layers)
        self.rule = (HEALTH_KINDS[rule.kind], rule.param) if rule is not None else (0, 0.0)
        self.per_unit = torch.zeros(lay.width, dtype=torch.int32)
        self.head = t.head.start
        self.readout = indices([self.head + i for i in (1, 3, 4, 5)])  # accuracy … dL/dlogits
        position = _weight_positions(t.weights, transfer.weight_groups)
        self.grad_where, self.before_where, self.update_where = (
            indices(position[r]) for r in range(3)
        )
        self.weight_lengths = indices([w.numel() for w in weights])
        self.saved = [torch.empty_like(w, device="cpu") for w in weights]  # values before
        self.saved_addresses = addresses(self.saved)
        # parameters are updated in place (every torch optimizer does): their storage, and so
        # these addresses, stay the same from step to step
        self.weights_at = addresses(weights)
        self.histograms = [_HistogramSlots(span, t.bins, self.n) for span in t.hist_hidden]
        self.readout_histograms = (
            _HistogramSlots(t.hist_readout, t.bins, logits_size) if lay.histograms else None
        )
        self._count = count
        # the other parameters' gradient norm: one number, after the head's HEAD
        self.others_at = self.address + self.out.element_size() * (self.head + HEAD)
        self._others_lengths: ctypes.Array[ctypes.c_int64] | None = None

    def before_update(self, grads: Sequence[Tensor], others: Sequence[Tensor]) -> None:
        """Norms of the weights' gradients (before clipping) and of their values, which are
        copied for the update's norm; the other parameters' gradients: one norm together."""
        lib, out, n = self.lib, self.address, self.weight_lengths
        lib.ds_norms(self._count, addresses(grads), n, None, out, self.grad_where)
        lib.ds_norms(self._count, self.weights_at, n, self.saved_addresses, out, self.before_where)
        if others:  # the same sizes every step
            if self._others_lengths is None:
                self._others_lengths = indices([p.numel() for p in others])
            lib.ds_norms(
                len(others), addresses(others), self._others_lengths, None, self.others_at, None
            )

    def gradient(self, layer: int, grad: Tensor) -> None:
        """dL/dh of one layer as backpropagation produces it (the hook path for large layers):
        its norm, and its histogram on histogram steps."""
        one = addresses([grad])
        lengths = self.g_lengths  # its first entry: this layer's length
        self.lib.ds_norms(1, one, lengths, None, self.address, self.g_single[layer])
        if self.histograms:
            self.histograms[-1].fill_one(self.lib, one, self.address, lengths, layer)

    def finish(
        self,
        taps: Taps,
        grads: Sequence[Tensor | None],
        targets: Tensor,
        slopes: Sequence[Tensor] | None,
        hooks_took_dh: bool,
    ) -> None:
        """Everything else, after the update: per hidden layer the moments of z and h, the
        health counts over the activation inputs u and the norm of dL/dh (unless the hooks
        took it), the readout's numbers (accuracy from `targets`; a regression's float
        targets give NaN), the weights' update norms and the step's histograms. `grads`:
        dL/dh per hidden layer, then dL/dlogits (None where autograd had none)."""
        assert taps.logits is not None
        z, logits = taps.z, taps.logits
        h = None if self.transfer.layout.h_is_z else taps.h
        u = z if same_tensors(taps.u, z) else taps.h if same_tensors(taps.u, taps.h) else taps.u
        hidden = None
        if not hooks_took_dh:
            hidden = [or_zeros(g, x) for g, x in zip(grads[:-1], taps.h, strict=True)]
        # contiguous, as the kernels read them (a no-op for what autograd and the model make)
        logits, dlogits = logits.contiguous(), or_zeros(grads[-1], logits).contiguous()
        targets = targets.contiguous()
        lib, out, layers = self.lib, self.address, len(z)
        z_at = addresses(z)
        h_at = z_at if h is None else addresses(h)
        u_at = z_at if u is z else h_at if u is h else addresses(u)
        g_at = None if hidden is None else addresses(hidden)
        kind, param = self.rule
        lib.ds_hidden(
            layers,
            self.batch,
            self.width,
            z_at,
            None if h is None else h_at,
            u_at,
            g_at,
            kind,
            param,
            None if slopes is None else addresses(slopes),
            self.per_unit.data_ptr(),
            out,
            self.hidden_where,
        )
        classes = logits.shape[1] if logits.dim() > 1 else 1
        lib.ds_readout(
            logits.data_ptr(),
            logits.shape[0],
            classes,
            None if targets.is_floating_point() else targets.data_ptr(),
            dlogits.data_ptr(),
            out,
            self.readout,
        )
        lib.ds_difference_norms(
            self._count,
            self.weights_at,
            self.saved_addresses,
            self.weight_lengths,
            out,
            self.update_where,
        )
        if self.histograms:
            self.histograms[0].fill(lib, h_at, out)
            if g_at is not None:
                self.histograms[1].fill(lib, g_at, out)
        if self.readout_histograms is not None:
            self.readout_histograms.fill(lib, addresses([logits, dlogits]), out)

    def read(self, loss: float, clipped: float) -> list[float]:
        """The whole buffer as host floats, with the loss and `clipped` written in first."""
        host = self.host
        host[self.head] = loss
        host[self.head + 2] = clipped
        return host[:]


class _HistogramSlots:
    """Where the histograms of one block of rows go: lo, hi and counts per row (see
    stats.RowHistograms for the block's format); `n` values a row."""

    def __init__(self, span: Span, bins: int, n: int) -> None:
        rows = (span.stop - span.start) // (2 + bins)
        self.bins = bins
        lo = [span.start + r for r in range(rows)]
        hi = [span.start + rows + r for r in range(rows)]
        counts = [span.start + 2 * rows + r * bins for r in range(rows)]
        self.lengths = indices([n] * rows)
        self.where = (indices(lo), indices(hi), indices(counts))
        self.single = [
            (indices([a]), indices([b]), indices([c]))
            for a, b, c in zip(lo, hi, counts, strict=True)
        ]

    def fill(self, lib: ctypes.CDLL, rows: ctypes.Array[ctypes.c_void_p], out: int) -> None:
        """Every row of the block, from `rows`' addresses."""
        lib.ds_histograms(len(rows), rows, self.lengths, self.bins, out, *self.where)

    def fill_one(
        self,
        lib: ctypes.CDLL,
        row: ctypes.Array[ctypes.c_void_p],
        out: int,
        lengths: ctypes.Array[ctypes.c_int64],
        index: int,
    ) -> None:
        """Row `index` of the block alone (`lengths`: its length first)."""
        lib.ds_histograms(1, row, lengths, self.bins, out, *self.single[index])


def _weight_positions(span: Span, groups: WeightGroups) -> list[list[int]]:
    """Per row (gradient, value before, update), each weight's slot in the flat buffer."""
    count = len(groups.weights)
    return [
        [span.start + groups.host_order[row * count + i] for i in range(count)] for row in range(3)
    ]
