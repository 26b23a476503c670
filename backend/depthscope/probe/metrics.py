"""The metric registry: every per-layer statistic declared once, with what it is made of and how
it is shown.

A metric names the reductions it needs from a small vocabulary (a sum, a spread, a norm or a
count over one of a layer's tensors, per layer), how the host finishes it from them (a mean from
a sum, a ratio of two norms, ...), and how it is shown: a title, a paragraph that explains it and
a scale. The probe's backends compute every reduction of the vocabulary into one flat buffer
(transfer.py says where each goes); the host then finishes every metric from them. The records'
metric names (`METRICS`), `GET /api/metrics`, the frontend's menu and glossary, the CLI report
and the README's table all come from `REGISTRY`. Imports no torch (numpy only): the store and
the API use it. The host's arithmetic runs on numpy arrays, one value per layer, in float64.

Adding a metric built from the reductions below is one `Metric` entry here and its
autograd-reference test (docs/probe.md, "How to add a metric").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

TINY = 1e-30  # the smallest denominator of a ratio, and the smallest histogram range

# -- the vocabulary of reductions ------------------------------------------------------------
# The tensors of a layer l a reduction can be over. For the readout, z, u and h are its logits
# and dh is dL/dlogits; the readout is linear, so no count over its u ever fails.
TENSORS: Mapping[str, str] = {
    "z": "the Linear output z_l (the pre-activation, before any normalization)",
    "u": "the activation's input u_l (z_l, or z_l normalized when the norm comes first)",
    "h": "the block's output h_l (after the activation, a norm after it, a residual add)",
    "dh": "dL/dh_l, the gradient of the loss with respect to the block's output",
    "W": "the weight matrix W_l as the step's forward pass used it (before the update)",
    "dW": "dL/dW_l, the weights' gradient, before any clipping",
    "delta_W": "ΔW_l, the change the optimizer applied to W_l this step",
}
OPERATIONS: Mapping[str, str] = {
    "sum": "the sum of the tensor's values (float32 lanes added in double)",
    "spread": "the norm of the values about their mean: sqrt(Σ (x − mean)²)",
    "norm": "the Frobenius norm: sqrt(Σ x²)",
    "healthy": "how many (sample, unit) values of u leave |f′(u)| at least 5% of its maximum",
    "live": "how many units have f′(u) ≠ 0 for at least one sample of the batch",
}
Scale = Literal["log", "linear", "fraction"]
SCALES: Mapping[str, str] = {
    "log": "positive, spans decades: shown as log10",
    "linear": "signed: shown as it is",
    "fraction": "a fraction of a whole, in [0, 1]",
}


@dataclass(frozen=True)
class Reduction:
    """One number per layer: `op` over the tensor `of`. `full`, for counts: the count when no
    value fails it ("n": every value of the layer, "units": every unit), which is what an
    activation without that failure mode, and the linear readout, always give."""

    of: str
    op: str
    full: Literal["n", "units"] | None = None

    def __str__(self) -> str:
        return f"{self.op}({self.of})"


Z_SUM = Reduction("z", "sum")
H_SUM = Reduction("h", "sum")
Z_SPREAD = Reduction("z", "spread")
H_SPREAD = Reduction("h", "spread")
DH_NORM = Reduction("dh", "norm")
U_HEALTHY = Reduction("u", "healthy", full="n")
U_LIVE = Reduction("u", "live", full="units")
U_SUM = Reduction("u", "sum")
U_SPREAD = Reduction("u", "spread")
DW_NORM = Reduction("dW", "norm")
W_NORM = Reduction("W", "norm")
DELTA_W_NORM = Reduction("delta_W", "norm")

# What the backends compute, per hidden layer, in the order of their slots in the flat buffer:
# counts, then sums, then spreads and norms, so that a backend reducing many rows at once writes
# each kind of reduction into adjacent slots (transfer.py).
ACTIVATION_REDUCTIONS: tuple[Reduction, ...] = (
    U_HEALTHY,
    Z_SUM,
    H_SUM,
    Z_SPREAD,
    H_SPREAD,
    DH_NORM,
    U_LIVE,
    U_SUM,  # the backends compute u's own only after a norm: else u is z (or h)
    U_SPREAD,
)
# ... and per weight matrix, hidden blocks and readout alike: the gradient, the value before
# the update, the update.
WEIGHT_REDUCTIONS: tuple[Reduction, ...] = (DW_NORM, W_NORM, DELTA_W_NORM)
REDUCTIONS = ACTIVATION_REDUCTIONS + WEIGHT_REDUCTIONS


Values = npt.NDArray[np.float64]  # one number per layer, input to output


@dataclass(frozen=True)
class Reduced:
    """A recorded step's reductions, per layer input to output (the hidden blocks, then the
    readout): `values[reduction][layer]`, with each layer's size: `n` values (batch × units) of
    `units` units, and the previous recorded step's reductions (None at the first), for the
    metrics of how a distribution moved between the two."""

    values: Mapping[Reduction, Values]
    n: Values
    units: Values
    previous: Reduced | None = None

    def __getitem__(self, reduction: Reduction) -> Values:
        return self.values[reduction]


Finish = Callable[[Reduced], Values]


@dataclass(frozen=True)
class Metric:
    """A per-layer statistic: the reductions it `needs`, how the host `finish`es it from them
    (an array, one value per layer), and how it is shown."""

    name: str
    needs: tuple[Reduction, ...]
    finish: Finish
    title: str
    description: str
    scale: Scale

    def public(self) -> dict[str, str]:
        """What `GET /api/metrics` says about it."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "scale": self.scale,
        }


