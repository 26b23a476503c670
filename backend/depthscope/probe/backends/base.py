"""The one interface the probe computes a step's reductions through, and the choice of backend.

A backend turns a recorded step's tensors into the numbers of its flat buffer (transfer.py's
slots): the tensor-op backend (tensor_ops.py) on any device, the C kernels (native.py) on the
CPU where the extension module was built at install time. The probe picks one per run
(probe.choose_backend) and drives it through `Backend` without knowing which it has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy.typing as npt
from torch import Tensor, nn

from depthscope.engine.activations import ActivationSpec
from depthscope.engine.model import Taps
from depthscope.probe.transfer import Structure, Transfer, WeightSlots


@dataclass(frozen=True)
class Model:
    """What a backend reads of the network, fixed for the run: the weights in layer order
    (hidden blocks, then the readout), the other trainable parameters (biases, norms), the
    activation with its modules (PReLU's slopes live there), and the run's Structure."""

    weights: Sequence[Tensor]
    others: Sequence[Tensor]
    activation: ActivationSpec
    acts: Sequence[nn.Module]
    structure: Structure
    weight_slots: WeightSlots


@dataclass(frozen=True)
class StepTensors:
    """A recorded step's tensors after the update, for `Backend.finish`: the taps, dL/dh per
    hidden layer (None when the hooks took it as it was made), dL/dlogits, the batch's targets
    (float for a regression: no accuracy), and the 0-d loss and `clipped` (bool)."""

    taps: Taps
    hidden_grads: Sequence[Tensor] | None
    dlogits: Tensor
    targets: Tensor
    loss: Tensor
    clipped: Tensor


class Backend(Protocol):
    """A recorded step, in the order the probe calls these: `begin` once the forward pass is
    done, `take_gradient` per hidden layer during backpropagation when the run's Structure has
    `hooks` (large layers), `before_update` after backward and before clipping, `finish` after
    the optimizer's step. `finish` returns the flat buffer in host memory (float32, read before the
    next step), laid out as `begin`'s transfer says."""

    name: str  # what the benchmark and `main()` call it

    def begin(self, transfer: Transfer) -> None: ...

    def take_gradient(self, layer: int, grad: Tensor) -> None: ...

    def before_update(
        self, weight_grads: Sequence[Tensor], other_grads: Sequence[Tensor]
    ) -> None: ...

    def finish(self, step: StepTensors) -> npt.ArrayLike: ...


BackendFactory = Callable[[Model], Backend]
