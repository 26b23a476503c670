"""The C kernels backend: a recorded step's reductions on the CPU, a handful of calls a step.

The kernels (kernels.c, bound by module.c, loaded by kernels.py) read each layer's tensors where
the forward and backward passes left them and write every number straight into its slot of
the step's flat buffer, which lives in host memory (an array('f')): reading it back is a list
copy, not a transfer. Where every number goes (index tables into that buffer) is worked out
once per layout, in `_Plan`; a step only gathers its tensors' addresses.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from depthscope.engine.model import Taps
from depthscope.probe.backends.base import Model, StepTensors
from depthscope.probe.backends.kernels import HIDDEN_COLUMNS, READOUT_SLOTS
from depthscope.probe.metrics import DH_NORM
from depthscope.probe.transfer import HEAD, Span, Transfer


def indices(values: Sequence[int]) -> array[int]:
    """Positions in a step's flat buffer, or lengths, as the kernels take them (int64)."""
    return array("q", values)


def addresses(tensors: Sequence[Tensor], keep: list[Tensor]) -> list[int]:
    """The tensors' data addresses, for kernels that read them as flat float32 arrays. A tensor
    that is not contiguous is copied first, into `keep`, which the caller holds until the call
    returns."""
    found = [t.data_ptr() for t in tensors]
    if all(map(Tensor.is_contiguous, tensors)):  # the usual case: what autograd and the model make
        return found
    flat = [t.contiguous() for t in tensors]
    keep += flat
    return [t.data_ptr() for t in flat]


class NativeBackend:
    """The C kernels for one run: the weights' addresses and copies (parameters are updated in
    place by every torch optimizer, so their addresses stay the same from step to step), the
    health rule, and one `_Plan` per layout."""

    name = "C kernels"

    def __init__(self, lib: ModuleType, model: Model) -> None:
        s = model.structure
        self.lib, self.structure = lib, s
        weights = [w.detach() for w in model.weights]
        self.weights_at = addresses(weights, [])
        self.weight_lengths = indices([w.numel() for w in weights])
        self.saved = [torch.empty_like(w) for w in weights]  # the values before the update
        self.saved_at = addresses(self.saved, [])
        self.others_lengths = indices([p.numel() for p in model.others])
        rule = model.activation.rule
        self.rule = (lib.HEALTH_KINDS[rule.kind], rule.param) if rule is not None else (0, 0.0)
        # PReLU's learned slopes, which its rule reads: parameters too, so fixed addresses
        self.slopes = (
            addresses([act.get_parameter("weight").detach() for act in model.acts], [])
            if rule is not None and rule.kind == "prelu"
            else None
        )
        self.plans: dict[Transfer, _Plan] = {}
        self.plan: _Plan | None = None

    def begin(self, transfer: Transfer) -> None:
        plan = self.plans.get(transfer)
        if plan is None:
            plan = self.plans[transfer] = _Plan(transfer)
        self.plan = plan

    def _plan(self) -> _Plan:
        if self.plan is None:
            raise RuntimeError("the backend has no step begun")
        return self.plan

    def take_gradient(self, layer: int, grad: Tensor) -> None:
        """dL/dh of one layer as backpropagation makes it: its norm, and its histogram on
        histogram steps."""
        plan, keep = self._plan(), list[Tensor]()
        at = addresses([grad], keep)
        self.lib.norms(at, plan.one_length, None, plan.out, plan.dh_single[layer])
        if plan.histograms:
            lo, hi, counts = plan.dh_histogram_single[layer]
            self.lib.histograms(at, plan.one_length, plan.bins, plan.out, lo, hi, counts)

    def before_update(self, weight_grads: Sequence[Tensor], other_grads: Sequence[Tensor]) -> None:
        """Norms of the weights' gradients (before clipping) and of their values, which are
        copied for the update's norm; the other parameters' gradients: one norm together."""
        plan, lib, keep = self._plan(), self.lib, list[Tensor]()
        lengths = self.weight_lengths
        lib.norms(addresses(weight_grads, keep), lengths, None, plan.out, plan.grad_where)
        lib.norms(self.weights_at, lengths, self.saved_at, plan.out, plan.before_where)
        if other_grads:
            at = addresses(other_grads, keep)
            lib.total_norm(at, self.others_lengths, plan.out, plan.others_at)

    def finish(self, step: StepTensors) -> npt.NDArray[np.float32]:
        """Everything else, after the update: per hidden layer the moments of z and h, the
        health counts over the activation inputs u and the norm of dL/dh (unless the hooks took
        it), the readout's numbers, the weights' update norms and the step's histograms; then
        the whole buffer (host memory already, as a numpy view), with the loss and `clipped`
        written in."""
        plan, lib, s, keep = self._plan(), self.lib, self.structure, list[Tensor]()
        taps = step.taps
        z_at = addresses(taps.z, keep)
        h_at = None if s.h_is_z else addresses(taps.h, keep)
        u_at = _inputs(taps, s.u_is, z_at, h_at, keep)
        g_at = None if step.hidden_grads is None else addresses(step.hidden_grads, keep)
        kind, param = self.rule
        lib.hidden(
            z_at,
            h_at,
            u_at,
            g_at,
            s.batch,
            s.width,
            kind,
            param,
            self.slopes,
            plan.out,
            plan.hidden,
        )
        self._readout(plan, taps, step, keep)
        lib.difference_norms(
            self.weights_at, self.saved_at, self.weight_lengths, plan.out, plan.update_where
        )
        if plan.histograms:
            rows = z_at if h_at is None else h_at
            lib.histograms(rows, plan.lengths, plan.bins, plan.out, *plan.h_histograms)
            if g_at is not None:
                lib.histograms(g_at, plan.lengths, plan.bins, plan.out, *plan.dh_histograms)
            lib.histograms(u_at, plan.lengths, plan.bins, plan.out, *plan.u_histograms)
        out = plan.out
        out[plan.head] = step.loss.item()
        out[plan.head + 2] = float(step.clipped.item())
        return plan.view

    def _readout(self, plan: _Plan, taps: Taps, step: StepTensors, keep: list[Tensor]) -> None:
        assert taps.logits is not None
        logits, dlogits = addresses([taps.logits, step.dlogits], keep)
        targets = step.targets
        target_at = None
        if not targets.is_floating_point():
            target_at = addresses([targets.to(torch.int64)], keep)[0]
        s = self.structure
        self.lib.readout(logits, s.batch, s.outputs, target_at, dlogits, plan.out, plan.readout)
        if plan.histograms:
            lengths = plan.readout_lengths
            self.lib.histograms([logits, dlogits], lengths, plan.bins, plan.out, *plan.readout_hist)