# -- how the host finishes a metric --------------------------------------------------------------
def ratio(top: Values, bottom: Values) -> Values:
    """top / bottom per layer, the bottom at least TINY (a zero weight matrix: a huge ratio)."""
    return top / np.maximum(bottom, TINY)


def per(values: Values, counts: Values) -> Values:
    """values / counts per layer: a mean from a sum."""
    return values / counts


def std(spreads: Values, counts: Values) -> Values:
    """The population std from the norm about the mean: spread / sqrt(count)."""
    return spreads / np.sqrt(counts)


def failing(counts: Values, wholes: Values) -> Values:
    """The fraction of a whole that a count of those that pass leaves out: 1 − count / whole."""
    return 1.0 - counts / wholes


def mean_shift(r: Reduced) -> Values:
    """|mean − mean′| / std′ of the activation input u per layer, since the previous recorded
    step (′); 0 at the first recorded step."""
    if r.previous is None:
        return np.zeros_like(r.n)
    before = r.previous
    moved = per(r[U_SUM], r.n) - per(before[U_SUM], r.n)
    return np.abs(moved) / np.maximum(std(before[U_SPREAD], r.n), TINY)


def std_shift(r: Reduced) -> Values:
    """|ln(std / std′)| of the activation input u per layer, since the previous recorded step
    (′); 0 at the first recorded step."""
    if r.previous is None:
        return np.zeros_like(r.n)
    now = np.maximum(std(r[U_SPREAD], r.n), TINY)
    before = np.maximum(std(r.previous[U_SPREAD], r.n), TINY)
    return np.abs(np.log(now / before))


def _taken(reduction: Reduction) -> Finish:
    return lambda r: r[reduction]


