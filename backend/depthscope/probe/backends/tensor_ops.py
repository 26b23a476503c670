"""The tensor-op backend: a recorded step's reductions with batched tensor ops, on any device.

Layers are concatenated into one hidden buffer (`x`, rows of batch × units numbers: the
activation's healthy mask, z, h unless it is z, and dL/dh on histogram steps of small layers)
and reduced a handful of ops at a time, whatever the depth; every op writes its slot of the
flat buffer with `out=`, and the buffer leaves the device in ONE `.cpu()`. `_Plan` binds
the buffers and every view of them once per layout: on the CPU even a view costs a few µs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from depthscope.engine.model import Taps
from depthscope.probe.backends.base import Model, StepTensors
from depthscope.probe.metrics import (
    DH_NORM,
    H_SPREAD,
    H_SUM,
    U_HEALTHY,
    U_LIVE,
    U_SPREAD,
    U_SUM,
    Z_SPREAD,
    Z_SUM,
    Reduction,
)
from depthscope.probe.stats import (
    Buffers,
    RowHistograms,
    RowMoments,
    WeightGroups,
    accuracy,
    histogram_views,
)
from depthscope.probe.transfer import Span, Transfer


class TensorOpsBackend:
    """Tensor ops for one run: the weight groups' buffers, the hidden buffer (kept from step to
    step), and one `_Plan` per layout. dL/dh through the hooks (large layers) is copied into
    rows of a buffer on histogram steps and reduced to its norm at once otherwise."""

    name = "tensor ops"

    def __init__(self, model: Model) -> None:
        self.model, s = model, model.structure
        self.structure = s
        device = model.weights[0].device
        self.weight_groups = WeightGroups(model.weights, model.weight_slots)
        self.masks = s.layers if s.healthy else 0
        rows = self.masks + s.layers * (1 if s.h_is_z else 2) + (0 if s.hooks else s.layers)
        self.x = torch.empty(rows, s.n, device=device)  # masks, z, h, small layers' dL/dh
        self.scratch = Buffers()
        self.plans: dict[Transfer, _Plan] = {}
        self.plan: _Plan | None = None
        self.others_norm: Tensor | None = None
        self.g_norms: list[Tensor] = []  # the hooks' dL/dh norms, without a histogram
        self._copy_hooks: tuple[Tensor, list[Callable[[Tensor], None]]] | None = None

    def begin(self, transfer: Transfer) -> None:
        plan = self.plans.get(transfer)
        if plan is None:
            plan = self.plans[transfer] = _Plan(transfer, self)
        self.plan = plan
        if self.structure.hooks and not transfer.histograms:
            self.g_norms = [torch.empty(0)] * self.structure.layers

    def _plan(self) -> _Plan:
        if self.plan is None:
            raise RuntimeError("the backend has no step begun")
        return self.plan

    def g_rows(self, like: Tensor) -> tuple[Tensor, list[Callable[[Tensor], None]]]:
        """The hooks' copy of dL/dh [layers, batch, units], and a copying hook per row."""
        s = self.structure
        buffer = self.scratch.get("g", (s.layers, s.batch, s.width), like)
        if self._copy_hooks is None or self._copy_hooks[0] is not buffer:
            self._copy_hooks = (buffer, [partial(_copy_into, row) for row in buffer.unbind(0)])
        return self._copy_hooks

    def take_gradient(self, layer: int, grad: Tensor) -> None:
        if self._plan().histograms:  # a copy, into a row of the probe's buffer
            self.g_rows(grad)[1][layer](grad)
        else:  # just the norm, taken while dL/dh is fresh in the cache
            self.g_norms[layer] = torch.linalg.vector_norm(grad)

    def before_update(self, weight_grads: Sequence[Tensor], other_grads: Sequence[Tensor]) -> None:
        """Copy the weights' gradients (before any clipping) and values; the other parameters'
        gradients only count towards the total norm: one norm over them all."""
        with torch.no_grad():
            self.weight_groups.before_update(weight_grads)
            if other_grads:  # biases and norm parameters are 1-D already: no view per tensor
                flat = [g if g.dim() == 1 else g.view(-1) for g in other_grads]
                self.others_norm = torch.linalg.vector_norm(torch.cat(flat))

    def finish(self, step: StepTensors) -> npt.NDArray[np.float32]:
        with torch.no_grad():
            plan = self._plan()
            plan.fill(step, self)
            return plan.out.cpu().numpy()  # the one host transfer (a view on the CPU)


