"""Activation registry: each derivative and its maximum against autograd, and the probe's fast
health masks (healthy = |f'| at least 5% of max, active = f' != 0) against the derivative."""

from __future__ import annotations

import pytest
import torch
from depthscope.engine.activations import ACTIVATIONS, NORMS, SATURATION_FRACTION
from torch import nn

NAMES = list(ACTIVATIONS)


def inputs() -> torch.Tensor:
    """[layers=2, batch=64, units=8], spanning the saturated tails and zero itself."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 64, 8, generator=g) * 4
    u[0, 0, :] = 0.0
    return u


def modules(name: str) -> list[nn.Module]:
    return [ACTIVATIONS[name].make() for _ in range(2)]


def autograd_derivative(mods: list[nn.Module], u: torch.Tensor) -> torch.Tensor:
    out = []
    for m, layer in zip(mods, u, strict=True):
        x = layer.clone().requires_grad_(True)
        (d,) = torch.autograd.grad(m(x).sum(), x)
        out.append(d)
    return torch.stack(out)


@pytest.mark.parametrize("name", NAMES)
def test_layers_derivative_matches_autograd(name: str) -> None:
    mods, u = modules(name), inputs()
    spec = ACTIVATIONS[name]
    with torch.no_grad():
        got = spec.derivative(u, mods)
    assert torch.allclose(got, autograd_derivative(mods, u), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_layers_max_derivative_matches_autograd_on_a_grid(name: str) -> None:
    mods = modules(name)[:1]
    grid = torch.linspace(-10, 10, 200_001, dtype=torch.float64).reshape(1, -1)
    mods = [m.double() for m in mods]
    top = float(autograd_derivative(mods, grid).abs().max())
    assert ACTIVATIONS[name].max_derivative(mods) == pytest.approx(top, rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_layers_health_masks_agree_with_derivative(name: str) -> None:
    mods, u = modules(name), inputs()
    spec = ACTIVATIONS[name]
    with torch.no_grad():
        health = spec.health(u, mods, torch.empty_like(u))
    # float64 reference: f' is exactly zero only where the maths says so (float32 tanh and GELU
    # underflow to 0 in their far tails; the probe calls those saturated, not dead)
    d = autograd_derivative([m.double() for m in mods], u.double()).abs()
    top = spec.max_derivative(mods)
    expected_healthy = (d >= SATURATION_FRACTION * top).float()
    healthy = torch.ones_like(u) if health.healthy is None else health.healthy
    assert torch.equal(healthy, expected_healthy)
    active = torch.ones_like(u) if health.active is None else health.active
    assert torch.equal(active, (d != 0).float())


def test_layers_prelu_health_follows_the_learned_slope() -> None:
    mods, u = modules("prelu"), inputs()
    with torch.no_grad():
        mods[0].weight.fill_(0.0)  # dead below zero
        mods[1].weight.fill_(-0.5)  # healthy below zero (|f'| = 0.5)
        health = ACTIVATIONS["prelu"].health(u, mods, torch.empty_like(u))
    assert health.active is not None and health.healthy is not None
    assert torch.equal(health.active[0], (u[0] > 0).float())
    assert torch.equal(health.healthy[1], torch.ones_like(u[1]))


def test_layers_sigmoid_bound_is_where_derivative_is_five_percent_of_max() -> None:
    from depthscope.engine.activations import SIGMOID_BOUND, TANH_BOUND

    s = torch.sigmoid(torch.tensor(SIGMOID_BOUND, dtype=torch.float64))
    assert float(s * (1 - s)) == pytest.approx(0.25 * SATURATION_FRACTION, rel=1e-9)
    t = torch.tanh(torch.tensor(TANH_BOUND, dtype=torch.float64))
    assert float(1 - t**2) == pytest.approx(SATURATION_FRACTION, rel=1e-9)


@pytest.mark.parametrize("name", list(NORMS))
def test_layers_norms_keep_the_shape(name: str) -> None:
    x = torch.randn(16, 8)
    assert NORMS[name](8)(x).shape == x.shape
