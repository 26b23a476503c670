"""The probe: every per-layer statistic of DESIGN §5 at a recorded step, computed on the device.

On small networks a step's cost is the number of tensor ops, on large ones the passes over
memory, so the probe keeps both few: the hidden layers' tensors are concatenated once into
[layers, batch × units] buffers it owns (and may centre in place) and keeps from step to step,
each statistic is one reduction over a buffer, parameter-shaped quantities are stacked by shape
(a handful of ops whatever the depth), the scalings are folded into one op at the end, and all
the numbers of a step leave the device in ONE transfer (`.tolist()` of one flat tensor).

Lifecycle of a recorded step, driven by the trainer:
    probe.attach()          before the forward pass: the model starts filling `Taps`
    probe.backward(loss)    instead of loss.backward(): also keeps dL/dh_l and dL/dlogits
    probe.before_update()   after backward, before clipping: copies of gradients and weights
    probe.finish(...)       after the optimizer step: one transfer, returns the StepRecord
All statistics describe the weights the step's forward pass used (before the update).
The probe drops what it holds after each step and when closed (it is a context manager).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from depthscope.layers import ACTIVATIONS
from depthscope.model import DeepNet, Taps
from depthscope.records import METRICS, StepRecord, unpack
from depthscope.stats import TINY, Buffers, WeightGroups, histograms

HISTOGRAM_BINS = 32
# Per-layer gradients at least this large are copied out by hooks rather than held: glibc's
# default threshold for serving an allocation by mmap, where heap growth starts to cost.
HOOK_BYTES = 128 * 1024
# The rows step_tensors assembles, in order: weight side, then activation side (raw sums and
# norms, scaled by one op). METRICS picks its rows out of these.
WEIGHT_ROWS = ("grad_norm", "weight_norm", "update_norm", "grad_to_weight", "one", "update_ratio")
ACTIVATION_ROWS = (
    "act_grad_norm",
    "act_mean",
    "act_std",
    "preact_mean",
    "preact_std",
    "saturation",
    "dead",
)
ROWS = WEIGHT_ROWS + ACTIVATION_ROWS


class Probe:
    def __init__(self, model: DeepNet, histogram_bins: int = HISTOGRAM_BINS) -> None:
        self.model = model
        self.bins = histogram_bins
        self.width = model.linears[0].out_features
        self.weights = [layer.weight for layer in model.linears]
        self.params = [p for p in model.parameters() if p.requires_grad]
        weight_ids = {id(w) for w in self.weights}
        self.others = [p for p in self.params if id(p) not in weight_ids]  # biases, norms, …
        device = self.weights[0].device
        self.metric_rows = torch.tensor([ROWS.index(m) for m in METRICS], device=device)
        self.scratch = Buffers()
        self.weight_groups = WeightGroups(self.weights)
        self.other_groups = WeightGroups(self.others, track_updates=False) if self.others else None
        self.acts: list[nn.Module] = [block.act for block in model.block_list]
        self.activation = ACTIVATIONS[model.activation]
        self.taps: Taps | None = None
        self.grads: list[Tensor | None] = []  # dL/dh_l per hidden block, then dL/dlogits
        self._hooked: Tensor | None = None  # dL/dh_l as the backward hooks copied it
        self._hooked_norms: Tensor | None = None  # or just its norms, [layers, 1]
        self._constants: dict[str, Tensor] = {}

    @property
    def layer_names(self) -> list[str]:
        return self.model.layer_names

    # -- lifecycle -----------------------------------------------------------------------
    def attach(self) -> None:
        self.taps = Taps()
        self.model.taps = self.taps

    def backward(self, loss: Tensor, keep_gradients: bool = True) -> None:
        """Backpropagate `loss` as `loss.backward()` would, keeping dL/dh_l and dL/dlogits too.

        Small layers: one autograd call returns the parameters' gradients and the block
        outputs' together (no per-layer Python hooks, no `retain_grad` clones). Large layers:
        holding every dL/dh_l until the step ends makes the heap grow and shrink each step
        (a page fault per 4 KiB), so a hook copies each one into the probe's own buffer and
        lets autograd free it as usual; without `keep_gradients` (no histogram this step) the
        hook takes just its norm, sparing the copy."""
        taps = self._require_taps()
        assert taps.logits is not None
        outputs = [*taps.h, taps.logits]
        self.grads = [None] * len(outputs)
        if taps.h[0].numel() * taps.h[0].element_size() >= HOOK_BYTES:
            self._backward_with_hooks(loss, outputs, keep_gradients)
            return
        grads = torch.autograd.grad(loss, [*outputs, *self.params], allow_unused=True)
        self.grads = list(grads[: len(outputs)])
        for p, g in zip(self.params, grads[len(outputs) :], strict=True):
            p.grad = g if p.grad is None or g is None else p.grad + g

    def _backward_with_hooks(self, loss: Tensor, outputs: list[Tensor], keep: bool) -> None:
        hidden = outputs[:-1]
        take: Callable[[Tensor, Tensor], None] = _copy_into
        buffer = self.scratch.get("g", (len(hidden), *hidden[0].shape), hidden[0])
        if not keep:  # one 0-d slot per layer
            take, buffer = _norm_into, self.scratch.get("g_norm", (len(hidden),), hidden[0])
        rows = buffer.unbind(0)
        hooks = [partial(take, row) for row in rows] + [partial(self._keep, -1)]
        handles = [
            t.register_hook(hook)  # type: ignore[no-untyped-call]
            for t, hook in zip(outputs, hooks, strict=True)
        ]
        try:
            loss.backward()  # type: ignore[no-untyped-call]
        finally:
            for handle in handles:
                handle.remove()
        if keep:
            self.grads[:-1] = rows
            self._hooked = buffer.view(len(rows), -1)
        else:
            self._hooked_norms = buffer.view(len(rows), 1)

    def _keep(self, index: int, grad: Tensor) -> None:
        self.grads[index] = grad

    @torch.no_grad()
    def before_update(self) -> None:
        """Copy the weights' gradients (before any clipping) and values before the update;
        the other parameters' gradients only count towards the total norm."""
        self.weight_groups.before_update([_grad(w) for w in self.weights])
        if self.other_groups is not None:
            self.other_groups.before_update([_grad(p) for p in self.others])

    def detach(self) -> None:
        self.grads, self._hooked, self._hooked_norms = [], None, None
        self.model.taps = None
        self.taps = None

    def __enter__(self) -> Probe:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.detach()

    def _require_taps(self) -> Taps:
        if self.taps is None:
            raise RuntimeError("probe is not attached")
        return self.taps

    # -- statistics ----------------------------------------------------------------------
    def _activations(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """z, u, h, dL/dh as [layers, batch × units] buffers (u is z without a norm layer, h
        is u for a linear activation: they then share one; dL/dh may be its norms alone,
        [layers, 1]), then logits and dL/dlogits."""
        taps = self._require_taps()
        assert taps.logits is not None
        z = self.scratch.cat("z", taps.z)
        u = z if _same(taps.u, taps.z) else self.scratch.cat("u", taps.u)
        h = u if _same(taps.h, taps.u) else self.scratch.cat("h", taps.h)
        dlogits = _or_zeros(self.grads[-1], taps.logits)
        # the hooks' copy, or only the norms they took ([layers, 1]), or a concatenation
        g = self._hooked if self._hooked is not None else self._hooked_norms
        if g is None:
            hidden = zip(self.grads[:-1], taps.h, strict=True)
            g = self.scratch.cat("g", [_or_zeros(grad, like) for grad, like in hidden])
        return z, u, h, g, taps.logits.reshape(1, -1), dlogits.reshape(1, -1)

    def _constant(self, name: str, values: list[Any], like: Tensor) -> Tensor:
        """A small tensor made once, so a step does not rebuild it."""
        if name not in self._constants:
            self._constants[name] = torch.tensor(values, dtype=like.dtype, device=like.device)
        return self._constants[name]

    @torch.no_grad()
    def step_tensors(self, with_histograms: bool) -> tuple[Tensor, list[Tensor]]:
        """The step's numbers, still on the device: the total gradient norm (0-d), then the
        metrics [len(METRICS) × layers] in METRICS order and (with histograms) lo, hi
        [kinds × layers] and counts [kinds × layers × bins]."""
        z, u, h, g, logits, dlogits = self._activations()
        parts = []
        if with_histograms and self._hooked_norms is not None:
            raise RuntimeError("histograms need backward(loss, keep_gradients=True)")
        if with_histograms:  # first: the sums below centre z and h in place
            parts = self._histograms([h, logits, g, dlogits])
        activation_side = self._activation_rows(z, u, h, g, logits, dlogits)
        weight = self.weight_groups.norms()  # [grad, value before, update] × layers
        ratios = weight / weight[1].clamp_min(TINY)  # grad_to_weight, one, update_ratio
        rows = torch.cat([weight, ratios, activation_side])  # in ROWS order
        metrics = rows.index_select(0, self.metric_rows).flatten()
        grads = weight[0]
        if self.other_groups is not None:
            grads = torch.cat([grads, self.other_groups.norms()[0]])
        return torch.linalg.vector_norm(grads), [metrics, *parts]

    def _activation_rows(
        self, z: Tensor, u: Tensor, h: Tensor, g: Tensor, logits: Tensor, dlogits: Tensor
    ) -> Tensor:
        """[len(ACTIVATION_ROWS), layers]: raw per-layer sums and norms gathered into one
        tensor, then scaled into means, stds and fractions by one multiply-add."""
        n = z.shape[1]
        healthy, dead = self._health_counts(u)
        z_mean = z.mean(1, keepdim=True)
        z_norm = torch.linalg.vector_norm(z.sub_(z_mean), dim=1, keepdim=True)
        h_mean, h_norm = z_mean, z_norm
        if h is not z:
            h_mean = h.mean(1, keepdim=True)
            h_norm = torch.linalg.vector_norm(h.sub_(h_mean), dim=1, keepdim=True)
        g_norm = (
            self._hooked_norms  # hooks without histograms took the norms in the backward pass
            if self._hooked_norms is not None
            else torch.linalg.vector_norm(g, dim=1, keepdim=True)
        )
        hidden = torch.cat([g_norm, h_mean, h_norm, z_mean, z_norm, healthy, dead], dim=1)
        # The readout is linear, never saturated or dead; its std is pre-multiplied by √n so
        # the common scaling below leaves it as it is.
        out_std, out_mean = torch.std_mean(logits, correction=0)
        out_std = out_std * math.sqrt(n)
        zero, full = self._constant("readout", [0.0, float(n)], logits).unbind()
        readout = [torch.linalg.vector_norm(dlogits), out_mean, out_std, out_mean, out_std]
        raw = torch.cat([hidden, torch.stack([*readout, full, zero]).unsqueeze(0)])
        # act_grad_norm, means: as they are; stds: norm / √n; saturation: 1 - healthy / n;
        # dead: dead units / units.
        scale = self._constant(
            f"scale{n}", [1, 1, n**-0.5, 1, n**-0.5, -1 / n, 1 / self.width], raw
        )
        offset = self._constant("offset", [0, 0, 0, 0, 0, 1, 0], raw)
        return torch.addcmul(offset, raw, scale).t()

    def _health_counts(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Per hidden layer [layers, 1]: how many (sample, unit) have |f'(u)| at least 5% of
        its maximum, and how many units have f'(u) = 0 for every sample in the batch."""
        layers, n = u.shape
        u3 = u.view(layers, -1, self.width)
        health = self.activation.health(u3, self.acts, self.scratch.get("mask", u3.shape, u3))
        if health.active is None:
            dead = self._constant(f"zeros{layers}", [[0.0]] * layers, u)
            per_unit = None
        else:
            per_unit = health.active.sum(1)  # [layers, units]: samples where f' != 0
            dead = (per_unit == 0).sum(1, keepdim=True)
        if health.healthy is None:
            return self._constant(f"full{layers}", [[float(n)]] * layers, u), dead
        if health.healthy is health.active and per_unit is not None:
            return per_unit.sum(1, keepdim=True), dead
        return health.healthy.view(layers, -1).sum(1, keepdim=True), dead

    def _histograms(self, rows: Sequence[Tensor]) -> list[Tensor]:
        """lo, hi and counts of h_l then dL/dh_l, readout last in each kind."""
        results = [histograms(x, self.bins, self.scratch) for x in rows]
        return [torch.cat([r[k].flatten() for r in results]).float() for k in range(3)]

    # -- one transfer ----------------------------------------------------------------------
    @torch.no_grad()
    def finish(
        self, step: int, loss: Tensor, accuracy: Tensor, clipped: Tensor, with_histograms: bool
    ) -> StepRecord:
        """Build the step's record from 0-d tensors: loss, accuracy (NaN for regression) and
        whether clipping acted."""
        try:
            total, parts = self.step_tensors(with_histograms)
            scalars = torch.stack([loss, accuracy, total, clipped])
            flat: list[float] = torch.cat([scalars, *parts]).tolist()  # the one host transfer
        finally:
            self.detach()
        return unpack(step, flat, len(self.weights), self.bins if with_histograms else 0)


def _grad(p: Tensor) -> Tensor:
    return _or_zeros(p.grad, p)


def _or_zeros(grad: Tensor | None, like: Tensor) -> Tensor:
    return grad if grad is not None else torch.zeros_like(like)


def _copy_into(row: Tensor, grad: Tensor) -> None:
    row.copy_(grad)


def _norm_into(slot: Tensor, grad: Tensor) -> None:
    torch.linalg.vector_norm(grad, out=slot)


def _same(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    """Whether two per-layer lists hold the very same tensors (a residual add breaks this on
    some layers only)."""
    return all(x is y for x, y in zip(a, b, strict=True))
