"""The probe: every per-layer statistic of DESIGN §5 at a recorded step, computed on the device.

The cost of a statistic is the passes it makes over memory, so the probe keeps them few: the
hidden layers' tensors are concatenated once into [layers, batch × units] buffers it owns (and
may centre in place) and keeps from step to step, each statistic is one reduction over a
buffer, parameter-shaped quantities are stacked by shape (a handful of ops whatever the depth),
and all the numbers of a step leave the device in ONE transfer (`.tolist()` of one flat tensor).

Lifecycle of a recorded step, driven by the trainer:
    probe.attach()          before the forward pass: the model starts filling `Taps`
    probe.backward(loss)    instead of loss.backward(): also keeps dL/dh_l and dL/dlogits
    probe.before_update()   after backward, before clipping: grad norms, a copy of the weights
    probe.finish(...)       after the optimizer step: one transfer, returns the StepRecord
All statistics describe the weights the step's forward pass used (before the update).
The probe drops what it holds after each step and when closed (it is a context manager).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from types import TracebackType

import torch
from torch import Tensor, nn

from depthscope.layers import ACTIVATIONS
from depthscope.model import DeepNet, Taps
from depthscope.records import HISTOGRAM_KINDS, METRICS, Histogram, StepRecord, finite
from depthscope.stats import TINY, Buffers, ShapeGroups, histograms, moments_

HISTOGRAM_BINS = 32
# The order step_tensors assembles the metric rows in; METRICS is the order they leave in.
BUILT = (
    "grad_norm",
    "weight_norm",
    "grad_to_weight",
    "update_ratio",
    "act_grad_norm",
    *METRICS[5:],
)
# Per-layer gradients at least this large are copied out by hooks rather than held: glibc's
# default threshold for serving an allocation by mmap, where heap growth starts to cost.
HOOK_BYTES = 128 * 1024


class Probe:
    def __init__(self, model: DeepNet, histogram_bins: int = HISTOGRAM_BINS) -> None:
        self.model = model
        self.bins = histogram_bins
        self.width = model.linears[0].out_features
        self.weights = [layer.weight for layer in model.linears]
        self.params = [p for p in model.parameters() if p.requires_grad]
        ids = {id(p): i for i, p in enumerate(self.params)}
        device = self.weights[0].device
        self.weight_index = torch.tensor([ids[id(w)] for w in self.weights], device=device)
        self.scratch = Buffers()
        self.weight_groups = ShapeGroups(self.weights, self.scratch)
        self.param_groups = ShapeGroups(self.params, self.scratch)
        self.acts: list[nn.Module] = [block.act for block in model.block_list]
        self.activation = ACTIVATIONS[model.activation]
        self.taps: Taps | None = None
        self.grads: list[Tensor | None] = []  # dL/dh_l per hidden block, then dL/dlogits
        self._previous: list[Tensor] = []  # the weights before the update, stacked by shape
        self._before: Tensor | None = None  # [grad_norm, weight_norm] per layer
        self._hooked: Tensor | None = None  # dL/dh_l as the backward hooks copied it
        self._metric_order = torch.tensor([BUILT.index(m) for m in METRICS], device=device)

    @property
    def layer_names(self) -> list[str]:
        return self.model.layer_names

    # -- lifecycle -----------------------------------------------------------------------
    def attach(self) -> None:
        self.taps = Taps()
        self.model.taps = self.taps

    def backward(self, loss: Tensor) -> None:
        """Backpropagate `loss` as `loss.backward()` would, keeping dL/dh_l and dL/dlogits too.

        Small layers: one autograd call returns the parameters' gradients and the block
        outputs' together (no per-layer Python hooks, no `retain_grad` clones). Large layers:
        holding every dL/dh_l until the step ends makes the heap grow and shrink each step
        (a page fault per 4 KiB), so a hook copies each one into the probe's own buffer and
        lets autograd free it as usual."""
        taps = self._require_taps()
        assert taps.logits is not None
        outputs = [*taps.h, taps.logits]
        self.grads = [None] * len(outputs)
        if taps.h[0].numel() * taps.h[0].element_size() >= HOOK_BYTES:
            rows = self.scratch.get("g", (len(taps.h), *taps.h[0].shape), taps.h[0]).unbind(0)
            hooks = [partial(_copy_into, row) for row in rows] + [partial(self._keep, -1)]
            handles = [
                t.register_hook(hook)  # type: ignore[no-untyped-call]
                for t, hook in zip(outputs, hooks, strict=True)
            ]
            try:
                loss.backward()  # type: ignore[no-untyped-call]
            finally:
                for handle in handles:
                    handle.remove()
            self.grads[:-1] = rows
            self._hooked = self.scratch.store["g"].view(len(rows), -1)
            return
        grads = torch.autograd.grad(loss, [*outputs, *self.params], allow_unused=True)
        self.grads = list(grads[: len(outputs)])
        for p, g in zip(self.params, grads[len(outputs) :], strict=True):
            p.grad = g if p.grad is None or g is None else p.grad + g

    def _keep(self, index: int, grad: Tensor) -> None:
        self.grads[index] = grad

    @torch.no_grad()
    def before_update(self) -> Tensor:
        """Take the gradient norms and a copy of the weights; returns the total gradient norm
        over every parameter (0-d tensor, still on the device)."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        grad_norms = self.param_groups.norms(self.param_groups.stack("grads", grads))
        self._previous = self.weight_groups.stack("previous", self.weights)
        weight_norms = self.weight_groups.norms(self._previous)
        self._before = torch.stack([grad_norms[self.weight_index], weight_norms])
        total: Tensor = torch.linalg.vector_norm(grad_norms)
        return total

    def detach(self) -> None:
        self.grads, self._previous, self._hooked = [], [], None
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
        is u for a linear activation: they then share one), then logits and dL/dlogits."""
        taps = self._require_taps()
        assert taps.logits is not None
        grads = [
            g if g is not None else torch.zeros_like(t)
            for g, t in zip(self.grads, [*taps.h, taps.logits], strict=True)
        ]
        z = self.scratch.cat("z", taps.z)
        u = z if _same(taps.u, taps.z) else self.scratch.cat("u", taps.u)
        h = u if _same(taps.h, taps.u) else self.scratch.cat("h", taps.h)
        g = self._hooked if self._hooked is not None else self.scratch.cat("g", grads[:-1])
        return z, u, h, g, taps.logits.reshape(1, -1), grads[-1].reshape(1, -1)

    @torch.no_grad()
    def step_tensors(self, with_histograms: bool) -> list[Tensor]:
        """The step's numbers, still on the device: [len(METRICS) × layers] in METRICS order,
        then (with histograms) lo, hi [kinds × layers] and counts [kinds × layers × bins]."""
        assert self._before is not None
        z, u, h, g, logits, dlogits = self._activations()
        parts = []
        if with_histograms:  # first: the moments below centre z and h in place
            parts = self._histograms([h, logits, g, dlogits])
        saturation, dead = self._saturation_and_dead(u)
        pre_mean, pre_std = moments_(z)
        act_mean, act_std = (pre_mean, pre_std) if h is z else moments_(h)
        hidden = [torch.linalg.vector_norm(g, dim=1), act_mean, act_std, pre_mean, pre_std]
        out_std, out_mean = torch.std_mean(logits, correction=0)
        zero = out_mean.new_zeros(())  # the readout is linear: never saturated or dead
        out = [torch.linalg.vector_norm(dlogits), out_mean, out_std, out_mean, out_std, zero, zero]
        activation_side = torch.cat(
            [torch.stack([*hidden, saturation, dead]), torch.stack(out).unsqueeze(1)], dim=1
        )
        now = self.weight_groups.stack("now", self.weights)
        delta = self.weight_groups.norms(
            [n.sub_(p) for n, p in zip(now, self._previous, strict=True)]
        )
        grad_norm, weight_norm = self._before
        ratios = torch.stack([grad_norm, delta]) / weight_norm.clamp_min(TINY)
        rows = torch.cat([self._before, ratios, activation_side])  # in BUILT order
        metrics = rows.index_select(0, self._metric_order.to(rows.device)).flatten()
        return [metrics, *parts]

    def _saturation_and_dead(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Per hidden layer: the fraction of (sample, unit) whose |f'(u)| is below 5% of its
        maximum, and the fraction of units with f'(u) = 0 for every sample in the batch."""
        layers, n = u.shape
        u3 = u.view(layers, -1, self.width)
        health = self.activation.health(u3, self.acts, self.scratch.get("mask", u3.shape, u3))
        zeros = u.new_zeros(layers)
        per_unit = None if health.active is None else health.active.sum(1)  # [layers, units]
        dead = zeros if per_unit is None else (per_unit == 0).float().mean(1)
        if health.healthy is None:
            return zeros, dead
        if health.healthy is health.active and per_unit is not None:
            healthy = per_unit.sum(1)
        else:
            healthy = health.healthy.view(layers, -1).sum(1)
        return 1 - healthy / n, dead

    def _histograms(self, rows: Sequence[Tensor]) -> list[Tensor]:
        """lo, hi and counts of h_l then dL/dh_l, readout last in each kind."""
        results = [histograms(x, self.bins, self.scratch) for x in rows]
        return [torch.cat([r[k].flatten() for r in results]).float() for k in range(3)]

    # -- one transfer ----------------------------------------------------------------------
    @torch.no_grad()
    def finish(
        self,
        step: int,
        scalars: Sequence[Tensor],
        with_histograms: bool,
    ) -> StepRecord:
        """Build the step's record. `scalars` are 0-d tensors: loss, accuracy (NaN for
        regression), total grad norm, clipped (0/1)."""
        try:
            parts = [torch.stack([s.float() for s in scalars])]
            parts += self.step_tensors(with_histograms)
            flat: list[float] = torch.cat(parts).tolist()  # the one host transfer
        finally:
            self.detach()
        return self._unpack(step, flat, with_histograms)

    def _unpack(self, step: int, flat: list[float], with_histograms: bool) -> StepRecord:
        n_layers = len(self.weights)
        loss, accuracy, total, clipped = flat[:4]
        pos = 4
        layers: dict[str, list[float | None]] = {}
        end = pos + len(METRICS) * n_layers
        clean = all(map(math.isfinite, flat[pos:end]))  # the usual case: no per-value check
        for metric in METRICS:
            values: list[float | None] = flat[pos : pos + n_layers]  # type: ignore[assignment]
            layers[metric] = values if clean else [finite(v) for v in flat[pos : pos + n_layers]]
            pos += n_layers
        hists = None
        if with_histograms:
            rows = len(HISTOGRAM_KINDS) * n_layers
            lo, hi = flat[pos : pos + rows], flat[pos + rows : pos + 2 * rows]
            counts = flat[pos + 2 * rows :]
            hists = {}
            for k, kind in enumerate(HISTOGRAM_KINDS):
                layer_rows = range(k * n_layers, (k + 1) * n_layers)
                hists[kind] = Histogram(
                    lo=[finite(lo[r]) for r in layer_rows],
                    hi=[finite(hi[r]) for r in layer_rows],
                    counts=[
                        [int(c) for c in counts[r * self.bins : (r + 1) * self.bins]]
                        for r in layer_rows
                    ],
                )
        return StepRecord(
            step=step,
            loss=finite(loss),
            accuracy=finite(accuracy),
            grad_norm_total=finite(total),
            clipped=bool(clipped),
            layers=layers,
            histograms=hists,
        )


def _copy_into(row: Tensor, grad: Tensor) -> None:
    row.copy_(grad)


def _same(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    """Whether two per-layer lists hold the very same tensors (a residual add breaks this on
    some layers only)."""
    return all(x is y for x, y in zip(a, b, strict=True))
