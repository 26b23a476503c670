"""StepRecord: the plain data one recorded step produces, and its JSON wire shape.

Non-finite numbers become None here, at the boundary, so no JSON encoder downstream ever sees
NaN or Infinity.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

# per-layer metric names, in order (contract), from the metric registry
from depthscope.probe.metrics import METRICS as METRICS

# h, dL/dh, and u: the activation's input (after the normalization when it comes first)
HISTOGRAM_KINDS: tuple[str, ...] = ("act", "act_grad", "preact")

Number = float | None


def finite(value: float) -> Number:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Histogram:
    """Per layer: `bins` equal-width counts between lo and hi."""

    lo: list[Number]
    hi: list[Number]
    counts: list[list[int]]

    def to_wire(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "counts": self.counts}


@dataclass(frozen=True)
class StepRecord:
    step: int
    loss: Number
    accuracy: Number  # None for regression
    grad_norm_total: Number  # before clipping
    clipped: bool
    layers: dict[str, list[Number]]  # metric -> value per layer, input to output
    val_loss: Number = None  # held-out, on evaluation steps
    val_accuracy: Number = None
    histograms: dict[str, Histogram] | None = None
    # True when its maker knows the loss, the total norm and every metric are finite (the
    # probe does), so `first_non_finite` need not look; not part of the wire format
    known_finite: bool = field(default=False, compare=False, repr=False)
    # `layers` as one float32 array [metric, layer] in METRICS order, NaN where `layers` has
    # None, when its maker has one (the probe does): the store cuts its per-metric blocks from
    # it instead of converting the lists back; not part of the wire format either
    table: npt.NDArray[np.float32] | None = field(default=None, compare=False, repr=False)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "step": self.step,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "grad_norm_total": self.grad_norm_total,
            "clipped": self.clipped,
            "layers": self.layers,
        }
        if self.val_loss is not None or self.val_accuracy is not None:
            wire["val_loss"] = self.val_loss
            wire["val_accuracy"] = self.val_accuracy
        if self.histograms is not None:
            wire["histograms"] = {k: h.to_wire() for k, h in self.histograms.items()}
        return wire


def layer_names(depth: int) -> list[str]:
    """The layers of a network of `depth` hidden blocks, input to output: block1 … blockD, readout.
    The one place these names are made: the model, the run manager and the wire use them."""
    return [f"block{i}" for i in range(1, depth + 1)] + ["readout"]


@dataclass(frozen=True)
class Divergence:
    """Where a run first produced a non-finite number."""

    step: int
    layer: str | None  # None when only a scalar (loss, total norm) went non-finite
    layer_index: int | None
    metric: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "layer": self.layer,
            "layer_index": self.layer_index,
            "metric": self.metric,
            "message": self.describe(),
        }

    def describe(self) -> str:
        where = f"layer {self.layer}" if self.layer is not None else "the network"
        return f"{where} went non-finite at step {self.step} ({self.metric})"


# The order one step computes its values in: the forward pass (weights, then what each block makes
# of its input) from the input up, the loss, the backward pass from the readout down, then the
# update. The first non-finite value in this order is where an overflow began; later ones follow
# from it (a forward overflow makes every gradient NaN, in every layer).
_FORWARD = ("weight_norm", "preact_mean", "preact_std", "act_mean", "act_std", "saturation", "dead")
_BACKWARD = ("act_grad_norm", "grad_norm", "grad_to_weight")


def _scan_order(n_layers: int) -> Iterator[tuple[int | None, str]]:
    """(layer index, metric) in computation order; None as the index marks a scalar."""
    for index in range(n_layers):
        for metric in _FORWARD:
            yield index, metric
    yield None, "loss"
    for index in reversed(range(n_layers)):
        for metric in _BACKWARD:
            yield index, metric
    yield None, "grad_norm_total"
    rest = [m for m in METRICS if m not in _FORWARD and m not in _BACKWARD]
    for index in range(n_layers):
        for metric in rest:
            yield index, metric


def first_non_finite(record: StepRecord, layer_names: list[str]) -> Divergence | None:
    """The first non-finite value of a record in the order the step computed it (forward from
    the input, loss, backward from the readout, update). A value the probe could not define
    (None from the start) never counts, so only metrics that are always defined are scanned."""
    if record.known_finite:
        return None
    scalars_finite = record.loss is not None and record.grad_norm_total is not None
    if scalars_finite and not any(None in values for values in record.layers.values()):
        return None  # the usual case, without a scan value by value
    for index, metric in _scan_order(len(layer_names)):
        if index is None:
            if getattr(record, metric) is None:
                return Divergence(record.step, None, None, metric)
        elif record.layers[metric][index] is None:
            return Divergence(record.step, layer_names[index], index, metric)
    return None
