"""Response shapes of the HTTP API, declared for /openapi.json (routes still return plain dicts)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from depthscope.service.status import RunStatus


class ValidationItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """Every 4xx/5xx body: a message, or for 422 the fields that are wrong (`loc` names them)."""

    detail: str | list[ValidationItem]


class ExecutorInfo(BaseModel):
    kind: Literal["local", "ray"]
    nodes: int | None  # for ray: alive nodes of the cluster
    cpus: float | None  # for ray: the cluster's CPUs; local: this machine's
    address: str | None = None  # for ray: the cluster, or "local" for the server's own instance


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    running: int
    queued: int
    executor: ExecutorInfo


class PresetOut(BaseModel):
    id: str
    title: str
    description: str
    config: dict[str, Any]
    metric: str  # the per-layer metric the explorer shows first


class DivergenceOut(BaseModel):
    step: int
    layer: str
    layer_index: int
    metric: str
    message: str  # the sentence to show, as the server words it


class RunSummary(BaseModel):
    id: str
    status: RunStatus
    terminal: bool  # the status is final: the run will not change again
    config: dict[str, Any]
    steps_done: int
    layers: list[str]
    created_at: str
    final: dict[str, Any] | None
    error: str | None
    divergence: DivergenceOut | None
    records: int
    started_at: str | None
    finished_at: str | None
    sweep_id: str | None = None  # set when the run is a cell of a sweep


class SeriesOut(BaseModel):
    metric: str
    layers: list[str]
    steps: list[int]
    values: list[list[float | None]]
    downsample: Literal["none", "extreme"]
    bucket: int
    recorded: int


class ExportOut(BaseModel):
    run: RunSummary
    records: list[dict[str, Any]]


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for error codes, all with the Problem body."""
    reasons = {
        401: "a token is configured and the request lacks it",
        404: "no run (or sweep) with this id",
        413: "request body over max_body_bytes",
        415: "a request body that is not application/json",
        422: "invalid input; `detail` names each wrong field",
        429: "queue, stream or export limit reached; see Retry-After",
        507: "the store holds max_stored_runs runs or max_store_bytes; delete some",
    }
    return {code: {"model": Problem, "description": reasons[code]} for code in codes}
