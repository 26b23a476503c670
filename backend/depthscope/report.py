"""A standalone HTML report of one run: heatmaps, loss curves and depth profiles, opens offline.

Works on wire records (`StepRecord.to_wire()`, or a server's JSON export), so a report can be
made from a run trained here or one fetched from a service. plotly.js is inlined from the
plotly package's bundled copy: the file needs no network and no server.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from depthscope.analysis.diagnosis import Finding, diagnose
from depthscope.analysis.trace import Trace
from depthscope.probe.metrics import BY_NAME, REGISTRY, Metric

# A heatmap per metric of the registry, in its order; a metric on the "log" scale (norms and
# ratios span decades) is shown as log10, means and fractions as they are.
HEATMAP_METRICS: tuple[Metric, ...] = REGISTRY
# Depth profiles of the few a reader compares across layers first.
PROFILE_METRICS: tuple[Metric, ...] = tuple(
    BY_NAME[name] for name in ("grad_norm", "act_grad_norm", "act_std")
)
MAX_COLUMNS = 1000  # heatmap columns: keeps a 100k-step report a few MB, not hundreds
PROFILE_STEPS = 5

Number = float | None


def log10_or_none(value: Number) -> Number:
    """log10 of a positive finite number; None for 0, negatives, None (nothing to show)."""
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return math.log10(value)


def downsample_indices(n: int, max_points: int) -> list[int]:
    """At most `max_points` evenly spaced indices into range(n), always with the first and last."""
    if n <= max_points:
        return list(range(n))
    if max_points < 2:
        return [n - 1]
    stride = (n - 1) / (max_points - 1)
    return sorted({round(i * stride) for i in range(max_points)})


def heatmap_matrix(
    records: Sequence[Mapping[str, Any]], metric: str, log: bool
) -> list[list[Number]]:
    """values[layer][i] for the given records, log10-transformed when asked."""
    n_layers = len(records[0]["layers"][metric]) if records else 0
    rows: list[list[Number]] = [[] for _ in range(n_layers)]
    for record in records:
        for layer, value in enumerate(record["layers"][metric]):
            rows[layer].append(log10_or_none(value) if log else value)
    return rows


def profile_indices(n: int, k: int = PROFILE_STEPS) -> list[int]:
    """Which records to draw depth profiles for: first, last and evenly between."""
    return downsample_indices(n, k)


def _heatmap(records: Sequence[Mapping[str, Any]], layers: list[str], info: Metric) -> Any:
    steps = [r["step"] for r in records]
    metric, log = info.name, info.scale == "log"
    title = f"log10 {metric}" if log else metric
    fig = go.Figure(
        go.Heatmap(
            z=heatmap_matrix(records, metric, log),
            x=steps,
            y=layers,
            colorscale="Viridis",
            colorbar={"title": {"text": title}},
            hoverongaps=False,
        )
    )
    fig.update_layout(
        title=f"{title}: {info.title}",
        xaxis_title="step",
        yaxis_title="layer (input at the bottom)",
    )
    return fig


def _curves(records: Sequence[Mapping[str, Any]]) -> Any:
    fig = go.Figure()
    steps = [r["step"] for r in records]
    fig.add_scatter(x=steps, y=[r["loss"] for r in records], name="loss", mode="lines")
    evals = [r for r in records if "val_loss" in r]
    if evals:
        fig.add_scatter(
            x=[r["step"] for r in evals], y=[r["val_loss"] for r in evals], name="held-out loss"
        )
    if any(r["accuracy"] is not None for r in records):
        fig.add_scatter(
            x=steps, y=[r["accuracy"] for r in records], name="accuracy", yaxis="y2", mode="lines"
        )
        fig.update_layout(yaxis2={"title": "accuracy", "overlaying": "y", "side": "right"})
    fig.update_layout(title="loss and accuracy", xaxis_title="step", yaxis_title="loss")
    return fig


def _profile(records: Sequence[Mapping[str, Any]], layers: list[str], info: Metric) -> Any:
    fig = go.Figure()
    metric = info.name
    for i in profile_indices(len(records)):
        record = records[i]
        fig.add_scatter(
            x=layers,
            y=record["layers"][metric],
            name=f"step {record['step']}",
            mode="lines+markers",
        )
    fig.update_layout(
        title=f"depth profile: {metric}",
        xaxis_title="layer",
        yaxis_title=metric,
        yaxis_type="log" if info.scale == "log" else "linear",
    )
    return fig


def _plain(value: Any) -> str:
    """A summary value for people: 4 significant digits, mappings as `key value` pairs."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_plain(v)}" for k, v in value.items()) or "-"
    return "-" if value is None else str(value)


