"""The `depthscope` command: serve the app, train headless with an HTML report, talk to a server.

    depthscope serve [--host H] [--port P] [--data-dir D] [--token T]
                     [--executor local|ray] [--ray-address ADDR]
    depthscope run CONFIG.json | --preset ID [--set model.depth=30 ...] [--out R.html]
                   [--json R.json]
    depthscope sweep SPEC.json | --preset ID [--out R.html] [--json R.json]   (cli_sweep.py)
    depthscope runs [--url URL]
    depthscope export ID [--format csv|json] [--out FILE] [--url URL]

Exit status: 0 success; 1 a failure (server unreachable, run failed); 2 bad input (usage,
config, override); 3 the run diverged; 130 the run was interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from pydantic import ValidationError

from depthscope.engine.config import RunConfig
from depthscope.engine.trainer import DeviceUnavailableError, RunResult, Trainer
from depthscope.records import StepRecord

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_URL = "http://127.0.0.1:8000"


class CliError(Exception):
    """A problem worth one clear line on stderr, and the exit status to leave with."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


# -- configs: a file or a preset, then overrides, then validation -------------------------------
def load_preset(preset_id: str) -> dict[str, Any]:
    from depthscope.presets import PRESETS  # lazy: only `run --preset` needs it

    for preset in PRESETS:
        if preset.id == preset_id:
            config = preset.config
            return dict(config.model_dump() if hasattr(config, "model_dump") else config)
    known = ", ".join(p.id for p in PRESETS)
    raise CliError(f"unknown preset {preset_id!r}; choose one of: {known}", EXIT_USAGE)


def load_config_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise CliError(f"cannot read {path}: {error.strerror}", EXIT_USAGE) from error
    except ValueError as error:
        raise CliError(f"{path} is not valid JSON: {error}", EXIT_USAGE) from error
    if not isinstance(data, dict):
        raise CliError(f"{path} must hold a JSON object (a RunConfig)", EXIT_USAGE)
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """'model.depth=30' -> (['model', 'depth'], 30); the value is JSON, else a plain string."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise CliError(f"--set expects SECTION.FIELD=VALUE, got {text!r}", EXIT_USAGE)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return path, value


def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of `config` with each dotted override set; validation comes after, in RunConfig."""
    result: dict[str, Any] = json.loads(json.dumps(config))
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise CliError(f"--set {text}: {where} is not a section", EXIT_USAGE)
            node = child
        node[path[-1]] = value
    return result


