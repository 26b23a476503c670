"""Registries of the building blocks a network is made of: activations and normalizations.

Each activation knows its own derivative, so the probe can measure saturation and dead units
from the pre-activations it already holds, without a second backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

Derivative = Callable[[Tensor, Sequence[nn.Module]], Tensor]


@dataclass(frozen=True)
class ActivationSpec:
    """How to build an activation and how to differentiate it elementwise.

    `derivative(u, modules)` takes the activation inputs of several layers stacked on dim 0
    (shape [layers, batch, units]) and the activation modules of those layers, in order.
    """

    make: Callable[[], nn.Module]
    derivative: Derivative
    max_derivative: Callable[[Sequence[nn.Module]], float]


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


ACTIVATIONS: dict[str, ActivationSpec] = {
    "sigmoid": ActivationSpec(nn.Sigmoid, _sigmoid_d, _const(0.25)),
    "tanh": ActivationSpec(nn.Tanh, _tanh_d, _const(1.0)),
    "relu": ActivationSpec(nn.ReLU, _relu_d, _const(1.0)),
    "leaky_relu": ActivationSpec(lambda: nn.LeakyReLU(LEAKY_SLOPE), _leaky_d, _const(1.0)),
    "prelu": ActivationSpec(lambda: nn.PReLU(num_parameters=1, init=0.25), _prelu_d, _prelu_max),
    "elu": ActivationSpec(lambda: nn.ELU(ELU_ALPHA), _elu_d, _const(1.0)),
    "gelu": ActivationSpec(nn.GELU, _gelu_d, _const(_grid_max(_gelu_d))),
    "selu": ActivationSpec(nn.SELU, _selu_d, _const(SELU_SCALE * SELU_ALPHA)),
    "silu": ActivationSpec(nn.SiLU, _silu_d, _const(_grid_max(_silu_d))),
    "linear": ActivationSpec(nn.Identity, _linear_d, _const(1.0)),
}

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "none": lambda _width: nn.Identity(),
    "batchnorm": nn.BatchNorm1d,
    "layernorm": nn.LayerNorm,
}
