"""Load, small: bench/load.py's scenarios with fewer steps and clients — nothing lost, health
responsive, server memory bounded, also with clients that never read."""

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
        idle_streams=64,  # the per-client cap, all from one address
        idle_addresses=1,
        idle_exports=2,  # the per-client cap; one more is refused
        wide_steps=40,
        idle_hold_s=3.0,
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
    # Regression: 64 subscribers that never read took the server from 320 MB to 2.9 GB, and
    # non-reading exports held a 1000-record page each. Now each pins one event or page.
    assert result["idle_streams_open"] == 64 and result["idle_streams_refused"] == 0
    assert result["idle_exports_open"] == 2 and result["idle_exports_429"] == 1
    assert result["idle_rss_growth_mb"] < 64 * 0.5 + 2 * 3 + 40  # docs/operations.md's bound
    assert result["idle_health_max_ms"] < 2000 and result["idle_runs_list_max_ms"] < 2000
