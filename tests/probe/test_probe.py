"""Every per-layer metric against a plain-autograd reference written here, independently of
the probe: the forward pass by hand, dL/dh and dL/dW from torch.autograd.grad, f'(u) from
autograd, ΔW from a copy of the network stepped by a fresh torch optimizer."""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import pytest
import torch
from conftest import CountOps
from depthscope import METRICS, RunConfig, StepRecord
from depthscope.engine.activations import ACTIVATIONS
from depthscope.engine.model import DeepNet
from depthscope.engine.trainer import Trainer
from depthscope.probe.backends import kernels as native
from torch import Tensor, nn
from torch.nn import functional

# 20 samples leave 16 for training, so a batch of 16 is the whole training split: the
# probe's batch is a permutation of it, and every statistic here is permutation-invariant.
TINY_DATA = {"n_samples": 20, "input_dim": 3}
BATCH = 16
NORMS = [
    ("none", "pre_activation"),
    ("batchnorm", "pre_activation"),
    ("batchnorm", "post_activation"),
    ("layernorm", "pre_activation"),
    ("layernorm", "post_activation"),
]
REFERENCE_OPTIMIZERS = {
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "momentum": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
    "rmsprop": lambda p, lr: torch.optim.RMSprop(p, lr=lr),
}
TORCH_ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda u: functional.leaky_relu(u, 0.01),
    "elu": functional.elu,
    "gelu": functional.gelu,
    "selu": functional.selu,
    "silu": functional.silu,
    "linear": lambda u: u,
}


def tiny_config(device: str = "cpu", **model: Any) -> RunConfig:
    optimizer = model.pop("optimizer", "sgd")
    training = {"batch_size": BATCH, "steps": 2, "optimizer": optimizer, "lr": 0.1}
    return RunConfig.model_validate(
        {
            "model": {"depth": 4, "width": 8, **model},
            "training": {**training, "device": device},
            "data": TINY_DATA,
            "recording": {"histogram_every": 1, "eval_every": 0},
        }
    )


def without_histograms(config: RunConfig) -> RunConfig:
    recording = config.recording.model_copy(update={"histogram_every": 0})
    return config.model_copy(update={"recording": recording})


def first_record(config: RunConfig) -> tuple[StepRecord, DeepNet, Trainer]:
    trainer = Trainer(config)
    before = copy.deepcopy(trainer.model)
    record = next(trainer.records())
    return record, before, trainer


def act_fn(name: str, block: nn.Module) -> Any:
    if name == "prelu":
        weight = block.act.weight
        return lambda u: functional.prelu(u, weight)
    return TORCH_ACTIVATIONS[name]


def manual_forward(net: DeepNet, x: Tensor, activation: str, k: int) -> dict[str, Any]:
    """The network by hand: z = Wx + b, u = norm(z) or z, h = act(u) [then norm], with a skip
    around every k blocks starting after block 1."""
    zs, us, hs = [], [], []
    skip = None
    for i, block in enumerate(net.blocks, start=1):
        z = functional.linear(x, block.linear.weight, block.linear.bias)
        u = z if block.pre_norm is None else block.pre_norm(z)
        h = act_fn(activation, block)(u)
        h = h if block.post_norm is None else block.post_norm(h)
        if k and (i - 1) % k == 0:
            if skip is not None:
                h = h + skip
            skip = h
        zs.append(z)
        us.append(u)
        hs.append(h)
        x = h
    logits = functional.linear(x, net.readout.weight, net.readout.bias)
    return {"z": zs, "u": us, "h": hs, "logits": logits}


def derivative_by_autograd(activation: str, block: nn.Module, u: Tensor) -> Tensor:
    u = u.detach().clone().requires_grad_(True)
    (d,) = torch.autograd.grad(act_fn(activation, block)(u).sum(), u)
    return d.detach()


def max_derivative(activation: str, block: nn.Module) -> float:
    if activation == "prelu":  # 1 above zero, the learned slope below
        return max(1.0, abs(float(block.act.weight.detach())))
    return _grid_max(activation)


@functools.cache
def _grid_max(activation: str) -> float:
    grid = torch.linspace(-10, 10, 400_001)
    return float(derivative_by_autograd(activation, nn.Identity(), grid).abs().max())


