"""Mean-field theory held to the reference values computed independently for the issue (tanh,
Poole et al. 2016 / Schoenholz et al. 2017), the ReLU closed forms, and plain iteration of the
q map."""

from __future__ import annotations

import math

import pytest
from depthscope.analysis.gaussian import ACTIVATIONS
from depthscope.analysis.theory import (
    activation,
    critical_point,
    fixed_point,
    mean_field,
    q_map,
)

SMOOTH = ["sigmoid", "tanh", "gelu", "silu", "elu", "selu"]


def iterate(name: str, sigma_w2: float, sigma_b2: float, steps: int = 5000) -> float:
    """The q map applied `steps` times from a unit-variance input: the reference fixed point."""
    act, q = activation(name), sigma_w2 + sigma_b2
    for _ in range(steps):
        q = q_map(act, sigma_w2, sigma_b2, q)
    return q


def test_theory_tanh_ordered_reference_values() -> None:
    m = mean_field("tanh", 1.0, 0.05, 10)
    assert m.q_star == pytest.approx(0.1936, abs=5e-5)
    assert m.chi1 == pytest.approx(0.7590, abs=5e-5)
    assert m.xi_c == pytest.approx(3.63, abs=5e-3)
    assert m.phase == "ordered"


def test_theory_tanh_chaotic_reference_values() -> None:
    m = mean_field("tanh", 2.5, 0.05, 10)
    assert m.chi1 == pytest.approx(1.1335, abs=5e-5)
    assert m.phase == "chaotic"
    assert m.xi_c is None  # -1/ln chi_1 is no depth scale above 1


def test_theory_tanh_critical_line_reference_values() -> None:
    at_005 = critical_point("tanh", 0.05)
    at_001 = critical_point("tanh", 0.01)
    assert at_005 is not None and at_001 is not None
    assert at_005.sigma_w2 == pytest.approx(1.7610, abs=5e-5)
    assert at_005.q_star == pytest.approx(0.5700, abs=5e-5)
    assert at_001.sigma_w2 == pytest.approx(1.4242, abs=5e-5)
    m = mean_field("tanh", 1.0, 0.05, 3)
    assert m.critical_sigma_w2 == pytest.approx(1.7610, abs=5e-5)


def test_theory_tanh_without_bias_is_critical_at_one() -> None:
    critical = critical_point("tanh", 0.0)
    assert critical is not None and critical.sigma_w2 == 1.0 and critical.q_star == 0.0


@pytest.mark.parametrize("sigma_b2", [0.0, 0.3])
def test_theory_relu_closed_form(sigma_b2: float) -> None:
    m = mean_field("relu", 1.5, sigma_b2, 6)
    q = 1.5 + sigma_b2
    for got in m.q:
        assert got == pytest.approx(q, rel=1e-12)
        q = 1.5 * q / 2 + sigma_b2
    assert m.chi1 == pytest.approx(0.75)
    assert m.q_star == pytest.approx(sigma_b2 / (1 - 0.75))
    assert m.xi_c == pytest.approx(-1 / math.log(0.75))
    assert m.critical_sigma_w2 == pytest.approx(2.0)


def test_theory_relu_he_init_is_the_critical_point() -> None:
    m = mean_field("relu", 2.0, 0.0, 5)
    assert m.phase == "critical" and m.chi1 == 1.0
    assert m.q == [2.0] * 5 and m.q_star == 2.0  # the signal keeps its scale forever
    assert m.xi_c is None and m.xi_q is None


def test_theory_relu_chaotic_has_no_fixed_point() -> None:
    m = mean_field("relu", 3.0, 0.1, 4)
    assert m.q_star is None and m.chi1 == pytest.approx(1.5) and m.phase == "chaotic"


def test_theory_overflowing_signal_becomes_null() -> None:
    m = mean_field("relu", 1000.0, 0.0, 300)
    assert m.q[0] == 1000.0
    assert m.q[-1] is None  # 500^299 overflows: null, not an error


@pytest.mark.parametrize("name", SMOOTH)
@pytest.mark.parametrize(("sigma_w2", "sigma_b2"), [(0.8, 0.05), (1.5, 0.2), (3.0, 0.5)])
def test_theory_fixed_point_is_where_iteration_ends(
    name: str, sigma_w2: float, sigma_b2: float
) -> None:
    q_star = fixed_point(activation(name), sigma_w2, sigma_b2, sigma_w2 + sigma_b2)
    reached = iterate(name, sigma_w2, sigma_b2)
    if not reached < 1e6:  # an unbounded activation whose signal grows without end
        assert q_star is None
    else:
        assert q_star == pytest.approx(reached, rel=1e-7)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "elu", "selu"])
def test_theory_critical_point_has_unit_chi(name: str) -> None:
    critical = critical_point(name, 0.1)
    assert critical is not None
    m = mean_field(name, critical.sigma_w2, 0.1, 3)
    assert m.chi1 == pytest.approx(1.0, abs=1e-7)
    assert m.q_star == pytest.approx(critical.q_star, rel=1e-6)
    assert m.phase == "critical"


def test_theory_critical_line_skips_fixed_points_never_reached() -> None:
    # GELU with sigma_b^2 = 0.1 has chi_1 = 1 at q* = 1.63 for sigma_w^2 = 2.08, but that fixed
    # point repels: from a unit-variance input the variance grows without bound there
    act = activation("gelu")
    assert fixed_point(act, 2.0767, 0.1, 2.1767) is None
    assert critical_point("gelu", 0.1) is None


def test_theory_xi_q_is_the_rate_iterates_settle_at() -> None:
    m = mean_field("tanh", 1.3, 0.1, 3)
    assert m.q_star is not None and m.xi_q is not None
    act, q = activation("tanh"), m.q_star * 1.001
    gaps = []
    for _ in range(12):
        q = q_map(act, 1.3, 0.1, q)
        gaps.append(q - m.q_star)
    rate = (gaps[-1] / gaps[-2]) ** 1  # the slope of the q map at q*
    assert m.xi_q == pytest.approx(-1 / math.log(rate), rel=1e-3)


def test_theory_unknown_activation_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown activation 'swish'; choose one of: sigmoid"):
        activation("swish")


def test_theory_wire_shape_has_the_contract_keys() -> None:
    wire = mean_field("tanh", 1.0, 0.05, 4).to_wire()
    for key in ("q", "q_star", "chi1", "xi_q", "xi_c", "phase", "critical_sigma_w2"):
        assert key in wire
    assert len(wire["q"]) == 4


def test_theory_every_activation_gives_an_answer() -> None:
    for name in ACTIVATIONS:
        m = mean_field(name, 1.0, 0.05, 5)
        assert len(m.q) == 5 and m.q[0] == pytest.approx(1.05)
