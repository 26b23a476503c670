"""The HTTP API of docs/api.md: thin routes over the store, the run manager and the broadcaster.

Only this layer raises HTTPException; the core reports problems as plain exceptions.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import anyio
import orjson
import torch
from fastapi import APIRouter, Body, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sse_starlette import EventSourceResponse

from depthscope import __version__
from depthscope.engine.config import RunConfig
from depthscope.presets import DATASET_DEFAULTS, PRESETS
from depthscope.records import METRICS
from depthscope.service.deps import (
    Authorized,
    BroadcasterDep,
    ManagerDep,
    SettingsDep,
    StoreDep,
    StreamAuthorized,
)
from depthscope.service.runs import QueueFullError, StoreFullError
from depthscope.service.schemas import (
    ExportOut,
    Health,
    PresetOut,
    RunSummary,
    SeriesOut,
    problems,
)
from depthscope.service.security import SlotEventSource, SlotStreamingResponse, StreamSlots
from depthscope.service.series import SERIES_METRICS, downsample
from depthscope.service.store import STEP_COLUMN, RunRow, RunStore, to_json

router = APIRouter(prefix="/api")
RunId = Annotated[str, Path(max_length=64, description="an opaque run id")]
NOT_FOUND = problems(404, 422)
RETRY_AFTER_S = 10


def _run(store: RunStore, run_id: str) -> RunRow:
    row = store.get_run(run_id)
    if row is None:
        raise HTTPException(404, f"no run with id {run_id!r}")
    return row


@router.get("/health", response_model=Health)
async def health(manager: ManagerDep) -> dict[str, Any]:
    # On the event loop: never queued behind worker threads busy with /series or exports.
    running, queued = manager.counts()
    executor = manager.executor.describe()
    return {
        "status": "ok",
        "version": __version__,
        "running": running,
        "queued": queued,
        "executor": executor,
    }


@router.get("/presets", response_model=list[PresetOut])
def presets() -> list[dict[str, Any]]:
    return [p.to_wire() for p in PRESETS]


@router.get("/schema")
def schema() -> dict[str, Any]:
    # "x-dataset-defaults": form defaults that depend on the dataset ("section.field" -> value).
    return {**RunConfig.model_json_schema(), "x-dataset-defaults": DATASET_DEFAULTS}


@router.post(
    "/runs",
    status_code=201,
    dependencies=[Authorized],
    response_model=RunSummary,
    responses=problems(401, 413, 415, 422, 429, 507),
)
def create_run(
    manager: ManagerDep, config: Annotated[RunConfig | None, Body()] = None
) -> dict[str, Any]:
    config = config or RunConfig()
    if config.training.device == "cuda" and not torch.cuda.is_available():
        detail = [
            {
                "type": "value_error",
                "loc": ["body", "training", "device"],
                "msg": "training.device is 'cuda' but this server has no CUDA device; use 'cpu'",
                "input": "cuda",
            }
        ]
        raise HTTPException(422, detail)
    try:
        row = manager.submit(config)
    except QueueFullError as error:
        raise HTTPException(429, str(error), {"Retry-After": str(RETRY_AFTER_S)}) from error
    except StoreFullError as error:
        raise HTTPException(507, str(error)) from error
    return row.to_wire()


@router.get("/runs", response_model=list[RunSummary])
def list_runs(store: StoreDep) -> list[dict[str, Any]]:
    return [row.to_wire() for row in store.list_runs()]


@router.get("/runs/{run_id}", response_model=RunSummary, responses=NOT_FOUND)
def get_run(store: StoreDep, run_id: RunId) -> dict[str, Any]:
    return _run(store, run_id).to_wire()


@router.post(
    "/runs/{run_id}/cancel",
    dependencies=[Authorized],
    response_model=RunSummary,
    responses=problems(401, 404, 422),
)
def cancel_run(store: StoreDep, manager: ManagerDep, run_id: RunId) -> dict[str, Any]:
    _run(store, run_id)
    manager.cancel(run_id)
    return _run(store, run_id).to_wire()


@router.delete(
    "/runs/{run_id}",
    status_code=204,
    dependencies=[Authorized],
    response_class=Response,
    responses=problems(401, 404, 422),
)
def delete_run(store: StoreDep, manager: ManagerDep, run_id: RunId) -> Response:
    _run(store, run_id)
    manager.cancel(run_id)  # stop a worker before its rows go
    store.delete_run(run_id)
    return Response(status_code=204)


@router.get(
    "/runs/{run_id}/series",
    response_class=Response,
    responses={200: {"model": SeriesOut, "description": "one metric"}, **NOT_FOUND},
)
def series(
    store: StoreDep,
    run_id: RunId,
    metric: Annotated[
        str,
        Query(
            max_length=64,
            description="a per-layer metric, or a per-step scalar (one row)",
            json_schema_extra={"enum": list(SERIES_METRICS)},
        ),
    ],
    max_points: Annotated[int, Query(ge=2, le=100_000)] = 1000,
) -> Response:
    """values[layer][i] per recorded step, at most max_points columns (see `downsample`).
    Scalars (loss, accuracy, grad_norm_total) come back as one row named after themselves."""
    row = _run(store, run_id)
    if metric not in SERIES_METRICS:
        choices = ", ".join(SERIES_METRICS)
        detail = [
            {
                "type": "value_error",
                "loc": ["query", "metric"],
                "msg": f"metric must be one of: {choices}",
                "input": metric,
            }
        ]
        raise HTTPException(422, detail)
    layers = row.layers if metric in METRICS else [metric]
    steps = store.column(run_id, STEP_COLUMN, 1)
    values = store.column(run_id, metric, len(layers))[: len(steps)]
    steps_out, columns, bucket = downsample(steps[: len(values)], values, max_points)
    body = {
        "metric": metric,
        "layers": layers,
        "steps": steps_out,
        "values": columns.T.copy(),  # orjson: NaN → null
        "downsample": "extreme" if bucket > 1 else "none",
        "bucket": bucket,
        "recorded": len(values),
    }
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


SHUTDOWN_GRACE_S = 2.0
EVENTS_OK = {"description": "Server-Sent Events", "content": {"text/event-stream": {}}}


@router.get(
    "/runs/{run_id}/events",
    dependencies=[StreamAuthorized],
    response_class=EventSourceResponse,
    responses={200: EVENTS_OK, **problems(401, 404, 422, 429)},
)
async def events(
    request: Request,
    store: StoreDep,
    broadcaster: BroadcasterDep,
    settings: SettingsDep,
    run_id: RunId,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> EventSourceResponse:
    _run(store, run_id)
    slots: StreamSlots = request.app.state.stream_slots
    client = request.client.host if request.client else "unknown"
    refused = slots.acquire(client)
    if refused:
        raise HTTPException(429, refused, {"Retry-After": str(RETRY_AFTER_S)})
    # On shutdown sse-starlette sets `shutdown`; the stream then sends a final `shutdown`
    # event and ends, within the grace period, instead of being cut mid-body.
    shutdown = anyio.Event()
    return SlotEventSource(
        broadcaster.events(run_id, last_event_id, shutdown),
        ping=settings.keepalive_s,
        on_close=lambda: slots.release(client),
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
    )


EXPORT_OK = {
    "model": ExportOut,
    "description": "every record: JSON {run, records}, or CSV with one row per (step, layer)",
    "content": {"text/csv": {"schema": {"type": "string"}}},
}


@router.get(
    "/runs/{run_id}/export",
    response_class=StreamingResponse,
    responses={200: EXPORT_OK, **problems(404, 422, 429)},
)
def export(
    request: Request, store: StoreDep, run_id: RunId, format: Literal["json", "csv"] = "json"
) -> StreamingResponse:
    row = _run(store, run_id)
    slots: StreamSlots = request.app.state.export_slots
    client = request.client.host if request.client else "unknown"
    refused = slots.acquire(client, what="exports")
    if refused:
        raise HTTPException(429, refused, {"Retry-After": str(RETRY_AFTER_S)})
    chunks = _export_json(store, row) if format == "json" else _export_csv(store, row)
    media = "application/json" if format == "json" else "text/csv"
    name = f'attachment; filename="depthscope-{run_id}.{format}"'
    return SlotStreamingResponse(
        chunks,
        media_type=media,
        headers={"Content-Disposition": name},
        on_close=lambda: slots.release(client),
    )


EXPORT_PAGE_BYTES = 2**20  # records read (and held) at once by one export


def _export_json(store: RunStore, row: RunRow) -> Iterator[str]:
    """{"run": summary, "records": [...]}: the stored wire JSON, streamed without re-encoding,
    one byte-bounded page per chunk."""
    yield '{"run":' + to_json(row.to_wire()) + ',"records":['
    for i, page in enumerate(store.iter_pages(row.id, EXPORT_PAGE_BYTES)):
        yield ("," if i else "") + ",".join(page)
    yield "]}"


CSV_SCALARS = ("loss", "accuracy", "grad_norm_total", "clipped", "val_loss", "val_accuracy")


def _export_csv(store: RunStore, row: RunRow) -> Iterator[str]:
    """One row per (step, layer): the step's scalars, then that layer's metrics; null → empty."""
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(["step", "layer_index", "layer", *CSV_SCALARS, *METRICS])
    for text in store.iter_records(row.id, EXPORT_PAGE_BYTES):
        record = json.loads(text)
        scalars = [record.get(name) for name in CSV_SCALARS]
        for index, layer in enumerate(row.layers):
            values = [record["layers"][m][index] for m in METRICS]
            out.writerow([record["step"], index, layer, *scalars, *values])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
