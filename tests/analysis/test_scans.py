"""The order-to-chaos scan at init, held to the mean-field theory (the measured gradient ratio
follows chi_1 across the critical line) and to its bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from depthscope.analysis.scans import MAX_SCAN_WORK, init_scan, scan_limit_error
from depthscope.analysis.theory import critical_point

SIGMA_W = [0.6, 1.0, 1.4, 1.8, 2.2, 2.8]
SIGMA_B = [0.0, 0.2, 0.4]


@pytest.fixture(scope="module")
def tanh_scan() -> object:
    return init_scan("tanh", 20, 128, SIGMA_W, SIGMA_B)


def test_scans_measured_ratio_follows_the_mean_field_prediction(tanh_scan: object) -> None:
    measured = np.array(tanh_scan.log_grad_ratio, dtype=float)  # type: ignore[attr-defined]
    predicted = np.array(tanh_scan.predicted_log_grad_ratio, dtype=float)  # type: ignore[attr-defined]
    assert measured.shape == (len(SIGMA_B), len(SIGMA_W))
    assert np.median(np.abs(measured - predicted)) < 0.3
    assert np.max(np.abs(measured - predicted)) < 1.5


def test_scans_gradients_fade_on_the_ordered_side_and_grow_on_the_chaotic(
    tanh_scan: object,
) -> None:
    measured = np.array(tanh_scan.log_grad_ratio, dtype=float)  # type: ignore[attr-defined]
    chi = np.array(tanh_scan.chi1, dtype=float)  # type: ignore[attr-defined]
    clear = np.abs(np.log(chi)) > 0.05  # away from the line, where finite width can tip it
    assert np.all(np.sign(measured[clear]) == np.sign(np.log(chi[clear])))


def test_scans_critical_line_is_the_theory_line(tanh_scan: object) -> None:
    scan = tanh_scan
    for b, w in zip(scan.critical_sigma_b, scan.critical_sigma_w, strict=True):  # type: ignore[attr-defined]
        critical = critical_point("tanh", b * b)
        assert critical is not None and w == pytest.approx(math.sqrt(critical.sigma_w2))
    assert scan.critical_sigma_w[0] == pytest.approx(1.0)  # type: ignore[attr-defined]


def test_scans_relu_he_column_keeps_the_gradient() -> None:
    scan = init_scan("relu", 30, 128, [1.0, math.sqrt(2), 2.0], [0.0])
    ratio = scan.log_grad_ratio[0]
    assert ratio[0] is not None and ratio[0] < -5  # 29 layers at chi = 1/2: -10 nats
    assert ratio[1] is not None and abs(ratio[1]) < 1.0
    assert ratio[2] is not None and ratio[2] > 5
    assert scan.chi1[0] == pytest.approx([0.5, 1.0, 2.0])


def test_scans_are_deterministic_for_a_seed() -> None:
    a = init_scan("tanh", 5, 32, [1.0, 2.0], [0.1])
    b = init_scan("tanh", 5, 32, [1.0, 2.0], [0.1])
    assert a.log_grad_ratio == b.log_grad_ratio and a.last_act_std == b.last_act_std


def test_scans_overflow_becomes_null() -> None:
    """A linear net gaining 10x per layer overflows float32; the theory's log does not."""
    scan = init_scan("linear", 200, 16, [10.0], [0.0])
    assert scan.last_act_std == [[None]] and scan.log_grad_ratio == [[None]]
    assert scan.predicted_log_grad_ratio[0][0] == pytest.approx(199 * math.log(10))


def test_scans_refuse_beyond_the_budget_naming_it() -> None:
    error = scan_limit_error(16 * 11, 200, 1024)
    assert error is not None and f"{MAX_SCAN_WORK:.3g}" in error
    assert scan_limit_error(16 * 11, 30, 256) is None  # the issue's grid fits
    with pytest.raises(ValueError, match="scan budget exceeded"):
        init_scan("tanh", 200, 1024, SIGMA_W, SIGMA_B)
    assert "cells" in (scan_limit_error(2000, 1, 2) or "")


@pytest.mark.slow
def test_scans_the_issue_grid_returns_in_seconds() -> None:
    """16 x 11 cells at depth 30, width 256 (about 2 s on one idle core here; the bound leaves
    room for a loaded machine)."""
    scan = init_scan("tanh", 30, 256, list(np.linspace(0.5, 4, 16)), list(np.linspace(0, 0.5, 11)))
    assert scan.seconds < 30
    assert len(scan.log_grad_ratio) == 11 and len(scan.log_grad_ratio[0]) == 16
