"""Jacobian spectra held to autograd (the Jacobian itself) and to the facts of dynamical
isometry: an orthogonal linear net is an exact isometry; Gaussian weights of variance 1/fan_in
give squared singular values of mean 1 and variance about the number of layers (Saxe et al.
2014, Pennington et al. 2017); orthogonal tanh near the critical line stays far narrower."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from depthscope.analysis.predict import LayerInit
from depthscope.analysis.spectrum import (
    MAX_SPECTRUM_WORK,
    _after_first_block,
    singular_values,
    spectrum_skip_reason,
    spectrum_theory,
)
from depthscope.engine.config import ModelConfig
from depthscope.engine.model import DeepNet, Taps, build_model


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, as a run's worker uses: on a busy machine more only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def net(width: int = 128, **model: Any) -> DeepNet:
    return build_model(ModelConfig.model_validate({"width": width, **model}), width, 2, seed=0)


def inputs(width: int, n: int = 4) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(1))


def squared(model: DeepNet, width: int) -> np.ndarray:
    values = singular_values(model, inputs(width))
    assert values is not None
    return np.array(values) ** 2


def autograd_jacobian(model: DeepNet, x: torch.Tensor) -> torch.Tensor:
    """dh_D/dh_1 by torch.autograd.functional.jacobian through the model's own forward (its
    skips included), with block 1's output replaced by the variable."""
    model.eval()
    parts = model._parts

    def tail(h1: torch.Tensor) -> torch.Tensor:
        model._parts = ((_Const(h1), None, None, None), *parts[1:])
        taps = Taps()
        try:
            model._forward_with_taps_or_skips(x.unsqueeze(0), taps)
        finally:
            model._parts = parts
        return taps.h[-1].squeeze(0)

    h1 = model.blocks[0](x.unsqueeze(0)).squeeze(0).detach()
    jac: torch.Tensor = torch.autograd.functional.jacobian(tail, h1)
    return jac


class _Const(torch.nn.Module):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, _x: torch.Tensor) -> torch.Tensor:
        return self.value.unsqueeze(0)


@pytest.mark.parametrize(
    "model",
    [
        {"activation": "tanh"},
        {"activation": "prelu", "residual_every": 2},
        {"activation": "selu", "norm": "layernorm"},
        {"activation": "gelu", "norm": "layernorm", "norm_position": "post_activation"},
        {"activation": "sigmoid", "norm": "batchnorm", "residual_every": 1},
    ],
)
def test_spectrum_jacobian_matches_autograd(model: dict[str, Any]) -> None:
    m = net(16, depth=5, **model)
    with torch.no_grad():  # move batch norm's running statistics off zero and one
        for block in m.block_list:
            for norm in (block.pre_norm, block.post_norm):  # the one that is there
                if isinstance(norm, torch.nn.BatchNorm1d):
                    norm.running_mean.uniform_(-0.5, 0.5)
                    norm.running_var.uniform_(0.5, 2.0)
    x = inputs(16, 2)
    m.eval()
    with torch.no_grad():
        ours = _after_first_block(m, m.blocks[0](x))
    for i in range(2):
        assert torch.allclose(ours[i], autograd_jacobian(m, x[i]), atol=1e-5, rtol=1e-4)


def test_spectrum_linear_orthogonal_net_is_an_exact_isometry() -> None:
    values = singular_values(net(64, depth=12, activation="linear", init="orthogonal"), inputs(64))
    assert values is not None and len(values) == 4 * 64
    assert np.allclose(values, 1.0, atol=1e-5)


def test_spectrum_linear_gaussian_net_spreads_as_the_number_of_layers() -> None:
    depth, width = 9, 256
    lam = squared(net(width, depth=depth, activation="linear", init="lecun_normal"), width)
    layers = depth - 1
    assert lam.mean() == pytest.approx(1.0, rel=0.1)
    assert lam.var() == pytest.approx(layers, rel=0.2)
    theory = spectrum_theory("linear", [LayerInit(1 / width, 0, width, width)] * depth)
    assert theory.mean == pytest.approx(1.0) and theory.variance == pytest.approx(layers)


def test_spectrum_orthogonal_tanh_near_critical_is_far_narrower_than_gaussian() -> None:
    depth, width = 24, 128
    orthogonal = squared(net(width, depth=depth, activation="tanh", init="orthogonal"), width)
    gaussian = squared(net(width, depth=depth, activation="tanh", init="lecun_normal"), width)
    spread = lambda lam: lam.var() / lam.mean() ** 2  # noqa: E731
    assert spread(orthogonal) < spread(gaussian) / 10
    theory = [
        spectrum_theory("tanh", [LayerInit(1 / width, 0, width, width, orth)] * depth)
        for orth in (True, False)
    ]
    assert theory[0].variance is not None and theory[1].variance is not None
    assert theory[0].variance < theory[1].variance / 10


def test_spectrum_theory_adds_one_per_gaussian_layer_for_relu() -> None:
    """ReLU: mu_2 / mu_1^2 = 2 for D^2 (half the units pass), plus 1 for W^T W each."""
    theory = spectrum_theory("relu", [LayerInit(2 / 64, 0, 64, 64)] * 6)
    assert theory.mean == pytest.approx(1.0) and theory.variance == pytest.approx(2 * 5)
    assert theory.layers == 5


def test_spectrum_is_none_for_a_non_finite_network() -> None:
    m = net(8, depth=3)
    with torch.no_grad():
        m.block_list[1].linear.weight.fill_(float("inf"))
    assert singular_values(m, inputs(8)) is None


def test_spectrum_leaves_the_model_in_training_mode() -> None:
    m = net(8, depth=3, norm="batchnorm")
    singular_values(m, inputs(8))
    assert m.training


def test_spectrum_skip_reasons_name_the_size() -> None:
    assert spectrum_skip_reason(1, 64) is not None
    assert spectrum_skip_reason(30, 256) is None  # 4 x 29 x 256^3 = 1.9e9
    reason = spectrum_skip_reason(100, 1024)
    assert reason is not None and f"{MAX_SPECTRUM_WORK:.3g}" in reason and "1024^3" in reason
