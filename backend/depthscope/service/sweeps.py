"""Sweeps: a grid of runs over the product of a few config fields — the spec, its expansion into
cells, validation, and what is read back from each cell (its summary) and from all (a status).

Nothing here touches the store or HTTP: the service (sweep_store.py, routes_sweeps.py) and the
CLI (`depthscope sweep`) use the same expansion and the same summaries.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from depthscope.engine.config import RunConfig
from depthscope.service.status import TERMINAL, RunStatus

MAX_CELLS = 256


class SweepStatus(StrEnum):
    """Where a sweep stands, derived from its cells' runs (see sweep_status)."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


Value = (
    Annotated[bool, Field(strict=True)]
    | Annotated[int, Field(strict=True)]
    | Annotated[float, Field(strict=True, allow_inf_nan=False)]
    | Annotated[str, Field(max_length=100)]
)
Values = Annotated[list[Value], Field(min_length=1, max_length=MAX_CELLS)]


def config_fields() -> tuple[str, ...]:
    """Every leaf of RunConfig as "section.field": what an axis may vary."""
    fields = []
    for section, info in RunConfig.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        fields += [f"{section}.{name}" for name in model.model_fields]
    return tuple(fields)


FIELDS = config_fields()


class Axis(BaseModel):
    """One field and the values it takes; `with` varies other fields in step with it (an
    activation with its matched init), so they add no dimension of their own."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    field: str = Field(max_length=64, description=f"one of: {', '.join(FIELDS)}")
    values: Values
    with_: dict[str, Values] = Field(
        default_factory=dict, alias="with", max_length=8, description="field -> values, zipped"
    )


class SweepSpec(BaseModel):
    """The body of POST /api/sweeps, and what `depthscope sweep` reads from a file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(None, max_length=100)
    base: RunConfig = Field(default_factory=RunConfig, description="the config every cell shares")
    axes: list[Axis] = Field(min_length=1, max_length=8)
    target_accuracy: float | None = Field(
        0.9, gt=0, le=1, description="held-out accuracy that `steps_to_target` waits for"
    )

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = self.model_dump(mode="json", by_alias=True)
        return wire


@dataclass(frozen=True)
class Problem:
    """One reason a spec is refused: where (a pydantic-style loc inside the spec), why, what."""

    loc: tuple[str | int, ...]
    msg: str
    input: Any = None

    def to_wire(self, prefix: tuple[str, ...] = ("body",)) -> dict[str, Any]:
        return {
            "type": "value_error",
            "loc": [*prefix, *self.loc],
            "msg": self.msg,
            "input": self.input,
        }


class SweepSpecError(Exception):
    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Cell:
    index: int
    values: dict[str, Any]  # field -> value, axes (and their `with` fields) in order
    config: RunConfig


def _varied(axis: Axis) -> list[tuple[str, tuple[str | int, ...], list[Any]]]:
    """(field, loc of its values, values) for the axis's field and each of its `with` fields."""
    out: list[tuple[str, tuple[str | int, ...], list[Any]]] = [
        (axis.field, ("values",), axis.values)
    ]
    out += [(f, ("with", f), v) for f, v in axis.with_.items()]
    return out


