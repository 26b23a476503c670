"""Registry of weight initialisation schemes, by the names the papers use.

Every named scheme zeroes the biases, as Glorot & Bengio (2010) and He et al. (2015) do;
`pytorch_default` keeps PyTorch's own initialisation untouched. Xavier uses gain 1; He uses
fan_in and gain √2 (the ReLU gain); LeCun uses fan_in and gain 1. `scaled_normal` is the
(sigma_w, sigma_b) parameterisation of the mean-field papers (Poole et al. 2016, Schoenholz et
al. 2017): W ~ N(0, init_gain² / fan_in), b ~ N(0, bias_std²).

Each scheme also states the variance per entry it gives a layer's weights and biases, which
the mean-field theory of depthscope.analysis starts from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from depthscope.engine.config import ModelConfig


@dataclass(frozen=True)
class InitParams:
    """The config's scale settings: `std` for normal, `gain` and `bias_std` for scaled_normal."""

    std: float = 0.1
    gain: float = 1.0
    bias_std: float = 0.0

    @classmethod
    def of(cls, config: ModelConfig) -> InitParams:
        return cls(config.init_std, config.init_gain, config.bias_std)


Fill = Callable[[torch.Tensor, InitParams, torch.Generator], None]
# (fan_in, fan_out, params) -> variance per entry
Variance = Callable[[int, int, InitParams], float]


@dataclass(frozen=True)
class InitScheme:
    """Initialises a layer in place (`scheme(layer, params, generator)`) and says what variance
    per entry that gives its weights and biases."""

    fill: Fill | None  # None: leave the layer as nn.Linear made it
    weight_variance: Variance
    bias_variance: Variance = lambda _i, _o, _p: 0.0
    orthogonal: bool = False  # rows or columns orthonormal rather than independent entries

    def __call__(self, layer: nn.Linear, params: InitParams, generator: torch.Generator) -> None:
        if self.fill is None:
            return
        with torch.no_grad():
            self.fill(layer.weight, params, generator)
            bias_var = self.bias_variance(*_fans(layer.weight), params)
            if layer.bias is not None and bias_var > 0:
                layer.bias.normal_(0.0, math.sqrt(bias_var), generator=generator)
            elif layer.bias is not None:
                layer.bias.zero_()

    def variances(self, fan_in: int, fan_out: int, params: InitParams) -> tuple[float, float]:
        """(weight, bias) variance per entry for a layer of this shape."""
        return self.weight_variance(fan_in, fan_out, params), self.bias_variance(
            fan_in, fan_out, params
        )


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    fan_out, fan_in = weight.shape
    return fan_in, fan_out


def _normal_with(variance: Variance) -> Fill:
    def fill(w: torch.Tensor, params: InitParams, g: torch.Generator) -> None:
        w.normal_(0.0, math.sqrt(variance(*_fans(w), params)), generator=g)

    return fill


def _uniform_with(variance: Variance) -> Fill:
    """Uniform on [-a, a] has variance a² / 3."""

    def fill(w: torch.Tensor, params: InitParams, g: torch.Generator) -> None:
        bound = math.sqrt(3 * variance(*_fans(w), params))
        w.uniform_(-bound, bound, generator=g)

    return fill


def _orthogonal(w: torch.Tensor, _params: InitParams, g: torch.Generator) -> None:
    nn.init.orthogonal_(w, gain=1.0, generator=g)


def _xavier(fan_in: int, fan_out: int, _p: InitParams) -> float:
    return 2.0 / (fan_in + fan_out)


def _he(fan_in: int, _fan_out: int, _p: InitParams) -> float:
    return 2.0 / fan_in


def _lecun(fan_in: int, _fan_out: int, _p: InitParams) -> float:
    return 1.0 / fan_in


def _fixed(_fan_in: int, _fan_out: int, p: InitParams) -> float:
    return p.std**2


def _scaled(fan_in: int, _fan_out: int, p: InitParams) -> float:
    return p.gain**2 / fan_in


def _bias_scaled(_fan_in: int, _fan_out: int, p: InitParams) -> float:
    return p.bias_std**2


def _torch_default(fan_in: int, _fan_out: int, _p: InitParams) -> float:
    """nn.Linear's Kaiming-uniform with a = √5 and its uniform bias: both ±1/√fan_in."""
    return 1.0 / (3 * fan_in)


def _orthonormal(fan_in: int, fan_out: int, _p: InitParams) -> float:
    """Unit rows (fan_out <= fan_in) or unit columns: each entry has variance 1/max(fans)."""
    return 1.0 / max(fan_in, fan_out)


INITS: dict[str, InitScheme] = {
    "pytorch_default": InitScheme(None, _torch_default, _torch_default),
    "normal": InitScheme(_normal_with(_fixed), _fixed),
    "xavier_uniform": InitScheme(_uniform_with(_xavier), _xavier),
    "xavier_normal": InitScheme(_normal_with(_xavier), _xavier),
    "he_uniform": InitScheme(_uniform_with(_he), _he),
    "he_normal": InitScheme(_normal_with(_he), _he),
    "lecun_normal": InitScheme(_normal_with(_lecun), _lecun),
    "orthogonal": InitScheme(_orthogonal, _orthonormal, orthogonal=True),
    "scaled_normal": InitScheme(_normal_with(_scaled), _scaled, _bias_scaled),
}
