"""Routes of the analysis: mean-field theory (for any parameters, or a run's init), a run's
Jacobian spectra, its diagnosis, and the order-to-chaos scan at initialization."""

from __future__ import annotations

import math
import threading
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Body, HTTPException, Query, Response

from depthscope.analysis import network
from depthscope.analysis.diagnosis import diagnose
from depthscope.analysis.scans import init_scan
from depthscope.analysis.spectrum import SPECTRUM_INPUTS, spectrum_skip_reason
from depthscope.analysis.theory import mean_field
from depthscope.analysis.trace import Trace
from depthscope.engine.config import RunConfig
from depthscope.service.analysis_schemas import (
    MAX_SIGMA_B2,
    MAX_SIGMA_W2,
    MAX_THEORY_DEPTH,
    ActivationName,
    DiagnosisOut,
    RunTheoryOut,
    ScanOut,
    ScanRequest,
    SpectrumOut,
    TheoryOut,
)
from depthscope.service.api import NOT_FOUND, RETRY_AFTER_S, RunId
from depthscope.service.deps import Authorized, StoreDep
from depthscope.service.schemas import problems
from depthscope.service.store import SCALARS, STEP_COLUMN, RunRow, RunStore

router = APIRouter(prefix="/api")
DIAGNOSIS_ROWS = 2000  # records a diagnosis reads at most, evenly spaced, first and last kept
DIAGNOSED = ("act_grad_norm", "saturation", "dead", "update_ratio")
_scan_slot = threading.Lock()  # one scan at a time: each can take the machine for seconds


def _json(body: Any) -> Response:
    """orjson: numpy arrays as lists, NaN and infinities as null."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


@router.get("/theory", response_model=TheoryOut, responses=problems(422))
def theory(
    activation: ActivationName,
    sigma_w2: Annotated[float, Query(gt=0, le=MAX_SIGMA_W2, allow_inf_nan=False)],
    sigma_b2: Annotated[float, Query(ge=0, le=MAX_SIGMA_B2, allow_inf_nan=False)] = 0.0,
    depth: Annotated[int, Query(ge=1, le=MAX_THEORY_DEPTH)] = 10,
) -> Response:
    """Mean-field q_1..q_depth from unit-variance inputs, q*, chi_1, the depth scales, the
    phase and the critical sigma_w^2 at this sigma_b^2; null where a value does not exist."""
    return _json(mean_field(activation.value, sigma_w2, sigma_b2, depth).to_wire())


def _run(store: RunStore, run_id: str) -> RunRow:
    row = store.get_run(run_id)
    if row is None:
        raise HTTPException(404, f"no run with id {run_id!r}")
    return row


def _config(row: RunRow) -> RunConfig:
    return RunConfig.model_validate(row.config)


def _first_record(store: RunStore, row: RunRow) -> dict[str, Any] | None:
    first = store.records_since(row.id, 0, 1)
    return orjson.loads(first[0]) if first else None


def _measured(record: dict[str, Any] | None, depth: int) -> dict[str, Any] | None:
    """Step-0 act_std and ln(||dL/dh_l|| / ||dL/dh_D||) per hidden block, as recorded."""
    if record is None or record["step"] != 0:
        return None
    grads = record["layers"]["act_grad_norm"][:depth]
    last = grads[-1]
    ratio = [
        math.log(g / last) if g is not None and last is not None and g > 0 and last > 0 else None
        for g in grads
    ]
    return {"step": 0, "act_std": record["layers"]["act_std"][:depth], "log_act_grad_norm": ratio}


@router.get("/runs/{run_id}/theory", response_model=RunTheoryOut, responses=NOT_FOUND)
def run_theory(store: StoreDep, run_id: RunId) -> Response:
    """The step-0 prediction for this run's init beside what it measured at step 0."""
    row = _run(store, run_id)
    config = _config(row)
    body = network.run_theory(config)
    body["layers"] = row.layers[: config.model.depth]
    body["measured"] = _measured(_first_record(store, row), config.model.depth)
    return _json(body)


@router.get("/runs/{run_id}/spectrum", response_model=SpectrumOut, responses=NOT_FOUND)
def spectrum(store: StoreDep, run_id: RunId) -> Response:
    """Singular values of dh_D/dh_1 at each spectrum step (largest first, pooled over the
    inputs), and the predicted mean and variance of their squares at step 0."""
    row = _run(store, run_id)
    config = _config(row)
    spectra = store.spectra(run_id)
    return _json(
        {
            "steps": [step for step, _ in spectra],
            "singular_values": [values for _, values in spectra],
            "theory": network.run_spectrum_theory(config),
            "skipped": spectrum_skip_reason(
                config.model.depth, config.model.width, SPECTRUM_INPUTS
            ),
        }
    )


def _rows(n: int) -> np.ndarray[Any, Any]:
    if n <= DIAGNOSIS_ROWS:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, DIAGNOSIS_ROWS).round().astype(int))


def trace_of(store: RunStore, row: RunRow) -> Trace:
    """The run's recorded statistics as the diagnosis reads them, from the stored blocks."""
    width = len(row.layers)
    steps = store.column(row.id, STEP_COLUMN, 1)
    keep = _rows(len(steps))

    def read(metric: str, columns: int) -> np.ndarray[Any, Any]:
        values = store.column(row.id, metric, columns)[: len(steps)]
        return np.asarray(values[keep], dtype=np.float64)

    loss, accuracy = (read(name, 1).reshape(-1) for name in SCALARS[:2])
    return Trace(
        layers=row.layers,
        steps=steps[keep].astype(np.float64),
        metrics={m: read(m, width) for m in DIAGNOSED},
        loss=loss,
        accuracy=accuracy,
        config=row.config,
        divergence=row.divergence,
    )


@router.get("/runs/{run_id}/diagnosis", response_model=DiagnosisOut, responses=NOT_FOUND)
def diagnosis(store: StoreDep, run_id: RunId) -> Response:
    """Plain-language findings: kind, severity, layers, steps, evidence, message, suggestions."""
    row = _run(store, run_id)
    return _json({"findings": [f.to_wire() for f in diagnose(trace_of(store, row))]})


@router.post(
    "/scans/init",
    dependencies=[Authorized],
    response_model=ScanOut,
    responses=problems(401, 413, 415, 422, 429),
)
def scan(request: Annotated[ScanRequest | None, Body()] = None) -> Response:
    """One forward and backward pass per (sigma_w, sigma_b) cell at init; bounded by cells x
    depth x width^2, one scan at a time (429 while another runs)."""
    request = request or ScanRequest()
    if not _scan_slot.acquire(blocking=False):
        raise HTTPException(
            429, "another init scan is running", {"Retry-After": str(RETRY_AFTER_S)}
        )
    try:
        result = init_scan(
            request.activation,
            request.depth,
            request.width,
            request.sigma_w.values(),
            request.sigma_b.values(),
            request.seed,
        )
    finally:
        _scan_slot.release()
    return _json(result.to_wire())
