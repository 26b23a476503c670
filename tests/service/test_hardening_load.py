"""Load, small: bench/load.py's scenario with fewer steps and clients — nothing lost, health
responsive, server memory bounded."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.server]


def load_bench() -> ModuleType:
    bench = Path(__file__).parents[2] / "bench"
    if str(bench) not in sys.path:
        sys.path.append(str(bench))  # as when the script runs: its sibling modules import
    spec = importlib.util.spec_from_file_location("bench_load", bench / "load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def test_load_small_scenario_loses_nothing_and_stays_bounded() -> None:
    bench = load_bench()
    scenario = bench.Scenario(
        watched_steps=300,
        other_steps=300,
        queued_steps=30,
        sse_clients=20,
        pollers=8,
        duration_s=40.0,
    )
    result = bench.run(scenario)
    assert result["finished"] and result["statuses"] == ["completed"] * 6
    assert result["running_at_start"] + result["queued_at_start"] == 6
    assert result["queued_at_start"] >= 3  # the queue really held runs behind the two slots
    assert result["records_expected"] == 300
    assert result["sse_clients_complete"] == 20  # every record once, in order, as exported
    assert result["series_requests"] > 0 and result["series_non_200"] == 0
    assert result["health_p95_ms"] < 500  # generous: 2 shared cores, two runs training
    assert result["rss_growth_mb"] < 150
