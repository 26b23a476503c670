"""The theory of one configured run: each layer's init variances as its scheme sets them, the
inputs' scales from its dataset, and the step-0 predictions and spectrum theory built on them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from depthscope.analysis.predict import LayerInit, predict
from depthscope.analysis.spectrum import spectrum_theory
from depthscope.analysis.theory import mean_field
from depthscope.engine.config import RunConfig
from depthscope.engine.data import make_dataset
from depthscope.engine.inits import INITS, InitParams

INPUT_QUANTILES = 32  # input scales the recursion runs for, pooled like the batch


def not_applicable(config: RunConfig) -> str | None:
    """Why the mean-field recursion does not describe this network, or None."""
    m = config.model
    if m.norm != "none":
        return (
            f"model.norm is {m.norm}: normalization rescales every layer's pre-activations, "
            "which the mean-field recursion here does not model"
        )
    if m.residual_every:
        return (
            "model.residual_every is set: skip connections add earlier signals back in, "
            "which the plain mean-field recursion does not model"
        )
    return None


def layer_inits(config: RunConfig) -> list[LayerInit]:
    """The hidden blocks' init variances per entry, as the run's scheme sets them."""
    m = config.model
    scheme, params = INITS[m.init], InitParams.of(m)
    out = []
    for i in range(m.depth):
        fan_in = config.data.input_dim if i == 0 else m.width
        weight_var, bias_var = scheme.variances(fan_in, m.width, params)
        out.append(
            LayerInit(weight_var, bias_var if m.bias else 0.0, fan_in, m.width, scheme.orthogonal)
        )
    return out


def input_moments(config: RunConfig, count: int = INPUT_QUANTILES) -> list[float]:
    """||x||^2 / d of the training inputs at `count` evenly spaced quantiles (standardized
    features: their mean is one, their spread depends on the dataset)."""
    with torch.random.fork_rng(devices=[]):
        data = make_dataset(config.data, config.training.seed)
    moments = data.x_train.double().pow(2).mean(1).numpy()
    return [float(v) for v in np.quantile(moments, (np.arange(count) + 0.5) / count)]


def run_theory(config: RunConfig) -> dict[str, Any]:
    """Predicted step-0 act_std and log gradient ratio per hidden block (with finite-width
    bands), the effective sigma_w^2 and sigma_b^2 of each, and the mean-field summary of the
    hidden-to-hidden layers."""
    reason = not_applicable(config)
    layers = layer_inits(config)
    body: dict[str, Any] = {
        "applicable": reason is None,
        "reason": reason,
        "activation": config.model.activation,
        "sigma_w2": [layer.sigma_w2 for layer in layers],
        "sigma_b2": [layer.bias_var for layer in layers],
        "predicted": None,
        "mean_field": None,
    }
    if reason is None:
        body["predicted"] = predict(
            config.model.activation, layers, input_moments(config)
        ).to_wire()
        hidden = layers[1] if len(layers) > 1 else layers[0]
        summary = mean_field(
            config.model.activation, hidden.sigma_w2, hidden.bias_var, config.model.depth
        )
        body["mean_field"] = summary.to_wire()
    return body


def run_spectrum_theory(config: RunConfig) -> dict[str, Any]:
    reason = not_applicable(config)
    if reason is not None:
        return {"applicable": False, "reason": reason}
    inits = layer_inits(config)
    return spectrum_theory(config.model.activation, inits, input_moments(config)).to_wire()
