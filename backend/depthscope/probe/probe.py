"""The probe: every per-layer statistic at a recorded step, computed where the
model trains, with one transfer to the host.

The probe owns a step's lifecycle: it taps the forward pass (`Taps`), backpropagates keeping
dL/dh_l, copies what the update will change, and turns the step's numbers into a StepRecord.
The numbers themselves come from one of two paths, which fill the same slots of one flat
buffer (transfer.py) and give the same records to float rounding:
  - the C kernels (probe/backends/native.py), on the CPU when a C compiler can build them: they read
    each layer's tensors where autograd left them, a handful of calls a step;
  - batched tensor ops (tensor_ops.py), on any device: the layers are concatenated into one buffer
    and reduced a handful of ops at a time, whatever the depth; the buffer leaves the device
    in ONE `.tolist()`.
DEPTHSCOPE_NATIVE=0 forces the tensor ops. docs/probe.md has the whole story.

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

from depthscope.engine.activations import ACTIVATIONS
from depthscope.engine.model import DeepNet, Taps, same_tensors
from depthscope.probe.backends import kernels as native
from depthscope.probe.backends.native import NativeStep
from depthscope.probe.backends.tensor_ops import StepPlan
from depthscope.probe.stats import Buffers, WeightGroups, or_zeros
from depthscope.probe.transfer import Layout, Transfer
from depthscope.records import StepRecord

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
        rule = self.activation.rule
        # PReLU's learned slopes, which its health rule reads (the same tensors every step)
        self.slopes = (
            [act.get_parameter("weight") for act in self.acts]
            if rule is not None and rule.kind == "prelu"
            else None
        )
        self.plans: dict[tuple[bool, ...], StepPlan] = {}  # by Layout, made once each
        # On the CPU, the C kernels (kernels.py) where they can be built: same numbers, a
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
            self._g_norms = list(torch._foreach_norm([or_zeros(g, h) for g, h in hidden]))
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

    def before_update(self) -> None:
        """Copy the weights' gradients (before any clipping) and values before the update;
        the other parameters' gradients only count towards the total norm. (The C path runs
        no tensor op, so it needs no `torch.no_grad()`, which costs µs to enter.)"""
        if self.native is not None:
            grads = [_grad(w) for w in self.weights]
            self.native.before_update(grads, [_grad(p) for p in self.others])
            return
        with torch.no_grad():
            self.weight_groups.before_update([_grad(w) for w in self.weights])
            if self.others:  # only their total counts: one norm over them all
                # biases and norm parameters are 1-D already: no view per tensor per step
                flat = [_grad(p) if p.dim() == 1 else _grad(p).view(-1) for p in self.others]
                self._others_norm = torch.linalg.vector_norm(torch.cat(flat))

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
        rule = self.activation.rule
        return Layout(
            layers=len(taps.z),
            n=taps.z[0].numel(),
            width=self.width,
            h_is_z=same_tensors(taps.h, taps.z),
            g_rows=g_rows,
            healthy=rule is not None,
            active=rule is not None and rule.can_die,
            active_is_healthy=rule is not None and rule.one_mask,
            others=bool(self.others),
            histograms=with_histograms,
        )

    def _plan(self, taps: Taps, with_histograms: bool) -> StepPlan:
        """The StepPlan for this step's Layout, made on first use."""
        assert taps.logits is not None
        g_rows = self._g_copy is None and self._g_norms is None
        key = (same_tensors(taps.h, taps.z), g_rows, with_histograms)
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
            plan = StepPlan(
                transfer,
                x,
                taps.logits.numel(),
                self.bins,
                self.activation,
                self.acts,
                self.weight_groups,
            )
            self.plans[key] = plan
        return plan

    def _native_step(self, taps: Taps) -> NativeStep:
        """The C path's NativeStep for this step's Layout, made on first use."""
        assert self.kernels is not None and taps.logits is not None
        key = (same_tensors(taps.h, taps.z), self.histograms)
        step = self.native_steps.get(key)
        if step is None:
            layout = self._layout(taps, False, self.histograms)
            transfer = Transfer(layout, self.weight_groups, self.bins)
            batch = taps.z[0].shape[0]
            step = NativeStep(
                self.kernels,
                transfer,
                self.weights,
                self.activation.rule,
                batch,
                taps.logits.numel(),
            )
            self.native_steps[key] = step
        return step

    def step_tensors(self, scalars: Sequence[Tensor], with_histograms: bool) -> StepPlan:
        """The tensor-op path: fill the step's flat buffer, `plan.out`, on the device from
        `scalars` (loss, accuracy, clipped), the taps, the gradients and the weight copies.
        Call under `torch.no_grad()` (`finish` does)."""
        taps = self._require_taps()
        assert taps.logits is not None
        plan = self._plan(taps, with_histograms)
        hidden_grads = (
            [or_zeros(g, h) for g, h in zip(self.grads[:-1], taps.h, strict=True)]
            if plan.transfer.layout.g_rows
            else None
        )
        plan.fill(
            taps,
            scalars,
            others=[] if self._others_norm is None else [self._others_norm],
            dlogits=or_zeros(self.grads[-1], taps.logits),
            hidden_grads=hidden_grads,
            g_copy=self._g_copy,
            g_norms=self._g_norms,
        )
        return plan

    # -- one transfer, then the host's share ------------------------------------------------
    def finish(self, step: int, loss: Tensor, targets: Tensor, clipped: Tensor) -> StepRecord:
        """Build the step's record from the 0-d loss, the batch's targets (the accuracy's; a
        regression's float targets give NaN) and whether clipping acted (0-d bool)."""
        try:
            if self.native is not None:
                taps = self._require_taps()
                hooks_took_dh = _large(taps.h[0])  # its norms (and histograms) are in
                self.native.finish(taps, self.grads, targets, self.slopes, hooks_took_dh)
                transfer = self.native.transfer
                flat = self.native.read(loss.item(), float(clipped.item()))
            else:
                logits = self._require_taps().logits
                assert logits is not None
                with torch.no_grad():
                    scalars = [loss, accuracy(logits, targets), clipped]
                    plan = self.step_tensors(scalars, self.histograms)
                transfer = plan.transfer
                flat = plan.out.tolist()  # the one host transfer
        finally:
            self.detach()
        return transfer.record(step, flat)


def accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Fraction of correct classes, 0-d on the device; NaN for regression (float targets)."""
    if targets.is_floating_point():
        return torch.full((), math.nan, device=logits.device)
    return torch.mean(logits.argmax(1) == targets, dtype=logits.dtype)  # no float copy


def _large(layer_output: Tensor) -> bool:
    """Whether a layer's tensors are large enough for the hook path (see HOOK_BYTES)."""
    return layer_output.numel() * layer_output.element_size() >= HOOK_BYTES


def _grad(p: Tensor) -> Tensor:
    return or_zeros(p.grad, p)


def _copy_into(row: Tensor, grad: Tensor) -> None:
    row.copy_(grad)


def _norm_into(norms: list[Tensor], index: int, grad: Tensor) -> None:
    norms[index] = torch.linalg.vector_norm(grad)
