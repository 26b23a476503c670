"""The explorer's routes: decision boundaries, pause / advance / resume, and the guided lessons."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, HTTPException, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from depthscope.engine.boundary import unsupported_reason
from depthscope.engine.config import RunConfig
from depthscope.lessons import LESSONS
from depthscope.service.control import MAX_ADVANCE
from depthscope.service.deps import Authorized, ManagerDep, StoreDep
from depthscope.service.runs import NotPausedError
from depthscope.service.schemas import Problem, RunSummary, problems
from depthscope.service.store import RunRow, RunStore

router = APIRouter(prefix="/api")
RunId = Annotated[str, Path(max_length=64, description="an opaque run id")]
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "not possible for this run; `detail` says why"}
}


class BoundaryPoints(BaseModel):
    x: list[float]
    y: list[float]
    label: list[int]


class BoundaryOut(BaseModel):
    step: int
    steps: list[int]
    x: list[float]
    y: list[float]
    prob: list[list[float | None]]
    classes: list[list[int]] | None
    n_classes: int
    points: BoundaryPoints


class AdvanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    steps: int = Field(1, ge=1, le=MAX_ADVANCE, description="steps to train before pausing again")


class LessonStepOut(BaseModel):
    title: str
    text: str
    runs: list[str]
    view: str
    metric: str


class LessonOut(BaseModel):
    id: str
    title: str
    description: str
    steps: list[LessonStepOut]


def _run(store: RunStore, run_id: str) -> RunRow:
    row = store.get_run(run_id)
    if row is None:
        raise HTTPException(404, f"no run with id {run_id!r}")
    return row


@router.get(
    "/runs/{run_id}/boundary",
    response_class=Response,
    responses={
        200: {"model": BoundaryOut, "description": "the latest frame at or before step"},
        **problems(404, 422),
        **CONFLICT,
    },
)
def boundary(
    store: StoreDep,
    run_id: RunId,
    step: Annotated[int | None, Query(ge=0, le=10**9, description="default: the latest")] = None,
) -> Response:
    """The network's class probability over a grid of the 2-D input plane (standardized
    coordinates), rows following y; two classes: P(class 1); more: P(predicted class), with
    `classes` naming it per cell."""
    row = _run(store, run_id)
    reason = unsupported_reason(RunConfig.model_validate(row.config))
    if reason is not None:
        raise HTTPException(409, reason)
    frame = store.boundary_at(run_id, step)
    if frame is None:
        when = "yet" if step is None else f"at or before step {step}"
        raise HTTPException(404, f"no decision boundary recorded {when} for run {run_id!r}")
    body = {
        "step": frame.step,
        "steps": store.boundary_steps(run_id),
        **{k: frame.layout[k] for k in ("x", "y", "points", "n_classes")},
        "prob": frame.prob,  # orjson: NaN (a non-finite network) → null
        "classes": frame.classes,
    }
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


CONTROL_RESPONSES: dict[int | str, dict[str, Any]] = {**problems(401, 404, 422), **CONFLICT}


def _act(store: RunStore, run_id: str, act: Callable[[], bool]) -> dict[str, Any]:
    """Apply `act` to a run that has not ended (409 if it has, or ends meanwhile: `act` then
    finds no worker to tell); the summary after it."""
    row = _run(store, run_id)
    try:
        acted = not row.terminal and act()
    except NotPausedError as error:  # e.g. an executor that cannot pause its runs
        raise HTTPException(409, str(error)) from error
    if not acted:
        row = _run(store, run_id)
        raise HTTPException(
            409, f"run {run_id} has ended ({row.status}); only a queued, running or paused run can"
        )
    return _run(store, run_id).to_wire()


@router.post(
    "/runs/{run_id}/pause",
    dependencies=[Authorized],
    response_model=RunSummary,
    responses=CONTROL_RESPONSES,
)
def pause_run(store: StoreDep, manager: ManagerDep, run_id: RunId) -> dict[str, Any]:
    """Pause before the next step (`paused` within a second); a queued run starts paused."""
    return _act(store, run_id, lambda: manager.pause(run_id))


@router.post(
    "/runs/{run_id}/advance",
    dependencies=[Authorized],
    response_model=RunSummary,
    responses={**CONTROL_RESPONSES, **problems(413, 415)},
)
def advance_run(
    store: StoreDep,
    manager: ManagerDep,
    run_id: RunId,
    body: Annotated[AdvanceIn | None, Body()] = None,
) -> dict[str, Any]:
    """Train exactly `steps` more steps of a paused run, then pause again (409 while it trains
    freely: pause it first)."""
    steps = (body or AdvanceIn()).steps
    try:
        return _act(store, run_id, lambda: manager.advance(run_id, steps))
    except NotPausedError as error:
        raise HTTPException(409, str(error)) from error


@router.post(
    "/runs/{run_id}/resume",
    dependencies=[Authorized],
    response_model=RunSummary,
    responses=CONTROL_RESPONSES,
)
def resume_run(store: StoreDep, manager: ManagerDep, run_id: RunId) -> dict[str, Any]:
    """Train freely again from where the run was paused."""
    return _act(store, run_id, lambda: manager.resume(run_id))


@router.get("/lessons", response_model=list[LessonOut])
def lessons() -> list[dict[str, Any]]:
    return [lesson.to_wire() for lesson in LESSONS]
