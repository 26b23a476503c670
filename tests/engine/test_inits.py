"""Initialisation schemes: the weight scale each paper prescribes, zero biases for every named
scheme, PyTorch's own init untouched for pytorch_default."""

from __future__ import annotations

import math

import pytest
import torch
from depthscope.engine.inits import INITS, InitParams
from torch import nn

FAN_IN, FAN_OUT = 400, 300
EXPECTED_STD = {
    "normal": 0.1,  # init_std
    "xavier_uniform": math.sqrt(2 / (FAN_IN + FAN_OUT)),
    "xavier_normal": math.sqrt(2 / (FAN_IN + FAN_OUT)),
    "he_uniform": math.sqrt(2 / FAN_IN),
    "he_normal": math.sqrt(2 / FAN_IN),
    "lecun_normal": math.sqrt(1 / FAN_IN),
    "orthogonal": math.sqrt(1 / FAN_IN),  # rows orthonormal: each entry has variance 1/fan_in
}


def layer(name: str, seed: int = 0) -> nn.Linear:
    torch.manual_seed(123)
    lin = nn.Linear(FAN_IN, FAN_OUT)
    INITS[name](lin, InitParams(std=0.1), torch.Generator().manual_seed(seed))
    return lin


@pytest.mark.parametrize("name", list(EXPECTED_STD))
def test_inits_weight_std_matches_theory(name: str) -> None:
    w = layer(name).weight.detach()
    assert float(w.std()) == pytest.approx(EXPECTED_STD[name], rel=0.02)
    assert abs(float(w.mean())) < 0.05 * EXPECTED_STD[name]


@pytest.mark.parametrize("name", list(EXPECTED_STD))
def test_inits_named_schemes_zero_the_biases(name: str) -> None:
    bias = layer(name).bias
    assert bias is not None and torch.count_nonzero(bias) == 0


def test_inits_pytorch_default_keeps_pytorch_init() -> None:
    torch.manual_seed(123)
    reference = nn.Linear(FAN_IN, FAN_OUT)
    lin = layer("pytorch_default")
    assert torch.equal(lin.weight, reference.weight)
    assert lin.bias is not None and reference.bias is not None
    assert torch.equal(lin.bias, reference.bias)


@pytest.mark.parametrize("name", ["xavier_uniform", "he_uniform"])
def test_inits_uniform_schemes_respect_their_bound(name: str) -> None:
    w = layer(name).weight.detach()
    bound = EXPECTED_STD[name] * math.sqrt(3)
    assert float(w.abs().max()) <= bound
    assert float(w.abs().max()) > 0.99 * bound


def test_inits_orthogonal_rows_are_orthonormal() -> None:
    w = layer("orthogonal").weight.detach().double()
    assert torch.allclose(w @ w.T, torch.eye(FAN_OUT, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("name", list(INITS))
def test_inits_same_generator_seed_same_weights(name: str) -> None:
    assert torch.equal(layer(name, seed=5).weight, layer(name, seed=5).weight)


def test_inits_scaled_normal_draws_sigma_w_over_root_fan_in_and_sigma_b() -> None:
    lin = nn.Linear(FAN_IN, FAN_OUT)
    INITS["scaled_normal"](lin, InitParams(gain=1.5, bias_std=0.3), torch.Generator())
    assert float(lin.weight.detach().std()) == pytest.approx(1.5 / math.sqrt(FAN_IN), rel=0.02)
    assert float(lin.bias.detach().std()) == pytest.approx(0.3, rel=0.1)
    INITS["scaled_normal"](lin, InitParams(gain=1.5, bias_std=0.0), torch.Generator())
    assert torch.count_nonzero(lin.bias) == 0


@pytest.mark.parametrize("name", list(INITS))
@pytest.mark.parametrize(("fan_in", "fan_out"), [(400, 300), (50, 600)])
def test_inits_declared_variances_are_what_the_scheme_draws(
    name: str, fan_in: int, fan_out: int
) -> None:
    """The variance per entry each scheme states (the theory's input) against the layer it
    initialises, for wide and tall layers alike (orthogonal: unit rows or unit columns)."""
    torch.manual_seed(0)
    lin = nn.Linear(fan_in, fan_out)
    params = InitParams(std=0.2, gain=1.3, bias_std=0.4)
    INITS[name](lin, params, torch.Generator().manual_seed(1))
    weight_var, bias_var = INITS[name].variances(fan_in, fan_out, params)
    assert float(lin.weight.detach().var()) == pytest.approx(weight_var, rel=0.03)
    assert float(lin.bias.detach().var()) == pytest.approx(bias_var, rel=0.25, abs=1e-12)
