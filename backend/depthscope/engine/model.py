"""The network: `depth` blocks of Linear -> [Norm] -> Activation -> [Norm], optional residual
skips, and a linear readout.

The probe reads each block's pre-activation z, activation input u and output h through a
`Taps` object it attaches for the steps it records: three list appends per block, which costs
far less than three Python forward hooks per block would at depth 100. A step no one records,
without residual skips, runs the modules as one flat chain, as `nn.Sequential` would: no
Identity modules (an unused norm, the linear activation), no per-block bookkeeping.

Both paths call each module's tensor op directly (`direct_call`): `nn.Module.__call__` is there
for hooks, which DeepNet's modules never have, and `Linear.forward` only looks its parameters
up and hands them to `F.linear`. The two layers cost about 3 µs a module, 0.5 ms a forward pass
at depth 100: a tenth of a training step there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional

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
Call = Callable[[Tensor], Tensor]
Calls = tuple[Call, Call | None, Call | None, Call | None]  # a block's Parts, as direct calls

# The tensor op each kind of module computes, bound to the module's parameters and settings;
# a module of any other kind (the norms, an in-place activation) is called through its forward.
_DIRECT: dict[type[nn.Module], Callable[[Any], Call]] = {
    nn.Linear: lambda m: partial(functional.linear, weight=m.weight, bias=m.bias),
    nn.ReLU: lambda m: torch.relu,
    nn.Sigmoid: lambda m: torch.sigmoid,
    nn.Tanh: lambda m: torch.tanh,
    nn.SELU: lambda m: torch.selu,
    nn.GELU: lambda m: partial(functional.gelu, approximate=m.approximate),
    nn.PReLU: lambda m: partial(functional.prelu, weight=m.weight),
    nn.LeakyReLU: lambda m: partial(functional.leaky_relu, negative_slope=m.negative_slope),
    nn.ELU: lambda m: partial(functional.elu, alpha=m.alpha),
    nn.SiLU: lambda m: functional.silu,
}


def direct_call(module: nn.Module) -> Call:
    """The cheapest callable that computes `module(x)` in training and in eval mode alike: its
    tensor op bound to its parameters (the same Parameter objects, which optimizers update in
    place) or, for other kinds of module, its own forward. Module hooks do not run."""
    make = _DIRECT.get(type(module))
    if make is None or getattr(module, "inplace", False):
        return module.forward
    return make(module)


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
        self._bind()

    def _bind(self) -> None:
        """Gather the modules' direct calls (plain tuples: nothing registered twice): per block
        its parts, and the whole network as the flat chain a step without taps or skips runs.
        Made again after every `_apply` (`.to()`, `.cuda()`, `.double()`, …), which may give
        the modules new parameters."""
        self._parts: tuple[Calls, ...] = tuple(_calls(b.parts()) for b in self.block_list)
        self._readout_call = direct_call(self.readout)
        chain = [call for calls in self._parts for call in calls if call is not None]
        self._chain: tuple[Call, ...] = (*chain, self._readout_call)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> DeepNet:
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        self._bind()
        return self

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
            for call in self._chain:
                x = call(x)
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
        logits: Tensor = self._readout_call(x)
        if taps is not None:
            taps.logits = logits
        return logits


def _calls(parts: Parts) -> Calls:
    linear, pre_norm, act, post_norm = parts
    return (
        direct_call(linear),
        None if pre_norm is None else direct_call(pre_norm),
        None if act is None else direct_call(act),
        None if post_norm is None else direct_call(post_norm),
    )


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
