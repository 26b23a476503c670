"""`depthscope sweep`: train a sweep's cells here, one after another, with a progress bar over
cells, print their summaries and write a standalone HTML report of the sweep.

    depthscope sweep SPEC.json | --preset ID [--out R.html] [--json R.json]

Exit status: 0 every cell completed (diverged cells included: a sweep measures them); 1 a cell
failed; 2 bad input (usage, spec); 130 interrupted with Ctrl-C (cells so far are reported).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from pydantic import ValidationError

from depthscope.cli import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    describe_validation,
    load_config_file,
)


def add_parser(sub: Any) -> None:
    sweep = sub.add_parser("sweep", help="train a grid of runs headless, write an HTML report")
    source = sweep.add_mutually_exclusive_group(required=True)
    source.add_argument("spec", nargs="?", type=Path, help="a sweep spec JSON file")
    source.add_argument("--preset", help="a sweep preset id (see GET /api/sweep-presets)")
    sweep.add_argument("--out", type=Path, help="write a standalone HTML report here")
    sweep.add_argument("--json", type=Path, help="write the sweep and its cells' summaries here")
    sweep.set_defaults(handler=sweep_command)


def load_spec(args: argparse.Namespace) -> Any:
    from depthscope.service.sweeps import SweepSpec, SweepSpecError, expand
    from depthscope.sweep_presets import BY_ID

    if args.preset:
        if args.preset not in BY_ID:
            known = ", ".join(BY_ID)
            raise CliError(f"unknown sweep preset {args.preset!r}; choose one of: {known}", 2)
        spec = BY_ID[args.preset].spec
    else:
        try:
            spec = SweepSpec.model_validate_json(json.dumps(load_config_file(args.spec)))
        except ValidationError as error:
            text = describe_validation(error).replace("invalid config", "invalid sweep spec")
            raise CliError(text, EXIT_USAGE) from error
    try:
        return spec, expand(spec)
    except SweepSpecError as error:
        lines = "\n".join(f"  {'.'.join(map(str, p.loc))}: {p.msg}" for p in error.problems)
        raise CliError(f"invalid sweep spec:\n{lines}", EXIT_USAGE) from error


class CellProgress:
    """One line on a terminal: the cell, its values and its step; silent when not a tty."""

    def __init__(self, total: int, stream: TextIO, width: int = 20) -> None:
        self.total, self.stream, self.width = total, stream, width
        self.enabled = stream.isatty()
        self._last = 0.0

    def update(self, cell: int, label: str, step: int, steps: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        filled = self.width * cell // self.total
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] cell {cell + 1}/{self.total} {label}  step {step}/{steps} ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def train_cells(cells: list[Any], target: float | None) -> tuple[list[dict[str, Any]], bool]:
    """Each cell's wire form (index, values, status, summary, curves) and whether Ctrl-C cut
    the sweep short; a cell that raises fails alone."""
    from depthscope.service.sweeps import empty_summary

    stop = {"requested": False}

    def on_interrupt(_signum: int, _frame: FrameType | None) -> None:
        stop["requested"] = True  # the cell in training stops after its step; the rest are skipped

    import torch

    # One thread, as the server's workers train: small nets gain nothing from more, and on a
    # busy machine their threads' spinning can make a run ten times slower.
    torch.set_num_threads(1)
    previous = signal.signal(signal.SIGINT, on_interrupt)
    progress = CellProgress(len(cells), sys.stderr)
    out: list[dict[str, Any]] = []
    try:
        for cell in cells:
            if stop["requested"]:
                wire = {"index": cell.index, "values": cell.values, "run_id": None}
                out.append({**wire, "status": "cancelled", "summary": empty_summary("cancelled")})
            else:
                out.append(train_cell(cell, target, progress, lambda: stop["requested"]))
    finally:
        progress.close()
        signal.signal(signal.SIGINT, previous)
    return out, stop["requested"]


def train_cell(
    cell: Any, target: float | None, progress: CellProgress, should_stop: Callable[[], bool]
) -> dict[str, Any]:
    from depthscope.engine.trainer import Trainer
    from depthscope.service.sweeps import summarize_records

    label = ", ".join(f"{k}={v}" for k, v in cell.values.items())
    steps = cell.config.training.steps
    records: list[dict[str, Any]] = []

    def keep(record: Any) -> None:
        records.append(record.to_wire())
        progress.update(cell.index, label, record.step + 1, steps)

    error, status = None, "failed"
    try:
        status = Trainer(cell.config).run(keep, should_stop).status
    except Exception as exc:  # a cell fails alone, with its reason
        error = f"{type(exc).__name__}: {exc}"
    return {
        "index": cell.index,
        "values": cell.values,
        "run_id": None,
        "status": status,
        "summary": summarize_records(records, status, target),
        "error": error,
        **_curves(records),
    }


def _curves(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What the report draws per cell: loss and held-out accuracy over steps."""
    evals = [r for r in records if "val_loss" in r]
    return {
        "curves": {
            "steps": [r["step"] for r in records],
            "loss": [r["loss"] for r in records],
            "val_steps": [r["step"] for r in evals],
            "val_accuracy": [r["val_accuracy"] for r in evals],
        }
    }


def format_cells_table(cells: list[dict[str, Any]]) -> str:
    header = ["CELL", *cells[0]["values"], "STATUS", "BEST VAL ACC", "FINAL LOSS", "TO TARGET"]
    rows = [header]
    for cell in cells:
        s = cell["summary"]
        rows.append(
            [
                str(cell["index"]),
                *(str(v) for v in cell["values"].values()),
                cell["status"],
                _num(s["best_val_accuracy"]),
                _num(s["final_loss"]),
                "-" if s["steps_to_target"] is None else str(s["steps_to_target"]),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def sweep_command(args: argparse.Namespace) -> int:
    from depthscope import sweep_report

    for path in (args.out, args.json):  # fail before training, not after
        if path is not None and not path.parent.is_dir():
            raise CliError(f"cannot write {path}: no directory {path.parent}", EXIT_USAGE)
    spec, cells = load_spec(args)
    done, interrupted = train_cells(cells, spec.target_accuracy)
    sweep = {**spec.to_wire(), "status": "cancelled" if interrupted else "completed", "cells": done}
    if any(c["status"] == "failed" for c in done) and not interrupted:
        sweep["status"] = "failed"
    title = f"depthscope sweep: {spec.name or args.preset or args.spec.name}"
    try:
        if args.json:
            args.json.write_text(json.dumps(sweep, allow_nan=False) + "\n", encoding="utf-8")
        if args.out:
            sweep_report.write_sweep_report(args.out, sweep, title)
    except OSError as error:
        raise CliError(f"cannot write {error.filename}: {error.strerror}") from error
    print(format_cells_table(done))
    if interrupted:
        print(
            f"interrupted: {sum(c['status'] != 'cancelled' for c in done)} cells trained",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return EXIT_FAILED if sweep["status"] == "failed" else EXIT_OK
