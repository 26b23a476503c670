"""Initialisation schemes: the weight scale each paper prescribes, zero biases for every named
scheme, PyTorch's own init untouched for pytorch_default."""

from __future__ import annotations

import math

import pytest
import torch
from depthscope.engine.inits import INITS
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
    INITS[name](lin, 0.1, torch.Generator().manual_seed(seed))
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