def describe_validation(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "config"
        message = item["msg"].removeprefix("Value error, ")
        got = f" (got {item['input']!r})" if item["type"] != "value_error" and item["loc"] else ""
        lines.append(f"  {field}: {message}{got}")
    return "invalid config:\n" + "\n".join(lines)


def validate(config: Mapping[str, Any]) -> RunConfig:
    try:
        # JSON mode, as the HTTP API sees it: the same choices, bounds and messages.
        return RunConfig.model_validate_json(json.dumps(config))
    except ValidationError as error:
        raise CliError(describe_validation(error), EXIT_USAGE) from error


# -- the run subcommand -------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on a terminal; silent when the stream is not a tty."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self.total, self.stream, self.width = total, stream, width
        self.enabled = stream.isatty()
        self._last = 0.0

    def update(self, step: int, loss: float | None, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        done = min(step + 1, self.total)
        filled = self.width * done // self.total
        bar = "#" * filled + "-" * (self.width - filled)
        shown = "nan" if loss is None else f"{loss:.4g}"
        self.stream.write(f"\r[{bar}] step {done}/{self.total}  loss {shown}  ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def train_with_progress(trainer: Trainer) -> tuple[list[dict[str, Any]], RunResult]:
    """Every record (wire form) and the outcome; Ctrl-C ends the run after the current step."""
    stop = {"requested": False}

    def on_interrupt(_signum: int, _frame: FrameType | None) -> None:
        stop["requested"] = True  # keep the records so far, still write the outputs

    previous = signal.signal(signal.SIGINT, on_interrupt)
    progress = Progress(trainer.config.training.steps, sys.stderr)
    records: list[dict[str, Any]] = []

    def keep(record: StepRecord) -> None:
        records.append(record.to_wire())
        progress.update(record.step, record.loss)

    try:
        result = trainer.run(keep, lambda: stop["requested"])
        if records:
            progress.update(records[-1]["step"], records[-1]["loss"], force=True)
    finally:
        progress.close()
        signal.signal(signal.SIGINT, previous)
    return records, result


def run_command(args: argparse.Namespace) -> int:
    from depthscope import report  # plotly: imported only by the command that may need it

    for path in (args.out, args.json):  # fail before training, not after
        if path is not None and not path.parent.is_dir():
            raise CliError(f"cannot write {path}: no directory {path.parent}", EXIT_USAGE)
    base = load_preset(args.preset) if args.preset else load_config_file(args.config)
    config = validate(apply_overrides(base, args.set or []))
    try:
        trainer = Trainer(config)
    except DeviceUnavailableError as error:
        raise CliError(str(error)) from error
    records, result = train_with_progress(trainer)

    outcome = {
        "status": result.status,
        "steps_done": result.steps_done,
        "final": result.final,
        "divergence": result.divergence.to_wire() if result.divergence else None,
    }
    document = {"config": config.model_dump(), "layers": trainer.layer_names, **outcome}
    try:
        if args.json:
            text = json.dumps({**document, "records": records}, allow_nan=False)
            args.json.write_text(text + "\n", encoding="utf-8")
        if args.out:
            title = f"depthscope: {args.preset or args.config.name}"
            report.write_report(
                args.out, config.model_dump(), trainer.layer_names, records, outcome, title
            )
    except OSError as error:
        raise CliError(f"cannot write {error.filename}: {error.strerror}") from error
    code = finish_message(result)
    for finding in report.findings_of(config.model_dump(), trainer.layer_names, records, outcome):
        print(f"{finding.severity}: {finding.message}")
    return code


def finish_message(result: RunResult) -> int:
    final = result.final
    if result.status == "completed":
        acc = final.get("val_accuracy")
        tail = f", held-out accuracy {acc:.3f}" if isinstance(acc, float) else ""
        loss = final.get("loss")
        shown = f"{loss:.4g}" if isinstance(loss, float) else "n/a"
        print(f"completed {result.steps_done} steps: loss {shown}{tail}")
        return EXIT_OK
    if result.status == "diverged":
        where = result.divergence.describe() if result.divergence else "non-finite values"
        print(f"diverged: {where}", file=sys.stderr)
        return EXIT_DIVERGED
    print(f"interrupted after {result.steps_done} steps", file=sys.stderr)
    return EXIT_INTERRUPTED


# -- talking to a running server ------------------------------------------------------------------
def http_get(url: str, token: str | None) -> bytes:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:300]
        raise CliError(f"{url} answered {error.code}: {detail}") from error
    except urllib.error.URLError as error:
        raise CliError(f"cannot reach the server at {url}: {error.reason}") from error


def runs_command(args: argparse.Namespace) -> int:
    runs = json.loads(http_get(f"{args.url.rstrip('/')}/api/runs", args.token))
    print(format_runs_table(runs))
    return EXIT_OK


def format_runs_table(runs: Sequence[Mapping[str, Any]]) -> str:
    header = ("ID", "STATUS", "STEPS", "NETWORK", "CREATED")
    rows = [header]
    for run in runs:
        model = run.get("config", {}).get("model", {})
        steps = run.get("config", {}).get("training", {}).get("steps", "?")
        network = f"{model.get('depth')}x{model.get('width')} {model.get('activation')}"
        done = f"{run.get('steps_done', 0)}/{steps}"
        rows.append((str(run["id"]), str(run["status"]), done, network, str(run.get("created_at"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def export_command(args: argparse.Namespace) -> int:
    run_id = urllib.parse.quote(args.id, safe="")
    url = f"{args.url.rstrip('/')}/api/runs/{run_id}/export?format={args.format}"
    body = http_get(url, args.token)
    if args.out:
        args.out.write_bytes(body)
    else:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    return EXIT_OK


def serve_command(args: argparse.Namespace) -> int:
    from depthscope.service.app import serve  # lazy: the run/export commands need no web stack
    from depthscope.service.settings import StartupError

    where = {k: v for k in ("executor", "ray_address") if (v := getattr(args, k))}  # else env
    try:
        serve(args.host, args.port, args.data_dir, token=args.token, **where)
    except StartupError as error:
        raise CliError(str(error), EXIT_USAGE) from error
    return EXIT_OK


# -- the parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthscope", description="Train deep networks and watch per-layer gradient flow."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    token = os.environ.get("DEPTHSCOPE_TOKEN")

    serve = sub.add_parser("serve", help="run the web app")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data-dir", type=Path, default=Path("data"), help="where runs are kept")
    serve.add_argument(
        "--token", default=token, help="protect mutating endpoints (env DEPTHSCOPE_TOKEN)"
    )
    serve.add_argument("--executor", choices=("local", "ray"), help="where runs train")
    serve.add_argument("--ray-address", help="Ray cluster for --executor ray (default: local)")
    serve.set_defaults(handler=serve_command)

    run = sub.add_parser("run", help="train one run headless, write an HTML report")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("config", nargs="?", type=Path, help="a RunConfig JSON file")
    source.add_argument("--preset", help="a preset id (see GET /api/presets)")
    run.add_argument(
        "--set",
        action="append",
        metavar="SECTION.FIELD=VALUE",
        help="override one field, e.g. model.depth=30 (repeatable; value is JSON)",
    )
    run.add_argument("--out", type=Path, help="write a standalone HTML report here")
    run.add_argument("--json", type=Path, help="write every record as JSON here")
    run.set_defaults(handler=run_command)

    from depthscope import cli_sweep  # its module imports this one

    cli_sweep.add_parser(sub)
    for name, help_text in (
        ("runs", "list a server's runs"),
        ("export", "download a run's records"),
    ):
        client = sub.add_parser(name, help=help_text)
        client.add_argument("--url", default=DEFAULT_URL, help=f"server (default {DEFAULT_URL})")
        client.add_argument("--token", default=token, help="bearer token (env DEPTHSCOPE_TOKEN)")
        if name == "export":
            client.add_argument("id", help="run id")
            client.add_argument("--format", choices=("csv", "json"), default="json")
            client.add_argument("--out", type=Path, help="file to write (default stdout)")
        client.set_defaults(handler=runs_command if name == "runs" else export_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except CliError as error:
        print(f"depthscope {args.command}: {error}", file=sys.stderr)
        return error.status
    return status
