"""How findings quote numbers and layers, and the trace a diagnosis reads from wire records."""

from __future__ import annotations

import math

import pytest
from depthscope.analysis.trace import Trace, number, span


@pytest.mark.parametrize(
    ("value", "text"), [(2e-14, "2e-14"), (0.2, "0.2"), (31234.0, "3.1e4"), (0.031, "0.031")]
)
def test_trace_number_has_two_significant_digits(value: float, text: str) -> None:
    assert number(value) == text


def test_trace_span_names_few_layers_and_ranges_many() -> None:
    assert span(["block1"]) == "block1"
    assert span(["block1", "block3"]) == "block1 and block3"
    assert span(["block1", "block2", "block4"]) == "block1, block2 and block4"
    assert span([f"block{i}" for i in range(3, 9)]) == "block3 to block8 (6 layers)"


def test_trace_from_records_turns_null_into_nan() -> None:
    records = [
        {"step": 0, "loss": 0.7, "accuracy": None, "layers": {"act_std": [1.0, None]}},
        {"step": 5, "loss": None, "accuracy": 0.5, "layers": {"act_std": [0.5, 0.25]}},
    ]
    t = Trace.from_records(records, ["block1", "readout"], {"model": {"depth": 1}})
    assert t.steps.tolist() == [0.0, 5.0]
    assert math.isnan(t.metrics["act_std"][0, 1]) and t.metrics["act_std"][1, 1] == 0.25
    assert math.isnan(t.loss[1]) and math.isnan(t.accuracy[0])
    assert t.setting("model", "depth") == 1 and t.setting("model", "norm", "none") == "none"
