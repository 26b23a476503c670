"""The diagnosis: each kind of finding on hand-made traces at its documented threshold, and on
the presets (a healthy ReLU + He net gets no vanishing or exploding finding; the deep naive
sigmoid gets vanishing gradients; the exploding preset gets one divergence finding naming its
layer and step)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from depthscope.analysis import diagnosis as d
from depthscope.analysis.diagnosis import Finding, diagnose
from depthscope.analysis.trace import Trace
from depthscope.engine.trainer import Trainer
from depthscope.presets import BY_ID

LAYERS = [f"block{i}" for i in range(1, 11)] + ["readout"]


def trace(records: int = 20, **overrides: Any) -> Trace:
    """A healthy 10-block run: flat gradients, learning loss, 1e-3 updates."""
    metrics = {
        "act_grad_norm": np.ones((records, 11)),
        "saturation": np.full((records, 11), 0.1),
        "dead": np.zeros((records, 11)),
        "update_ratio": np.full((records, 11), 1e-3),
    }
    metrics.update(overrides.pop("metrics", {}))
    return Trace(
        layers=LAYERS,
        steps=np.arange(records, dtype=float),
        metrics=metrics,
        loss=overrides.pop("loss", np.linspace(0.7, 0.1, records)),
        accuracy=np.full(records, 0.9),
        config=overrides.pop("config", {"model": {"activation": "tanh", "init": "xavier_normal"}}),
        divergence=overrides.pop("divergence", None),
    )


def kinds(findings: list[Finding]) -> list[str]:
    return [f.kind for f in findings]


def with_ratio(ratio: float, records: int = 20) -> Trace:
    grads = np.ones((records, 11))
    grads[:, 0] = ratio  # block1 over block10
    return trace(records, metrics={"act_grad_norm": grads})


def test_diagnosis_healthy_trace_has_no_findings() -> None:
    assert diagnose(trace()) == []


def test_diagnosis_vanishing_threshold_and_message() -> None:
    assert "vanishing_gradients" not in kinds(diagnose(with_ratio(2 * d.VANISHING_RATIO)))
    (finding,) = [f for f in diagnose(with_ratio(2e-14)) if f.kind == "vanishing_gradients"]
    assert finding.severity == "critical" and finding.layers == ["block1", "block10"]
    assert finding.message.startswith(
        "block1 receives 2e-14 of block10's backpropagated signal at step 0, "
        "a factor of 0.03 per layer"
    )
    assert finding.evidence["per_layer"] == pytest.approx(2e-14 ** (1 / 9))
    assert d.RELU_HE in finding.suggestions and d.BATCHNORM in finding.suggestions


def test_diagnosis_exploding_threshold_names_clipping() -> None:
    assert "exploding_gradients" not in kinds(diagnose(with_ratio(0.5 * d.EXPLODING_RATIO)))
    (finding,) = [f for f in diagnose(with_ratio(3e4)) if f.kind == "exploding_gradients"]
    assert finding.severity == "warning" and "3e4 times block10's" in finding.message
    assert d.CLIP in finding.suggestions and d.SMALLER_LR in finding.suggestions


def test_diagnosis_saturation_only_for_saturating_activations() -> None:
    sat = np.full((20, 11), 0.1)
    sat[:, 2:5] = 0.8
    findings = diagnose(trace(metrics={"saturation": sat}))
    (finding,) = [f for f in findings if f.kind == "saturation"]
    assert finding.layers == ["block3", "block4", "block5"] and "80%" in finding.message
    relu = {"model": {"activation": "relu", "init": "he_normal"}}  # f' = 0 below zero is not it
    assert "saturation" not in kinds(diagnose(trace(metrics={"saturation": sat}, config=relu)))


def test_diagnosis_dead_units_at_the_last_record() -> None:
    dead = np.zeros((20, 11))
    dead[-1, 7] = 0.6
    (finding,) = [f for f in diagnose(trace(metrics={"dead": dead})) if f.kind == "dead_units"]
    assert finding.layers == ["block8"] and finding.steps == [19] and "60%" in finding.message
    dead[-1, 7] = 0.4
    assert "dead_units" not in kinds(diagnose(trace(metrics={"dead": dead})))


def test_diagnosis_not_learning_quotes_the_losses() -> None:
    flat = np.full(40, 0.693)
    (finding,) = [f for f in diagnose(trace(40, loss=flat)) if f.kind == "not_learning"]
    assert "from 0.693 to 0.693" in finding.message and "accuracy ends at 90%" in finding.message
    falling = np.linspace(0.693, 0.6, 40)  # 13% lower: learning, slowly
    assert "not_learning" not in kinds(diagnose(trace(40, loss=falling)))


def test_diagnosis_update_ratio_too_small_and_too_large() -> None:
    ratio = np.full((20, 11), 1e-3)
    ratio[:, :3] = 1e-8
    ratio[:, 10] = 0.5
    findings = [f for f in diagnose(trace(metrics={"update_ratio": ratio})) if f.kind]
    small, large = [f for f in findings if f.kind == "update_ratio"]
    assert small.evidence["too"] == "small" and small.layers == ["block1", "block2", "block3"]
    assert "1e-8" in small.message and "barely learn" in small.message
    assert large.evidence["too"] == "large" and large.layers == ["readout"]


def test_diagnosis_update_ratio_of_zero_says_the_weights_do_not_move() -> None:
    ratio = np.full((20, 11), 1e-3)
    ratio[:, 0] = 0.0
    (small,) = [
        f for f in diagnose(trace(metrics={"update_ratio": ratio})) if f.kind == "update_ratio"
    ]
    assert small.message.startswith("block1 does not move at all: the median update is 0")


def test_diagnosis_divergence_quotes_the_servers_sentence() -> None:
    sent = {"step": 3, "layer": "block6", "layer_index": 5, "metric": "act_std"}
    sent["message"] = "layer block6 went non-finite at step 3 (act_std)"
    findings = diagnose(trace(divergence=sent))
    assert findings[0].kind == "divergence" and findings[0].severity == "critical"
    assert (
        findings[0].message == "Training stopped: layer block6 went non-finite at step 3 (act_std)."
    )
    assert findings[0].layers == ["block6"] and findings[0].steps == [3]


def test_diagnosis_findings_are_sorted_by_severity() -> None:
    grads = np.ones((20, 11))
    grads[:, 0] = 1e-9
    findings = diagnose(trace(metrics={"act_grad_norm": grads}, loss=np.full(20, 0.69)))
    ranks = [{"critical": 0, "warning": 1, "info": 2}[f.severity] for f in findings]
    assert ranks == sorted(ranks) and findings[0].kind == "vanishing_gradients"


def test_diagnosis_wire_shape() -> None:
    wire = diagnose(with_ratio(1e-5))[0].to_wire()
    assert set(wire) == {
        "kind",
        "severity",
        "layers",
        "steps",
        "evidence",
        "message",
        "suggestions",
    }


@pytest.fixture(scope="module")
def presets() -> Iterator[dict[str, list[Finding]]]:
    """The presets trained once (one torch thread), diagnosed from their wire records."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for name in ("relu-he", "tanh-xavier", "sigmoid-naive", "exploding"):
        preset = BY_ID[name]
        trainer = Trainer(preset.config)
        gen, records = trainer.records(), []
        try:
            while True:
                records.append(next(gen).to_wire())
        except StopIteration as done:
            result = done.value
        divergence = None if result.divergence is None else result.divergence.to_wire()
        config = preset.config.model_dump()
        out[name] = diagnose(Trace.from_records(records, trainer.layer_names, config, divergence))
    torch.set_num_threads(threads)
    yield out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["relu-he", "tanh-xavier"])
def test_diagnosis_healthy_presets_have_no_gradient_finding(
    presets: dict[str, list[Finding]], name: str
) -> None:
    assert not {"vanishing_gradients", "exploding_gradients"} & set(kinds(presets[name]))


@pytest.mark.slow
def test_diagnosis_sigmoid_naive_gets_vanishing_gradients(
    presets: dict[str, list[Finding]],
) -> None:
    findings = presets["sigmoid-naive"]
    (vanishing,) = [f for f in findings if f.kind == "vanishing_gradients"]
    assert vanishing.severity == "critical" and "block1 receives" in vanishing.message
    assert "not_learning" in kinds(findings)


@pytest.mark.slow
def test_diagnosis_exploding_preset_gets_one_divergence_naming_layer_and_step(
    presets: dict[str, list[Finding]],
) -> None:
    (divergence,) = [f for f in presets["exploding"] if f.kind == "divergence"]
    assert len(divergence.layers) == 1 and len(divergence.steps) == 1
    assert divergence.layers[0] in divergence.message
    assert f"step {divergence.steps[0]}" in divergence.message
