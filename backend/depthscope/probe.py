"""The probe: every per-layer statistic of DESIGN §5 at a recorded step, computed on the device.

The cost of a statistic is the passes it makes over memory, so the probe keeps them few: the
hidden layers' tensors are concatenated once into [layers, batch × units] buffers it owns (and
may centre in place) and keeps from step to step, each statistic is one reduction over a
buffer, parameter-shaped quantities are stacked by shape (a handful of ops whatever the depth),
and all the numbers of a step leave the device in ONE transfer (`.tolist()` of one flat tensor).

Lifecycle of a recorded step, driven by the trainer:
    probe.attach()          before the forward pass: the model starts filling `Taps`
    probe.after_forward()   hooks that keep the gradient of every block output (dL/dh_l)
    probe.before_update()   after backward, before clipping: grad norms, a copy of the weights
    probe.finish(...)       after the optimizer step: one transfer, returns the StepRecord
All statistics describe the weights the step's forward pass used (before the update).
The probe owns its hooks and drops them after each step and when closed (a context manager).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from types import TracebackType

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from depthscope.layers import ACTIVATIONS
from depthscope.model import DeepNet, Taps
from depthscope.records import HISTOGRAM_KINDS, METRICS, Histogram, StepRecord, finite
from depthscope.stats import TINY, Buffers, ShapeGroups, histograms, moments_

HISTOGRAM_BINS = 32


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
        self.handles: list[RemovableHandle] = []
        self._previous: list[Tensor] = []  # the weights before the update, stacked by shape
        self._before: Tensor | None = None  # [grad_norm, weight_norm] per layer

    @property
    def layer_names(self) -> list[str]:
        return self.model.layer_names

    # -- lifecycle -----------------------------------------------------------------------
    def attach(self) -> None:
        self.taps = Taps()
        self.model.taps = self.taps

    def after_forward(self) -> None:
        """Hook every block output and the logits. A hook keeps a reference to the gradient
        (`retain_grad` would clone it); holding it also stops autograd from accumulating into
        that tensor in place, so it stays as it was."""
        taps = self._require_taps()
        assert taps.logits is not None
        outputs = [*taps.h, taps.logits]
        self.grads = [None] * len(outputs)
        self.handles = [
            t.register_hook(partial(self._keep, i))  # type: ignore[no-untyped-call]
            for i, t in enumerate(outputs)
        ]

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
        for handle in self.handles:
            handle.remove()
        self.handles, self.grads, self._previous = [], [], []
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
        u = z if taps.u[0] is taps.z[0] else self.scratch.cat("u", taps.u)
        h = u if taps.h[0] is taps.u[0] else self.scratch.cat("h", taps.h)
        g = self.scratch.cat("g", grads[:-1])
        return z, u, h, g, taps.logits.detach().reshape(1, -1), grads[-1].reshape(1, -1)

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
        out_mean, out_std = moments_(logits.clone())
        grad_norm, weight_norm = self._before
        now = self.weight_groups.stack("now", self.weights)
        delta = [n.sub_(p) for n, p in zip(now, self._previous, strict=True)]
        safe_w = weight_norm.clamp_min(TINY)
        zero = saturation.new_zeros(1)  # the readout is linear: never saturated or dead
        by_name = {
            "grad_norm": grad_norm,
            "act_grad_norm": torch.cat(
                [torch.linalg.vector_norm(g, dim=1), torch.linalg.vector_norm(dlogits, dim=1)]
            ),
            "grad_to_weight": grad_norm / safe_w,
            "update_ratio": self.weight_groups.norms(delta) / safe_w,
            "weight_norm": weight_norm,
            "act_mean": torch.cat([act_mean, out_mean]),
            "act_std": torch.cat([act_std, out_std]),
            "preact_mean": torch.cat([pre_mean, out_mean]),
            "preact_std": torch.cat([pre_std, out_std]),
            "saturation": torch.cat([saturation, zero]),
            "dead": torch.cat([dead, zero]),
        }
        metrics = torch.cat([by_name[m].float() for m in METRICS])
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
    def finish(
        self,
        step: int,
        scalars: Sequence[Tensor],
        with_histograms: bool,
    ) -> StepRecord:
        """Build the step's record. `scalars` are 0-d tensors: loss, accuracy (NaN for
        regression), total grad norm, clipped (0/1)."""
        try:
            parts = [torch.stack([s.detach().float().reshape(()) for s in scalars])]
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
        for metric in METRICS:
            layers[metric] = [finite(v) for v in flat[pos : pos + n_layers]]
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