def reference(config: RunConfig, net: DeepNet, trainer: Trainer) -> dict[str, list[float]]:
    """Every metric of step 0, from the network as it was before the step (a metric added to
    the registry needs its reference here: `assert_metrics_match` checks every one)."""
    m = config.model
    x, y = trainer.data.x_train, trainer.data.y_train
    net = copy.deepcopy(net)
    net.train()
    fwd = manual_forward(net, x, m.activation, m.residual_every)
    loss = functional.cross_entropy(fwd["logits"], y)
    weights = [b.linear.weight for b in net.blocks] + [net.readout.weight]
    params = list(net.parameters())
    outputs = [*fwd["h"], fwd["logits"]]
    grads = torch.autograd.grad(loss, outputs + params)
    act_grads, param_grads = grads[: len(outputs)], grads[len(outputs) :]
    weight_grads = [param_grads[[id(p) for p in params].index(id(w))] for w in weights]
    before = [w.detach().clone() for w in weights]
    optimizer = REFERENCE_OPTIMIZERS[config.training.optimizer](params, config.training.lr)
    for p, g in zip(params, param_grads, strict=True):
        p.grad = g
    optimizer.step()

    def std(t: Tensor) -> float:
        return float(t.detach().double().std(unbiased=False))

    out: dict[str, list[float]] = {name: [] for name in METRICS}
    for i, w in enumerate(before):
        out["grad_norm"].append(float(weight_grads[i].norm()))
        out["weight_norm"].append(float(w.norm()))
        out["grad_to_weight"].append(float(weight_grads[i].norm() / w.norm()))
        out["update_ratio"].append(float((weights[i].detach() - w).norm() / w.norm()))
        out["act_grad_norm"].append(float(act_grads[i].norm()))
    for block, z, u, h in zip(net.blocks, fwd["z"], fwd["u"], fwd["h"], strict=True):
        out["act_mean"].append(float(h.detach().double().mean()))
        out["act_std"].append(std(h))
        out["preact_mean"].append(float(z.detach().double().mean()))
        out["preact_std"].append(std(z))
        d = derivative_by_autograd(m.activation, block, u)
        top = max_derivative(m.activation, block)
        out["saturation"].append(float((d.abs() < 0.05 * top).double().mean()))
        out["dead"].append(float((d == 0).all(0).double().mean()))
    logits = fwd["logits"]
    for name in ("act_mean", "preact_mean"):
        out[name].append(float(logits.detach().double().mean()))
    for name in ("act_std", "preact_std"):
        out[name].append(std(logits))
    out["saturation"].append(0.0)
    out["dead"].append(0.0)
    for name in ("u_mean_shift", "u_std_shift"):  # nothing recorded before step 0
        out[name] = [0.0] * len(out["dead"])
    return out


def assert_metrics_match(record: StepRecord, expected: dict[str, list[float]]) -> None:
    for name in METRICS:
        got = record.layers[name]
        assert None not in got, name
        if name in ("saturation", "dead"):  # fractions of whole counts: exact
            assert got == pytest.approx(expected[name], abs=1e-6), name
        else:
            assert got == pytest.approx(expected[name], rel=2e-4, abs=2e-6), name


@pytest.mark.parametrize(("norm", "position"), NORMS)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_probe_metrics_match_autograd_reference(
    activation: str, norm: str, position: str, device: str
) -> None:
    config = tiny_config(device, activation=activation, norm=norm, norm_position=position)
    record, net, trainer = first_record(config)
    assert_metrics_match(record, reference(config, net, trainer))


@pytest.mark.parametrize("residual_every", [1, 2])
@pytest.mark.parametrize("activation", ["relu", "tanh", "linear"])
def test_probe_metrics_match_reference_with_residual(
    activation: str, residual_every: int, device: str
) -> None:
    config = tiny_config(device, activation=activation, residual_every=residual_every)
    record, net, trainer = first_record(config)
    assert_metrics_match(record, reference(config, net, trainer))


@pytest.mark.parametrize("norm", ["none", "layernorm"])
def test_probe_metrics_match_reference_without_bias(norm: str, device: str) -> None:
    config = tiny_config(device, activation="elu", bias=False, norm=norm)
    record, net, trainer = first_record(config)
    assert_metrics_match(record, reference(config, net, trainer))


@pytest.mark.parametrize(
    ("activation", "norm"), [("relu", "none"), ("sigmoid", "none"), ("prelu", "layernorm")]
)
def test_probe_metrics_match_reference_without_histograms(
    activation: str, norm: str, device: str
) -> None:
    """No histogram this step: dL/dh stays out of the hidden buffer, only its norms are
    taken (one _foreach_norm), and the moments cover fewer rows. Same numbers."""
    config = without_histograms(tiny_config(device, activation=activation, norm=norm))
    record, net, trainer = first_record(config)
    assert record.histograms is None
    assert_metrics_match(record, reference(config, net, trainer))


