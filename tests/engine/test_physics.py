"""The physics depthscope exists to show, measured by the engine at step 0 with fixed seeds.

Vanishing gradients in a deep sigmoid net with small weights, and the cures: ReLU with He
initialisation, residual connections, batch normalisation. The activation-scale decay of
He et al. (2015): with Xavier init (gain 1) each ReLU layer halves the variance, so log(std)
falls by ln(2^-1/2) ≈ −0.347 per layer, while He init keeps it flat."""

from __future__ import annotations

import math
from typing import Any

import pytest
from depthscope import RunConfig, StepRecord
from depthscope.engine.trainer import Trainer

SIGMOID_NAIVE = {"depth": 20, "activation": "sigmoid", "init": "normal", "init_std": 0.1}
HE_SLOPE = math.log(2**-0.5)  # ≈ −0.347


def step0(seed: int = 0, **model: Any) -> StepRecord:
    config = RunConfig.model_validate(
        {
            "model": model,
            "training": {"steps": 1, "seed": seed},
            "recording": {"eval_every": 0, "histogram_every": 0},
        }
    )
    return next(Trainer(config).records())


def first_to_last_hidden(record: StepRecord) -> float:
    """act_grad_norm of block 1 over that of the last hidden block."""
    norms = record.layers["act_grad_norm"]
    first, last = norms[0], norms[-2]
    assert first is not None and last is not None
    return first / last


def log_std_slope(record: StepRecord) -> float:
    """Least-squares slope of log(act_std) against layer index, over the hidden layers."""
    stds = record.layers["act_std"][:-1]
    ys = [math.log(s) for s in stds if s is not None]
    assert len(ys) == len(stds)
    xs = range(len(ys))
    mx, my = sum(xs) / len(ys), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_physics_deep_sigmoid_gradient_vanishes(seed: int) -> None:
    assert first_to_last_hidden(step0(seed, **SIGMOID_NAIVE)) < 1e-6


@pytest.mark.parametrize("seed", [0, 1])
def test_physics_relu_he_normal_keeps_gradient(seed: int) -> None:
    ratio = first_to_last_hidden(step0(seed, depth=20, activation="relu", init="he_normal"))
    assert 0.3 <= ratio <= 3


def test_physics_residual_lifts_sigmoid_gradient() -> None:
    assert first_to_last_hidden(step0(**SIGMOID_NAIVE, residual_every=1)) > 0.1


def test_physics_batchnorm_lifts_sigmoid_gradient() -> None:
    assert first_to_last_hidden(step0(**SIGMOID_NAIVE, norm="batchnorm")) > 0.1


def test_physics_relu_xavier_activation_std_halves_variance_per_layer() -> None:
    record = step0(depth=30, width=256, activation="relu", init="xavier_normal")
    assert log_std_slope(record) == pytest.approx(HE_SLOPE, rel=0.10)


def test_physics_relu_he_normal_activation_std_stays_flat() -> None:
    record = step0(depth=30, width=256, activation="relu", init="he_normal")
    assert abs(log_std_slope(record)) < 0.05
