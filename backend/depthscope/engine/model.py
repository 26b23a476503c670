"""The network: `depth` blocks of Linear -> [Norm] -> Activation -> [Norm], optional residual
skips, and a linear readout.

The probe reads each block's pre-activation z, activation input u and output h through a
`Taps` object it attaches for the steps it records: three list appends per block, which costs
far less than three Python forward hooks per block would at depth 100. A step no one records,
without residual skips, runs the modules as one flat chain, exactly as `nn.Sequential` would:
no Identity modules (an unused norm, the linear activation), no per-block bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from depthscope.engine.activations import ACTIVATIONS, NORMS
from depthscope.engine.inits import INITS, InitParams
from depthscope.records import layer_names

if TYPE_CHECKING:
    from depthscope.engine.config import ModelConfig


@dataclass
class Taps:
    """What one forward pass exposes: per hidden block z (Linear output), u (activation input)
    and h (block output, residual included), then the readout's logits."""

    z: list[Tensor] = field(default_factory=list)
    u: list[Tensor] = field(default_factory=list)
    h: list[Tensor] = field(default_factory=list)
    logits: Tensor | None = None


def same_tensors(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    """Whether two per-layer lists of taps hold the very same tensors (h is z without a norm
    after the activation or a residual add; a residual add breaks it on some layers only)."""
    return all(x is y for x, y in zip(a, b, strict=True))


Parts = tuple[nn.Module, nn.Module | None, nn.Module | None, nn.Module | None]


class Block(nn.Module):
    """Linear -> [norm] -> activation -> [norm]: the norm, where there is one, sits on the
    side `norm_position` says; the other side has none (not an Identity module: one module
    fewer to build, to call and to walk)."""

    def __init__(self, n_in: int, width: int, config: ModelConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, width, bias=config.bias)
        norm = None if config.norm == "none" else NORMS[config.norm](width)
        pre = config.norm_position == "pre_activation"
        self.pre_norm: nn.Module | None = norm if pre else None
        self.act = ACTIVATIONS[config.activation].make()
        self.post_norm: nn.Module | None = None if pre else norm

    def forward(self, x: Tensor) -> Tensor:
        return _run(self.parts(), x)

    def parts(self) -> Parts:
        """linear, pre-norm, activation, post-norm; None where there is none (the linear
        activation is an Identity: None too)."""
        act = None if isinstance(self.act, nn.Identity) else self.act
        return (self.linear, self.pre_norm, act, self.post_norm)


def _run(parts: Parts, x: Tensor) -> Tensor:
    for module in parts:
        if module is not None:
            x = module(x)
    return x


class DeepNet(nn.Module):
    """A deep MLP whose layers, input to output, are `blocks` then `readout`."""

    def __init__(self, input_dim: int, output_dim: int, config: ModelConfig) -> None:
        super().__init__()
        dims = [input_dim] + [config.width] * config.depth
        self.blocks = nn.ModuleList(
            Block(dims[i], config.width, config) for i in range(config.depth)
        )
        self.readout = nn.Linear(config.width, output_dim, bias=config.bias)
        self.residual_every = config.residual_every
        self.activation = config.activation
        self.taps: Taps | None = None
        # The same modules, gathered once (plain tuples: not registered twice): per block its
        # parts, and the whole network as the flat chain a step without taps or skips runs.
        self._parts: tuple[Parts, ...] = tuple(b.parts() for b in self.block_list)
        chain = [m for parts in self._parts for m in parts if m is not None]
        self._chain: tuple[nn.Module, ...] = (*chain, self.readout)

    def tap(self, taps: Taps | None) -> None:
        """Start (or, with None, stop) filling `taps` in the forward passes. Straight into the
        instance's dict: nn.Module's __setattr__ costs microseconds a call, twice a step."""
        self.__dict__["taps"] = taps

    @property
    def linears(self) -> list[nn.Linear]:
        """The weight layers in probe order: one per hidden block, then the readout."""
        return [block.linear for block in self.block_list] + [self.readout]

    @property
    def block_list(self) -> list[Block]:
        return [b for b in self.blocks if isinstance(b, Block)]

    @property
    def layer_names(self) -> list[str]:
        return layer_names(len(self.blocks))

    def forward(self, x: Tensor) -> Tensor:
        if self.taps is None and not self.residual_every:  # as nn.Sequential runs it
            for module in self._chain:
                x = module(x)
            return x
        return self._forward_with_taps_or_skips(x, self.taps)

    def _forward_with_taps_or_skips(self, x: Tensor, taps: Taps | None) -> Tensor:
        k = self.residual_every
        skip_from = None  # the output a skip connection starts at
        for i, (linear, pre_norm, act, post_norm) in enumerate(self._parts, start=1):
            z = linear(x)
            u = z if pre_norm is None else pre_norm(z)
            x = u if act is None else act(u)
            if post_norm is not None:
                x = post_norm(x)
            # A skip spans blocks j+1..j+k for j = 1, 1+k, ...: it starts after the first
            # block, whose input has the data's width rather than the network's.
            if k and (i - 1) % k == 0:
                if skip_from is not None:
                    x = x + skip_from
                skip_from = x
            if taps is not None:
                taps.z.append(z)
                taps.u.append(u)
                taps.h.append(x)
        logits: Tensor = self.readout(x)
        if taps is not None:
            taps.logits = logits
        return logits


def build_model(config: ModelConfig, input_dim: int, output_dim: int, seed: int) -> DeepNet:
    """Build on the CPU from `seed` (so every device starts from the same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DeepNet(input_dim, output_dim, config)
    g = torch.Generator().manual_seed(seed + 1)
    init, params = INITS[config.init], InitParams.of(config)
    for layer in net.linears:
        init(layer, params, g)
    return net
