"""The HTTP API of sweeps: create, list, read, cancel, delete, a live stream of cell changes,
and the sweep presets. Thin routes over the sweep service (sweep_store.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

from depthscope.service.deps import Authorized, SettingsDep, StreamAuthorized
from depthscope.service.runs import QueueFullError, StoreFullError
from depthscope.service.schemas import problems
from depthscope.service.security import SlotEventSource, StreamSlots, until_shutdown
from depthscope.service.status import TERMINAL, RunStatus
from depthscope.service.store import to_json
from depthscope.service.sweep_store import Sweeps
from depthscope.service.sweeps import SweepSpec, SweepSpecError, SweepStatus
from depthscope.sweep_presets import SWEEP_PRESETS

router = APIRouter(prefix="/api")
SweepId = Annotated[str, Path(max_length=64, description="an opaque sweep id")]
RETRY_AFTER_S = 10
POLL_S = 0.25  # how often a sweep's stream looks at its cells' statuses


def get_sweeps(request: Request) -> Sweeps:
    sweeps: Sweeps = request.app.state.sweeps
    return sweeps


SweepsDep = Annotated[Sweeps, Depends(get_sweeps)]


# -- response shapes (for /openapi.json; routes return plain dicts) ------------------------------
class SummaryOut(BaseModel):
    final_loss: float | None
    final_val_loss: float | None
    best_val_accuracy: float | None
    steps_to_target: int | None
    diverged: bool
    grad_ratio_step0: float | None


class CellOut(BaseModel):
    index: int
    values: dict[str, Any]
    run_id: str
    status: RunStatus | Literal["deleted"]
    summary: SummaryOut


class SweepHead(BaseModel):
    id: str
    name: str | None
    status: SweepStatus
    created_at: str
    target_accuracy: float | None
    base: dict[str, Any]
    axes: list[dict[str, Any]]
    n_cells: int
    counts: dict[str, int]


class SweepOut(SweepHead):
    cells: list[CellOut]


class SweepPresetOut(BaseModel):
    id: str
    title: str
    description: str
    spec: dict[str, Any]


def _sweep(view: dict[str, Any] | None, sweep_id: str) -> dict[str, Any]:
    if view is None:
        raise HTTPException(404, f"no sweep with id {sweep_id!r}")
    return view


# -- routes ---------------------------------------------------------------------------------------
@router.post(
    "/sweeps",
    status_code=201,
    dependencies=[Authorized],
    response_model=SweepOut,
    responses=problems(401, 413, 415, 422, 429, 507),
)
def create_sweep(sweeps: SweepsDep, spec: SweepSpec) -> dict[str, Any]:
    """One run per point of the product of the axes, queued behind single runs."""
    try:
        return sweeps.create(spec)
    except SweepSpecError as error:
        raise HTTPException(422, [p.to_wire() for p in error.problems]) from error
    except QueueFullError as error:
        raise HTTPException(429, str(error), {"Retry-After": str(RETRY_AFTER_S)}) from error
    except StoreFullError as error:
        raise HTTPException(507, str(error)) from error


@router.get("/sweeps", response_model=list[SweepHead])
def list_sweeps(sweeps: SweepsDep) -> list[dict[str, Any]]:
    return sweeps.list_sweeps()


@router.get("/sweeps/{sweep_id}", response_model=SweepOut, responses=problems(404, 422))
def get_sweep(sweeps: SweepsDep, sweep_id: SweepId) -> dict[str, Any]:
    return _sweep(sweeps.view(sweep_id), sweep_id)


@router.post(
    "/sweeps/{sweep_id}/cancel",
    dependencies=[Authorized],
    response_model=SweepOut,
    responses=problems(401, 404, 422),
)
def cancel_sweep(sweeps: SweepsDep, sweep_id: SweepId) -> dict[str, Any]:
    return _sweep(sweeps.cancel(sweep_id), sweep_id)


@router.delete(
    "/sweeps/{sweep_id}",
    status_code=204,
    dependencies=[Authorized],
    response_class=Response,
    responses=problems(401, 404, 422),
)
def delete_sweep(sweeps: SweepsDep, sweep_id: SweepId) -> Response:
    """The sweep and its cells' runs (stopped first)."""
    if not sweeps.delete(sweep_id):
        raise HTTPException(404, f"no sweep with id {sweep_id!r}")
    return Response(status_code=204)


@router.get("/sweep-presets", response_model=list[SweepPresetOut])
def sweep_presets() -> list[dict[str, Any]]:
    return [p.to_wire() for p in SWEEP_PRESETS]


EVENTS_OK = {"description": "Server-Sent Events", "content": {"text/event-stream": {}}}


@router.get(
    "/sweeps/{sweep_id}/events",
    dependencies=[StreamAuthorized],  # ?token= too: a browser's EventSource sends no header
    response_class=EventSourceResponse,
    responses={200: EVENTS_OK, **problems(401, 404, 422, 429)},
)
async def sweep_events(
    request: Request, sweeps: SweepsDep, settings: SettingsDep, sweep_id: SweepId
) -> EventSourceResponse:
    """A `cell` event for every cell at once, then whenever a cell's status changes; `end`
    (the whole sweep) once every cell has ended. A reconnect starts again from the state."""
    if await asyncio.to_thread(sweeps.cell_states, sweep_id) is None:
        raise HTTPException(404, f"no sweep with id {sweep_id!r}")
    slots: StreamSlots = request.app.state.stream_slots
    client = request.client.host if request.client else "unknown"
    refused = slots.acquire(client)
    if refused:
        raise HTTPException(429, refused, {"Retry-After": str(RETRY_AFTER_S)})
    shutdown = anyio.Event()  # set by sse-starlette on SIGTERM: a last event, a clean end
    return SlotEventSource(
        until_shutdown(cell_events(sweeps, sweep_id), shutdown),
        ping=settings.keepalive_s,
        on_close=lambda: slots.release(client),
        shutdown_event=shutdown,
        shutdown_grace_period=2.0,
    )


async def cell_events(sweeps: Sweeps, sweep_id: str) -> AsyncIterator[ServerSentEvent]:
    seen: dict[int, tuple[str | None, int]] = {}
    while True:
        states = await asyncio.to_thread(sweeps.cell_states, sweep_id)
        if states is None:
            return  # deleted
        changed = {c.index for c in states if seen.get(c.index) != (c.status, c.version)}
        if changed:
            for cell in await asyncio.to_thread(sweeps.cells, sweep_id, changed):
                yield ServerSentEvent(data=to_json(cell), event="cell")
            seen.update({c.index: (c.status, c.version) for c in states if c.index in changed})
        if all(c.status is None or c.status in TERMINAL for c in states):
            view = await asyncio.to_thread(sweeps.view, sweep_id)
            if view is not None:
                yield ServerSentEvent(data=to_json(view), event="end")
            return
        await asyncio.sleep(POLL_S)
