"""Step-0 predictions for a concrete network: per hidden block, the mean-field act_std and log
gradient ratio from each layer's own init variances, with bands for finite width.

Each layer l has its own sigma_w^2 = weight variance x fan_in and sigma_b^2, so the q map is
applied layer by layer. Inputs need not all have the same scale: the recursion runs for each
input's second moment ||x||^2 / d, and the statistics are pooled over them as the probe pools
over the batch.

The bands: at width n a layer's empirical second moment A_l = mean_i phi(z_i)^2 deviates
from its mean by a relative variance kappa / n (kappa = E[phi^4] / E[phi^2]^2 - 1), and the
deviation passes to the next layer scaled by the slope of the q map in log space. For ReLU
(slope 1, kappa 5) the log-variance adds up to 5 depth / n, a random walk; a contracting
map (tanh off the chaotic side) keeps it bounded. The backward pass gets 3 mu_2 / mu_1^2 - 1
per layer (mu_k = E[phi'^2k]). Bands are two standard deviations of the logarithm either
side of its centre, which lies below the mean-field value by the logarithm's variance (a
lognormal's median is below its mean): the typical network is a little below the line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from depthscope.analysis.gaussian import Activation, Array
from depthscope.analysis.theory import activation

BAND_SIGMAS = 2.0


@dataclass(frozen=True)
class LayerInit:
    """One weight layer's init as the scheme sets it: per-entry variances and shape."""

    weight_var: float
    bias_var: float
    fan_in: int
    fan_out: int
    orthogonal: bool = False  # W^T W has a flat spectrum instead of Marchenko-Pastur

    @property
    def sigma_w2(self) -> float:
        return self.weight_var * self.fan_in


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _finite_list(values: Array) -> list[float | None]:
    return [_finite(float(v)) for v in values]


@dataclass(frozen=True)
class Prediction:
    """Per hidden block (input to output): mean q, act_std with its band, and the natural log
    of ||dL/dh_l|| over that of the last hidden block, with its band."""

    q: list[float | None]
    act_std: list[float | None]
    act_std_lo: list[float | None]
    act_std_hi: list[float | None]
    log_act_grad_norm: list[float | None]
    log_act_grad_norm_lo: list[float | None]
    log_act_grad_norm_hi: list[float | None]

    def to_wire(self) -> dict[str, Any]:
        return dict(self.__dict__)


def layer_q(act: Activation, layers: Sequence[LayerInit], input_q: Sequence[float]) -> Array:
    """q[l, s]: the pre-activation variance of block l for input s."""
    q = layers[0].sigma_w2 * np.asarray(input_q, dtype=np.float64) + layers[0].bias_var
    rows = [q]
    with np.errstate(over="ignore", invalid="ignore"):
        for layer in layers[1:]:
            q = layer.sigma_w2 * act.moment(2, np.minimum(q, 1e300)) + layer.bias_var
            rows.append(q)
    return np.vstack(rows)


def _log_std_slope(act: Activation, q: Array) -> Array:
    """d ln std(phi(sqrt(q) z)) / d ln q, by a central difference."""
    h = 1e-4

    def log_std(x: Array) -> Array:
        return np.asarray(
            0.5 * np.log(np.maximum(act.moment(2, x) - act.moment(1, x) ** 2, 1e-300))
        )

    return np.asarray((log_std(q * math.exp(h)) - log_std(q * math.exp(-h))) / (2 * h))


