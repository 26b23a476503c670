"""Gaussian moments of each activation, E[f(sqrt(q) z)] for z ~ N(0, 1): the numbers the
mean-field theory is made of.

Smooth activations are integrated numerically: Gauss-Hermite quadrature for narrow Gaussians
(q <= GH_MAX_Q) and, for wider ones, whose Hermite nodes would step over the activation's
curved core, Gauss-Legendre in u = sqrt(q) z over the core |u| <= CORE and the two tails. The ReLU
family (piecewise linear) and the ELU family have closed forms, used instead: quadrature
converges slowly across a kink. Everything is vectorised over q.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import torch
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss

from depthscope.engine.activations import ELU_ALPHA, LEAKY_SLOPE, SELU_ALPHA, SELU_SCALE

Array = npt.NDArray[np.float64]
Fn = Callable[[Array], Array]

PRELU_INIT = 0.25  # nn.PReLU's slope before training (the registry builds it with init=0.25)
GH_NODES = 96
GH_MAX_Q = 0.5  # Gauss-Hermite within 1e-10 up to here; the wide rule beyond
CORE = 10.0  # |u| beyond which every smooth activation here is flat or linear to 1e-8
TAILS = 12.0  # the wide rule integrates |u| <= TAILS * sqrt(q)
_Z, _WZ = hermegauss(GH_NODES)
_WZ = _WZ / math.sqrt(2 * math.pi)
_X, _WX = leggauss(128)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def expect(f: Fn, q: Array) -> Array:
    """E[f(sqrt(q) z)] for each entry of q (q >= 0)."""
    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    out = np.empty(q.shape)
    narrow = q <= GH_MAX_Q
    if narrow.any():
        out[narrow] = f(np.sqrt(q[narrow])[:, None] * _Z) @ _WZ
    if (~narrow).any():
        out[~narrow] = _wide(f, q[~narrow])
    return out


def _wide(f: Fn, q: Array) -> Array:
    s = np.sqrt(q)[:, None]
    core = np.full_like(s, CORE)
    total = np.zeros(q.shape)
    for lo, hi in ((-TAILS * s, -core), (-core, core), (core, TAILS * s)):
        half = (hi - lo) / 2
        u = (hi + lo) / 2 + half * _X
        density = np.exp(-(u * u) / (2 * s * s)) * (_INV_SQRT_2PI / s)
        total += (f(u) * density * half) @ _WX
    return total


def _erfcx(x: float) -> float:
    """exp(x^2) erfc(x) for x >= 0, without overflow (asymptotic series beyond 10)."""
    if x < 10:
        return math.exp(x * x) * math.erfc(x)
    inv = 1 / (2 * x * x)
    series = 1 - inv + 3 * inv**2 - 15 * inv**3 + 105 * inv**4
    return series / (x * math.sqrt(math.pi))


def _exp_tail(s: Array) -> Array:
    """E[exp(s z) 1{z < 0}] = exp(s^2 / 2) Phi(-s), for s >= 0."""
    return np.array([0.5 * _erfcx(v / math.sqrt(2)) for v in s.ravel()]).reshape(s.shape)


def _tanh_half(u: Array) -> Array:
    return np.tanh(u / 2)


class Activation:
    """An activation's Gaussian moments. The base class integrates `phi` and `dphi`
    numerically; subclasses with closed forms override the moments."""

    def __init__(self, phi: Fn, dphi: Fn) -> None:
        self.phi = phi
        self.dphi = dphi

    def moment(self, p: int, q: Array) -> Array:
        """E[phi(sqrt(q) z)^p]."""
        return expect(lambda u: self.phi(u) ** p, q)

    def slope_moment(self, p: int, q: Array) -> Array:
        """E[phi'(sqrt(q) z)^p]."""
        return expect(lambda u: self.dphi(u) ** p, q)

    def log_slope(self, q: Array) -> Array:
        """d ln E[phi^2] / d ln q: how a relative change of q passes through one layer."""
        q = np.maximum(np.atleast_1d(np.asarray(q, dtype=np.float64)), 1e-12)
        h = 1e-4
        up, down = self.moment(2, q * math.exp(h)), self.moment(2, q * math.exp(-h))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray((np.log(up) - np.log(down)) / (2 * h))


class PiecewiseLinear(Activation):
    """phi(u) = u above zero, `slope` * u below (ReLU: 0, leaky ReLU, PReLU, linear: 1)."""

    def __init__(self, slope: float) -> None:
        a = slope
        super().__init__(lambda u: np.where(u > 0, u, a * u), lambda u: np.where(u > 0, 1.0, a))
        self.slope = slope

    def moment(self, p: int, q: Array) -> Array:
        q = np.asarray(q, dtype=np.float64)
        half_moment = {1: _INV_SQRT_2PI, 2: 0.5, 4: 1.5}[p]  # E[z^p 1{z > 0}]
        return np.asarray(q ** (p / 2) * half_moment * (1 + (-self.slope) ** p))

    def slope_moment(self, p: int, q: Array) -> Array:
        return np.full(np.shape(q), (1 + self.slope**p) / 2)

    def log_slope(self, q: Array) -> Array:
        return np.ones(np.shape(q))


class ExpLinear(Activation):
    """phi(u) = scale * u above zero, scale * alpha * (exp(u) - 1) below (ELU, SELU)."""

    def __init__(self, scale: float, alpha: float) -> None:
        lam, a = scale, alpha
        super().__init__(
            lambda u: lam * np.where(u > 0, u, a * np.expm1(np.minimum(u, 0))),
            lambda u: lam * np.where(u > 0, 1.0, a * np.exp(np.minimum(u, 0))),
        )
        self.scale, self.alpha = scale, alpha

    def moment(self, p: int, q: Array) -> Array:
        s = np.sqrt(np.asarray(q, dtype=np.float64))
        positive = s**p * {1: _INV_SQRT_2PI, 2: 0.5, 4: 1.5}[p]
        # E[(exp(u) - 1)^p 1{z < 0}], expanded binomially
        negative = sum(math.comb(p, k) * (-1) ** (p - k) * _exp_tail(k * s) for k in range(p + 1))
        return np.asarray(self.scale**p * (positive + self.alpha**p * negative))

    def slope_moment(self, p: int, q: Array) -> Array:
        s = np.sqrt(np.asarray(q, dtype=np.float64))
        return np.asarray(self.scale**p * (0.5 + self.alpha**p * _exp_tail(p * s)))


def _gaussian_cdf(u: Array) -> Array:
    """Phi(u) in float64 (numpy has no erf; torch's is vectorised C)."""
    scaled = torch.from_numpy(np.ascontiguousarray(-u / math.sqrt(2), dtype=np.float64))
    return np.asarray(0.5 * torch.special.erfc(scaled).numpy())


def _gelu(u: Array) -> Array:
    return u * _gaussian_cdf(u)


def _gelu_d(u: Array) -> Array:
    return _gaussian_cdf(u) + u * np.exp(-0.5 * u * u) * _INV_SQRT_2PI


def _sigmoid(u: Array) -> Array:
    return 0.5 * (1 + _tanh_half(u))  # no overflow for large |u|


def _silu_d(u: Array) -> Array:
    s = _sigmoid(u)
    return s * (1 + u * (1 - s))


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(_sigmoid, lambda u: 0.25 * (1 - _tanh_half(u) ** 2)),
    "tanh": Activation(np.tanh, lambda u: 1 - np.tanh(u) ** 2),
    "relu": PiecewiseLinear(0.0),
    "leaky_relu": PiecewiseLinear(LEAKY_SLOPE),
    "prelu": PiecewiseLinear(PRELU_INIT),
    "elu": ExpLinear(1.0, ELU_ALPHA),
    "gelu": Activation(_gelu, _gelu_d),
    "selu": ExpLinear(SELU_SCALE, SELU_ALPHA),
    "silu": Activation(lambda u: u * _sigmoid(u), _silu_d),
    "linear": PiecewiseLinear(1.0),
}