def _check_fields(spec: SweepSpec) -> list[Problem]:
    """Known fields, each varied once, `with` lists as long as their axis, no repeated value."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, axis in enumerate(spec.axes):
        for field, values_loc, values in _varied(axis):
            main = values_loc == ("values",)
            loc = ("axes", i, "field") if main else ("axes", i, "with", field)
            if field not in FIELDS:
                msg = f"unknown field {field!r}; choose one of: {', '.join(FIELDS)}"
                problems.append(Problem(loc, msg, field))
            elif field in seen:
                msg = f"{field} is already varied by axes[{seen[field]}]"
                problems.append(Problem(loc, msg, field))
            seen.setdefault(field, i)
            if len(values) != len(axis.values):
                msg = f"needs {len(axis.values)} values, one per value of {axis.field}"
                problems.append(Problem(("axes", i, *values_loc), msg, values))
            if main and len({json.dumps(v) for v in values}) < len(values):
                msg = "values repeat: some cells would be trained twice"
                problems.append(Problem(("axes", i, "values"), msg, values))
    return problems


def _config(base: Mapping[str, Any], values: Mapping[str, Any]) -> RunConfig:
    data = json.loads(json.dumps(base))
    for field, value in values.items():
        section, name = field.split(".")
        data[section][name] = value
    # JSON mode, as the HTTP API validates a run: the same choices, bounds and messages.
    return RunConfig.model_validate_json(json.dumps(data))


def _message(error: ValidationError) -> str:
    return str(error.errors()[0]["msg"]).removeprefix("Value error, ")


def _check_values(spec: SweepSpec, base: Mapping[str, Any]) -> list[Problem]:
    """Each value on its own (the rest from `base`), so an error names one field and value."""
    problems = []
    for i, axis in enumerate(spec.axes):
        for j in range(len(axis.values)):
            for field, values_loc, values in _varied(axis):
                try:
                    _config(base, {field: values[j]})
                except ValidationError as error:  # only this value differs from a valid base
                    msg = f"{field} = {values[j]!r}: {_message(error)}"
                    problems.append(Problem(("axes", i, *values_loc, j), msg, values[j]))
    return problems


def expand(spec: SweepSpec, max_work: float | None = None) -> list[Cell]:
    """The cells of a spec, in row-major order of its axes (the last axis varies fastest), or
    SweepSpecError naming every field, value or limit that is wrong."""
    if problems := _check_fields(spec):
        raise SweepSpecError(problems)
    sizes = [len(a.values) for a in spec.axes]
    if math.prod(sizes) > MAX_CELLS:
        shape = " × ".join(map(str, sizes))
        msg = f"the sweep has {math.prod(sizes)} cells ({shape}), limit {MAX_CELLS}"
        raise SweepSpecError([Problem(("axes",), msg, sizes)])
    base = spec.base.model_dump(mode="json")
    if problems := _check_values(spec, base):
        raise SweepSpecError(problems)
    cells = []
    for index, choice in enumerate(itertools.product(*(range(n) for n in sizes))):
        picked = zip(spec.axes, choice, strict=True)
        values = {f: v[j] for axis, j in picked for f, _, v in _varied(axis)}
        try:
            cells.append(Cell(index, values, _config(base, values)))
        except ValidationError as error:  # a combination that no single value breaks
            msg = f"cell {index} ({_show(values)}): {_message(error)}"
            raise SweepSpecError([Problem(("axes",), msg, values)]) from error
    work = sum(c.config.work() for c in cells)
    if max_work is not None and work > max_work:
        msg = (
            f"sweep compute budget exceeded: parameters × batch_size × steps summed over the "
            f"{len(cells)} cells = {work:.3g}, limit {max_work:.3g} (max_sweep_work); use "
            "fewer or smaller cells"
        )
        raise SweepSpecError([Problem(("axes",), msg, work)])
    return cells


def _show(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


# -- what a cell's run tells -------------------------------------------------------------------
SUMMARY_KEYS = (
    "final_loss",
    "final_val_loss",
    "best_val_accuracy",
    "steps_to_target",
    "diverged",
    "grad_ratio_step0",
)
Number = float | None


@dataclass(frozen=True)
class Evaluation:
    """One held-out evaluation of a run."""

    step: int
    val_loss: Number
    val_accuracy: Number


def summarize(
    status: str,
    final_loss: Number,
    evaluations: Sequence[Evaluation],
    act_grad_step0: Sequence[Number] | None,
    target: float | None,
) -> dict[str, Any]:
    """A cell's summary: the last recorded loss, the last held-out loss, the best held-out
    accuracy, the first evaluated step that reached `target`, whether the run diverged, and
    act_grad_norm of the first hidden block over the last hidden block at step 0."""
    accuracies = [e.val_accuracy for e in evaluations if e.val_accuracy is not None]
    reached = [e.step for e in evaluations if _at_least(e.val_accuracy, target)]
    return {
        "final_loss": final_loss,
        "final_val_loss": next((e.val_loss for e in reversed(evaluations)), None),
        "best_val_accuracy": max(accuracies, default=None),
        "steps_to_target": reached[0] if reached else None,
        "diverged": status == RunStatus.DIVERGED,
        "grad_ratio_step0": _ratio(act_grad_step0),
    }


def _at_least(value: Number, target: float | None) -> bool:
    return value is not None and target is not None and value >= target


def _ratio(norms: Sequence[Number] | None) -> Number:
    """norms[0] / norms[-2]: the readout's entry is last, so -2 is the last hidden block."""
    if norms is None or len(norms) < 2:
        return None
    first, last = norms[0], norms[-2]
    if first is None or last is None or last == 0:
        return None
    ratio = first / last
    return ratio if math.isfinite(ratio) else None


def summarize_records(
    records: Sequence[Mapping[str, Any]], status: str, target: float | None
) -> dict[str, Any]:
    """summarize() over a run's wire records (`depthscope sweep` keeps them in memory)."""
    evaluations = [
        Evaluation(r["step"], r.get("val_loss"), r.get("val_accuracy"))
        for r in records
        if "val_loss" in r
    ]
    first = records[0] if records and records[0]["step"] == 0 else None
    return summarize(
        status,
        records[-1]["loss"] if records else None,
        evaluations,
        None if first is None else first["layers"]["act_grad_norm"],
        target,
    )


def empty_summary(status: str = RunStatus.QUEUED) -> dict[str, Any]:
    return summarize(status, None, [], None, None)


def sweep_status(cell_statuses: Iterable[str | None], cancelled: bool) -> SweepStatus:
    """A sweep's status from its cells' (None or "deleted": the cell's run was deleted). It
    ends once every cell has ended, diverged cells included; then it is `cancelled` if it was
    cancelled, `interrupted` if a server restart cut a cell short, `failed` if a cell failed,
    `cancelled` if a cell was cancelled or deleted, else `completed`."""
    statuses = [None if s == "deleted" else s for s in cell_statuses]
    active = [s for s in statuses if s is not None and s not in TERMINAL]
    if active:
        ended = len(statuses) - len(active)
        waiting = ended == 0 and all(s == RunStatus.QUEUED for s in active)
        return SweepStatus.QUEUED if waiting else SweepStatus.RUNNING
    if cancelled:
        return SweepStatus.CANCELLED
    if RunStatus.INTERRUPTED in statuses:
        return SweepStatus.INTERRUPTED
    if RunStatus.FAILED in statuses:
        return SweepStatus.FAILED
    if RunStatus.CANCELLED in statuses or None in statuses:
        return SweepStatus.CANCELLED
    return SweepStatus.COMPLETED
