"""A standalone HTML report of a sweep: its cells' summaries as a table, as grids over the first
two axes, as lines against the first axis, and every cell's loss curve; opens offline.

Works on the shape of GET /api/sweeps/{id} (or `depthscope sweep --json`), so a report can be
made of a sweep trained here or fetched from a server. plotly.js is inlined once.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from depthscope.report import Number, _plain, log10_or_none

SWEEP_SUMMARIES: tuple[tuple[str, bool], ...] = (  # summary key, shown as log10
    ("best_val_accuracy", False),
    ("final_loss", True),
    ("steps_to_target", False),
    ("grad_ratio_step0", True),
)
TABLE_KEYS = (
    "best_val_accuracy",
    "steps_to_target",
    "final_loss",
    "final_val_loss",
    "diverged",
    "grad_ratio_step0",
)

Sweep = Mapping[str, Any]


def axis_labels(axis: Mapping[str, Any]) -> list[str]:
    """One label per value: "relu", or "relu (he_normal)" for an axis with `with` fields."""
    companions = list(axis.get("with", {}).values())
    return [
        str(v) + (f" ({', '.join(str(c[i]) for c in companions)})" if companions else "")
        for i, v in enumerate(axis["values"])
    ]


def cell_position(index: int, sizes: Sequence[int]) -> tuple[int, ...]:
    """Where cell `index` sits on each axis (row-major: the last axis varies fastest)."""
    position = []
    for size in reversed(sizes):
        index, at = divmod(index, size)
        position.append(at)
    return tuple(reversed(position))


def summary_value(cell: Mapping[str, Any], key: str, log: bool) -> Number:
    value = cell["summary"].get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return log10_or_none(float(value)) if log else float(value)


def _where(axes: Sequence[Mapping[str, Any]], first: int, at: Sequence[int]) -> str:
    """ "field=value, ..." for the axes from `first` on, at positions `at`."""
    return ", ".join(
        f"{axes[first + i]['field']}={axis_labels(axes[first + i])[j]}" for i, j in enumerate(at)
    )


def grid(sweep: Sweep, key: str, log: bool) -> dict[tuple[int, ...], list[list[Number]]]:
    """z[y][x] per combination of the axes after the first two (x: axis 0, y: axis 1)."""
    axes = sweep["axes"]
    sizes = [len(a["values"]) for a in axes]
    rows = sizes[1] if len(sizes) > 1 else 1
    panels: dict[tuple[int, ...], list[list[Number]]] = {}
    for cell in sweep["cells"]:
        at = (*cell_position(cell["index"], sizes), 0)
        z = panels.setdefault(tuple(at[2:-1]), [[None] * sizes[0] for _ in range(rows)])
        z[at[1] if len(sizes) > 1 else 0][at[0]] = summary_value(cell, key, log)
    return panels


def lines(sweep: Sweep, key: str) -> dict[tuple[int, ...], list[Number]]:
    """y[x] along axis 0 per combination of the other axes: one line each."""
    sizes = [len(a["values"]) for a in sweep["axes"]]
    out: dict[tuple[int, ...], list[Number]] = {}
    for cell in sweep["cells"]:
        at = cell_position(cell["index"], sizes)
        out.setdefault(at[1:], [None] * sizes[0])[at[0]] = summary_value(cell, key, False)
    return out


def _grid_figures(sweep: Sweep, key: str, log: bool) -> list[Any]:
    axes = sweep["axes"]
    y = axis_labels(axes[1]) if len(axes) > 1 else [""]
    figures = []
    for rest, z in sorted(grid(sweep, key, log).items()):
        where = _where(axes, 2, rest)
        fig = go.Figure(go.Heatmap(z=z, x=axis_labels(axes[0]), y=y, colorscale="Viridis"))
        name = f"log10 {key}" if log else key
        fig.update_layout(
            title=name + (f" ({where})" if where else ""),
            xaxis={"title": axes[0]["field"], "type": "category"},
            yaxis={"title": axes[1]["field"] if len(axes) > 1 else "", "type": "category"},
        )
        figures.append(fig)
    return figures


def _line_figure(sweep: Sweep, key: str, log: bool) -> Any:
    axes = sweep["axes"]
    values = axes[0]["values"]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    fig = go.Figure()
    for rest, y in sorted(lines(sweep, key).items()):
        x = values if numeric else axis_labels(axes[0])
        fig.add_scatter(x=x, y=y, name=_where(axes, 1, rest) or key, mode="lines+markers")
    fig.update_layout(
        title=f"{key} against {axes[0]['field']}",
        xaxis_title=axes[0]["field"],
        yaxis={"title": key, "type": "log" if log else "linear"},
    )
    return fig


def _loss_figure(sweep: Sweep) -> Any | None:
    fig = go.Figure()
    for cell in sweep["cells"]:
        curves = cell.get("curves")
        if curves:
            label = ", ".join(f"{k}={v}" for k, v in cell["values"].items())
            fig.add_scatter(x=curves["steps"], y=curves["loss"], name=label, mode="lines")
    if not fig.data:
        return None
    fig.update_layout(title="training loss per cell", xaxis_title="step", yaxis_type="log")
    return fig


def _cells_table(sweep: Sweep) -> str:
    cells = sweep["cells"]
    fields = list(cells[0]["values"]) if cells else []
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["cell", *fields, "status", *TABLE_KEYS])
    rows = []
    for c in cells:
        values = [
            c["index"],
            *c["values"].values(),
            c["status"],
            *(c["summary"].get(k) for k in TABLE_KEYS),
        ]
        rows.append(
            "<tr>" + "".join(f"<td>{html.escape(_plain(v))}</td>" for v in values) + "</tr>"
        )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def render_sweep_report(sweep: Sweep, title: str = "depthscope sweep") -> str:
    figures: list[Any] = []
    for key, log in SWEEP_SUMMARIES:
        figures += [*_grid_figures(sweep, key, log), _line_figure(sweep, key, log)]
    loss = _loss_figure(sweep)
    figures += [loss] if loss is not None else []
    divs = [
        pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0), default_height=420)
        for i, fig in enumerate(figures)
    ]
    axes = "; ".join(f"{a['field']}: {', '.join(axis_labels(a))}" for a in sweep["axes"])
    about = (
        f"status {sweep.get('status')}; {len(sweep['cells'])} cells over {axes}; "
        f"target accuracy {_plain(sweep.get('target_accuracy'))}"
    )
    base = html.escape(json.dumps(sweep.get("base"), indent=2))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:1200px}"
        "th{text-align:left;padding-right:1rem}td{font-family:monospace;padding-right:1rem}"
        f"</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(about)}</p>"
        f"{_cells_table(sweep)}<details><summary>base config</summary><pre>{base}</pre></details>"
        + "".join(f"<section>{d}</section>" for d in divs)
        + "</body></html>\n"
    )


def write_sweep_report(path: Path, sweep: Sweep, title: str = "depthscope sweep") -> None:
    path.write_text(render_sweep_report(sweep, title), encoding="utf-8")