def _forward(
    act: Activation, layers: Sequence[LayerInit], q: Array, inputs: Array, batch: int | None
) -> tuple[Array, Array]:
    """Pooled act_std per block and the variance of its logarithm at finite width (and, for a
    batch of `batch` inputs drawn from `inputs`, at finite batch)."""
    m1 = act.moment(1, q.ravel()).reshape(q.shape)
    m2 = act.moment(2, q.ravel()).reshape(q.shape)
    std = np.sqrt(np.maximum(m2.mean(1) - m1.mean(1) ** 2, 0.0))
    qm = q.mean(1)
    kappa = act.moment(4, qm) / act.moment(2, qm) ** 2 - 1
    passes = act.log_slope(qm)  # relative change of A_l per relative change of q_l
    std_slope = _log_std_slope(act, qm)
    # of A_{l-1}; for the inputs, that of a batch's mean second moment (0: all of them)
    var_log_a = float(inputs.var() / inputs.mean() ** 2 / batch) if batch else 0.0
    var_log_std = np.zeros(len(layers))
    for i, layer in enumerate(layers):
        previous = inputs.mean() if i == 0 else m2[i - 1].mean()
        share = layer.sigma_w2 * previous / qm[i]
        var_log_q = share**2 * var_log_a
        var_log_a = passes[i] ** 2 * var_log_q + kappa[i] / layer.fan_out
        var_log_std[i] = std_slope[i] ** 2 * var_log_q + kappa[i] / (4 * layer.fan_out)
    return std, var_log_std


def _backward(act: Activation, layers: Sequence[LayerInit], q: Array) -> tuple[Array, Array]:
    """ln ||dL/dh_l|| - ln ||dL/dh_D|| per block and the variance of that difference."""
    mu1 = act.slope_moment(2, q.ravel()).reshape(q.shape)
    log_chi = np.log(np.array([[layer.sigma_w2] for layer in layers]) * mu1)
    # ||dL/dh_l||^2 = ||dL/dh_D||^2 prod_{k > l} chi_k, pooled over the inputs
    suffix = np.vstack([np.cumsum(log_chi[:0:-1], axis=0)[::-1], np.zeros(q.shape[1])])
    peak = suffix.max(1, keepdims=True)
    log_ratio = 0.5 * (peak[:, 0] + np.log(np.exp(suffix - peak).mean(1)))
    qm = q.mean(1)
    kappa = 3 * act.slope_moment(4, qm) / act.slope_moment(2, qm) ** 2 - 1
    per_layer = np.array([kappa[k] / layers[k].fan_in for k in range(len(layers))])
    var = 0.25 * np.append(np.cumsum(per_layer[:0:-1])[::-1], 0.0)
    return log_ratio, var


def predict(
    name: str,
    layers: Sequence[LayerInit],
    input_q: Sequence[float] = (1.0,),
    batch: int | None = None,
) -> Prediction:
    """The step-0 prediction for hidden blocks `layers` (input to output) of activation `name`,
    for inputs whose second moments per feature are `input_q`; the bands also allow for a
    batch of `batch` of them (None: the statistics pool over all of them)."""
    if not layers:
        raise ValueError("a network needs at least one hidden block")
    act = activation(name)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        q = layer_q(act, layers, input_q)
        std, var_std = _forward(act, layers, q, np.asarray(input_q, dtype=np.float64), batch)
        ratio, var_ratio = _backward(act, layers, q)
        # the logarithms are about normal and the mean-field values are means, so the
        # logarithms' centres sit their variance below them (for A lognormal with mean m,
        # E[ln A] = ln m - Var(ln A) / 2; act_std goes as sqrt(A), the ratio as half a log)
        typical_std = std * np.exp(-var_std)
        spread_std = np.exp(BAND_SIGMAS * np.sqrt(var_std))
        typical_ratio = ratio - var_ratio
        spread_ratio = BAND_SIGMAS * np.sqrt(var_ratio)
        return Prediction(
            q=_finite_list(q.mean(1)),
            act_std=_finite_list(std),
            act_std_lo=_finite_list(typical_std / spread_std),
            act_std_hi=_finite_list(typical_std * spread_std),
            log_act_grad_norm=_finite_list(ratio),
            log_act_grad_norm_lo=_finite_list(typical_ratio - spread_ratio),
            log_act_grad_norm_hi=_finite_list(typical_ratio + spread_ratio),
        )
