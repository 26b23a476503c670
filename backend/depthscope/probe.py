"""The probe: every per-layer statistic of DESIGN §5 at a recorded step, computed on the device.

On small networks a step's cost is the number of tensor ops, on large ones the passes over
memory, so the probe keeps both few. The hidden layers' z, h and dL/dh are concatenated once
into ONE [rows, batch × units] buffer it owns and keeps from step to step; the activation's
healthy mask is written as further rows of it, so one row sum gives the means and the health
counts together (ReLU, whose one mask also says which units are dead, is counted per unit
instead: one read of the mask rather than two). Parameter-shaped quantities are stacked by
shape (a handful of ops whatever the depth). Every op writes its numbers with `out=` into its
slot of one flat tensor (see transfer.py), which leaves the device in ONE `.tolist()`; the
host does the rest. docs/probe.md has the whole story.

That is the portable path, for any device. On the CPU, when a C compiler can build them, the
C kernels of native.py compute the same numbers into the same slots instead: they read each
layer's tensors where autograd left them (no hidden buffer, no copies of the gradients), a
handful of calls a step, which is what brings the probe's cost near plain training on small
networks. DEPTHSCOPE_NATIVE=0 turns them off.

Lifecycle of a recorded step, driven by the trainer:
    probe.attach(hist)      before the forward pass: the model starts filling `Taps`
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

import torch
from torch import Tensor, nn

from depthscope import native
from depthscope.layers import ACTIVATIONS
from depthscope.model import DeepNet, Taps
from depthscope.native_step import NativeStep
from depthscope.plan import StepPlan
from depthscope.records import StepRecord
from depthscope.stats import Buffers, WeightGroups
from depthscope.transfer import Layout, Transfer

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
        self.masks = self._masks()
        rule = self.activation.rule
        # PReLU's learned slopes, which its health rule reads (the same tensors every step)
        self.slopes = (
            [act.get_parameter("weight") for act in self.acts]
            if rule is not None and rule.kind == "prelu"
            else None
        )
        self.plans: dict[tuple[bool, ...], StepPlan] = {}  # by Layout, made once each
        # On the CPU, the C kernels (native.py) where they can be built: same numbers, a
        # handful of calls a step instead of a few dozen tensor ops and copies.
        self.kernels = native.kernels() if native.usable_for(self.params) else None
        self.native_steps: dict[tuple[bool, bool], NativeStep] = {}
        self.native: NativeStep | None = None  # this step's, on the C path
        self.histograms = False  # whether this step takes histograms
        self.taps: Taps | None = None
        self.grads: list[Tensor | None] = []  # dL/dh_l per hidden block, then dL/dlogits
        # dL/dh_l apart from the hidden buffer: as the backward hooks copied it, or just
        # its norms (0-d each) when no histogram needs the values
        self._g_copy: Tensor | None = None
        self._g_norms: list[Tensor] | None = None
        # the hooks that copy dL/dh_l into rows of a buffer, made once per buffer
        self._copy_hooks: tuple[Tensor, list[Callable[[Tensor], None]]] | None = None

    @property
    def layer_names(self) -> list[str]:
        return self.model.layer_names

    @torch.no_grad()
    def _masks(self) -> tuple[bool, bool, bool]:
        """Which masks the activation's health check makes: (healthy, active, whether they
        are one and the same)."""
        layers = len(self.acts)
        probe = torch.zeros(layers, 1, self.width, device=self.weights[0].device)
        health = self.activation.health(probe, self.acts, torch.empty_like(probe))
        same = health.active is not None and health.active is health.healthy
        return health.healthy is not None, health.active is not None, same

    # -- lifecycle -----------------------------------------------------------------------
    def attach(self, histograms: bool = False) -> None:
        """Start a recorded step (with histograms of h_l and dL/dh_l or not)."""
        self.histograms = histograms
        self.taps = Taps()
        self.model.taps = self.taps

    def backward(self, loss: Tensor) -> None:
        """Backpropagate `loss` as `loss.backward()` would, keeping dL/dh_l and dL/dlogits too.

        Small layers: one autograd call returns the parameters' gradients and the block
        outputs' together (no per-layer Python hooks, no `retain_grad` clones). Large layers:
        holding every dL/dh_l until the step ends makes the heap grow and shrink each step
        (a page fault per 4 KiB), so a hook copies each one into the probe's own buffer and
        lets autograd free it as usual. Without a histogram this step only
        the norms of dL/dh_l are kept (the hooks take them, or one `_foreach_norm`), sparing
        the copy into the hidden buffer and a pass over it. On the C path the hooks hand each
        dL/dh_l to the kernels, and small layers keep dL/dh_l for them."""
        taps = self._require_taps()
        assert taps.logits is not None
        keep_gradients = self.histograms
        outputs = [*taps.h, taps.logits]
        self.grads = [None] * len(outputs)
        if self.kernels is not None:
            self.native = self._native_step(taps)
        if _large(taps.h[0]):
            self._backward_with_hooks(loss, outputs, keep_gradients)
            return
        grads = torch.autograd.grad(loss, [*outputs, *self.params], allow_unused=True)
        self.grads = list(grads[: len(outputs)])
        if not keep_gradients and self.native is None:
            hidden = zip(self.grads[:-1], taps.h, strict=True)
            self._g_norms = list(torch._foreach_norm([_or_zeros(g, h) for g, h in hidden]))
        for p, g in zip(self.params, grads[len(outputs) :], strict=True):
            p.grad = g if p.grad is None or g is None else p.grad + g

    def _backward_with_hooks(self, loss: Tensor, outputs: list[Tensor], keep: bool) -> None:
        hidden = outputs[:-1]
        hooks: list[Callable[[Tensor], None]]
        if self.native is not None:  # the kernels take the norms (and histograms) at once
            hooks = [partial(self.native.gradient, i) for i in range(len(hidden))]
        elif keep:  # copies, into rows of the probe's buffer (the rows are views made once)
            buffer = self.scratch.get("g", (len(hidden), *hidden[0].shape), hidden[0])
            if self._copy_hooks is None or self._copy_hooks[0] is not buffer:
                self._copy_hooks = (buffer, [partial(_copy_into, row) for row in buffer.unbind(0)])
            hooks = self._copy_hooks[1]
        else:  # just the norms, taken while dL/dh is fresh in the cache
            norms: list[Tensor] = [torch.empty(0)] * len(hidden)
            hooks = [partial(_norm_into, norms, i) for i in range(len(hidden))]
        handles = [
            t.register_hook(hook)  # type: ignore[no-untyped-call]
            for t, hook in zip(outputs, [*hooks, partial(self._keep, -1)], strict=True)
        ]
        try:
            loss.backward()  # type: ignore[no-untyped-call]
        finally:
            for handle in handles:
                handle.remove()
        if self.native is not None:
            return
        if keep:
            self._g_copy = buffer.view(len(hidden), -1)
        else:
            self._g_norms = norms

    def _keep(self, index: int, grad: Tensor) -> None:
        self.grads[index] = grad

    @torch.no_grad()
    def before_update(self) -> None:
        """Copy the weights' gradients (before any clipping) and values before the update;
        the other parameters' gradients only count towards the total norm."""
        if self.native is not None:
            grads = [_grad(w) for w in self.weights]
            self.native.before_update(grads, [_grad(p) for p in self.others])
            return
        self.weight_groups.before_update([_grad(w) for w in self.weights])
        if self.others:  # only their total counts: one norm over them all
            # biases and norm parameters are 1-D already: no view per tensor per step
            flat = torch.cat([_grad(p) if p.dim() == 1 else _grad(p).view(-1) for p in self.others])
            self._others_norm = torch.linalg.vector_norm(flat)

    def detach(self) -> None:
        self.grads, self._g_copy, self._g_norms = [], None, None
        self.native = None
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
    def _layout(self, taps: Taps, g_rows: bool, with_histograms: bool) -> Layout:
        healthy, active, active_is_healthy = self.masks
        return Layout(
            layers=len(taps.z),
            n=taps.z[0].numel(),
            width=self.width,
            h_is_z=_same(taps.h, taps.z),
            g_rows=g_rows,
            healthy=healthy,
            active=active,
            active_is_healthy=active_is_healthy,
            others=bool(self.others),
            histograms=with_histograms,
        )

    def _plan(self, taps: Taps, with_histograms: bool) -> StepPlan:
        """The StepPlan for this step's Layout, made on first use."""
        assert taps.logits is not None
        g_rows = self._g_copy is None and self._g_norms is None
        key = (_same(taps.h, taps.z), g_rows, with_histograms)
        plan = self.plans.get(key)
        if plan is None:
            layout = self._layout(taps, g_rows, with_histograms)
            transfer = Transfer(layout, self.weight_groups, self.bins)
            # small layers keep dL/dh as rows on histogram steps only: one buffer, sized
            # for those, serves both plans
            rows = transfer.rows
            z = taps.z[0]
            if not g_rows and not _large(z):
                rows += layout.layers
            x = self.scratch.get("x", (rows, layout.n), z)
            plan = StepPlan(transfer, x, taps.logits.numel(), self.bins)
            self.plans[key] = plan
        return plan

    def _native_step(self, taps: Taps) -> NativeStep:
        """The C path's NativeStep for this step's Layout, made on first use."""
        assert self.kernels is not None and taps.logits is not None
        key = (_same(taps.h, taps.z), self.histograms)
        step = self.native_steps.get(key)
        if step is None:
            layout = self._layout(taps, False, self.histograms)
            transfer = Transfer(layout, self.weight_groups, self.bins)
            rule = self.activation.rule if layout.healthy else None
            batch = taps.z[0].shape[0]
            step = NativeStep(
                self.kernels, transfer, self.weights, rule, batch, taps.logits.numel()
            )
            self.native_steps[key] = step
        return step

    @torch.no_grad()
    def step_tensors(self, scalars: Sequence[Tensor], with_histograms: bool) -> StepPlan:
        """Fill the step's flat buffer, `plan.out`, on the device (see transfer.py for its
        slots) from `scalars` (loss, accuracy, clipped), the taps, the gradients and the
        weight copies."""
        taps = self._require_taps()
        assert taps.logits is not None
        plan = self._plan(taps, with_histograms)
        lay = plan.transfer.layout
        filled = [*taps.z] if lay.h_is_z else [*taps.z, *taps.h]
        if lay.g_rows:
            filled += [_or_zeros(g, h) for g, h in zip(self.grads[:-1], taps.h, strict=True)]
        torch.cat(filled, out=plan.filled)
        dlogits = _or_zeros(self.grads[-1], taps.logits)
        if with_histograms:  # first: the moments below centre z and h in place
            self._histograms(plan, taps.logits, dlogits)
        self._health(plan, taps)  # before centring too: the activation input may be z
        plan.moments()
        if self._g_copy is not None:  # dL/dh as the hooks copied it, or just its norms
            torch.linalg.vector_norm(self._g_copy, dim=1, out=plan.g_norms)
        elif self._g_norms is not None:
            torch.stack(self._g_norms, out=plan.g_norms)
        out_std, out_mean = torch.std_mean(taps.logits, correction=0)
        others = [] if self._others_norm is None else [self._others_norm]
        head = [*scalars, out_mean, out_std, torch.linalg.vector_norm(dlogits), *others]
        torch.stack(head, out=plan.head)
        self.weight_groups.norms_(plan.weights)
        return plan

    def _health(self, plan: StepPlan, taps: Taps) -> None:
        """The activation's masks over its inputs u: the healthy one into the mask rows of
        the hidden buffer (summed there with the moments, unless it is also the active
        mask), and per layer how many units are active (f' != 0) for at least one sample
        into the live slot."""
        if plan.mask is None:
            return
        if _same(taps.u, taps.z):
            u = plan.z
        elif _same(taps.u, taps.h):
            u = plan.h
        else:  # a normalization before the activation
            u = self.scratch.get("u", plan.z.shape, plan.z)
            torch.cat(taps.u, out=u.view(-1, self.width))
        health = self.activation.health(u, self.acts, plan.mask)
        if health.healthy is not None and health.healthy.data_ptr() != plan.mask.data_ptr():
            plan.mask.copy_(health.healthy)
        if health.active is not None:  # per unit, how many samples pass gradient
            per_unit = torch.sum(health.active, 1)  # [layers, units]
            torch.linalg.vector_norm(per_unit, ord=0, dim=1, out=plan.live)  # units > 0
            if plan.transfer.layout.active_is_healthy:  # one read of the mask, not two
                torch.sum(per_unit, 1, out=plan.mask_counts)

    def _histograms(self, plan: StepPlan, logits: Tensor, dlogits: Tensor) -> None:
        """Histograms of h_l and dL/dh_l (adjacent rows of the hidden buffer, or h rows and
        the hooks' copy), then of the readout's logits and dL/dlogits."""
        for rows, histograms in plan.hidden_histograms:
            if rows is None:  # dL/dh, as the hooks copied it
                if self._g_copy is None:
                    raise RuntimeError("histograms need attach(histograms=True)")
                rows = self._g_copy
            histograms(rows)
        torch.stack([logits.view(-1), dlogits.view(-1)], out=plan.readout)
        plan.readout_histograms(plan.readout)

    # -- one transfer, then the host's share ------------------------------------------------
    @torch.no_grad()
    def finish(self, step: int, loss: Tensor, targets: Tensor, clipped: Tensor) -> StepRecord:
        """Build the step's record from the 0-d loss, the batch's targets (the accuracy's; a
        regression's float targets give NaN) and whether clipping acted (0-d bool)."""
        try:
            if self.native is not None:
                transfer = self.native.transfer
                flat = self._native_finish(self.native, loss, targets, clipped)
            else:
                logits = self._require_taps().logits
                assert logits is not None
                scalars = [loss, accuracy(logits, targets), clipped]
                plan = self.step_tensors(scalars, self.histograms)
                transfer = plan.transfer
                flat = plan.out.tolist()  # the one host transfer
        finally:
            self.detach()
        return transfer.record(step, flat)

    def _native_finish(
        self, native: NativeStep, loss: Tensor, targets: Tensor, clipped: Tensor
    ) -> list[float]:
        taps = self._require_taps()
        assert taps.logits is not None
        lay = native.transfer.layout
        u = taps.z if _same(taps.u, taps.z) else taps.h if _same(taps.u, taps.h) else taps.u
        small = not _large(taps.h[0])
        grads = [_or_zeros(g, h) for g, h in zip(self.grads[:-1], taps.h, strict=True)]
        native.finish(
            z=taps.z,
            h=None if lay.h_is_z else taps.h,
            u=u,
            grads=grads if small else None,
            logits=taps.logits,
            dlogits=_or_zeros(self.grads[-1], taps.logits),
            targets=None if targets.is_floating_point() else targets,
            slopes=self.slopes,
        )
        return native.read(float(loss), float(clipped))


def accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Fraction of correct classes, 0-d on the device; NaN for regression (float targets)."""
    if targets.is_floating_point():
        return torch.full((), math.nan, device=logits.device)
    return torch.mean(logits.argmax(1) == targets, dtype=logits.dtype)  # no float copy


def _large(layer_output: Tensor) -> bool:
    """Whether a layer's tensors are large enough for the hook path (see HOOK_BYTES)."""
    return layer_output.numel() * layer_output.element_size() >= HOOK_BYTES


def _grad(p: Tensor) -> Tensor:
    return _or_zeros(p.grad, p)


def _or_zeros(grad: Tensor | None, like: Tensor) -> Tensor:
    return grad if grad is not None else torch.zeros_like(like)


def _copy_into(row: Tensor, grad: Tensor) -> None:
    row.copy_(grad)


def _norm_into(norms: list[Tensor], index: int, grad: Tensor) -> None:
    norms[index] = torch.linalg.vector_norm(grad)


def _same(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    """Whether two per-layer lists hold the very same tensors (a residual add breaks this on
    some layers only)."""
    return all(x is y for x, y in zip(a, b, strict=True))
