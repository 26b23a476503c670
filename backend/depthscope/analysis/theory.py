"""Mean-field signal propagation at initialization (Poole et al. 2016; Schoenholz et al. 2017):
the q map, its fixed point q*, chi_1, the depth scales, the phase and the critical line.

A network with weights W ~ (0, sigma_w^2 / fan_in) and biases of variance sigma_b^2 maps the
pre-activation variance of one layer to the next by the q map
    q_l = sigma_w^2 E[phi(sqrt(q_{l-1}) z)^2] + sigma_b^2,
and multiplies the squared backpropagated signal by sigma_w^2 E[phi'(sqrt(q_l) z)^2] per
layer, chi_1 at the fixed point. Inputs have unit variance (depthscope standardizes every
feature), so q_1 = sigma_w^2 + sigma_b^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from depthscope.analysis.gaussian import ACTIVATIONS, Activation, Array, PiecewiseLinear

Phase = Literal["ordered", "critical", "chaotic"]

MAX_Q = 1e12  # a q map that passes this from a unit-variance input has no fixed point
HUGE = 1e300  # q values beyond this are reported as null
# |ln chi_1| below this counts as critical: a depth scale beyond 1000 layers.
CRITICAL_TOL = 1e-3
_Q_GRID = np.logspace(-10, 8, 73)  # where the critical line's fixed point is searched


def activation(name: str) -> Activation:
    """The Gaussian moments of a registered activation; ValueError naming the choices."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        choices = ", ".join(ACTIVATIONS)
        raise ValueError(f"unknown activation {name!r}; choose one of: {choices}") from None


def _scalar(values: Any) -> float:
    return float(np.asarray(values).reshape(-1)[0])


def q_map(act: Activation, sigma_w2: float, sigma_b2: float, q: float) -> float:
    """The next layer's pre-activation variance."""
    with np.errstate(over="ignore", invalid="ignore"):
        return sigma_w2 * _scalar(act.moment(2, np.array([q]))) + sigma_b2


def _root(f: Callable[[float], float], lo: float, hi: float, rel: float = 1e-13) -> float:
    """A root of f between lo (f >= 0) and hi (f < 0): regula falsi with the Illinois
    modification (the bracket always shrinks, usually within ten evaluations)."""
    f_lo, f_hi = f(lo), f(hi)
    if f_lo == 0:
        return lo
    side, x = 0, lo
    for _ in range(200):
        previous = x
        x = hi - f_hi * (hi - lo) / (f_hi - f_lo)
        if not lo < x < hi:
            x = (lo + hi) / 2
        fx = f(x)
        if fx >= 0:
            lo, f_lo = x, fx
            f_hi = f_hi / 2 if side == 1 else f_hi
            side = 1
        else:
            hi, f_hi = x, fx
            f_lo = f_lo / 2 if side == -1 else f_lo
            side = -1
        if fx == 0 or abs(x - previous) <= rel * abs(x) or hi - lo <= rel * hi:
            break
    return x


def fixed_points(act: Activation, sigma_w2: Array, sigma_b2: Array, q0: Array) -> Array:
    """The fixed point q* the q map reaches from q0, for many (sigma_w^2, sigma_b^2, q0) at
    once; NaN where the signal diverges.

    The map increases with q, so the iterates move monotonically to the nearest fixed point
    in their direction: bisection between q0 and that side finds it without iterating the
    map (from [0, q0] downwards; from q0 upwards, doubling until the map falls below q)."""
    sw2, sb2, q0 = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (sigma_w2, sigma_b2, q0))
    )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if isinstance(act, PiecewiseLinear):
            gain = sw2 * act.slope_moment(2, np.ones(sw2.shape))
            neutral = np.isclose(gain, 1.0, rtol=1e-12, atol=0) & (sb2 == 0)
            settled = np.where(gain < 1, sb2 / (1 - gain), np.nan)
            return np.asarray(np.where(neutral, q0, settled))  # neutral: q keeps its scale

        def excess(q: Array) -> Array:
            return np.asarray(sw2 * act.moment(2, np.minimum(q, HUGE)) + sb2 - q)

        up = excess(q0) > 0
        lo, hi = np.where(up, q0, 0.0), np.where(up, np.maximum(2 * q0, 1.0), q0)
        growing = up.copy()
        while growing.any():
            growing &= excess(hi) >= 0
            lo, hi = np.where(growing, hi, lo), np.where(growing, 2 * hi, hi)
            growing &= hi <= MAX_Q
        for _ in range(110):  # from a factor-2 bracket to 1e-13, or from [0, q0] to zero
            mid = (lo + hi) / 2
            below = excess(mid) >= 0
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
            if np.all((hi - lo <= 1e-13 * hi) | (hi < 1e-14)):  # converged, or going to zero
                break
        root = np.where(excess(q0) == 0, q0, (lo + hi) / 2)
        root = np.where(root < 1e-14, 0.0, root)
        return np.asarray(np.where(hi > MAX_Q, np.nan, root))


def fixed_point(act: Activation, sigma_w2: float, sigma_b2: float, q0: float) -> float | None:
    """fixed_points for one (sigma_w^2, sigma_b^2, q0); None where the signal diverges."""
    root = _scalar(fixed_points(act, np.array([sigma_w2]), np.array([sigma_b2]), np.array([q0])))
    return None if math.isnan(root) else root