def u_moments(net: DeepNet, x: Tensor, activation: str) -> list[tuple[float, float]]:
    """Per layer, the mean and population std of the activation input u (the readout's:
    its logits), from the forward pass by hand, in double."""
    fwd = manual_forward(copy.deepcopy(net).train(), x, activation, 0)
    values = [*fwd["u"], fwd["logits"]]
    return [
        (float(v.detach().double().mean()), float(v.detach().double().std(unbiased=False)))
        for v in values
    ]


@pytest.mark.parametrize(("norm", "position"), NORMS)
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_probe_u_shift_matches_moments_of_consecutive_steps(
    activation: str, norm: str, position: str, device: str
) -> None:
    """u_mean_shift = |mean − mean′| / std′ and u_std_shift = |ln(std / std′)| between step 0
    and step 1 (the batch is the whole training split both times), from the forward pass by
    hand with the weights each step used; 0 at the first recorded step."""
    config = tiny_config(device, activation=activation, norm=norm, norm_position=position)
    trainer = Trainer(config)
    x = trainer.data.x_train
    records = trainer.records()
    before = u_moments(trainer.model, x, activation)
    first = next(records)
    after = u_moments(trainer.model, x, activation)  # the weights step 1 uses
    second = next(records)
    assert first.layers["u_mean_shift"] == first.layers["u_std_shift"] == [0.0] * config.n_layers
    mean_shift = [abs(m - m0) / s0 for (m, _), (m0, s0) in zip(after, before, strict=True)]
    std_shift = [abs(math.log(s / s0)) for (_, s), (_, s0) in zip(after, before, strict=True)]
    assert second.layers["u_mean_shift"] == pytest.approx(mean_shift, rel=2e-3, abs=1e-6)
    assert second.layers["u_std_shift"] == pytest.approx(std_shift, rel=2e-3, abs=1e-6)


@pytest.mark.parametrize("optimizer", list(REFERENCE_OPTIMIZERS))
def test_probe_update_ratio_matches_each_optimizer(optimizer: str, device: str) -> None:
    config = tiny_config(device, activation="relu", optimizer=optimizer)
    record, net, trainer = first_record(config)
    expected = reference(config, net, trainer)
    assert record.layers["update_ratio"] == pytest.approx(expected["update_ratio"], rel=2e-4)


@pytest.mark.parametrize("histogram_every", [1, 0])
def test_probe_large_layers_use_hooks_and_match_reference(
    histogram_every: int, device: str
) -> None:
    """Blocks of at least HOOK_BYTES take the hook path for dL/dh (copies with histograms,
    norms alone without): same numbers."""
    config = RunConfig.model_validate(
        {
            "model": {"depth": 3, "width": 256, "activation": "tanh", "residual_every": 1},
            "training": {"batch_size": 128, "steps": 2, "device": device},
            "data": {"n_samples": 160, "input_dim": 3},
            "recording": {"histogram_every": histogram_every, "eval_every": 0},
        }
    )
    record, net, trainer = first_record(config)
    assert_metrics_match(record, reference(config, net, trainer))


def test_probe_dead_counts_units_inactive_for_every_sample(device: str) -> None:
    """A ReLU net whose first block has a strongly negative bias on half its units: those
    units are dead, the rest are not."""
    config = tiny_config(device, activation="relu", depth=2)
    trainer = Trainer(config)
    with torch.no_grad():
        trainer.model.blocks[0].linear.bias[:4] = -100.0
    record = next(trainer.records())
    assert record.layers["dead"][0] == 0.5


