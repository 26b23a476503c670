"""Registry of weight initialisation schemes, by the names the papers use.

Every named scheme zeroes the biases, as Glorot & Bengio (2010) and He et al. (2015) do;
`pytorch_default` keeps PyTorch's own initialisation untouched. Xavier uses gain 1; He uses
fan_in and gain √2 (the ReLU gain); LeCun uses fan_in and gain 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

# (linear layer, init_std, generator) -> None; initialises the layer in place.
InitFn = Callable[[nn.Linear, float, torch.Generator], None]


def _weights(fill: Callable[[torch.Tensor, float, torch.Generator], None]) -> InitFn:
    def init(layer: nn.Linear, init_std: float, generator: torch.Generator) -> None:
        with torch.no_grad():
            fill(layer.weight, init_std, generator)
            if layer.bias is not None:
                layer.bias.zero_()

    return init


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    fan_out, fan_in = weight.shape
    return fan_in, fan_out


def _normal(w: torch.Tensor, std: float, g: torch.Generator) -> None:
    w.normal_(0.0, std, generator=g)


def _uniform(w: torch.Tensor, bound: float, g: torch.Generator) -> None:
    w.uniform_(-bound, bound, generator=g)


def _xavier_uniform(w: torch.Tensor, _std: float, g: torch.Generator) -> None:
    fan_in, fan_out = _fans(w)
    _uniform(w, math.sqrt(6.0 / (fan_in + fan_out)), g)


def _xavier_normal(w: torch.Tensor, _std: float, g: torch.Generator) -> None:
    fan_in, fan_out = _fans(w)
    _normal(w, math.sqrt(2.0 / (fan_in + fan_out)), g)


def _he_uniform(w: torch.Tensor, _std: float, g: torch.Generator) -> None:
    fan_in, _ = _fans(w)
    _uniform(w, math.sqrt(6.0 / fan_in), g)


def _he_normal(w: torch.Tensor, _std: float, g: torch.Generator) -> None:
    fan_in, _ = _fans(w)
    _normal(w, math.sqrt(2.0 / fan_in), g)


def _lecun_normal(w: torch.Tensor, _std: float, g: torch.Generator) -> None:
    fan_in, _ = _fans(w)
    _normal(w, math.sqrt(1.0 / fan_in), g)


def _orthogonal(w: torch.Tensor, _std: float, g: torch.Generator) -> None:
    nn.init.orthogonal_(w, gain=1.0, generator=g)


def _pytorch_default(_layer: nn.Linear, _std: float, _g: torch.Generator) -> None:
    """Leave the layer as nn.Linear made it (Kaiming-uniform with a=√5, uniform bias)."""


INITS: dict[str, InitFn] = {
    "pytorch_default": _pytorch_default,
    "normal": _weights(_normal),
    "xavier_uniform": _weights(_xavier_uniform),
    "xavier_normal": _weights(_xavier_normal),
    "he_uniform": _weights(_he_uniform),
    "he_normal": _weights(_he_normal),
    "lecun_normal": _weights(_lecun_normal),
    "orthogonal": _weights(_orthogonal),
}
