"""A configured run's theory against what the product measures at step 0: each scheme's
variances, the inputs' scales, and predicted act_std and gradient ratios against the probe's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from depthscope.analysis.network import input_moments, layer_inits, not_applicable, run_theory
from depthscope.engine.config import RunConfig
from depthscope.engine.trainer import Trainer


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, as a run's worker uses: on a busy machine more only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TANH = {"depth": 20, "width": 256, "activation": "tanh", "init": "scaled_normal"}


def config(model: dict[str, Any], seed: int = 0, **data: Any) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": model,
            "training": {"steps": 1, "seed": seed, "batch_size": 128},
            "data": {"n_samples": 1024, **(data or {"dataset": "teacher", "input_dim": 256})},
        }
    )


def step0(cfg: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """Measured act_std and ln(||dL/dh_l|| / ||dL/dh_D||) per hidden block at step 0."""
    record = next(Trainer(cfg).records())
    depth = cfg.model.depth
    grads = np.array(record.layers["act_grad_norm"][:depth], dtype=float)
    return np.array(record.layers["act_std"][:depth], dtype=float), np.log(grads / grads[-1])


def test_network_tanh_run_matches_the_theory_at_every_layer() -> None:
    """The issue's measurement (tanh, gain 1.2, bias 0.2, depth 20, width 256), averaged over
    five initialisations: act_std within 2.5%, the log gradient ratio within 0.2 nats."""
    model = {**TANH, "init_gain": 1.2, "bias_std": 0.2}
    runs = [step0(config(model, seed)) for seed in range(5)]
    predicted = run_theory(config(model))["predicted"]
    std = np.mean([r[0] for r in runs], axis=0)
    ratio = np.mean([r[1] for r in runs], axis=0)
    assert np.all(np.abs(std / np.array(predicted["act_std"]) - 1) < 0.025)
    assert np.all(np.abs(ratio - np.array(predicted["log_act_grad_norm"])) < 0.2)


def test_network_relu_he_runs_stay_mostly_in_their_band() -> None:
    """Finite-width ReLU nets wander far from the line (one of these five falls below the band
    over a third of its depth: a rare network, but one a user will meet)."""
    model = {"depth": 30, "width": 256, "activation": "relu", "init": "he_normal"}
    predicted = run_theory(config(model))["predicted"]
    lo, hi = np.array(predicted["act_std_lo"]), np.array(predicted["act_std_hi"])
    runs = [step0(config(model, seed))[0] for seed in range(5)]
    assert np.mean([(lo <= s) & (s <= hi) for s in runs]) >= 0.8


@pytest.mark.parametrize(
    ("init", "first", "hidden"),
    [
        ("he_normal", 2 / 2, 2 / 64),
        ("xavier_uniform", 2 / 66, 2 / 128),
        ("lecun_normal", 1 / 2, 1 / 64),
        ("orthogonal", 1 / 64, 1 / 64),  # the first layer is tall: unit columns
        ("pytorch_default", 1 / 6, 1 / 192),
    ],
)
def test_network_layer_variances_follow_each_scheme(init: str, first: float, hidden: float) -> None:
    cfg = config({"depth": 3, "width": 64, "init": init}, dataset="moons")
    layers = layer_inits(cfg)
    assert [layer.weight_var for layer in layers] == pytest.approx([first, hidden, hidden])
    assert layers[1].orthogonal == (init == "orthogonal")


def test_network_scaled_normal_gives_sigma_w_and_sigma_b() -> None:
    cfg = config({**TANH, "depth": 2, "init_gain": 1.5, "bias_std": 0.3})
    assert [layer.sigma_w2 for layer in layer_inits(cfg)] == pytest.approx([2.25, 2.25])
    assert [layer.bias_var for layer in layer_inits(cfg)] == pytest.approx([0.09, 0.09])
    no_bias = config({**TANH, "depth": 2, "bias_std": 0.3, "bias": False})
    assert [layer.bias_var for layer in layer_inits(no_bias)] == [0.0, 0.0]


def test_network_input_moments_average_one() -> None:
    """Standardized features: the mean of ||x||^2 / d over the training split is 1."""
    moments = input_moments(config({"depth": 1}, dataset="moons"))
    assert np.mean(moments) == pytest.approx(1.0, rel=0.03)
    assert len(moments) == 32 and moments == sorted(moments)


@pytest.mark.parametrize(
    ("model", "word"), [({"norm": "batchnorm"}, "normalization"), ({"residual_every": 2}, "skip")]
)
def test_network_theory_is_not_applicable_to_norms_and_residuals(
    model: dict[str, Any], word: str
) -> None:
    cfg = config({"depth": 4, "width": 16, **model}, dataset="moons")
    reason = not_applicable(cfg)
    assert reason is not None and word in reason
    body = run_theory(cfg)
    assert body["applicable"] is False and body["predicted"] is None and body["reason"] == reason
