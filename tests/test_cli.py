"""The command line: `run` end to end in-process, overrides and errors, exit codes, the HTTP
client commands against a stub server and the real service."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import torch
from depthscope import RunConfig, iter_records
from depthscope.cli import (
    EXIT_DIVERGED,
    EXIT_FAILED,
    EXIT_USAGE,
    Progress,
    apply_overrides,
    format_runs_table,
    main,
    parse_override,
)
from depthscope.presets import PRESETS

SMALL: dict[str, Any] = {
    "model": {"depth": 3, "width": 8},
    "training": {"steps": 15, "batch_size": 16},
    "data": {"n_samples": 64},
    "recording": {"eval_every": 5, "histogram_every": 5},
}
# Linear layers with std-3 weights twenty deep: the first backward overflows.
EXPLODING = {
    "model": {"depth": 20, "width": 16, "activation": "linear", "init": "normal", "init_std": 3.0},
    "training": {"steps": 10, "batch_size": 16, "lr": 10.0},
    "data": {"n_samples": 64},
}


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def strict_json(path: Path) -> Any:
    def reject(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=reject)


# -- run ------------------------------------------------------------------------------------------
def test_run_writes_json_identical_to_engine_records(tmp_path: Path) -> None:
    out_json, out_html = tmp_path / "records.json", tmp_path / "report.html"
    status = main(
        ["run", str(write_config(tmp_path, SMALL)), "--json", str(out_json), "--out", str(out_html)]
    )
    assert status == 0
    document = strict_json(out_json)
    expected = [r.to_wire() for r in iter_records(RunConfig.model_validate(SMALL))]
    assert document["records"] == json.loads(json.dumps(expected))  # same seed, same numbers
    assert document["status"] == "completed" and document["steps_done"] == 15
    assert document["layers"] == ["block1", "block2", "block3", "readout"]
    assert document["config"] == RunConfig.model_validate(SMALL).model_dump()
    page = out_html.read_text()
    assert "<script src=" not in page and "Plotly.newPlot" in page
    assert json.dumps(expected[-1]["loss"]) in page


def test_run_override_changes_the_config(tmp_path: Path) -> None:
    out_json = tmp_path / "records.json"
    args = ["run", str(write_config(tmp_path, SMALL)), "--json", str(out_json)]
    assert main([*args, "--set", "model.depth=2", "--set", "model.activation=tanh"]) == 0
    document = strict_json(out_json)
    assert document["layers"] == ["block1", "block2", "readout"]
    assert document["config"]["model"]["activation"] == "tanh"


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("model.depth=30", ["model", "depth"], 30),
        ("training.lr=0.1", ["training", "lr"], 0.1),
        ("model.bias=false", ["model", "bias"], False),
        ("model.activation=tanh", ["model", "activation"], "tanh"),
        ('model.activation="gelu"', ["model", "activation"], "gelu"),
        ("data.dataset=", ["data", "dataset"], ""),
    ],
)
def test_parse_override_reads_json_then_string(text: str, path: list[str], value: Any) -> None:
    assert parse_override(text) == (path, value)


def test_apply_overrides_leaves_the_input_alone() -> None:
    base = {"model": {"depth": 3}}
    assert apply_overrides(base, ["model.depth=5", "training.steps=7"]) == {
        "model": {"depth": 5},
        "training": {"steps": 7},
    }
    assert base == {"model": {"depth": 3}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.depth=300", "model.depth: Input should be less than or equal to 200 (got 300)"),
        ("model.dept=3", "model.dept: Extra inputs are not permitted"),
        ("model.activation=swish", "model.activation: unknown activation 'swish'"),
        ("training.batch_size=4096", "training.batch_size (4096) exceeds"),
        ("model.depth.x=1", "model.depth is not a section"),
        ("model.depth", "--set expects SECTION.FIELD=VALUE"),
    ],
)
def test_run_bad_override_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, message: str
) -> None:
    status = main(["run", str(write_config(tmp_path, SMALL)), "--set", override])
    assert status == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_run_over_budget_says_which_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = [
        "--set",
        "model.depth=200",
        "--set",
        "model.width=1024",
        "--set",
        "training.steps=100000",
        "--set",
        "recording.record_every=100",  # within the recording budget: the compute one speaks
    ]
    assert main(["run", str(write_config(tmp_path, SMALL)), *big]) == EXIT_USAGE
    assert "compute budget exceeded" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"), [(None, "cannot read"), ("{nope", "not valid JSON"), ("[1]", "object")]
)
def test_run_bad_config_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    assert main(["run", str(path)]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_run_diverged_exits_3_and_keeps_the_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "records.json"
    status = main(["run", str(write_config(tmp_path, EXPLODING)), "--json", str(out_json)])
    assert status == EXIT_DIVERGED
    err = capsys.readouterr().err
    document = strict_json(out_json)  # NaN/inf became null, the file is still valid JSON
    assert document["status"] == "diverged"
    where = document["divergence"]
    assert f"diverged: {where['message']}" in err
    # The forward pass overflowed at step 0: that is named, not the NaN gradients that followed.
    assert where["step"] == 0 and where["metric"] in (
        "preact_mean",
        "preact_std",
        "act_mean",
        "act_std",
    )
    last = document["records"][-1]["layers"]
    assert last[where["metric"]][where["layer_index"]] is None
    assert None in last["grad_norm"]


def test_run_cuda_without_gpu_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    status = main(["run", str(write_config(tmp_path, SMALL)), "--set", "training.device=cuda"])
    assert status == EXIT_FAILED
    assert "no CUDA device" in capsys.readouterr().err


def test_run_preset_trains_the_preset(tmp_path: Path) -> None:
    preset = PRESETS[0]
    out_json = tmp_path / "records.json"
    # Shortened: the preset's network, ten steps.
    args = ["run", "--preset", preset.id, "--set", "training.steps=10", "--json", str(out_json)]
    assert main(args) in (0, EXIT_DIVERGED)
    config = preset.config.model_dump() if hasattr(preset.config, "model_dump") else preset.config
    assert strict_json(out_json)["config"]["model"] == config["model"]


def test_run_unknown_preset_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--preset", "no-such-preset"]) == EXIT_USAGE
    assert "unknown preset 'no-such-preset'" in capsys.readouterr().err


def test_run_needs_config_or_preset(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == EXIT_USAGE


# -- progress bar ---------------------------------------------------------------------------------
class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_quiet_when_not_a_tty() -> None:
    stream = io.StringIO()
    progress = Progress(10, stream)
    progress.update(4, 0.5, force=True)
    progress.close()
    assert stream.getvalue() == ""


def test_progress_draws_a_bar_on_a_tty() -> None:
    stream = FakeTty()
    progress = Progress(10, stream, width=10)
    progress.update(4, 0.5, force=True)
    progress.update(9, None, force=True)
    progress.close()
    assert "\r[#####-----] step 5/10  loss 0.5" in stream.getvalue()
    assert "[##########] step 10/10  loss nan" in stream.getvalue()
    assert stream.getvalue().endswith("\n")


# -- serve ----------------------------------------------------------------------------------------
def test_serve_passes_options_and_env_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[Any, ...]] = []
    fake_app = types.ModuleType("depthscope.service.app")
    fake_app.serve = lambda host, port, data_dir, token=None: calls.append(  # type: ignore[attr-defined]
        (host, port, data_dir, token)
    )
    monkeypatch.setitem(sys.modules, "depthscope.service.app", fake_app)
    monkeypatch.setenv("DEPTHSCOPE_TOKEN", "s3cret")
    assert main(["serve", "--port", "9001", "--data-dir", str(tmp_path)]) == 0
    assert main(["serve", "--host", "0.0.0.0", "--token", "other"]) == 0
    assert calls == [
        ("127.0.0.1", 9001, tmp_path, "s3cret"),
        ("0.0.0.0", 8000, Path("data"), "other"),
    ]


@pytest.mark.slow  # a fresh interpreter imports torch and trains: seconds
def test_python_m_depthscope_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "depthscope", "run", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert "--preset" in done.stdout and "--set" in done.stdout


# -- runs / export against a stub server ----------------------------------------------------------
RUNS = [
    {
        "id": "r-2",
        "status": "running",
        "steps_done": 40,
        "created_at": "2026-01-02T00:00:00Z",
        "config": {
            "model": {"depth": 30, "width": 64, "activation": "sigmoid"},
            "training": {"steps": 500},
        },
    },
    {"id": "r-1", "status": "completed", "steps_done": 500, "config": SMALL, "created_at": "x"},
]


class StubHandler(BaseHTTPRequestHandler):
    seen_auth: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        StubHandler.seen_auth.append(self.headers.get("Authorization"))
        routes = {
            "/api/runs": (200, "application/json", json.dumps(RUNS).encode()),
            "/api/runs/r-1/export?format=csv": (200, "text/csv", b"step,loss\n0,0.7\n"),
            "/api/runs/r-1/export?format=json": (200, "application/json", b'{"records": []}'),
        }
        code, kind, body = routes.get(self.path, (404, "application/json", b'{"detail":"no run"}'))
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass


@pytest.fixture
def stub_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StubHandler.seen_auth = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_runs_prints_a_table(stub_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--url", stub_url, "--token", "t0k"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "STEPS", "NETWORK", "CREATED"]
    assert lines[1].split() == [
        "r-2",
        "running",
        "40/500",
        "30x64",
        "sigmoid",
        "2026-01-02T00:00:00Z",
    ]
    assert lines[2].startswith("r-1  completed  500/15")
    assert StubHandler.seen_auth == ["Bearer t0k"]


def test_format_runs_table_aligns_columns() -> None:
    lines = format_runs_table(RUNS).splitlines()
    assert (
        len(
            {line.index("STATUS") for line in lines[:1]}
            | {line.index("running") for line in lines[1:2]}
        )
        == 1
    )
    assert format_runs_table([]) == "ID  STATUS  STEPS  NETWORK  CREATED"


def test_export_writes_csv_to_a_file(stub_url: str, tmp_path: Path) -> None:
    out = tmp_path / "r1.csv"
    assert main(["export", "r-1", "--format", "csv", "--url", stub_url, "--out", str(out)]) == 0
    assert out.read_bytes() == b"step,loss\n0,0.7\n"


def test_export_json_to_stdout(stub_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "r-1", "--url", stub_url]) == 0
    assert json.loads(capfd.readouterr().out) == {"records": []}


def test_export_unknown_run_exits_1(stub_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "nope", "--url", stub_url]) == EXIT_FAILED
    assert "answered 404" in capsys.readouterr().err


def test_runs_unreachable_server_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--url", "http://127.0.0.1:9"]) == EXIT_FAILED
    assert "cannot reach the server at http://127.0.0.1:9" in capsys.readouterr().err


# -- runs / export against the real service -------------------------------------------------------
def wait_for_run(url: str, run_id: str, seconds: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        summary: dict[str, Any] = httpx.get(f"{url}/api/runs/{run_id}", timeout=30).json()
        if summary["status"] not in ("queued", "running"):
            return summary
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish within {seconds} s")


@pytest.mark.server
def test_runs_and_export_against_live_server(
    live_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    created = httpx.post(f"{live_server}/api/runs", json=SMALL, timeout=60)
    assert created.status_code == 201
    run_id = created.json()["id"]
    assert wait_for_run(live_server, run_id)["status"] == "completed"

    assert main(["runs", "--url", live_server]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:3] == [run_id, "completed", "15/15"]

    exported, local = tmp_path / "export.json", tmp_path / "local.json"
    assert main(["export", run_id, "--url", live_server, "--out", str(exported)]) == 0
    # The server's records are the ones `depthscope run` computes for the same config.
    assert main(["run", str(write_config(tmp_path, SMALL)), "--json", str(local)]) == 0
    assert strict_json(exported)["records"] == strict_json(local)["records"]

    csv_out = tmp_path / "export.csv"
    assert (
        main(["export", run_id, "--format", "csv", "--url", live_server, "--out", str(csv_out)])
        == 0
    )
    assert len(csv_out.read_text().splitlines()) == 1 + 15 * 4  # header + steps × layers


def test_run_output_in_missing_directory_exits_2_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no" / "such" / "report.html"
    assert main(["run", str(write_config(tmp_path, SMALL)), "--out", str(out)]) == EXIT_USAGE
    assert f"no directory {out.parent}" in capsys.readouterr().err


def test_run_prints_the_diagnosis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", str(write_config(tmp_path, EXPLODING))])
    printed = capsys.readouterr()
    where = printed.err.split("diverged: ", 1)[1].splitlines()[0]  # the server's one sentence
    assert f"critical: Training stopped: {where}." in printed.out
