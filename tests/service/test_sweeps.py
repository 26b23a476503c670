"""Sweeps: expansion and validation of a spec, cell summaries held to the runs' records, the
sweep status, and the HTTP contract (create, list, read, cancel, delete, events, presets)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from conftest import tiny_config
from depthscope import RunConfig
from depthscope.service.app import create_app
from depthscope.service.runs import QueueFullError, RunManager
from depthscope.service.settings import Settings
from depthscope.service.status import TERMINAL
from depthscope.service.store import RunStore
from depthscope.service.sweeps import (
    MAX_CELLS,
    Evaluation,
    SweepSpec,
    SweepSpecError,
    expand,
    summarize,
    sweep_status,
)
from depthscope.sweep_presets import SWEEP_PRESETS

LR_NORM = [
    {"field": "training.lr", "values": [0.05, 1.0]},
    {"field": "model.norm", "values": ["none", "batchnorm"]},
]


def spec(axes: list[dict[str, Any]], base: dict[str, Any] | None = None, **rest: Any) -> SweepSpec:
    return SweepSpec.model_validate({"base": base or tiny_config(20), "axes": axes, **rest})


def problems(axes: list[dict[str, Any]], base: dict[str, Any] | None = None) -> list[Any]:
    with pytest.raises(SweepSpecError) as caught:
        expand(spec(axes, base), max_work=Settings().max_sweep_work)
    return caught.value.problems


# -- expansion and validation ---------------------------------------------------------------------
def test_expand_is_the_product_of_the_axes_last_fastest() -> None:
    cells = expand(spec(LR_NORM))
    assert [c.values for c in cells] == [
        {"training.lr": 0.05, "model.norm": "none"},
        {"training.lr": 0.05, "model.norm": "batchnorm"},
        {"training.lr": 1.0, "model.norm": "none"},
        {"training.lr": 1.0, "model.norm": "batchnorm"},
    ]
    assert [c.index for c in cells] == [0, 1, 2, 3]
    base = RunConfig.model_validate(tiny_config(20))
    for cell in cells:
        assert cell.config.training.lr == cell.values["training.lr"]
        assert cell.config.model.norm == cell.values["model.norm"]
        assert cell.config.model.depth == base.model.depth  # the rest from the base
        assert cell.config.training.steps == base.training.steps


def test_expand_with_fields_vary_in_step_with_their_axis() -> None:
    axes = [
        {
            "field": "model.activation",
            "values": ["tanh", "relu"],
            "with": {"model.init": ["xavier_normal", "he_normal"]},
        },
        {"field": "model.depth", "values": [2, 3]},
    ]
    cells = expand(spec(axes))
    assert len(cells) == 4
    pairs = {(c.config.model.activation, c.config.model.init) for c in cells}
    assert pairs == {("tanh", "xavier_normal"), ("relu", "he_normal")}
    assert cells[2].values == {
        "model.activation": "relu",
        "model.init": "he_normal",
        "model.depth": 2,
    }


@pytest.mark.parametrize(
    ("axes", "loc", "says"),
    [
        (
            [{"field": "training.lrr", "values": [0.1]}],
            ("axes", 0, "field"),
            "unknown field 'training.lrr'",
        ),
        ([{"field": "model", "values": [1]}], ("axes", 0, "field"), "unknown field"),
        (
            [
                {
                    "field": "model.activation",
                    "values": ["relu"],
                    "with": {"model.inti": ["he_normal"]},
                }
            ],
            ("axes", 0, "with", "model.inti"),
            "unknown field 'model.inti'",
        ),
        (
            [{"field": "training.lr", "values": [0.1]}, {"field": "training.lr", "values": [0.2]}],
            ("axes", 1, "field"),
            "already varied by axes[0]",
        ),
        (
            [
                {
                    "field": "model.activation",
                    "values": ["relu", "tanh"],
                    "with": {"model.init": ["he_normal"]},
                }
            ],
            ("axes", 0, "with", "model.init"),
            "needs 2 values",
        ),
        ([{"field": "training.lr", "values": [0.1, 0.1]}], ("axes", 0, "values"), "repeat"),
    ],
)
def test_expand_bad_field_is_named(
    axes: list[dict[str, Any]], loc: tuple[Any, ...], says: str
) -> None:
    found = problems(axes)
    assert [p.loc for p in found] == [loc]
    assert says in found[0].msg


def test_expand_invalid_value_names_the_field_and_the_value() -> None:
    found = problems(
        [
            {"field": "model.norm", "values": ["none"]},
            {"field": "model.depth", "values": [2, 300, True]},
        ]
    )
    assert [p.loc for p in found] == [("axes", 1, "values", 1), ("axes", 1, "values", 2)]
    assert found[0].msg.startswith("model.depth = 300: ") and "200" in found[0].msg
    assert found[0].input == 300
    assert found[1].msg.startswith("model.depth = True: ")


def test_expand_invalid_combination_names_the_cell() -> None:
    # Over a depth-3 base, depth 2 and a skip every 2 blocks are each fine, but not together.
    base = {**tiny_config(20), "model": {"depth": 3, "width": 8}}
    axes = [
        {"field": "model.depth", "values": [3, 2]},
        {"field": "model.residual_every", "values": [0, 2]},
    ]
    found = problems(axes, base)
    assert [p.loc for p in found] == [("axes",)]
    assert "cell 3 (model.depth=2, model.residual_every=2)" in found[0].msg
    assert "residual_every" in found[0].msg


def test_expand_over_the_cell_limit_states_it() -> None:
    axes = [
        {"field": "training.seed", "values": list(range(17))},
        {"field": "data.noise", "values": [i / 100 for i in range(16)]},
    ]
    (found,) = problems(axes)
    assert found.loc == ("axes",)
    assert found.msg == f"the sweep has 272 cells (17 × 16), limit {MAX_CELLS}"


def test_expand_over_the_summed_budget_names_the_limit_and_the_request() -> None:
    base = {"model": {"depth": 4, "width": 1024}, "training": {"steps": 900, "batch_size": 128}}
    one = RunConfig.model_validate(base)
    limit = Settings().max_sweep_work
    assert one.work() < 4e11 and 20 * one.work() > limit  # each cell alone is accepted
    (found,) = problems([{"field": "training.seed", "values": list(range(20))}], base)
    assert found.loc == ("axes",)
    assert f"{20 * one.work():.3g}" in found.msg and f"limit {limit:.3g}" in found.msg
    assert "20 cells" in found.msg


# -- summaries and statuses -----------------------------------------------------------------------
def test_summarize_reads_the_evaluations_and_step_zero() -> None:
    evaluations = [
        Evaluation(0, 0.7, 0.5),
        Evaluation(10, 0.4, 0.92),
        Evaluation(20, 0.5, 0.9),
        Evaluation(29, 0.45, None),
    ]
    summary = summarize("completed", 0.31, evaluations, [2e-3, 1e-2, 0.5, 7.0], 0.9)
    assert summary == {
        "final_loss": 0.31,
        "final_val_loss": 0.45,
        "best_val_accuracy": 0.92,
        "steps_to_target": 10,
        "diverged": False,
        "grad_ratio_step0": pytest.approx(
            2e-3 / 0.5
        ),  # block1 over the last block, not the readout
    }
    assert summarize("completed", 0.31, evaluations, None, 0.95)["steps_to_target"] is None
    assert summarize("diverged", None, [], [0.0, None, 1.0], 0.9)["diverged"] is True


@pytest.mark.parametrize(
    ("statuses", "cancelled", "expected"),
    [
        (["queued", "queued"], False, "queued"),
        (["running", "queued"], False, "running"),
        (["completed", "queued"], False, "running"),
        (["completed", "diverged"], False, "completed"),
        (["completed", "failed"], False, "failed"),
        (["completed", "interrupted", "failed"], False, "interrupted"),
        (["completed", "cancelled"], False, "cancelled"),
        (["completed", None], False, "cancelled"),
        (["completed", "completed"], True, "cancelled"),
        (["running", "cancelled"], True, "running"),
    ],
)
def test_sweep_status_follows_its_cells(
    statuses: list[str | None], cancelled: bool, expected: str
) -> None:
    assert sweep_status(statuses, cancelled) == expected


# -- the run manager's bounds ---------------------------------------------------------------------
@pytest.fixture
def one_slot(tmp_path: Path) -> Iterator[RunManager]:
    manager = RunManager(RunStore(tmp_path / "runs.db"), 1, 2, max_cells=3)
    yield manager
    manager.shutdown()


def wait_row(manager: RunManager, run_id: str, done: set[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while (row := manager.store.get_run(run_id)) is None or row.status not in done:
        assert time.monotonic() < deadline, f"{run_id} never reached {done}"
        time.sleep(0.02)
    return row


def test_sweep_cells_are_bounded_and_wait_behind_single_runs(one_slot: RunManager) -> None:
    long = RunConfig.model_validate(tiny_config(100_000 // 32))
    short = RunConfig.model_validate(tiny_config(5))
    with pytest.raises(QueueFullError):
        one_slot.submit_cells([short] * 4, "s0")  # more cells than max_cells: none is created
    assert one_slot.store.count_runs() == 0
    first, second, third = one_slot.submit_cells([long, short, short], "s1")
    assert one_slot.store.count_runs() == 3  # one run per cell, no more
    wait_row(one_slot, first.id, {"running"})
    single = one_slot.submit(short)  # a run started by hand goes before the waiting cells
    one_slot.cancel(first.id)
    rows = [wait_row(one_slot, r.id, set(TERMINAL)) for r in (single, second, third)]
    assert [r.status for r in rows] == ["completed"] * 3
    assert rows[0].finished_at <= rows[1].started_at <= rows[2].started_at
    assert {r.sweep_id for r in rows} == {None, "s1"}


# -- the HTTP contract ----------------------------------------------------------------------------
ACTIVE = {"queued", "running"}


async def wait_sweep(
    client: httpx.AsyncClient, sweep_id: str, timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (sweep := (await client.get(f"/api/sweeps/{sweep_id}")).json())["status"] in ACTIVE:
        assert time.monotonic() < deadline, f"sweep {sweep_id} did not end"
        await asyncio.sleep(0.05)
    result: dict[str, Any] = sweep
    return result


async def create(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/api/sweeps", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def reference_summary(
    run: dict[str, Any], records: list[dict[str, Any]], target: float
) -> dict[str, Any]:
    """The contract's definitions, applied to a run's exported records."""
    evaluated = [r for r in records if "val_loss" in r]
    reached = [r["step"] for r in evaluated if (r["val_accuracy"] or 0) >= target]
    grads = records[0]["layers"]["act_grad_norm"]
    return {
        "final_loss": records[-1]["loss"],
        "final_val_loss": evaluated[-1]["val_loss"],
        "best_val_accuracy": max(r["val_accuracy"] for r in evaluated),
        "steps_to_target": reached[0] if reached else None,
        "diverged": run["status"] == "diverged",
        "grad_ratio_step0": pytest.approx(grads[0] / grads[len(run["layers"]) - 2]),
    }


@pytest.mark.anyio
async def test_sweep_lifecycle_cells_are_runs_with_summaries(client: httpx.AsyncClient) -> None:
    body = {"name": "lr x norm", "base": tiny_config(30), "axes": LR_NORM, "target_accuracy": 0.6}
    created = await create(client, body)
    assert created["status"] in ACTIVE and created["name"] == "lr x norm"
    assert created["axes"] == [{**a, "with": {}} for a in LR_NORM]
    assert [c["values"] for c in created["cells"]] == [c.values for c in expand(spec(LR_NORM))]
    assert [c["index"] for c in created["cells"]] == [0, 1, 2, 3]
    runs = {r["id"]: r for r in (await client.get("/api/runs")).json()}
    assert set(runs) == {c["run_id"] for c in created["cells"]}  # one run per cell, no more
    assert {r["sweep_id"] for r in runs.values()} == {created["id"]}
    sweep = await wait_sweep(client, created["id"])
    assert sweep["status"] == "completed" and sweep["n_cells"] == 4
    assert sum(sweep["counts"].values()) == 4
    for cell in sweep["cells"]:
        run = (await client.get(f"/api/runs/{cell['run_id']}")).json()
        assert run["config"]["training"]["lr"] == cell["values"]["training.lr"]
        assert cell["status"] == run["status"] and run["status"] in ("completed", "diverged")
        records = (await client.get(f"/api/runs/{cell['run_id']}/export")).json()["records"]
        assert cell["summary"] == reference_summary(run, records, 0.6)
    again = (await client.get(f"/api/sweeps/{created['id']}")).json()  # summaries kept, same
    assert again["cells"] == sweep["cells"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("axes", "loc"),
    [
        ([{"field": "training.lrr", "values": [0.1]}], ["body", "axes", 0, "field"]),
        ([{"field": "model.depth", "values": [2, 300]}], ["body", "axes", 0, "values", 1]),
        ([{"field": "model.depth", "values": []}], ["body", "axes", 0, "values"]),
        ([], ["body", "axes"]),
    ],
)
async def test_sweep_bad_spec_is_422_naming_the_field(
    client: httpx.AsyncClient, axes: list[dict[str, Any]], loc: list[Any]
) -> None:
    response = await client.post("/api/sweeps", json={"base": tiny_config(5), "axes": axes})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
    assert (await client.get("/api/runs")).json() == []  # nothing was created


@pytest.mark.anyio
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
async def test_sweep_cuda_cell_without_gpu_is_422_naming_the_value(
    client: httpx.AsyncClient,
) -> None:
    axes = [{"field": "training.device", "values": ["cpu", "cuda"]}]
    response = await client.post("/api/sweeps", json={"base": tiny_config(5), "axes": axes})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "axes", 0, "values", 1]
    assert (await client.get("/api/runs")).json() == []


@pytest.mark.anyio
async def test_sweep_bad_base_is_422_naming_its_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/sweeps", json={"base": {"model": {"depth": 0}}, "axes": LR_NORM}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "base", "model", "depth"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path"), [("GET", ""), ("POST", "/cancel"), ("DELETE", ""), ("GET", "/events")]
)
async def test_unknown_sweep_is_404(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, f"/api/sweeps/nope{path}")
    assert response.status_code == 404 and "nope" in response.json()["detail"]


@pytest.mark.anyio
async def test_sweeps_list_newest_first(client: httpx.AsyncClient) -> None:
    axes = [{"field": "training.seed", "values": [0]}]
    first = await create(client, {"base": tiny_config(2), "axes": axes})
    second = await create(client, {"base": tiny_config(2), "axes": axes})
    listed = (await client.get("/api/sweeps")).json()
    assert [s["id"] for s in listed] == [second["id"], first["id"]]
    assert "cells" not in listed[0] and listed[0]["n_cells"] == 1


@pytest.mark.anyio
async def test_sweep_cancel_ends_every_cell_and_delete_removes_its_runs(
    client: httpx.AsyncClient,
) -> None:
    axes = [{"field": "training.seed", "values": [0, 1, 2]}]
    created = await create(client, {"base": tiny_config(100_000 // 32), "axes": axes})
    started = time.monotonic()
    cancelled = (await client.post(f"/api/sweeps/{created['id']}/cancel")).json()
    assert time.monotonic() - started < 2.0
    sweep = await wait_sweep(client, created["id"], timeout=5)
    assert cancelled["id"] == sweep["id"] and sweep["status"] == "cancelled"
    assert {c["status"] for c in sweep["cells"]} == {"cancelled"}
    assert (await client.delete(f"/api/sweeps/{created['id']}")).status_code == 204
    assert (await client.get(f"/api/sweeps/{created['id']}")).status_code == 404
    assert (await client.get("/api/runs")).json() == []
    for cell in created["cells"]:
        assert (await client.get(f"/api/runs/{cell['run_id']}")).status_code == 404


@pytest.mark.anyio
async def test_sweep_deleted_cell_run_shows_as_deleted(client: httpx.AsyncClient) -> None:
    created = await create(
        client, {"base": tiny_config(5), "axes": [{"field": "training.seed", "values": [0, 1]}]}
    )
    await wait_sweep(client, created["id"])
    await client.delete(f"/api/runs/{created['cells'][0]['run_id']}")
    sweep = (await client.get(f"/api/sweeps/{created['id']}")).json()
    assert [c["status"] for c in sweep["cells"]] == ["deleted", "completed"]
    assert sweep["status"] == "cancelled" and sweep["counts"] == {"deleted": 1, "completed": 1}


@pytest.mark.anyio
async def test_sweep_events_send_each_cell_then_end(client: httpx.AsyncClient) -> None:
    created = await create(client, {"base": tiny_config(10), "axes": LR_NORM})
    await wait_sweep(client, created["id"])
    response = await client.get(f"/api/sweeps/{created['id']}/events")  # ended: every event
    events = [
        block for block in response.text.replace("\r\n", "\n").split("\n\n") if "data:" in block
    ]
    kinds = [
        next(line[7:] for line in e.splitlines() if line.startswith("event: ")) for e in events
    ]
    assert kinds == ["cell"] * 4 + ["end"]
    data = [
        json.loads(next(line[6:] for line in e.splitlines() if line.startswith("data: ")))
        for e in events
    ]
    assert [d["index"] for d in data[:4]] == [0, 1, 2, 3]
    assert all(d["status"] in TERMINAL and "summary" in d for d in data[:4])
    assert data[4]["status"] == "completed" and len(data[4]["cells"]) == 4


@pytest.mark.settings(max_queued_cells=3)
@pytest.mark.anyio
async def test_sweep_past_the_cell_queue_is_429_and_single_runs_keep_their_limit(
    client: httpx.AsyncClient,
) -> None:
    long = tiny_config(100_000 // 32)
    four = [{"field": "training.seed", "values": [0, 1, 2, 3]}]
    refused = await client.post("/api/sweeps", json={"base": long, "axes": four})
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert "at most 3 cells" in refused.json()["detail"]
    assert (await client.get("/api/runs")).json() == []
    assert (await client.get("/api/sweeps")).json() == []
    two = [{"field": "training.seed", "values": [0, 1]}]
    sweep = await create(client, {"base": long, "axes": two})
    deadline = time.monotonic() + 60
    while (await client.get(f"/api/sweeps/{sweep['id']}")).json()["counts"] != {"running": 2}:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    statuses = [(await client.post("/api/runs", json=long)).status_code for _ in range(3)]
    assert statuses == [201, 201, 429]  # both slots taken by cells: 2 queued, then the 429
    for run in (await client.get("/api/runs")).json():
        await client.post(f"/api/runs/{run['id']}/cancel")
    assert (await wait_sweep(client, sweep["id"]))["status"] == "cancelled"


def test_sweep_left_running_by_a_stopped_server_is_interrupted(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, max_concurrent_runs=1)

    async def start() -> str:
        app = create_app(settings)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://[::1]") as client:
                body = {
                    "base": tiny_config(100_000 // 32),
                    "axes": [{"field": "training.seed", "values": [0, 1]}],
                }
                created = await create(client, body)
                deadline = time.monotonic() + 60
                while (await client.get(f"/api/sweeps/{created['id']}")).json()[
                    "status"
                ] != "running":
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                sweep_id: str = created["id"]
                return sweep_id
        finally:
            app.state.manager.shutdown()  # as when the server stops: cells stay unfinished
            app.state.store.close()
            app.state.lock.release()

    sweep_id = asyncio.run(start())
    restarted = create_app(settings)
    try:
        view = restarted.state.sweeps.view(sweep_id)
        assert view["status"] == "interrupted"
        assert {c["status"] for c in view["cells"]} == {"interrupted"}
    finally:
        restarted.state.manager.shutdown()
        restarted.state.store.close()
        restarted.state.lock.release()


# -- presets --------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_sweep_presets_are_served_and_accepted(client: httpx.AsyncClient) -> None:
    presets = (await client.get("/api/sweep-presets")).json()
    titles = {p["title"] for p in presets}
    assert {
        "Batch norm allows higher learning rates",
        "How deep can each activation go",
        "Init x activation at depth 30",
    } <= titles
    for preset in presets:
        assert set(preset) == {"id", "title", "description", "spec"}
        assert len(preset["description"]) > 200  # a paragraph on what to expect
        cells = expand(SweepSpec.model_validate(preset["spec"]), Settings().max_sweep_work)
        assert 4 <= len(cells) <= MAX_CELLS  # a server takes it as it is


@pytest.mark.slow
@pytest.mark.anyio
async def test_preset_batch_norm_allows_higher_learning_rates(client: httpx.AsyncClient) -> None:
    """As its description says: plain ReLU + He at depth 8 learns at lr 0.05 and 0.2 and
    diverges at 0.5 and 1.0; with batch norm it learns at all four."""
    preset = next(p for p in SWEEP_PRESETS if p.id == "batchnorm-lr")
    created = await create(client, preset.spec.to_wire())
    sweep = await wait_sweep(client, created["id"], timeout=300)
    assert sweep["status"] == "completed"
    outcome = {
        (c["values"]["model.norm"], c["values"]["training.lr"]): c["summary"]
        for c in sweep["cells"]
    }
    for lr in (0.05, 0.2, 0.5, 1.0):
        learns = outcome["batchnorm", lr]
        assert not learns["diverged"] and learns["best_val_accuracy"] >= 0.95, lr
    for lr in (0.05, 0.2):
        assert (
            not outcome["none", lr]["diverged"] and outcome["none", lr]["best_val_accuracy"] >= 0.95
        )
    for lr in (0.5, 1.0):
        assert outcome["none", lr]["diverged"] and outcome["none", lr]["final_loss"] is None
