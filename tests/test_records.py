"""StepRecord wire format, non-finite values as None, and locating the first non-finite value."""

from __future__ import annotations

import json
import math

from depthscope.records import (
    METRICS,
    Divergence,
    Histogram,
    StepRecord,
    finite,
    first_non_finite,
)

NAMES = ["block1", "block2", "readout"]


def record(**overrides: object) -> StepRecord:
    layers: dict[str, list[float | None]] = {m: [1.0, 2.0, 3.0] for m in METRICS}
    fields: dict[str, object] = {
        "step": 7,
        "loss": 0.5,
        "accuracy": 0.75,
        "grad_norm_total": 2.0,
        "clipped": False,
        "layers": layers,
    }
    fields.update(overrides)
    return StepRecord(**fields)  # type: ignore[arg-type]


def test_records_metric_names_are_the_contract() -> None:
    """Today's names, in today's order, come first: a metric may be added after them."""
    assert METRICS[:11] == (
        "grad_norm",
        "act_grad_norm",
        "grad_to_weight",
        "update_ratio",
        "weight_norm",
        "act_mean",
        "act_std",
        "preact_mean",
        "preact_std",
        "saturation",
        "dead",
    )


def test_records_wire_shape_without_optional_parts() -> None:
    wire = record().to_wire()
    assert set(wire) == {"step", "loss", "accuracy", "grad_norm_total", "clipped", "layers"}
    assert json.loads(json.dumps(wire, allow_nan=False)) == wire


def test_records_wire_has_validation_and_histograms_when_present() -> None:
    hist = Histogram(lo=[0.0, None, 1.0], hi=[1.0, None, 2.0], counts=[[1, 2], [0, 0], [3, 0]])
    wire = record(val_loss=0.4, val_accuracy=None, histograms={"act": hist}).to_wire()
    assert wire["val_loss"] == 0.4 and wire["val_accuracy"] is None
    assert wire["histograms"]["act"] == {
        "lo": [0.0, None, 1.0],
        "hi": [1.0, None, 2.0],
        "counts": [[1, 2], [0, 0], [3, 0]],
    }


def test_records_finite_turns_non_finite_into_none() -> None:
    assert [finite(v) for v in (1.5, math.nan, math.inf, -math.inf)] == [1.5, None, None, None]


def test_records_first_non_finite_prefers_the_lowest_layer() -> None:
    r = record()
    r.layers["dead"][2] = None
    r.layers["act_std"][1] = None
    assert first_non_finite(r, NAMES) == Divergence(7, "block2", 1, "act_std")


def test_records_first_non_finite_names_the_forward_overflow_before_the_gradients() -> None:
    # Issue 16: the forward pass overflowed at block2, which made every gradient NaN (block1's
    # too); the divergence names block2's activation, where it began, not block1's gradient.
    r = record(loss=None, grad_norm_total=None)
    for metric in ("grad_norm", "act_grad_norm", "grad_to_weight", "update_ratio"):
        r.layers[metric][:] = [None, None, None]
    for metric in ("act_std", "preact_std", "act_mean", "preact_mean"):
        r.layers[metric][1:] = [None, None]
    assert first_non_finite(r, NAMES) == Divergence(7, "block2", 1, "preact_mean")


def test_records_first_non_finite_follows_the_backward_pass_from_the_readout() -> None:
    # A backward overflow starts at the readout side and spreads towards the input.
    r = record()
    r.layers["act_grad_norm"][0] = None
    r.layers["grad_norm"][:2] = [None, None]
    assert first_non_finite(r, NAMES) == Divergence(7, "block2", 1, "grad_norm")
    r.layers["act_grad_norm"][1] = None
    assert first_non_finite(r, NAMES) == Divergence(7, "block2", 1, "act_grad_norm")


def test_records_first_non_finite_falls_back_to_scalars() -> None:
    assert first_non_finite(record(loss=None), NAMES) == Divergence(7, None, None, "loss")
    assert first_non_finite(record(), NAMES) is None


def test_records_divergence_describes_itself() -> None:
    where = Divergence(112, "block3", 2, "grad_norm")
    assert where.describe() == "layer block3 went non-finite at step 112 (grad_norm)"
    assert Divergence(3, None, None, "loss").describe() == (
        "the network went non-finite at step 3 (loss)"
    )
    assert where.to_wire() == {
        "step": 112,
        "layer": "block3",
        "layer_index": 2,
        "metric": "grad_norm",
        "message": "layer block3 went non-finite at step 112 (grad_norm)",
    }


def test_records_known_finite_is_neither_wire_nor_identity() -> None:
    """The probe marks records it knows are finite, so the divergence check need not scan
    them; the mark is not part of the record's data."""
    plain, known = record(), record(known_finite=True)
    assert plain == known and plain.to_wire() == known.to_wire()
    assert first_non_finite(known, NAMES) is None