@pytest.mark.parametrize("kind", ["act", "act_grad", "preact"])
@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_probe_histograms_match_histc(kind: str, norm: str, device: str) -> None:
    """h, dL/dh and u (the activation's input: after the norm when it comes first)."""
    config = tiny_config(device, activation="tanh", residual_every=1, norm=norm)
    record, net, trainer = first_record(config)
    net = copy.deepcopy(net)
    net.train()
    fwd = manual_forward(net, trainer.data.x_train, "tanh", 1)
    loss = functional.cross_entropy(fwd["logits"], trainer.data.y_train)
    values = [*fwd["h"], fwd["logits"]]
    if kind == "act_grad":
        values = list(torch.autograd.grad(loss, values))
    if kind == "preact":  # the readout is linear: its activation input is its output
        values = [*fwd["u"], fwd["logits"]]
        if norm == "none":
            assert all(torch.equal(u, z) for u, z in zip(fwd["u"], fwd["z"], strict=True))
    assert record.histograms is not None
    hist = record.histograms[kind]
    for layer, v in enumerate(values):
        v = v.detach().flatten()
        lo, hi = float(v.min()), float(v.max())
        assert hist.lo[layer] == pytest.approx(lo, rel=1e-6)
        assert hist.hi[layer] == pytest.approx(hi, rel=1e-6)
        expected = torch.histc(v, bins=32, min=lo, max=hi).long().tolist()
        assert hist.counts[layer] == expected
        assert sum(hist.counts[layer]) == v.numel()


def test_probe_histograms_of_non_finite_layers_are_empty(device: str) -> None:
    trainer = Trainer(tiny_config(device, activation="relu"))
    with torch.no_grad():  # block2's output holds +inf for some samples
        trainer.model.blocks[1].linear.weight[0, 0] = math.inf
    record = next(trainer.records())
    assert record.histograms is not None
    act = record.histograms["act"]
    assert act.lo[1] is None and act.hi[1] is None and sum(act.counts[1]) == 0
    assert act.lo[0] is not None and sum(act.counts[0]) == BATCH * 8


def test_probe_histograms_only_on_histogram_steps() -> None:
    config = tiny_config().model_copy(
        update={"recording": tiny_config().recording.model_copy(update={"histogram_every": 2})}
    )
    config = RunConfig.model_validate(
        {**config.model_dump(), "training": {**config.training.model_dump(), "steps": 4}}
    )
    records = list(Trainer(config).records())
    assert [r.histograms is not None for r in records] == [True, False, True, False]
    wire = records[0].to_wire()
    assert set(wire["histograms"]) == {"act", "act_grad", "preact"}
    assert len(wire["histograms"]["act"]["counts"]) == config.n_layers
    assert all(len(c) == 32 for c in wire["histograms"]["act"]["counts"])


def test_probe_record_has_one_value_per_layer_for_every_metric() -> None:
    config = tiny_config()
    record = next(Trainer(config).records())
    assert list(record.layers) == list(METRICS)
    assert all(len(v) == config.n_layers for v in record.layers.values())
    assert all(isinstance(v, float) for vals in record.layers.values() for v in vals)
    assert math.isfinite(record.loss or math.nan)


def probe_ops(depth: int, histogram_every: int, names: tuple[str, ...]) -> int:
    """The aten ops of the probe's own work in a recorded step (the methods `names`), once the
    step's plan exists."""
    config = tiny_config(activation="relu", depth=depth)
    config = config.model_copy(
        update={
            "recording": config.recording.model_copy(update={"histogram_every": histogram_every})
        }
    )
    trainer = Trainer(config)
    probe, counter = trainer.probe, CountOps()
    records = trainer.records()
    next(records)  # makes the plan (and the buffers) for this layout
    for name in names:
        method = getattr(probe, name)

        def counted(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            with counter:
                return _method(*args, **kwargs)

        setattr(probe, name, counted)
    next(records)
    return counter.count


@pytest.mark.parametrize("histogram_every", [0, 1])
def test_probe_op_count_does_not_grow_with_depth(
    histogram_every: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The design's promise for the tensor-op path: layers are batched, never looped over, so
    a 40-layer network's statistics take exactly as many tensor ops as a 4-layer one's (and
    few of them): the copies before the update and the statistics after it."""
    monkeypatch.setenv("DEPTHSCOPE_NATIVE", "0")
    names = ("before_update", "finish")
    shallow, deep = probe_ops(4, histogram_every, names), probe_ops(40, histogram_every, names)
    assert shallow == deep


@pytest.mark.skipif(native.load() is None, reason="the C kernels were not built")
@pytest.mark.parametrize("histogram_every", [0, 1])
def test_probe_c_path_dispatches_no_statistics_op(histogram_every: int) -> None:
    """With the C kernels the probe's statistics take no per-layer tensor op: the count is the
    same at any depth (what is left reads 0-d scalars such as the loss back)."""
    names = ("before_update", "finish")
    assert Trainer(tiny_config()).probe.backend_name == "C kernels"
    assert probe_ops(4, histogram_every, names) == probe_ops(40, histogram_every, names)
