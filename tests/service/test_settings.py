"""Settings: defaults and DEPTHSCOPE_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from depthscope.service.settings import Settings


def test_settings_defaults() -> None:
    s = Settings()
    assert s.max_concurrent_runs == 2 and s.token is None and s.cors_origins == []
    assert s.db_path == Path("data") / "runs.db"


def test_settings_read_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPTHSCOPE_DATA_DIR", "/tmp/x")
    monkeypatch.setenv("DEPTHSCOPE_MAX_CONCURRENT_RUNS", "3")
    monkeypatch.setenv("DEPTHSCOPE_TOKEN", "secret")
    monkeypatch.setenv("DEPTHSCOPE_CORS_ORIGINS", '["http://a.example"]')
    s = Settings()
    assert (s.data_dir, s.max_concurrent_runs, s.token) == (Path("/tmp/x"), 3, "secret")
    assert s.cors_origins == ["http://a.example"]
