"""The model builder: layer order and names, norm placement, residual skips, bias switch,
seeding, and the taps the probe reads."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch
from depthscope.engine.activations import ACTIVATIONS, NORMS
from depthscope.engine.config import ModelConfig
from depthscope.engine.model import DeepNet, Taps, build_model, direct_call
from torch import nn


def net(**kw: Any) -> DeepNet:
    return build_model(ModelConfig.model_validate({"depth": 5, "width": 6, **kw}), 3, 2, seed=0)


def test_model_layers_in_probe_order() -> None:
    model = net()
    assert model.layer_names == ["block1", "block2", "block3", "block4", "block5", "readout"]
    assert [lin.weight.shape for lin in model.linears] == [(6, 3)] + [(6, 6)] * 4 + [(2, 6)]
    assert model(torch.randn(4, 3)).shape == (4, 2)


@pytest.mark.parametrize("norm", ["batchnorm", "layernorm"])
def test_model_norm_position(norm: str) -> None:
    kinds = {"batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm}
    pre, post = net(norm=norm).blocks[0], net(norm=norm, norm_position="post_activation").blocks[0]
    assert isinstance(pre.pre_norm, kinds[norm]) and pre.post_norm is None
    assert isinstance(post.post_norm, kinds[norm]) and post.pre_norm is None


def test_model_without_norm_builds_no_identity_modules() -> None:
    """A block is its Linear and its activation only: nothing to build, call or walk."""
    model = net()
    assert not any(isinstance(m, nn.Identity) for m in model.modules())
    assert [type(m) for m in model.blocks[0].children()] == [nn.Linear, nn.ReLU]


def test_model_runs_like_the_same_sequential_without_taps() -> None:
    """With no taps and no skips the forward is the plain chain of the same modules."""
    model = net(activation="tanh")
    chain = nn.Sequential(*[m for b in model.blocks for m in b.children()], model.readout)
    x = torch.randn(4, 3)
    assert torch.equal(model(x), chain(x))


@pytest.mark.parametrize(
    "make",
    [spec.make for spec in ACTIVATIONS.values()]
    + [partial(NORMS[n], 6) for n in NORMS]
    + [lambda: nn.Linear(6, 4), lambda: nn.Linear(6, 4, bias=False), lambda: nn.ReLU(True)],
    ids=[*ACTIVATIONS, *NORMS, "linear", "linear-no-bias", "relu-inplace"],
)
@pytest.mark.parametrize("training", [True, False])
def test_direct_call_computes_what_the_module_does(make: Any, training: bool) -> None:
    """Every module DeepNet is made of, called directly, gives the module's own output and the
    same gradients for its input and parameters, in training and in eval mode."""
    module = make().train(training)
    if isinstance(module, nn.PReLU):
        with torch.no_grad():
            module.weight.fill_(0.3)
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(0)) * 3
    outputs, grads = [], []
    for call in (module, direct_call(module)):
        xi = x.clone().requires_grad_()
        out = call(xi.clone())  # an in-place module must not write into xi
        module.zero_grad(set_to_none=True)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append([xi.grad, *(p.grad for p in module.parameters())])
    assert torch.equal(outputs[0], outputs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))


def test_model_calls_follow_new_parameters_after_a_conversion() -> None:
    """A conversion (`.double()`, `.to()`) may give the modules new Parameter objects (it does
    when PyTorch is told to overwrite them); the direct calls are bound again, so the model
    computes with the new ones."""
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        model = net(activation="prelu", norm="batchnorm")
        before = model.readout.weight
        model = model.double()
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
    assert model.readout.weight is not before
    x = torch.randn(4, 3, dtype=torch.float64)
    assert model(x).dtype == torch.float64
    with torch.no_grad():
        model.readout.weight.zero_()
        model.readout.bias.fill_(2.0)
    assert torch.equal(model(x), torch.full((4, 2), 2.0, dtype=torch.float64))


def test_model_bias_off_removes_every_bias() -> None:
    assert all(lin.bias is None for lin in net(bias=False).linears)


def test_model_same_seed_same_weights() -> None:
    a, b = net(init="xavier_normal"), net(init="xavier_normal")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_model_residual_skip_every_k_blocks(k: int) -> None:
    """Output with skips equals a by-hand chain where every k blocks, starting after block 1,
    the block output gets the output of k blocks earlier added."""
    model = net(residual_every=k, activation="tanh")
    x = torch.randn(4, 3)
    h, outputs = x, []
    for i, block in enumerate(model.blocks, start=1):
        h = block(h)
        if i > 1 and (i - 1) % k == 0:
            h = h + outputs[i - 1 - k]
        outputs.append(h)
    assert torch.allclose(model(x), model.readout(h))


def test_model_taps_expose_z_u_h_and_logits() -> None:
    model = net(norm="layernorm", activation="sigmoid")
    taps = Taps()
    model.taps = taps
    logits = model(torch.randn(4, 3))
    model.taps = None
    assert len(taps.z) == len(taps.u) == len(taps.h) == 5
    assert taps.logits is logits
    block = model.blocks[0]
    assert block.pre_norm is not None
    assert torch.allclose(taps.u[0], block.pre_norm(taps.z[0]))
    assert torch.allclose(taps.h[0], torch.sigmoid(taps.u[0]))


def test_model_without_taps_records_nothing() -> None:
    model = net()
    model(torch.randn(2, 3))
    assert model.taps is None
