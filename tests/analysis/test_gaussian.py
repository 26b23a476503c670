"""Gaussian moments of every activation, held to a brute-force reference: a midpoint rule on a
fine grid (no node at the kinks), and the engine's own torch modules for phi and phi'."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from depthscope.analysis.gaussian import ACTIVATIONS, PRELU_INIT, expect
from depthscope.engine.activations import ACTIVATIONS as ENGINE

NAMES = list(ACTIVATIONS)
Q = [1e-3, 0.3, 0.5, 0.51, 30.0, 1e4]  # both sides of the switch between the two rules


def grid(q: float) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint-rule nodes and weights for E[f(u)], u ~ N(0, q): |u| <= 14 sqrt(q) in 400k cells
    (zero is a cell boundary, so a kink there costs no accuracy)."""
    n, half = 400_000, 14 * math.sqrt(q)
    h = 2 * half / n
    u = -half + h * (np.arange(n) + 0.5)
    return u, np.exp(-0.5 * u * u / q) / math.sqrt(2 * math.pi * q) * h


def test_gaussian_registry_covers_every_engine_activation() -> None:
    assert list(ACTIVATIONS) == list(ENGINE)


@pytest.mark.parametrize("name", NAMES)
def test_gaussian_phi_and_slope_are_the_engine_modules(name: str) -> None:
    u = torch.linspace(-12, 12, 4001, dtype=torch.float64)
    module = ENGINE[name].make().double()
    with torch.no_grad():
        phi = module(u).numpy()
        slope = ENGINE[name].derivative(u.unsqueeze(0), [module]).squeeze(0).numpy()
    act = ACTIVATIONS[name]
    assert np.allclose(act.phi(u.numpy()), phi, rtol=1e-12, atol=1e-12)
    # (the engine builds some slopes from float32 constants)
    assert np.allclose(act.dphi(u.numpy()), slope, rtol=1e-7, atol=1e-12)


def test_gaussian_prelu_starts_at_the_modules_slope() -> None:
    assert float(ENGINE["prelu"].make().weight.detach()) == PRELU_INIT


@pytest.mark.parametrize("name", NAMES)
def test_gaussian_moments_match_brute_force(name: str) -> None:
    act = ACTIVATIONS[name]
    for q in Q:
        u, weights = grid(q)
        phi, slope = act.phi(u), act.dphi(u)
        for p in (1, 2, 4):
            got = float(act.moment(p, np.array([q]))[0])
            assert got == pytest.approx(float(weights @ phi**p), rel=1e-6, abs=1e-12), (p, q)
        for p in (2, 4):
            got = float(act.slope_moment(p, np.array([q]))[0])
            assert got == pytest.approx(float(weights @ slope**p), rel=1e-6, abs=1e-12), (p, q)


def test_gaussian_expect_is_exact_for_polynomials_at_every_width() -> None:
    # E[u^2] = q and E[u^4] = 3 q^2, on both sides of the switch between the two rules
    q = np.array([1e-4, 0.5, 0.6, 10.0, 1e6])
    assert np.allclose(expect(lambda u: u**2, q), q, rtol=1e-10)
    assert np.allclose(expect(lambda u: u**4, q), 3 * q**2, rtol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_gaussian_log_slope_matches_a_finite_difference(name: str) -> None:
    act = ACTIVATIONS[name]
    for q in (0.2, 3.0):
        h = 1e-3
        up = float(act.moment(2, np.array([q * (1 + h)]))[0])
        down = float(act.moment(2, np.array([q * (1 - h)]))[0])
        want = (math.log(up) - math.log(down)) / (math.log(1 + h) - math.log(1 - h))
        assert float(act.log_slope(np.array([q]))[0]) == pytest.approx(want, rel=1e-5)
