"""Divergence on a real server: `exploding` ends diverged naming the first non-finite cell.

Its stream and exports are strict JSON; `exploding-clipped` never diverges.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import httpx
import pytest
from conftest import read_events
from test_server_stream import wait_for

pytestmark = pytest.mark.server


def strict(text: str) -> Any:
    """json.loads that refuses NaN, Infinity and -Infinity tokens."""

    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def start_preset(url: str, preset: str) -> str:
    presets = {p["id"]: p for p in httpx.get(f"{url}/api/presets").json()}
    created = httpx.post(f"{url}/api/runs", json=presets[preset]["config"], timeout=10)
    assert created.status_code == 201, created.text
    run_id: str = created.json()["id"]
    return run_id


def test_strict_refuses_non_finite_tokens() -> None:
    for token in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValueError):
            strict(f'{{"x": {token}}}')


def test_exploding_preset_diverges_with_strict_stream_and_exports(module_server: str) -> None:
    run_id = start_preset(module_server, "exploding")
    records: list[dict[str, Any]] = []
    summary: dict[str, Any] | None = None
    with httpx.stream("GET", f"{module_server}/api/runs/{run_id}/events", timeout=60) as response:
        for event in read_events(response):
            data = strict(event.data)
            if event.event == "records":
                records += data["records"]
            if event.event == "end":
                summary = data
    assert summary is not None and summary["status"] == "diverged"
    first = summary["divergence"]
    assert set(first) == {"step", "layer", "layer_index", "metric", "message"}
    assert summary["layers"][first["layer_index"]] == first["layer"]
    # The named cell is the first non-finite one: null at that step, finite everywhere before.
    last = records[-1]
    assert (
        last["step"] == first["step"]
        and last["layers"][first["metric"]][first["layer_index"]] is None
    )
    assert all(r["layers"][first["metric"]][first["layer_index"]] is not None for r in records[:-1])

    exported = strict(httpx.get(f"{module_server}/api/runs/{run_id}/export").text)
    assert exported["records"] == records and exported["run"]["divergence"] == first
    text = httpx.get(f"{module_server}/api/runs/{run_id}/export?format=csv").text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(records) * len(summary["layers"])
    for row in rows:
        for value in row.values():
            assert not _numeric(value) or math.isfinite(float(value)), row  # no nan/inf cells
    series = strict(
        httpx.get(f"{module_server}/api/runs/{run_id}/series?metric={first['metric']}").text
    )
    assert series["values"][first["layer_index"]][-1] is None


def _numeric(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def test_exploding_clipped_preset_completes_without_divergence(module_server: str) -> None:
    run_id = start_preset(module_server, "exploding-clipped")
    run = wait_for(module_server, run_id, lambda r: r["terminal"], timeout=240)
    assert run["status"] == "completed" and run["divergence"] is None and run["error"] is None
    exported = strict(httpx.get(f"{module_server}/api/runs/{run_id}/export").text)
    clipped = [r["clipped"] for r in exported["records"]]
    # clipped on every early step (the gradients start far above the limit), not forever after
    assert len(clipped) == run["config"]["training"]["steps"] and all(clipped[:10])
    assert all(math.isfinite(r["loss"]) for r in exported["records"])
