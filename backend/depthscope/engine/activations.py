"""Registries of the building blocks a network is made of: activations and normalizations.

Each activation knows its own derivative and, from it, which inputs leave the gradient healthy
(|f'(u)| at least 5% of its maximum) and which pass no gradient at all (f'(u) = 0), so the probe
measures saturation and dead units from the activation inputs it already holds, without a
second backward pass. Most activations answer with a comparison against a constant, found in
closed form here, instead of evaluating f' elementwise. That answer is a HealthRule, data that
the tensor-op path and the C kernels both apply.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

Derivative = Callable[[Tensor, Sequence[nn.Module]], Tensor]

# |f'(u)| below this fraction of max |f'| counts as saturated.
SATURATION_FRACTION = 0.05
# The kinds of HealthRule; the C kernels export theirs and the probe checks the two agree.
RULE_KINDS = ("within", "above", "relu", "prelu", "gelu", "silu")


@dataclass(frozen=True)
class Health:
    """Float masks over stacked activation inputs: `healthy` is 1.0 where |f'(u)| is at least
    SATURATION_FRACTION of its maximum (None: everywhere), `active` is 1.0 where f'(u) != 0
    (None: f' is never zero). The two may be the same tensor (ReLU)."""

    healthy: Tensor | None
    active: Tensor | None


@dataclass(frozen=True)
class HealthRule:
    """Which activation inputs u leave the gradient healthy (|f'(u)| at least
    SATURATION_FRACTION of its maximum) and which pass none (f'(u) = 0), as data: applied
    with tensor ops by `ActivationSpec.health` and in C by the probe's kernels (kernels.c,
    `health_of`), so the two cannot drift apart. Kinds: "within" (healthy where
    |u| <= param; f' never zero), "above" (healthy where u > param; f' never zero), "relu"
    (healthy and active where u > 0), "prelu" (1 above zero, the layer's learned slope below;
    param: the fraction), "gelu" and "silu" (healthy where |f'(u)| >= param, f' evaluated)."""

    kind: str
    param: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise ValueError(f"unknown health rule kind {self.kind!r}: one of {RULE_KINDS}")

    @property
    def can_die(self) -> bool:
        """Whether f' can be zero over a whole range (ReLU, PReLU): units can be dead."""
        return self.kind in ("relu", "prelu")

    @property
    def one_mask(self) -> bool:
        """Whether the healthy mask is also the active one (ReLU: f' is 1 or 0)."""
        return self.kind == "relu"


@dataclass(frozen=True)
class ActivationSpec:
    """How to build an activation, differentiate it, and classify its inputs.

    `derivative(u, modules)` and `health(u, modules, out)` take the activation inputs of
    several layers stacked on dim 0 (shape [layers, batch, units]) and the activation modules
    of those layers, in order. `health` applies `rule` (None: healthy everywhere), which must
    agree with `derivative`: it is the probe's fast path."""

    make: Callable[[], nn.Module]
    derivative: Derivative
    max_derivative: Callable[[Sequence[nn.Module]], float]
    rule: HealthRule | None

    def health(self, u: Tensor, modules: Sequence[nn.Module], out: Tensor) -> Health:
        """The rule's masks over u, as floats (on the CPU a float-valued comparison is several
        times faster than one that makes a bool tensor and converts it); the first mask is
        written into `out`, a scratch tensor shaped like u, to spare an allocation."""
        rule = self.rule
        if rule is None:
            return Health(None, None)
        if rule.kind == "within":
            torch.abs(u, out=out)
            return Health(torch.le(out, rule.param, out=out), None)
        if rule.kind == "above":
            return Health(torch.gt(u, rule.param, out=out), None)
        if rule.kind == "relu":  # f' is 1 or 0: one mask answers both questions
            mask = torch.gt(u, 0.0, out=out)
            return Health(mask, mask)
        if rule.kind == "prelu":
            return _prelu_health(u, modules, out, rule.param)
        derivative = self.derivative(u, modules).abs_()  # f' dips below zero: evaluate it
        return Health(torch.ge(derivative, rule.param, out=out), None)


def _const(value: float) -> Callable[[Sequence[nn.Module]], float]:
    return lambda _modules: value


def _sigmoid_d(u: Tensor, _m: Sequence[nn.Module]) -> Tensor:
    s = torch.sigmoid(u)
    return s * (1 - s)


def _tanh_d(u: Tensor, _m: Sequence[nn.Module]) -> Tensor:
    return 1 - torch.tanh(u).square()


def _relu_d(u: Tensor, _m: Sequence[nn.Module]) -> Tensor:
    return (u > 0).to(u.dtype)


LEAKY_SLOPE = 0.01
ELU_ALPHA = 1.0
SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


def _leaky_d(u: Tensor, _m: Sequence[nn.Module]) -> Tensor:
    return torch.where(u > 0, 1.0, LEAKY_SLOPE).to(u.dtype)


def _slope(module: nn.Module) -> Tensor:
    weight = module.get_parameter("weight")
    return weight.detach().reshape(())


def _prelu_slopes(modules: Sequence[nn.Module], like: Tensor) -> Tensor:
    slopes = torch.stack([_slope(m) for m in modules])
    return slopes.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _prelu_d(u: Tensor, modules: Sequence[nn.Module]) -> Tensor:
    return torch.where(u > 0, torch.ones((), dtype=u.dtype), _prelu_slopes(modules, u))


def _prelu_max(modules: Sequence[nn.Module]) -> float:
    slopes = [abs(float(_slope(m))) for m in modules]
    return max([1.0, *slopes])


def _elu_d(u: Tensor, _m: Sequence[nn.Module]) -> Tensor:
    return torch.where(u > 0, torch.ones((), dtype=u.dtype), ELU_ALPHA * torch.exp(u.clamp(max=0)))


def _gelu_d(u: Tensor, _m: Sequence[nn.Module]) -> Tensor:
    cdf = 0.5 * (1 + torch.erf(u * (1 / math.sqrt(2))))
    pdf = torch.exp(-0.5 * u.square()) * (1 / math.sqrt(2 * math.pi))
    return cdf + u * pdf


def _selu_d(u: Tensor, _m: Sequence[nn.Module]) -> Tensor:
    neg = SELU_SCALE * SELU_ALPHA * torch.exp(u.clamp(max=0))
    return torch.where(u > 0, torch.full((), SELU_SCALE, dtype=u.dtype), neg)


def _silu_d(u: Tensor, _m: Sequence[nn.Module]) -> Tensor:
    s = torch.sigmoid(u)
    return s * (1 + u * (1 - s))


def _linear_d(u: Tensor, _m: Sequence[nn.Module]) -> Tensor:
    return torch.ones_like(u)


def _grid_max(derivative: Derivative) -> float:
    """The maximum of a derivative with no closed form, found on a fine grid once at import."""
    grid = torch.linspace(-10, 10, 200_001, dtype=torch.float64)
    return float(derivative(grid, ()).max())


def _prelu_health(u: Tensor, modules: Sequence[nn.Module], out: Tensor, fraction: float) -> Health:
    """f' is 1 above zero and the layer's learned slope a below: the negative side is healthy
    when |a| >= fraction of max(1, |a|), active when a != 0."""
    a = _prelu_slopes(modules, u)
    neg_healthy = (a.abs() >= fraction * a.abs().clamp_min(1.0)).to(u.dtype)
    neg_active = (a != 0).to(u.dtype)
    positive = torch.gt(u, 0.0, out=out)
    # mask = positive + (1 - positive) * neg = positive * (1 - neg) + neg
    active = torch.addcmul(neg_active, positive, 1 - neg_active)
    healthy = positive.mul_(1 - neg_healthy).add_(neg_healthy)
    return Health(healthy, active)


# Where |f'| crosses SATURATION_FRACTION of its maximum, solved in closed form:
# sigmoid: s(1 - s) = 0.25 * fraction; tanh: 1 - tanh(u)^2 = fraction;
# ELU / SELU: exp(u) = fraction on the negative side.
_S = (1 + math.sqrt(1 - SATURATION_FRACTION)) / 2
SIGMOID_BOUND = math.log(_S / (1 - _S))
TANH_BOUND = math.atanh(math.sqrt(1 - SATURATION_FRACTION))
EXP_BOUND = math.log(SATURATION_FRACTION)
GELU_MAX = _grid_max(_gelu_d)
SILU_MAX = _grid_max(_silu_d)

GELU_THRESHOLD = SATURATION_FRACTION * GELU_MAX
SILU_THRESHOLD = SATURATION_FRACTION * SILU_MAX

ACTIVATIONS: dict[str, ActivationSpec] = {
    "sigmoid": ActivationSpec(
        nn.Sigmoid,
        _sigmoid_d,
        _const(0.25),
        HealthRule("within", SIGMOID_BOUND),
    ),
    "tanh": ActivationSpec(nn.Tanh, _tanh_d, _const(1.0), HealthRule("within", TANH_BOUND)),
    "relu": ActivationSpec(nn.ReLU, _relu_d, _const(1.0), HealthRule("relu")),
    "leaky_relu": ActivationSpec(
        lambda: nn.LeakyReLU(LEAKY_SLOPE),
        _leaky_d,
        _const(1.0),
        HealthRule("above", 0.0),
    ),
    "prelu": ActivationSpec(
        lambda: nn.PReLU(num_parameters=1, init=0.25),
        _prelu_d,
        _prelu_max,
        HealthRule("prelu", SATURATION_FRACTION),
    ),
    "elu": ActivationSpec(
        lambda: nn.ELU(ELU_ALPHA),
        _elu_d,
        _const(1.0),
        HealthRule("above", EXP_BOUND),
    ),
    "gelu": ActivationSpec(
        nn.GELU,
        _gelu_d,
        _const(GELU_MAX),
        HealthRule("gelu", GELU_THRESHOLD),
    ),
    "selu": ActivationSpec(
        nn.SELU,
        _selu_d,
        _const(SELU_SCALE * SELU_ALPHA),
        HealthRule("above", EXP_BOUND),
    ),
    "silu": ActivationSpec(
        nn.SiLU,
        _silu_d,
        _const(SILU_MAX),
        HealthRule("silu", SILU_THRESHOLD),
    ),
    "linear": ActivationSpec(nn.Identity, _linear_d, _const(1.0), None),
}

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "none": lambda _width: nn.Identity(),
    "batchnorm": nn.BatchNorm1d,
    "layernorm": nn.LayerNorm,
}
