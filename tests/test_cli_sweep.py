"""`depthscope sweep`: a spec file or a preset trained here, summaries held to the cells'
records, the JSON and HTML outputs, errors and exit codes; `serve`'s executor options."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from depthscope import RunConfig, iter_records
from depthscope.cli import EXIT_OK, EXIT_USAGE, main
from depthscope.cli_sweep import CellProgress, format_cells_table

SMALL: dict[str, Any] = {
    "model": {"depth": 3, "width": 8},
    "training": {"steps": 15, "batch_size": 16},
    "data": {"n_samples": 64},
    "recording": {"eval_every": 5, "histogram_every": 5},
}
SPEC: dict[str, Any] = {
    "name": "tiny",
    "base": SMALL,
    "axes": [
        {"field": "training.lr", "values": [0.05, 0.5]},
        {"field": "model.activation", "values": ["tanh", "relu"]},
    ],
    "target_accuracy": 0.5,
}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    return path


def test_sweep_writes_every_cell_with_summaries_from_its_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, report = tmp_path / "sweep.json", tmp_path / "sweep.html"
    status = main(["sweep", str(write(tmp_path, SPEC)), "--json", str(out), "--out", str(report)])
    assert status == EXIT_OK
    sweep = json.loads(out.read_text())
    assert sweep["status"] == "completed" and len(sweep["cells"]) == 4
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the command trains
    try:
        cell = sweep["cells"][3]  # lr 0.5, relu: the reference trains it again
        config = {**SMALL, "training": {**SMALL["training"], "lr": 0.5}}
        config["model"] = {**SMALL["model"], "activation": "relu"}
        records = [r.to_wire() for r in iter_records(RunConfig.model_validate(config))]
    finally:
        torch.set_num_threads(threads)
    evaluated = [r for r in records if "val_loss" in r]
    reached = [r["step"] for r in evaluated if r["val_accuracy"] >= 0.5]
    grads = records[0]["layers"]["act_grad_norm"]
    assert cell["values"] == {"training.lr": 0.5, "model.activation": "relu"}
    assert cell["summary"] == {
        "final_loss": records[-1]["loss"],
        "final_val_loss": evaluated[-1]["val_loss"],
        "best_val_accuracy": max(r["val_accuracy"] for r in evaluated),
        "steps_to_target": reached[0] if reached else None,
        "diverged": False,
        "grad_ratio_step0": pytest.approx(grads[0] / grads[2]),
    }
    assert cell["curves"]["loss"] == [r["loss"] for r in records]
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:3] == ["CELL", "training.lr", "model.activation"]
    assert len(printed.splitlines()) == 5
    page = report.read_text()
    assert "<script" in page and "tiny" in page and page.count("Plotly.newPlot") >= 8


def test_sweep_preset_is_found_and_unknown_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweep", "--preset", "nope"]) == EXIT_USAGE
    assert "batchnorm-lr" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (
            {**SPEC, "axes": [{"field": "training.lrr", "values": [1]}]},
            "axes.0.field: unknown field",
        ),
        ({**SPEC, "axes": [{"field": "model.depth", "values": [500]}]}, "model.depth = 500"),
        ({**SPEC, "colour": "red"}, "colour"),
    ],
)
def test_sweep_bad_spec_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: dict[str, Any], says: str
) -> None:
    assert main(["sweep", str(write(tmp_path, spec))]) == EXIT_USAGE
    assert says in capsys.readouterr().err


def test_sweep_output_in_missing_directory_exits_2_before_training(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "r.html"
    assert main(["sweep", str(write(tmp_path, SPEC)), "--out", str(missing)]) == EXIT_USAGE


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cell_progress_draws_cells_on_a_tty() -> None:
    stream = FakeTty()
    progress = CellProgress(4, stream, width=8)
    progress.update(2, "training.lr=0.5", 10, 15, force=True)
    progress.close()
    assert "\r[####----] cell 3/4 training.lr=0.5  step 10/15" in stream.getvalue()
    quiet = io.StringIO()
    CellProgress(4, quiet).update(0, "x", 1, 2, force=True)
    assert quiet.getvalue() == ""


def test_format_cells_table_aligns_and_marks_missing() -> None:
    summary = {"best_val_accuracy": 0.5, "final_loss": None, "steps_to_target": None}
    cells = [{"index": 0, "values": {"training.lr": 1.0}, "status": "diverged", "summary": summary}]
    lines = format_cells_table(cells).splitlines()
    assert lines[1].split() == ["0", "1.0", "diverged", "0.5", "-", "-"]


def test_serve_passes_the_executor_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []
    fake_app = types.ModuleType("depthscope.service.app")
    fake_app.serve = lambda *args, **kwargs: calls.append(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "depthscope.service.app", fake_app)
    monkeypatch.delenv("DEPTHSCOPE_TOKEN", raising=False)
    assert main(["serve", "--executor", "ray", "--ray-address", "10.0.0.5:6379"]) == 0
    assert main(["serve"]) == 0  # unset: the settings read DEPTHSCOPE_EXECUTOR
    assert calls == [
        {"token": None, "executor": "ray", "ray_address": "10.0.0.5:6379"},
        {"token": None},
    ]