def _inputs(
    taps: Taps, u_is: str, z_at: list[int], h_at: list[int] | None, keep: list[Tensor]
) -> list[int]:
    """The activation inputs' addresses: z's or h's own when u is one of them."""
    if u_is == "z":
        return z_at
    if u_is == "h":
        return z_at if h_at is None else h_at
    return addresses(taps.u, keep)


class _Plan:
    """Where one layout's numbers go in its flat buffer `out` (made once): the hidden kernel's
    table, the readout's, the weights', and the histograms' rows."""

    def __init__(self, t: Transfer) -> None:
        s = t.structure
        layers = s.layers
        self.out = array("f", bytes(4 * t.size))
        self.view = np.frombuffer(self.out, dtype=np.float32)  # the host reads it as numpy
        self.head = t.head.start
        self.others_at = t.head.start + HEAD
        self.bins, self.histograms = t.bins, t.histograms
        table: list[int] = []
        for i in range(layers):
            for r in HIDDEN_COLUMNS:
                span = t.hidden.get(r)
                table.append(-1 if span is None else span.start + i)
        self.hidden = indices(table)
        # for the hooks (large layers), which hand over dL/dh one layer at a time
        dh, hooked = t.hidden[DH_NORM], range(layers if s.hooks else 0)
        self.dh_single = [indices([dh.start + i]) for i in hooked]
        self.one_length = indices([s.n])
        self.readout = indices(
            [t.accuracy if isinstance(r, str) else t.readout[r] for r in READOUT_SLOTS]
        )
        w = t.weights.start
        positions = t.weight_slots.positions
        self.grad_where, self.before_where, self.update_where = (
            indices([w + p for p in positions[row]]) for row in range(3)
        )
        self.lengths = indices([s.n] * layers)
        self.readout_lengths = indices([s.batch * s.outputs] * 2)
        rows = 2 * layers  # the hidden block: h rows, then dL/dh rows
        self.h_histograms = _histogram_rows(t.hist_hidden, rows, t.bins, range(layers))
        self.dh_histograms = _histogram_rows(t.hist_hidden, rows, t.bins, range(layers, rows))
        self.dh_histogram_single = [
            _histogram_rows(t.hist_hidden, rows, t.bins, [layers + i]) for i in hooked
        ]
        self.readout_hist = _histogram_rows(t.hist_readout, 2, t.bins, range(2))
        self.u_histograms = _histogram_rows(t.hist_u, layers, t.bins, range(layers))


def _histogram_rows(
    span: Span, rows: int, bins: int, which: Sequence[int]
) -> tuple[array[int], array[int], array[int]]:
    """The lo, hi and counts slots of rows `which` of a block of `rows` histograms."""
    if not len(span):
        return indices([]), indices([]), indices([])
    lo = [span.start + r for r in which]
    hi = [span.start + rows + r for r in which]
    counts = [span.start + 2 * rows + r * bins for r in which]
    return indices(lo), indices(hi), indices(counts)
