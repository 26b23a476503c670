"""A plain-language diagnosis of a run from its recorded statistics: what went wrong, where,
with the numbers, and the fixes the evidence points to. The thresholds are the constants
below; docs/theory.md explains each one and how it was chosen on the presets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from depthscope.analysis.fixes import (
    BATCHNORM,
    CLIP,
    HE_INIT,
    LARGER_LR,
    LEAKY,
    RELU_FAMILY,
    RELU_HE,
    SATURATING,
    SMALLER_LR,
    XAVIER_INIT,
    fixes_for_fading,
    fixes_for_growth,
)
from depthscope.analysis.trace import Array, Trace, number, span
from depthscope.records import Divergence

Severity = Literal["info", "warning", "critical"]

# ||dL/dh_1|| / ||dL/dh_D|| (first over last hidden block) at step 0 or the last record
VANISHING_RATIO = 1e-2
EXPLODING_RATIO = 1e2
SEVERE = 1e4  # a ratio this much further past its threshold is critical
SATURATION_LIMIT = 0.5  # median saturated fraction over the run (sigmoid, tanh)
DEAD_LIMIT = 0.5  # dead fraction at the last record
NOT_LEARNING_DROP = 0.05  # loss fell by less than this fraction over the run
UPDATE_TOO_SMALL = 1e-5  # median ||dW|| / ||W|| per step
UPDATE_TOO_LARGE = 1e-1
MIN_RECORDS = 10  # trends (learning, updates) need at least this many records


@dataclass(frozen=True)
class Finding:
    kind: str
    severity: Severity
    layers: list[str]
    steps: list[int]
    evidence: dict[str, Any]
    message: str
    suggestions: list[str]

    def to_wire(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _grad_ratio(trace: Trace, row: int) -> float:
    agn = trace.metrics["act_grad_norm"][row]
    first, last = agn[0], agn[len(trace.layers) - 2]
    if not (math.isfinite(first) and math.isfinite(last)) or first <= 0 or last <= 0:
        return math.nan
    return float(first / last)


def _last_finite_row(trace: Trace) -> int:
    finite = np.nonzero(np.isfinite(trace.metrics["act_grad_norm"]).all(1))[0]
    return int(finite[-1]) if len(finite) else 0


def _past(value: float, limit: float, below: bool) -> bool:
    """Whether a finite value is beyond a threshold, on the side that is bad."""
    return math.isfinite(value) and (value < limit if below else value > limit)


def _gradient_flow(trace: Trace) -> list[Finding]:
    depth = len(trace.layers) - 1
    if depth < 2 or "act_grad_norm" not in trace.metrics or len(trace.steps) == 0:
        return []
    first, last = trace.layers[0], trace.layers[depth - 1]
    rows = sorted({0, _last_finite_row(trace)})
    ratios = {int(trace.steps[r]): _grad_ratio(trace, r) for r in rows}
    findings = []
    for kind, limit, below in (
        ("vanishing_gradients", VANISHING_RATIO, True),
        ("exploding_gradients", EXPLODING_RATIO, False),
    ):
        hits = {s: r for s, r in ratios.items() if _past(r, limit, below)}
        if hits:
            findings.append(_flow_finding(trace, kind, hits, first, last, depth))
    return findings


def _flow_finding(
    trace: Trace, kind: str, hits: dict[int, float], first: str, last: str, depth: int
) -> Finding:
    step, ratio = next(iter(hits.items()))
    per_layer = ratio ** (1 / (depth - 1))
    vanishing = kind == "vanishing_gradients"
    amount = f"{number(ratio)} of" if vanishing else f"{number(ratio)} times"
    message = (
        f"{first} receives {amount} {last}'s backpropagated signal at step {step}, "
        f"a factor of {number(per_layer)} per layer"
    )
    later = [(s, r) for s, r in hits.items() if s != step]
    if later:
        message += f"; still {number(later[0][1])} at step {later[0][0]}"
    worst = min(hits.values()) if vanishing else max(hits.values())
    limit = VANISHING_RATIO / SEVERE if vanishing else EXPLODING_RATIO * SEVERE
    severe = worst < limit if vanishing else worst > limit
    return Finding(
        kind=kind,
        severity="critical" if severe else "warning",
        layers=[first, last],
        steps=sorted(hits),
        evidence={"ratio": {str(s): r for s, r in hits.items()}, "per_layer": per_layer},
        message=message + ".",
        suggestions=fixes_for_fading(trace) if vanishing else fixes_for_growth(trace),
    )


def _hidden_at_least(trace: Trace, values: Array, limit: float) -> list[int]:
    """Indices of the hidden blocks whose value is at least `limit`."""
    hidden = np.nan_to_num(values[: len(trace.layers) - 1], nan=0.0)
    return [int(i) for i in np.nonzero(hidden >= limit)[0]]


def _saturation(trace: Trace) -> list[Finding]:
    sat = trace.metrics.get("saturation")
    if trace.setting("model", "activation") not in SATURATING or sat is None or not len(sat):
        return []
    median = np.nanmedian(sat, axis=0) if np.isfinite(sat).any() else np.zeros(sat.shape[1])
    where = _hidden_at_least(trace, median, SATURATION_LIMIT)
    if not where:
        return []
    names = [trace.layers[i] for i in where]
    worst = float(median[where].max())
    return [
        Finding(
            kind="saturation",
            severity="warning",
            layers=names,
            steps=[int(trace.steps[0]), int(trace.steps[-1])],
            evidence={"median_fraction": {trace.layers[i]: float(median[i]) for i in where}},
            message=(
                f"{span(names)} {'are' if len(names) > 1 else 'is'} saturated: up to "
                f"{worst:.0%} of their units sit where f'(u) is below 5% of its maximum "
                "(median over the run), so little gradient passes them."
            ),
            suggestions=[XAVIER_INIT, BATCHNORM, RELU_HE],
        )
    ]


def _dead_units(trace: Trace) -> list[Finding]:
    dead = trace.metrics.get("dead")
    if dead is None or not len(dead):
        return []
    row = _last_finite_row(trace)
    where = _hidden_at_least(trace, dead[row], DEAD_LIMIT)
    if not where:
        return []
    names = [trace.layers[i] for i in where]
    worst = float(np.nanmax(dead[row][where]))
    step = int(trace.steps[row])
    return [
        Finding(
            kind="dead_units",
            severity="critical" if worst >= 0.9 else "warning",
            layers=names,
            steps=[step],
            evidence={"fraction": {trace.layers[i]: float(dead[row][i]) for i in where}},
            message=(
                f"{span(names)}: up to {worst:.0%} of the units are dead at step {step} "
                "(no input of the batch activates them, so they pass no gradient)."
            ),
            suggestions=[LEAKY, SMALLER_LR, HE_INIT],
        )
    ]


def _divergence(trace: Trace) -> list[Finding]:
    d = trace.divergence
    if not d:
        return []
    where = Divergence(d["step"], d.get("layer"), d.get("layer_index"), d["metric"])
    sent = d.get("message") or where.describe()  # the server's own sentence, as it sent it
    fixes = ([CLIP] if trace.setting("training", "clip", "none") == "none" else []) + [
        SMALLER_LR,
        HE_INIT if trace.setting("model", "activation") in RELU_FAMILY else XAVIER_INIT,
    ]
    return [
        Finding(
            kind="divergence",
            severity="critical",
            layers=[] if where.layer is None else [where.layer],
            steps=[where.step],
            evidence=dict(d),
            message=f"Training stopped: {sent}.",
            suggestions=fixes,
        )
    ]


def _window_mean(values: Array, head: bool) -> float:
    n = max(1, len(values) // 10)
    part = values[:n] if head else values[-n:]
    finite = part[np.isfinite(part)]
    return float(finite.mean()) if len(finite) else math.nan


def _not_learning(trace: Trace, fading: bool) -> list[Finding]:
    if trace.divergence or len(trace.loss) < MIN_RECORDS:
        return []
    start, end = _window_mean(trace.loss, True), _window_mean(trace.loss, False)
    if not (math.isfinite(start) and math.isfinite(end)) or start <= 0:
        return []
    drop = 1 - end / start
    if drop >= NOT_LEARNING_DROP:
        return []
    steps = [int(trace.steps[0]), int(trace.steps[-1])]
    message = (
        f"The loss went from {start:.3g} to {end:.3g} between the first and the last tenth of "
        f"the run (steps {steps[0]} to {steps[1]}), {abs(drop):.1%} "
        f"{'lower' if drop >= 0 else 'higher'}"
    )
    accuracy = _window_mean(trace.accuracy, False)
    if math.isfinite(accuracy):
        message += f"; accuracy ends at {accuracy:.0%}"
    if fading:
        message += ": the vanishing gradient above is the likely cause"
    return [
        Finding(
            kind="not_learning",
            severity="warning",
            layers=[],
            steps=steps,
            evidence={"loss_start": start, "loss_end": end, "drop": drop},
            message=message + ".",
            suggestions=fixes_for_fading(trace) if fading else [LARGER_LR],
        )
    ]


def _update_ratio(trace: Trace, fading: bool) -> list[Finding]:
    ratio = trace.metrics.get("update_ratio")
    if ratio is None or not len(ratio) or not np.isfinite(ratio).any():
        return []
    median = np.nanmedian(np.where(np.isfinite(ratio), ratio, np.nan), axis=0)
    findings = []
    for too, limit, fixes in (
        ("small", UPDATE_TOO_SMALL, fixes_for_fading(trace) if fading else []),
        ("large", UPDATE_TOO_LARGE, [SMALLER_LR, CLIP]),
    ):
        where = [i for i, v in enumerate(median) if _past(float(v), limit, too == "small")]
        if not where or (too == "small" and len(ratio) < MIN_RECORDS):
            continue
        names = [trace.layers[i] for i in where]
        extreme = float(median[where].min() if too == "small" else median[where].max())
        small = too == "small"
        verb = (
            ("barely learns", "barely learn")
            if small
            else ("is thrown around", "are thrown around")
        )
        findings.append(
            Finding(
                kind="update_ratio",
                severity="warning",
                layers=names,
                steps=[int(trace.steps[0]), int(trace.steps[-1])],
                evidence={"too": too, "median": {trace.layers[i]: float(median[i]) for i in where}},
                message=_update_message(names, extreme, verb),
                suggestions=fixes or [LARGER_LR],
            )
        )
    return findings


def _update_message(names: list[str], median: float, verb: tuple[str, str]) -> str:
    one = len(names) == 1
    if median == 0:  # the steps fall below the weights' float32 resolution: nothing changes
        return (
            f"{span(names)} {'does' if one else 'do'} not move at all: the median update is 0, "
            "the steps being below the weights' float32 resolution (about 1e-3 of the weight "
            "norm is usual)."
        )
    return (
        f"{span(names)} {'moves' if one else 'move'} by a median {number(median)} of "
        f"{'its' if one else 'their'} weight norm per step (about 1e-3 is usual): "
        f"{'it' if one else 'they'} {verb[0] if one else verb[1]}."
    )


def diagnose(trace: Trace) -> list[Finding]:
    """Every finding, most severe first (a stable order within a severity)."""
    flow = _gradient_flow(trace)
    fading = any(f.kind == "vanishing_gradients" for f in flow)
    findings = (
        _divergence(trace)
        + flow
        + _saturation(trace)
        + _dead_units(trace)
        + _not_learning(trace, fading)
        + _update_ratio(trace, fading)
    )
    rank = {"critical": 0, "warning": 1, "info": 2}
    return sorted(findings, key=lambda f: rank[f.severity])
