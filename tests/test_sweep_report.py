"""The sweep report: cells placed on their axes, grids and lines, a standalone page."""

from __future__ import annotations

from typing import Any

from depthscope.sweep_report import axis_labels, cell_position, grid, lines, render_sweep_report

AXES = [
    {"field": "training.lr", "values": [0.05, 0.5, 1.0]},
    {
        "field": "model.activation",
        "values": ["tanh", "relu"],
        "with": {"model.init": ["xavier_normal", "he_normal"]},
    },
    {"field": "training.seed", "values": [0, 1]},
]


def sweep_of(accuracy: Any) -> dict[str, Any]:
    cells = []
    for index in range(12):
        lr, act, seed = cell_position(index, [3, 2, 2])
        summary = {
            "best_val_accuracy": accuracy(lr, act, seed),
            "diverged": False,
            "final_loss": 0.1,
        }
        values = {"training.lr": AXES[0]["values"][lr], "model.activation": AXES[1]["values"][act]}
        cells.append({"index": index, "values": values, "status": "completed", "summary": summary})
    return {"axes": AXES, "cells": cells, "status": "completed", "target_accuracy": 0.9, "base": {}}


def test_cell_position_is_row_major_last_axis_fastest() -> None:
    assert [cell_position(i, [3, 2, 2]) for i in (0, 1, 2, 5, 11)] == [
        (0, 0, 0),
        (0, 0, 1),
        (0, 1, 0),
        (1, 0, 1),
        (2, 1, 1),
    ]


def test_axis_labels_show_with_fields() -> None:
    assert axis_labels(AXES[1]) == ["tanh (xavier_normal)", "relu (he_normal)"]
    assert axis_labels(AXES[0]) == ["0.05", "0.5", "1.0"]


def test_grid_and_lines_put_each_cell_where_it_belongs() -> None:
    sweep = sweep_of(lambda lr, act, seed: lr + 10 * act + 100 * seed)
    panels = grid(sweep, "best_val_accuracy", log=False)
    assert set(panels) == {(0,), (1,)}  # one grid per seed
    assert panels[(1,)] == [[100.0, 101.0, 102.0], [110.0, 111.0, 112.0]]  # z[activation][lr]
    drawn = lines(sweep, "best_val_accuracy")
    assert drawn[(1, 0)] == [10.0, 11.0, 12.0]  # relu, seed 0, along lr
    assert set(drawn) == {(0, 0), (0, 1), (1, 0), (1, 1)}


def test_grid_leaves_missing_and_non_numeric_summaries_empty() -> None:
    sweep = sweep_of(lambda lr, act, seed: None if lr == 2 else 0.9)
    assert grid(sweep, "best_val_accuracy", log=False)[(0,)][0] == [0.9, 0.9, None]
    assert grid(sweep, "diverged", log=False)[(0,)][0] == [None, None, None]  # a flag, not a number


def test_render_sweep_report_is_one_standalone_page() -> None:
    page = render_sweep_report(sweep_of(lambda lr, act, seed: 0.5), title="a <sweep>")
    assert page.startswith("<!DOCTYPE html>") and "a &lt;sweep&gt;" in page
    assert page.count("<script") >= 1 and "cdn" not in page.lower().split("plotly.js")[0]
    assert page.count("<tr>") == 13  # the header and twelve cells