def _copy_into(row: Tensor, grad: Tensor) -> None:
    row.copy_(grad)


class _Plan:
    """The device side of one layout: the flat buffer `out`, views of the backend's hidden
    buffer, and every op's slot in `out`."""

    def __init__(self, t: Transfer, backend: TensorOpsBackend) -> None:
        s, x = t.structure, backend.x
        layers, width, masks = s.layers, s.width, backend.masks
        self.transfer, self.histograms = t, t.histograms
        self.acts, self.activation = backend.model.acts, backend.model.activation
        self.out = torch.empty(t.size, dtype=x.dtype, device=x.device)
        self.g_rows = t.histograms and not s.hooks  # dL/dh in the hidden buffer this step
        activation_rows = layers * (1 if s.h_is_z else 2)
        z0, h0 = masks, masks + activation_rows - layers  # first z row, first h row
        end = masks + activation_rows + (layers if self.g_rows else 0)
        self.filled = x[masks:end].view(-1, width)  # what the concatenation writes
        self.z = x[z0 : z0 + layers].view(layers, s.batch, width)
        self.h = x[h0 : h0 + layers].view(self.z.shape)
        self.mask = x[:masks].view(self.z.shape) if s.healthy else None
        self.u: Tensor | None = None  # the activation inputs, when a norm comes before them
        # ... and then their own sums and spreads (else u is z or h, whose moments serve)
        self.u_moments = (
            (self._at(t.hidden[U_SUM]), self._at(t.hidden[U_SPREAD])) if s.u_is == "own" else None
        )
        # the moments: sums of the mask rows (unless ReLU's per-unit counts give them), z and
        # h; spreads of z and h, and dL/dh's norms when it is in the buffer
        counted = s.healthy and not s.active_is_healthy
        summed = [U_HEALTHY] if counted else []
        summed += [Z_SUM] if s.h_is_z else [Z_SUM, H_SUM]
        normed: list[Reduction] = [Z_SPREAD] if s.h_is_z else [Z_SPREAD, H_SPREAD]
        if self.g_rows:
            normed.append(DH_NORM)
        self.moments = RowMoments(
            x,
            (0 if counted else masks, masks + activation_rows),
            (masks, masks + activation_rows),
            (masks, end),
            self._at(t.span(*summed)),
            self._at(t.span(*normed)),
        )
        self.healthy_counts = self._at(t.hidden[U_HEALTHY]) if s.healthy else None
        self.live = self._at(t.hidden[U_LIVE]) if s.active else None
        self.dh = self._at(t.hidden[DH_NORM])
        # the head and the readout's reductions are adjacent: one stack, then sums and spreads
        # from the logits' mean and std
        readout = [t.readout[r] for r in (Z_SUM, Z_SPREAD, DH_NORM)]
        assert readout == list(range(t.head.stop, t.head.stop + 3)), "head, then the readout"
        self.head = self.out[t.head.start : t.head.stop + 3]
        n_out = float(s.batch * s.outputs)
        self.scale = torch.ones(len(self.head), device=x.device)
        self.scale[-3:-1] = torch.tensor([n_out, n_out**0.5])
        self.weights = backend.weight_groups.slots(self._at(t.weights))
        self.hidden_histograms: list[tuple[Tensor | None, RowHistograms]] = []
        if t.histograms:
            block, rows = self._at(t.hist_hidden), 2 * layers
            if self.g_rows:  # h rows and dL/dh rows are adjacent in the buffer
                both = x[h0 : h0 + rows]
                self.hidden_histograms.append(
                    (both, RowHistograms(s.n, t.bins, *histogram_views(block, rows, 0, rows)))
                )
            else:  # h rows, then the hooks' copy of dL/dh
                for first, source in ((0, x[h0 : h0 + layers]), (layers, None)):
                    views = histogram_views(block, rows, first, layers)
                    self.hidden_histograms.append((source, RowHistograms(s.n, t.bins, *views)))
        self.readout = torch.empty(2 if t.histograms else 0, s.batch * s.outputs, device=x.device)
        self.readout_histograms = RowHistograms(
            s.batch * s.outputs, t.bins, *histogram_views(self._at(t.hist_readout), 2, 0, 2)
        )
        rows = layers if t.histograms else 0
        self.u_histograms = RowHistograms(
            s.n, t.bins, *histogram_views(self._at(t.hist_u), rows, 0, rows)
        )

    def _at(self, span: Span) -> Tensor:
        return self.out[span.start : span.stop]

    # -- a step ---------------------------------------------------------------------------
    def fill(self, step: StepTensors, backend: TensorOpsBackend) -> None:
        """Compute a step's reductions into `out` (transfer.py's slots). Under
        `torch.no_grad()`: `out=` does not take tensors that require grad."""
        taps, s = step.taps, self.transfer.structure
        assert taps.logits is not None
        filled = [*taps.z] if s.h_is_z else [*taps.z, *taps.h]
        if self.g_rows:
            assert step.hidden_grads is not None
            filled += step.hidden_grads
        torch.cat(filled, out=self.filled)
        wanted = self.histograms or self.mask is not None or self.u_moments is not None
        u = self._inputs(taps, s.u_is) if wanted else None
        if self.histograms:  # first: the moments below centre z and h in place
            self._histograms(taps.logits, step.dlogits, backend)
            assert u is not None
            self.u_histograms(u.view(s.layers, -1))
        if u is not None:
            self._health(u)  # before centring too: the activation input may be z
        if self.u_moments is not None:  # u is the probe's own copy: centred in place
            assert u is not None
            rows, (sums, spreads) = u.view(s.layers, -1), self.u_moments
            torch.sum(rows, 1, out=sums)
            rows.sub_(sums.unsqueeze(1), alpha=1.0 / rows.shape[1])
            torch.linalg.vector_norm(rows, dim=1, out=spreads)
        self.moments()
        if not self.g_rows:  # dL/dh apart from the buffer: its norms
            if step.hidden_grads is not None:  # small layers: autograd returned them all
                torch.stack(torch._foreach_norm(list(step.hidden_grads)), out=self.dh)
            elif self.histograms:  # the hooks' copy
                g = backend.g_rows(self.dh)[0]
                torch.linalg.vector_norm(g.view(s.layers, -1), dim=1, out=self.dh)
            else:  # the norms the hooks took
                torch.stack(backend.g_norms, out=self.dh)
        out_std, out_mean = torch.std_mean(taps.logits, correction=0)
        others = [] if backend.others_norm is None else [backend.others_norm]
        scalars = [step.loss, accuracy(taps.logits, step.targets), step.clipped, *others]
        dlogits_norm = torch.linalg.vector_norm(step.dlogits)
        torch.stack([*scalars, out_mean, out_std, dlogits_norm], out=self.head).mul_(self.scale)
        backend.weight_groups.norms_(self.weights)

    def _inputs(self, taps: Taps, u_is: str) -> Tensor:
        """The activation inputs u, [layers, batch, units]: z's or h's rows of the hidden
        buffer when u is one of them, else (a normalization first) copied into a buffer."""
        if u_is == "z":
            return self.z
        if u_is == "h":
            return self.h
        if self.u is None:
            self.u = torch.empty_like(self.z)
        torch.cat(taps.u, out=self.u.view(-1, self.z.shape[-1]))
        return self.u

    def _health(self, u: Tensor) -> None:
        """The activation's masks over its inputs u: the healthy one into the mask rows of
        the hidden buffer (summed there with the moments, unless it is also the active
        mask), and per layer how many units are active (f' != 0) for at least one sample."""
        if self.mask is None:
            return
        health = self.activation.health(u, self.acts, self.mask)
        if health.healthy is not None and health.healthy.data_ptr() != self.mask.data_ptr():
            self.mask.copy_(health.healthy)
        if health.active is not None:  # per unit, how many samples pass gradient
            assert self.live is not None
            per_unit = torch.sum(health.active, 1)  # [layers, units]
            torch.linalg.vector_norm(per_unit, ord=0, dim=1, out=self.live)  # units > 0
            if self.transfer.structure.active_is_healthy:  # one read of the mask, not two
                assert self.healthy_counts is not None
                torch.sum(per_unit, 1, out=self.healthy_counts)

    def _histograms(self, logits: Tensor, dlogits: Tensor, backend: TensorOpsBackend) -> None:
        """Histograms of h_l and dL/dh_l (adjacent rows of the hidden buffer, or h rows and
        the hooks' copy), then of the readout's logits and dL/dlogits."""
        layers = self.transfer.structure.layers
        for rows, histograms in self.hidden_histograms:
            if rows is None:  # dL/dh, as the hooks copied it
                rows = backend.g_rows(logits)[0].view(layers, -1)
            histograms(rows)
        torch.stack([logits.view(-1), dlogits.view(-1)], out=self.readout)
        self.readout_histograms(self.readout)
