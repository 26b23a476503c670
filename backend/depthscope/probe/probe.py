"""The probe: every per-layer statistic of the metric registry at a recorded step, computed
where the model trains, with one transfer to the host.

The probe owns a step's lifecycle: it taps the forward pass (`Taps`), backpropagates keeping
dL/dh_l, hands the step's tensors to its backend, and turns the numbers the backend wrote into
a StepRecord (transfer.py). The backend is chosen once per run (`choose_backend`): the C
kernels on the CPU where the extension module was built at install time, batched tensor ops
anywhere else (or with DEPTHSCOPE_NATIVE=0). Both fill the same slots of the same flat buffer
and give the same records to float rounding. docs/probe.md has the whole story.

Lifecycle of a recorded step, driven by the trainer:
    probe.attach(hist)      before the forward pass: the model starts filling `Taps`
    probe.backward(loss)    instead of loss.backward(): also keeps dL/dh_l and dL/dlogits
    probe.before_update()   after backward, before clipping: the weights' gradients and values
    probe.finish(...)       after the optimizer step: one transfer, returns the StepRecord
All statistics describe the weights the step's forward pass used (before the update).
The probe drops what it holds after each step and when closed (it is a context manager).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from types import TracebackType

import torch
from torch import Tensor

from depthscope.engine.activations import ACTIVATIONS
from depthscope.engine.model import DeepNet, Taps, same_tensors
from depthscope.probe.backends import kernels
from depthscope.probe.backends.base import Backend, BackendFactory, Model, StepTensors
from depthscope.probe.backends.native import NativeBackend
from depthscope.probe.backends.tensor_ops import TensorOpsBackend
from depthscope.probe.metrics import Reduced
from depthscope.probe.stats import accuracy, or_zeros
from depthscope.probe.transfer import Structure, Transfer, WeightSlots
from depthscope.records import StepRecord

__all__ = ["HISTOGRAM_BINS", "Probe", "accuracy", "choose_backend"]

HISTOGRAM_BINS = 32
# Per-layer gradients at least this large are taken by hooks rather than held: glibc's
# default threshold for serving an allocation by mmap, where heap growth starts to cost.
HOOK_BYTES = 128 * 1024


def choose_backend(parameters: Sequence[Tensor]) -> tuple[str, BackendFactory]:
    """The run's backend, by name and maker: the C kernels where they are built and can read
    the model (float32, contiguous, on the CPU) unless DEPTHSCOPE_NATIVE=0; tensor ops
    otherwise."""
    module = kernels.load() if kernels.usable_for(parameters) else None
    if module is None:
        return TensorOpsBackend.name, TensorOpsBackend
    return NativeBackend.name, partial(NativeBackend, module)


class Probe:
    def __init__(self, model: DeepNet, histogram_bins: int = HISTOGRAM_BINS) -> None:
        self.model = model
        self.bins = histogram_bins
        self.weights = [layer.weight for layer in model.linears]
        self.params = [p for p in model.parameters() if p.requires_grad]
        weight_ids = {id(w) for w in self.weights}
        self.others = [p for p in self.params if id(p) not in weight_ids]  # biases, norms, …
        self.activation = ACTIVATIONS[model.activation]
        # once per run: which backend computes the statistics ("C kernels" or "tensor ops")
        self.backend_name, self.make_backend = choose_backend(self.params)
        # made at the first recorded step, whose taps show the run's structure
        self.backend: Backend | None = None
        self.transfers: tuple[Transfer, Transfer] | None = None  # without, with histograms
        self.transfer: Transfer | None = None  # this step's
        # the last recorded step's reductions: how far distributions moved since (metrics.py)
        self.previous: Reduced | None = None
        self.histograms = False  # whether this step takes histograms
        self.taps: Taps | None = None
        self.grads: list[Tensor | None] = []  # dL/dh_l per hidden block, then dL/dlogits
        self.hooks_took_dh = False

    @property
    def layer_names(self) -> list[str]:
        return self.model.layer_names

    # -- lifecycle -----------------------------------------------------------------------
    def attach(self, histograms: bool = False) -> None:
        """Start a recorded step (with histograms of h_l and dL/dh_l or not)."""
        self.histograms = histograms
        self.taps = Taps()
        self.model.tap(self.taps)

    def _begin(self, taps: Taps) -> Backend:
        """The backend and this step's layout, both made at the first recorded step."""
        if self.backend is None or self.transfers is None:
            structure = self._structure(taps)
            slots = WeightSlots([w.numel() for w in self.weights])
            self.transfers = (
                Transfer(structure, slots, self.bins, histograms=False),
                Transfer(structure, slots, self.bins, histograms=True),
            )
            acts = [block.act for block in self.model.block_list]
            self.backend = self.make_backend(
                Model(self.weights, self.others, self.activation, acts, structure, slots)
            )
        self.transfer = self.transfers[self.histograms]
        self.backend.begin(self.transfer)
        return self.backend

    def _structure(self, taps: Taps) -> Structure:
        assert taps.logits is not None
        rule = self.activation.rule
        z = taps.z[0]
        h_is_z = same_tensors(taps.h, taps.z)
        u_is = (
            "z" if same_tensors(taps.u, taps.z) else "h" if same_tensors(taps.u, taps.h) else "own"
        )
        return Structure(
            layers=len(taps.z),
            batch=z.shape[0],
            width=z.shape[1],
            outputs=taps.logits.numel() // z.shape[0],
            h_is_z=h_is_z,
            u_is=u_is,
            healthy=rule is not None,
            active=rule is not None and rule.can_die,
            active_is_healthy=rule is not None and rule.one_mask,
            others=bool(self.others),
            hooks=z.numel() * z.element_size() >= HOOK_BYTES,
        )

    def backward(self, loss: Tensor) -> None:
        """Backpropagate `loss` as `loss.backward()` would, keeping dL/dh_l and dL/dlogits too.

        Small layers: one autograd call returns the parameters' gradients and the block
        outputs' together (no per-layer Python hooks, no `retain_grad` clones). Large layers:
        holding every dL/dh_l until the step ends makes the heap grow and shrink each step
        (a page fault per 4 KiB), so a hook hands each one to the backend as it is made and
        lets autograd free it as usual."""
        taps = self._require_taps()
        assert taps.logits is not None
        backend = self._begin(taps)
        assert self.transfer is not None
        outputs = [*taps.h, taps.logits]
        self.grads = [None] * len(outputs)
        self.hooks_took_dh = self.transfer.structure.hooks
        if self.hooks_took_dh:
            self._backward_with_hooks(loss, outputs, backend)
            return
        grads = torch.autograd.grad(loss, [*outputs, *self.params], allow_unused=True)
        self.grads = list(grads[: len(outputs)])
        for p, g in zip(self.params, grads[len(outputs) :], strict=True):
            p.grad = g if p.grad is None or g is None else p.grad + g

    def _backward_with_hooks(self, loss: Tensor, outputs: list[Tensor], backend: Backend) -> None:
        hooks = [partial(backend.take_gradient, i) for i in range(len(outputs) - 1)]
        handles = [
            t.register_hook(hook)  # type: ignore[no-untyped-call]
            for t, hook in zip(outputs, [*hooks, self._keep_dlogits], strict=True)
        ]
        try:
            loss.backward()  # type: ignore[no-untyped-call]
        finally:
            for handle in handles:
                handle.remove()

    def _keep_dlogits(self, grad: Tensor) -> None:
        self.grads[-1] = grad

    def before_update(self) -> None:
        """Hand the backend the weights' gradients (before any clipping) and the other
        parameters' gradients, which only count towards the total norm."""
        if self.backend is None:
            raise RuntimeError("probe.backward() first")
        self.backend.before_update(_grads(self.weights), _grads(self.others))

    def detach(self) -> None:
        self.grads = []
        self.model.tap(None)
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

    # -- one transfer, then the host's share ------------------------------------------------
    def finish(self, step: int, loss: Tensor, targets: Tensor, clipped: Tensor) -> StepRecord:
        """Build the step's record from the 0-d loss, the batch's targets (the accuracy's; a
        regression's float targets give NaN) and whether clipping acted (0-d bool)."""
        try:
            taps = self._require_taps()
            assert taps.logits is not None and self.backend is not None
            assert self.transfer is not None
            hidden = None
            if not self.hooks_took_dh:
                hidden = [or_zeros(g, h) for g, h in zip(self.grads[:-1], taps.h, strict=True)]
            dlogits = or_zeros(self.grads[-1], taps.logits)
            tensors = StepTensors(taps, hidden, dlogits, targets, loss, clipped)
            flat = self.backend.finish(tensors)
            transfer = self.transfer
        finally:
            self.detach()
        record, self.previous = transfer.read(step, flat, self.previous)
        return record


def _grads(params: Sequence[Tensor]) -> list[Tensor]:
    """The parameters' gradients, zeros where autograd left none."""
    grads = [p.grad for p in params]
    if all(g is not None for g in grads):  # the usual case: no call per parameter
        return grads  # type: ignore[return-value]
    return [or_zeros(g, p) for g, p in zip(grads, params, strict=True)]