REGISTRY: tuple[Metric, ...] = (
    Metric(
        "grad_norm",
        (DW_NORM,),
        _taken(DW_NORM),
        "weight gradient norm ‖dL/dW‖",
        "The Frobenius norm of the loss's gradient with respect to the layer's weights, before "
        "any clipping: how hard the loss pushes on them. In a healthy net the column is roughly "
        "one colour from bottom to top. A colour that fades steadily towards the input (bottom) "
        "means the gradient shrinks by a similar factor at every layer it crosses back through: "
        "vanishing gradients, so the early layers barely learn. dL/dW is the backpropagated "
        "signal times the layer's input, so with weights that are too large it can brighten "
        "either way (the signal grows towards the input, the activations towards the readout): "
        "act_grad_norm shows the exploding signal itself.",
        "log",
    ),
    Metric(
        "act_grad_norm",
        (DH_NORM,),
        _taken(DH_NORM),
        "backpropagated signal ‖dL/dh‖",
        "The norm of dL/dh, the error signal arriving at each block's output on the way back "
        "(at the readout, dL/dlogits). Backpropagation multiplies it by one Jacobian per layer, "
        "so with saturating units (sigmoid, tanh) or badly scaled weights it decays "
        "geometrically with depth: an evenly spaced fade in log colour. With weights that are too "
        "large it grows instead: brightening towards the input (bottom) is the exploding case. "
        "ReLU with He init, normalization and skip connections keep it level.",
        "log",
    ),
    Metric(
        "grad_to_weight",
        (DW_NORM, W_NORM),
        lambda r: ratio(r[DW_NORM], r[W_NORM]),
        "‖dL/dW‖ / ‖W‖",
        "The gradient's norm relative to the norm of the weights it changes, comparable across "
        "layers of different size. Layers far below the others learn, in relative terms, far "
        "more slowly.",
        "log",
    ),
    Metric(
        "update_ratio",
        (DELTA_W_NORM, W_NORM),
        lambda r: ratio(r[DELTA_W_NORM], r[W_NORM]),
        "applied update ‖ΔW‖ / ‖W‖",
        "The relative change the optimizer actually made to the weights this step (after "
        "clipping, momentum, Adam's scaling). Around 1e-3 per step is a common rule of thumb; "
        "far below means a frozen layer, far above means the learning rate is too large for "
        "that layer.",
        "log",
    ),
    Metric(
        "weight_norm",
        (W_NORM,),
        _taken(W_NORM),
        "weight norm ‖W‖",
        "The Frobenius norm of the layer's weights before the step's update. A norm that runs "
        "away over the steps often precedes divergence.",
        "log",
    ),
    Metric(
        "act_mean",
        (H_SUM,),
        lambda r: per(r[H_SUM], r.n),
        "activation mean",
        "The mean of the block's output h over the batch and the units (at the readout, of the "
        "logits). Sigmoid outputs sit around 0.5, never zero-centred, which biases the next "
        "layer's gradients; a mean drifting away from zero with depth shows that shift.",
        "linear",
    ),
    Metric(
        "act_std",
        (H_SPREAD,),
        lambda r: std(r[H_SPREAD], r.n),
        "activation spread (std)",
        "The population standard deviation of the block's output h over the batch and the "
        "units. It should stay of the same order through depth: shrinking towards the top means "
        "the signal dies on the way forward (too small an init), growing means it explodes.",
        "log",
    ),
    Metric(
        "preact_mean",
        (Z_SUM,),
        lambda r: per(r[Z_SUM], r.n),
        "pre-activation mean",
        "The mean of the pre-activation z, the Linear output before any normalization. Large "
        "values push sigmoid and tanh into their flat tails; normalization layers hold the "
        "non-linearity's input near zero.",
        "linear",
    ),
    Metric(
        "preact_std",
        (Z_SPREAD,),
        lambda r: std(r[Z_SPREAD], r.n),
        "pre-activation spread (std)",
        "The population standard deviation of the pre-activation z. Much above about 2 for tanh "
        "or 5 for sigmoid (without a normalization) means most units sit in the flat tails, "
        "where the derivative is close to zero.",
        "log",
    ),
    Metric(
        "saturation",
        (U_HEALTHY,),
        lambda r: failing(r[U_HEALTHY], r.n),
        "saturated fraction",
        "The share of (sample, unit) pairs where the activation's slope |f′(u)| is below 5% of "
        "its maximum. Each saturated unit passes almost no gradient back, so a bright band here "
        "usually sits below a dark band in the gradient heatmaps.",
        "fraction",
    ),
    Metric(
        "dead",
        (U_LIVE,),
        lambda r: failing(r[U_LIVE], r.units),
        "dead fraction",
        "The share of units whose slope f′(u) is zero for every sample of the batch (dead "
        "ReLUs). A dead unit gets no gradient and may never recover; leaky ReLU, ELU or a "
        "smaller learning rate help.",
        "fraction",
    ),
    Metric(
        "u_mean_shift",
        (U_SUM, U_SPREAD),
        mean_shift,
        "activation-input mean shift",
        "How far the mean of the activation's input u moved since the previous recorded step, "
        "in units of its previous spread: |mean − mean′| / std′ (0 at the first recorded "
        "step). One measure of internal covariate shift, which batch normalization was "
        "introduced to reduce: after a norm each unit's input has the batch mean β it learns, so "
        "this stays tiny. Between batches it also moves with the batch drawn, not only as the "
        "layers below learn; it grows with record_every.",
        "log",
    ),
    Metric(
        "u_std_shift",
        (U_SUM, U_SPREAD),
        std_shift,
        "activation-input spread shift",
        "How much the spread (std) of the activation's input u changed since the previous "
        "recorded step, as |ln(std / std′)| (0 at the first recorded step): 0.1 is a change of "
        "about 10 %. The other half of the internal-covariate-shift measure beside "
        "u_mean_shift; docs/batchnorm.md has what it shows and what it does not.",
        "log",
    ),
)

METRICS: tuple[str, ...] = tuple(m.name for m in REGISTRY)  # the records' names, in order
BY_NAME: Mapping[str, Metric] = {m.name: m for m in REGISTRY}


def _check(registry: Sequence[Metric]) -> None:
    """The registry's own consistency, at import: unique names, known reductions and scales,
    and no reduction the backends compute that no metric needs."""
    names = [m.name for m in registry]
    if len(set(names)) != len(names):
        raise ValueError(f"metric names repeat: {names}")
    for r in REDUCTIONS:
        if r.of not in TENSORS or r.op not in OPERATIONS:
            raise ValueError(f"reduction {r} is outside the vocabulary")
    needed = {r for m in registry for r in m.needs}
    for m in registry:
        if m.scale not in SCALES:
            raise ValueError(f"metric {m.name}: unknown scale {m.scale!r}")
        unknown = [str(r) for r in m.needs if r not in REDUCTIONS]
        if unknown:
            raise ValueError(f"metric {m.name} needs reductions no backend computes: {unknown}")
    unused = [str(r) for r in REDUCTIONS if r not in needed]
    if unused:
        raise ValueError(f"reductions no metric needs (drop them from the vocabulary): {unused}")


_check(REGISTRY)


def markdown_table() -> str:
    """The README's metric table, made from the registry (a test holds the README to it)."""
    lines = ["| metric | what it is | shown as | needs |", "|---|---|---|---|"]
    for m in REGISTRY:
        needs = ", ".join(str(r) for r in m.needs)
        what = f"**{m.title}**. {m.description}".replace("|", "\\|")  # not a cell border
        lines.append(f"| `{m.name}` | {what} | {m.scale} | {needs} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
