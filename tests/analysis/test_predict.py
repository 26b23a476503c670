"""Step-0 predictions for a concrete network, from plain numbers: the mean-field recursion layer
by layer, pooling over inputs, and bands that follow finite-width statistics (a random walk for
ReLU, 5 / width per layer in the log second moment, as Hanin & Rolnick 2018 derive)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from depthscope.analysis.predict import LayerInit, predict
from depthscope.analysis.theory import mean_field


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, as a run's worker uses: on a busy machine more only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def uniform(sigma_w2: float, sigma_b2: float, depth: int, width: int) -> list[LayerInit]:
    return [LayerInit(sigma_w2 / width, sigma_b2, width, width)] * depth


def test_predict_q_is_the_mean_field_recursion() -> None:
    p = predict("tanh", uniform(1.44, 0.04, 12, 256))
    m = mean_field("tanh", 1.44, 0.04, 12)
    assert p.q == pytest.approx(m.q, rel=1e-12)


def test_predict_relu_he_keeps_the_scale_and_the_gradient() -> None:
    p = predict("relu", uniform(2.0, 0.0, 30, 256))
    # z ~ N(0, 2): relu(z) has std sqrt(2 (1/2 - 1/(2 pi))) = sqrt(1 - 1/pi) at every layer
    assert p.act_std == pytest.approx([math.sqrt(1 - 1 / math.pi)] * 30, rel=1e-12)
    assert p.log_act_grad_norm == pytest.approx([0.0] * 30, abs=1e-12)


def test_predict_gradient_ratio_is_half_the_log_gains() -> None:
    # ReLU with sigma_w^2 = 1.5: each layer keeps chi = 0.75 of the squared signal
    p = predict("relu", uniform(1.5, 0.0, 10, 128))
    want = [0.5 * (9 - i) * math.log(0.75) for i in range(10)]
    assert p.log_act_grad_norm == pytest.approx(want, rel=1e-12)


def test_predict_relu_band_is_a_random_walk_in_depth_and_width() -> None:
    """Var(ln act_std) grows as 5 depth / (4 width): wider with depth, narrower with width."""
    narrow, wide = predict("relu", uniform(2, 0, 30, 256)), predict("relu", uniform(2, 0, 30, 1024))
    spread = np.log(np.array(narrow.act_std_hi) / np.array(narrow.act_std_lo))
    assert np.all(np.diff(spread) > 0)
    # 2 x 2 sigma of ln std, sigma^2 = 5 l / (4 n)
    assert spread[-1] == pytest.approx(4 * math.sqrt(5 * 30 / (4 * 256)), rel=1e-6)
    wide_spread = np.log(np.array(wide.act_std_hi) / np.array(wide.act_std_lo))
    assert wide_spread[-1] == pytest.approx(spread[-1] / 2, rel=1e-6)
    # the measurement: layer 30 of a width-256 He net at 1.27 against the line's 0.83
    assert narrow.act_std[-1] == pytest.approx(0.83, abs=0.005)
    assert narrow.act_std_lo[-1] < 0.83 < 1.27 < narrow.act_std_hi[-1]


def test_predict_tanh_band_stays_bounded_with_depth() -> None:
    p = predict("tanh", uniform(1.44, 0.04, 60, 256))
    spread = np.log(np.array(p.act_std_hi) / np.array(p.act_std_lo))
    assert spread[-1] == pytest.approx(spread[30], rel=0.02)  # the q map contracts its noise


def test_predict_pools_inputs_of_different_scales() -> None:
    """Inputs of second moment 0.5 and 1.5: the pooled std is that of the mixture."""
    layers = [LayerInit(2.0 / 64, 0.0, 64, 64)]
    p = predict("relu", layers, input_q=[0.5, 1.5])
    # relu(z), z ~ N(0, q): E = sqrt(q / 2 pi), E[.^2] = q / 2; q = 2 x input moment
    means = [math.sqrt(q / (2 * math.pi)) for q in (1.0, 3.0)]
    second = (1.0 / 2 + 3.0 / 2) / 2
    assert p.act_std[0] == pytest.approx(math.sqrt(second - (sum(means) / 2) ** 2), rel=1e-12)


def measured(
    act: str, sigma_w: float, sigma_b: float, depth: int, width: int, seed: int, batch: int = 128
) -> np.ndarray:
    """act_std per layer of a plain torch network on Gaussian inputs."""
    phi = torch.tanh if act == "tanh" else torch.relu
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(batch, width, generator=g)
    out = []
    for _ in range(depth):
        w = torch.randn(width, width, generator=g) * sigma_w / math.sqrt(width)
        h = phi(h @ w.T + sigma_b * torch.randn(width, generator=g))
        out.append(float(h.std()))
    return np.array(out)


def test_predict_tanh_matches_a_plain_torch_network() -> None:
    """The issue's reference: tanh, sigma_w 1.2, sigma_b 0.2, depth 20, width 256, 128 inputs."""
    p = predict("tanh", uniform(1.44, 0.04, 20, 256))
    mean = np.mean([measured("tanh", 1.2, 0.2, 20, 256, seed) for seed in range(5)], axis=0)
    assert np.all(np.abs(mean / np.array(p.act_std) - 1) < 0.025)


def test_predict_relu_band_covers_plain_torch_networks() -> None:
    p = predict("relu", uniform(2.0, 0.0, 30, 256))
    lo, hi = np.array(p.act_std_lo), np.array(p.act_std_hi)
    runs = np.array([measured("relu", math.sqrt(2), 0, 30, 256, s, batch=32) for s in range(20)])
    assert np.mean((lo <= runs) & (runs <= hi)) >= 0.95
    # and it is no looser than it must be: the runs reach its outer half somewhere
    centre = np.sqrt(lo * hi)
    assert np.any(np.abs(np.log(runs / centre)) > 0.5 * np.log(hi / centre))
