"""Settings: the server's process configuration, read from DEPTHSCOPE_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from depthscope.service.edge import LOOPBACK_HOSTS
from depthscope.service.executors import ExecutorKind


class StartupError(Exception):
    """A reason for the server not to start at all, said in one line."""


class Settings(BaseSettings):
    """What an operator may set; tests build one directly with a temporary data_dir."""

    model_config = SettingsConfigDict(env_prefix="DEPTHSCOPE_", frozen=True)

    data_dir: Path = Field(Path("data"), description="holds the SQLite store runs.db")
    max_concurrent_runs: int = Field(2, ge=1, le=64, description="runs training at once")
    max_queued_runs: int = Field(16, ge=0, le=10_000, description="runs waiting; more → 429")
    token: str | None = Field(None, description="if set, mutating endpoints need this bearer token")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins allowed by CORS and to make mutating requests (besides our own)",
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: list(LOOPBACK_HOSTS),
        description="Host header names served (any port); '*' serves any; others → 400",
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="request bodies above → 413")
    keepalive_s: float = Field(15.0, gt=0, description="SSE ping interval")
    max_stored_runs: int = Field(
        500, ge=1, description="runs kept in the store; a new run past it → 507 (delete some)"
    )
    max_store_bytes: int = Field(
        10 * 2**30, ge=2**20, description="database size past which a new run → 507"
    )
    max_streams_per_client: int = Field(
        64, ge=1, description="open SSE streams per client address; more → 429"
    )
    max_streams: int = Field(512, ge=1, description="open SSE streams in total; more → 429")
    executor: ExecutorKind = Field(
        "local", description="where runs train: local worker processes, or tasks on Ray"
    )
    ray_address: str | None = Field(
        None, max_length=500, description="the Ray cluster (executor ray); unset: a local one"
    )
    max_queued_cells: int = Field(
        1024, ge=1, le=100_000, description="sweep cells waiting in total; a sweep past it → 429"
    )
    max_sweep_work: float = Field(  # 16 runs at engine.config's per-run MAX_WORK
        6.4e12, gt=0, description="summed compute budget of one sweep's cells"
    )
    max_exports_per_client: int = Field(
        2, ge=1, description="exports streaming at once per client address; more → 429"
    )
    max_exports: int = Field(8, ge=1, description="exports streaming at once in total; more → 429")

    @field_validator("token")
    @classmethod
    def _token_not_blank(cls, token: str | None) -> str | None:
        if token is not None and (not token.strip() or token != token.strip()):
            raise ValueError(
                "the token is empty or has surrounding spaces, which would leave the server "
                "unprotected or unusable; give a real token, or none to run without one"
            )
        return token

    @property
    def db_path(self) -> Path:
        return self.data_dir / "runs.db"