def _summary_html(config: Mapping[str, Any], outcome: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_plain(v))}</td></tr>"
        for k, v in outcome.items()
    )
    return (
        f"<table>{rows}</table>"
        f"<details><summary>config</summary><pre>{html.escape(json.dumps(config, indent=2))}"
        "</pre></details>"
    )


SEVERITY_COLOURS = {"critical": "#b00020", "warning": "#a15c00", "info": "#335"}


def findings_of(
    config: Mapping[str, Any],
    layers: list[str],
    records: Sequence[Mapping[str, Any]],
    outcome: Mapping[str, Any],
) -> list[Finding]:
    """The run's diagnosis from its wire records (depthscope.analysis.diagnosis)."""
    if not records:
        return []
    trace = Trace.from_records(records, layers, config, outcome.get("divergence"))
    return diagnose(trace)


def _diagnosis_html(findings: Sequence[Finding]) -> str:
    if not findings:
        return (
            "<section><h2>Diagnosis</h2><p>No finding: nothing crossed a threshold.</p></section>"
        )
    # One cause often shows as several findings with the same fixes: each is listed once,
    # under the first finding that calls for it (as the explorer does).
    listed: set[str] = set()
    items = []
    for f in findings:
        fresh = [s for s in f.suggestions if s not in listed]
        listed.update(fresh)
        fixes = "".join(f"<li>{html.escape(s)}</li>" for s in fresh)
        above = ""
        if len(fresh) < len(f.suggestions):
            above = "…and the fixes listed above." if fresh else "Fixes: those listed above."
        items.append(
            f"<li><strong style='color:{SEVERITY_COLOURS[f.severity]}'>{html.escape(f.severity)}"
            f" · {html.escape(f.kind.replace('_', ' '))}</strong>: {html.escape(f.message)}"
            + (f"<ul>{fixes}</ul>" if fixes else "")
            + (f"<p>{above}</p>" if above else "")
            + "</li>"
        )
    return f"<section><h2>Diagnosis</h2><ul>{''.join(items)}</ul></section>"


def render_report(
    config: Mapping[str, Any],
    layers: list[str],
    records: Sequence[Mapping[str, Any]],
    outcome: Mapping[str, Any],
    title: str = "depthscope run",
) -> str:
    """The whole report as one HTML string. `outcome`: status, steps_done, final, divergence."""
    shown = [records[i] for i in downsample_indices(len(records), MAX_COLUMNS)]
    figures = [_curves(records)] if records else []
    if shown:
        figures += [_heatmap(shown, layers, m) for m in HEATMAP_METRICS]
        figures += [_profile(records, layers, m) for m in PROFILE_METRICS]
    # plotly.js once, in the first figure's div; the others reuse it.
    divs = [
        pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0), default_height=420)
        for i, fig in enumerate(figures)
    ]
    note = (
        f"<p>{len(records)} recorded steps; heatmaps show {len(shown)} of them.</p>"
        if len(shown) < len(records)
        else ""
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:1200px}"
        "th{text-align:left;padding-right:1rem}td{font-family:monospace}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{_summary_html(config, outcome)}{note}"
        + _diagnosis_html(findings_of(config, layers, records, outcome))
        + "".join(f"<section>{d}</section>" for d in divs)
        + "</body></html>\n"
    )


def write_report(
    path: Path,
    config: Mapping[str, Any],
    layers: list[str],
    records: Sequence[Mapping[str, Any]],
    outcome: Mapping[str, Any],
    title: str = "depthscope run",
) -> None:
    """render_report(...) written to `path` as UTF-8."""
    path.write_text(render_report(config, layers, records, outcome, title), encoding="utf-8")
