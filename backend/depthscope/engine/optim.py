"""Registry of optimizers, by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

OptimizerFn = Callable[[Iterable[nn.Parameter], float, float], torch.optim.Optimizer]

MOMENTUM = 0.9

OPTIMIZERS: dict[str, OptimizerFn] = {
    "sgd": lambda params, lr, wd: torch.optim.SGD(params, lr=lr, weight_decay=wd),
    "momentum": lambda params, lr, wd: torch.optim.SGD(
        params, lr=lr, momentum=MOMENTUM, weight_decay=wd
    ),
    "adam": lambda params, lr, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "rmsprop": lambda params, lr, wd: torch.optim.RMSprop(params, lr=lr, weight_decay=wd),
}

CLIPS = ("none", "norm", "value")
