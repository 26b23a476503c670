"""The probe: every per-layer statistic of DESIGN §5 at a recorded step, computed on the device.

On small networks a step's cost is the number of tensor ops, on large ones the passes over
memory, so the probe keeps both few: the hidden layers' z, h and dL/dh are concatenated once
into ONE [rows, batch × units] buffer it owns (and centres in place) and keeps from step to
step, each statistic is one reduction over that buffer, parameter-shaped quantities are stacked
by shape (a handful of ops whatever the depth), and all the raw numbers of a step leave the
device in ONE transfer (`.tolist()` of one flat tensor). The scalings, ratios and the total
norm of those few dozen numbers are then done in Python, cheaper than one device op each.

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
from dataclasses import dataclass
from functools import partial
from types import TracebackType

import torch
from torch import Tensor, nn

from depthscope.layers import ACTIVATIONS
from depthscope.model import DeepNet, Taps
from depthscope.records import METRICS, StepRecord, unpack
from depthscope.stats import TINY, Buffers, WeightGroups, raw_histograms

HISTOGRAM_BINS = 32
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
        weight_ids = {id(w) for w in self.weights}
        self.others = [p for p in self.params if id(p) not in weight_ids]  # biases, norms, …
        self.scratch = Buffers()
        self.weight_groups = WeightGroups(self.weights)
        self._others_norm: Tensor | None = None  # of all their gradients together
        self.acts: list[nn.Module] = [block.act for block in model.block_list]
        self.activation = ACTIVATIONS[model.activation]
        self.taps: Taps | None = None
        self.grads: list[Tensor | None] = []  # dL/dh_l per hidden block, then dL/dlogits
        self._hooked: Tensor | None = None  # dL/dh_l as the backward hooks copied it
        self._hooked_norms: Tensor | None = None  # or just its norms, [layers, 1]

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
        if self.others:  # only their total counts: one norm over them all
            flat = torch.cat([_grad(p).view(-1) for p in self.others])
            self._others_norm = torch.linalg.vector_norm(flat)

    def detach(self) -> None:
        self.grads, self._hooked, self._hooked_norms = [], None, None
        self._others_norm = None
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
    def _hidden(self) -> Hidden:
        """The hidden layers' tensors concatenated into ONE [rows, batch × units] buffer (one
        pass and one reduction per statistic for all of them): z, then h unless it is z, then
        dL/dh unless the hooks hold it."""
        taps = self._require_taps()
        layers = len(taps.z)
        h_is_z = _same(taps.h, taps.z)
        lists = [taps.z] if h_is_z else [taps.z, taps.h]
        from_hooks = self._hooked is not None or self._hooked_norms is not None
        if not from_hooks:
            hidden = zip(self.grads[:-1], taps.h, strict=True)
            lists.append([_or_zeros(grad, like) for grad, like in hidden])
        x = self.scratch.cat("x", [t for tensors in lists for t in tensors])
        z = x[:layers]
        h = z if h_is_z else x[layers : 2 * layers]
        if _same(taps.u, taps.z):
            u = z
        else:
            u = h if _same(taps.u, taps.h) else self.scratch.cat("u", taps.u)
        g = self._hooked if from_hooks else x[-layers:]
        return Hidden(x, u, h, g, layers * (1 if h_is_z else 2), from_hooks)

    @torch.no_grad()
    def step_tensors(self, scalars: list[Tensor], with_histograms: bool) -> tuple[Tensor, Layout]:
        """The step's raw numbers, still on the device, as one flat tensor that `_assemble`
        reads back: `scalars` and the readout's, per-row norms and means of the hidden buffer,
        health counts, the weight groups' norms, then (with histograms) lo, hi, counts."""
        hid = self._hidden()
        taps = self._require_taps()
        assert taps.logits is not None
        logits = taps.logits.reshape(1, -1)
        dlogits = _or_zeros(self.grads[-1], taps.logits).reshape(1, -1)
        hist: list[Tensor] = []
        if with_histograms:  # first: the moments below centre z and h in place
            if hid.g is None:
                raise RuntimeError("histograms need backward(loss, keep_gradients=True)")
            hidden = [hid.h, hid.g] if hid.from_hooks else [hid.x[hid.centred - len(hid.h) :]]
            hist = self._histograms([*hidden, self.scratch.stack("readout", [logits, dlogits])])
        healthy, dead = self._health_counts(hid.u)  # before centring: u may be z
        centred = hid.x[: hid.centred]
        mean = centred.mean(1, keepdim=True)
        centred.sub_(mean)
        parts = [torch.linalg.vector_norm(hid.x, dim=1), mean.view(-1)]
        if hid.from_hooks:  # dL/dh: its norms as the hooks took them, or the hooks' copy
            hooked = self._hooked_norms
            if hid.g is not None or hooked is None:
                parts.append(torch.linalg.vector_norm(hid.g, dim=1))
            else:
                parts.append(hooked.view(-1))
        parts += [t for t in (healthy, dead) if t is not None]
        out_std, out_mean = torch.std_mean(logits, correction=0)
        others = [] if self._others_norm is None else [self._others_norm]
        dlogits_norm = torch.linalg.vector_norm(dlogits)
        head = torch.stack([*scalars, out_mean, out_std, dlogits_norm, *others])
        parts += self.weight_groups.parts()
        layers, n = hid.u.shape
        layout = Layout(
            layers,
            n,
            hid.centred == layers,
            hid.from_hooks,
            healthy is not None,
            dead is not None,
            bool(others),
        )
        return torch.cat([head, *parts, *hist]), layout

    def _health_counts(self, u: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Per hidden layer [layers]: how many (sample, unit) have |f'(u)| at least 5% of its
        maximum, and how many units have f'(u) = 0 for every sample in the batch. None where
        the activation makes the answer trivial (all healthy; none dead)."""
        layers = u.shape[0]
        u3 = u.view(layers, -1, self.width)
        health = self.activation.health(u3, self.acts, self.scratch.get("mask", u3.shape, u3))
        dead = per_unit = None
        if health.active is not None:
            per_unit = health.active.sum(1)  # [layers, units]: samples where f' != 0
            dead = (per_unit == 0).sum(1)
        if health.healthy is None:
            return None, dead
        if health.healthy is health.active and per_unit is not None:
            return per_unit.sum(1), dead
        return health.healthy.view(layers, -1).sum(1), dead

    def _histograms(self, rows: Sequence[Tensor]) -> list[Tensor]:
        """Raw lo, hi and counts of each buffer in turn (h_l and dL/dh_l, adjacent rows of the
        hidden buffer or two; then the readout's two), flattened; `_histogram_rows` orders and
        masks them on the host."""
        return [t.view(-1) for x in rows for t in raw_histograms(x, self.bins, self.scratch)]

    def _histogram_rows(self, flat: list[float], layers: int, split: bool) -> list[float]:
        """lo, hi and counts as `records.unpack` reads them: h_l then dL/dh_l, readout last in
        each kind. A row with a non-finite bound has no histogram: NaN bounds, zero counts."""
        bins, pos = self.bins, 0
        found: list[tuple[float, float, list[float]]] = []
        for rows in [layers, layers, 2] if split else [2 * layers, 2]:
            lo, hi = flat[pos : pos + rows], flat[pos + rows : pos + 2 * rows]
            counts = flat[pos + 2 * rows : pos + rows * (2 + bins)]
            pos += rows * (2 + bins)
            found += [(lo[r], hi[r], counts[r * bins : (r + 1) * bins]) for r in range(rows)]
        hidden, readout = found[: 2 * layers], found[2 * layers :]
        ordered = [*hidden[:layers], readout[0], *hidden[layers:], readout[1]]
        empty = (math.nan, math.nan, [0.0] * bins)
        ordered = [r if math.isfinite(r[0]) and math.isfinite(r[1]) else empty for r in ordered]
        return (
            [r[0] for r in ordered] + [r[1] for r in ordered] + [c for r in ordered for c in r[2]]
        )

    # -- one transfer, then the scalings on the host ---------------------------------------
    @torch.no_grad()
    def finish(
        self, step: int, loss: Tensor, accuracy: Tensor, clipped: Tensor, with_histograms: bool
    ) -> StepRecord:
        """Build the step's record from 0-d tensors: loss, accuracy (NaN for regression) and
        whether clipping acted."""
        try:
            raw, layout = self.step_tensors([loss, accuracy, clipped], with_histograms)
            flat: list[float] = raw.tolist()  # the one host transfer
        finally:
            self.detach()
        bins = self.bins if with_histograms else 0
        return unpack(step, self._assemble(flat, layout), len(self.weights), bins)

    def _assemble(self, flat: list[float], lay: Layout) -> list[float]:
        """The raw numbers of `step_tensors` as `records.unpack` reads them. Ratios, means
        and stds of a few dozen numbers cost less in Python than one device op each."""
        pos = 0

        def take(count: int) -> list[float]:
            nonlocal pos
            pos += count
            return flat[pos - count : pos]

        layers, blocks = lay.layers, 1 if lay.h_is_z else 2
        loss, accuracy, clipped, out_mean, out_std, dlogits = take(6)
        others = take(1) if lay.others else []
        norms = take(layers * (blocks + (0 if lay.g_apart else 1)))
        means = take(layers * blocks)
        g_norm = take(layers) if lay.g_apart else norms[-layers:]
        healthy = take(layers) if lay.healthy else [float(lay.n)] * layers
        dead = take(layers) if lay.dead else [0.0] * layers
        grad, before, update = self.weight_groups.spread(take(self.weight_groups.size))
        z_mean, z_norm = means[:layers], norms[:layers]
        h_mean, h_norm = (z_mean, z_norm) if lay.h_is_z else (means[layers:], norms[layers:])
        root, width = math.sqrt(lay.n), self.width
        z_std, h_std = [v / root for v in z_norm], [v / root for v in h_norm[:layers]]
        rows = {  # the readout is linear: never saturated or dead
            "grad_norm": grad,
            "act_grad_norm": [*g_norm, dlogits],
            "grad_to_weight": [g / max(w, TINY) for g, w in zip(grad, before, strict=True)],
            "update_ratio": [u / max(w, TINY) for u, w in zip(update, before, strict=True)],
            "weight_norm": before,
            "act_mean": [*h_mean, out_mean],
            "act_std": [*h_std, out_std],
            "preact_mean": [*z_mean, out_mean],
            "preact_std": [*z_std, out_std],
            "saturation": [1.0 - c / lay.n for c in healthy] + [0.0],
            "dead": [c / width for c in dead] + [0.0],
        }
        total = math.hypot(*grad, *others)
        head = [loss, accuracy, total, clipped]
        metrics = [v for metric in METRICS for v in rows[metric]]
        hist = self._histogram_rows(flat[pos:], layers, lay.g_apart) if pos < len(flat) else []
        return head + metrics + hist


@dataclass(frozen=True)
class Hidden:
    """The hidden layers' tensors for one step's statistics (see `Probe._hidden`)."""

    x: Tensor  # [rows, batch × units]: z, then h unless it is z, then dL/dh unless hooked
    u: Tensor  # [layers, batch × units], maybe rows of x
    h: Tensor
    g: Tensor | None  # dL/dh, None when the hooks took its norms only
    centred: int  # leading rows of x that are activations (z, h), centred by the moments
    from_hooks: bool


@dataclass(frozen=True)
class Layout:
    """What `step_tensors` put in its flat tensor, for `Probe._assemble` to read it back."""

    layers: int  # hidden layers
    n: int  # batch × units
    h_is_z: bool
    g_apart: bool  # dL/dh norms come after the means rather than among the norms
    healthy: bool  # health counts present (else every unit is healthy / none is dead)
    dead: bool
    others: bool  # the norm of the other parameters' gradients follows the readout's numbers


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