def chi1(act: Activation, sigma_w2: float, q_star: float | None) -> float | None:
    """sigma_w^2 E[phi'(sqrt(q*) z)^2]: the backward gain per layer at the fixed point (the
    ReLU family's does not depend on q, so it exists even where q* does not)."""
    if isinstance(act, PiecewiseLinear):
        return sigma_w2 * _scalar(act.slope_moment(2, np.array([1.0])))
    if q_star is None:
        return None
    return sigma_w2 * _scalar(act.slope_moment(2, np.array([q_star])))


def q_slope(act: Activation, sigma_w2: float, q: float) -> float:
    """d q_l / d q_{l-1} at q: below 1, q converges to q* over a depth -1 / ln(slope)."""
    q = max(q, 1e-12)
    m2 = _scalar(act.moment(2, np.array([q])))
    return sigma_w2 * m2 * _scalar(act.log_slope(np.array([q]))) / q


def depth_scale(rate: float | None) -> float | None:
    """-1 / ln(rate) for a contraction rate in (0, 1); None otherwise (no finite scale)."""
    if rate is None or not 0 < rate < 1:
        return None
    return -1 / math.log(rate)


def phase(chi: float | None) -> Phase | None:
    if chi is None or not math.isfinite(chi):
        return None
    if chi <= 0:  # a vanishing sigma_w^2: every signal dies at once
        return "ordered"
    if abs(math.log(chi)) < CRITICAL_TOL:
        return "critical"
    return "ordered" if chi < 1 else "chaotic"


@dataclass(frozen=True)
class Critical:
    """A point of the critical line (chi_1 = 1) and its fixed point."""

    sigma_w2: float
    q_star: float | None  # None for the ReLU family, whose chi_1 does not depend on q


def critical_point(name: str, sigma_b2: float) -> Critical | None:
    """The critical sigma_w^2 for `sigma_b2`, or None if chi_1 = 1 is out of reach.

    On the line q* and sigma_w^2 satisfy sigma_w^2 = 1 / E[phi'(sqrt(q*) z)^2] and
    sigma_b^2 = q* - sigma_w^2 E[phi(sqrt(q*) z)^2], so the line is parametrised by q* and
    only a one-dimensional root in q* is needed: the smallest whose fixed point attracts (a
    repelling one is never reached, and the signal there grows or shrinks away from it)."""
    act = activation(name)
    if isinstance(act, PiecewiseLinear):
        return Critical(1 / _scalar(act.slope_moment(2, np.array([1.0]))), None)
    zero = np.zeros(1)
    if sigma_b2 == 0 and _scalar(act.moment(2, zero)) == 0:
        return Critical(1 / _scalar(act.slope_moment(2, zero)), 0.0)  # the line ends at q* = 0

    def excess(q: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        return np.asarray(q - act.moment(2, q) / act.slope_moment(2, q) - sigma_b2)

    values = excess(_Q_GRID)
    if values[0] >= 0:
        return None
    for i in np.nonzero((values[1:] >= 0) & (values[:-1] < 0))[0] + 1:
        # the sign flipped for _root's convention (f(lo) >= 0)
        lo, hi = float(_Q_GRID[i - 1]), float(_Q_GRID[i])
        q = _root(lambda x: -_scalar(excess(np.array([x]))), lo, hi)
        sigma_w2 = 1 / _scalar(act.slope_moment(2, np.array([q])))
        if q_slope(act, sigma_w2, q) < 1:  # an attracting fixed point: the signal settles there
            return Critical(sigma_w2, q)
    return None


def q_profile(act: Activation, sigma_w2: float, sigma_b2: float, depth: int) -> list[float | None]:
    """q_1 .. q_depth from unit-variance inputs; None once the signal has overflowed."""
    q = sigma_w2 + sigma_b2
    out: list[float | None] = []
    for _ in range(depth):
        if not math.isfinite(q) or q > HUGE:
            out += [None] * (depth - len(out))
            break
        out.append(q)
        q = q_map(act, sigma_w2, sigma_b2, q)
    return out


@dataclass(frozen=True)
class MeanField:
    """What the theory says for one (activation, sigma_w^2, sigma_b^2, depth); None where a
    value does not exist (no fixed point, no finite depth scale, no critical point)."""

    activation: str
    sigma_w2: float
    sigma_b2: float
    depth: int
    q: list[float | None]
    q_star: float | None
    chi1: float | None
    xi_q: float | None
    xi_c: float | None
    phase: Phase | None
    critical_sigma_w2: float | None

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


def mean_field(name: str, sigma_w2: float, sigma_b2: float, depth: int) -> MeanField:
    """The mean-field summary: xi_c = -1/ln chi_1 (ordered phase; the correlation depth),
    xi_q = -1/ln(slope of the q map at q*) (how fast the variance settles)."""
    act = activation(name)
    q_star = fixed_point(act, sigma_w2, sigma_b2, sigma_w2 + sigma_b2)
    chi = chi1(act, sigma_w2, q_star)
    xi_q = None if q_star is None else depth_scale(q_slope(act, sigma_w2, q_star))
    critical = critical_point(name, sigma_b2)
    return MeanField(
        activation=name,
        sigma_w2=sigma_w2,
        sigma_b2=sigma_b2,
        depth=depth,
        q=q_profile(act, sigma_w2, sigma_b2, depth),
        q_star=q_star,
        chi1=chi,
        xi_q=xi_q,
        xi_c=depth_scale(chi),
        phase=phase(chi),
        critical_sigma_w2=None if critical is None else critical.sigma_w2,
    )
