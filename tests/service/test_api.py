"""The HTTP API over httpx against the ASGI app: lifecycle, errors, series, export."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from conftest import tiny_config
from depthscope import RunConfig, StepRecord, train
from depthscope.records import METRICS
from depthscope.service import api as api_module
from depthscope.service.security import StreamSlots
from depthscope.service.status import TERMINAL
from depthscope.service.store import RunStore
from fastapi import FastAPI
from test_stream import big_record

pytestmark = pytest.mark.anyio


async def wait_until(
    client: httpx.AsyncClient, run_id: str, statuses: Collection[str], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = (await client.get(f"/api/runs/{run_id}")).json()
        if run["status"] in statuses:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {statuses}")


async def finished_run(client: httpx.AsyncClient, steps: int = 30) -> dict[str, Any]:
    created = await client.post("/api/runs", json=tiny_config(steps))
    assert created.status_code == 201, created.text
    return await wait_until(client, created.json()["id"], TERMINAL)


async def test_health_reports_ok_and_version(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/health")).json()
    assert body["status"] == "ok" and body["version"] == "0.1.0"


async def test_presets_and_schema_are_served(client: httpx.AsyncClient) -> None:
    presets = (await client.get("/api/presets")).json()
    assert {"id", "title", "description", "config", "metric"} <= set(presets[0])
    assert {p["metric"] for p in presets} <= set(METRICS)
    schema = (await client.get("/api/schema")).json()
    assert schema["title"] == "RunConfig" and "model" in schema["properties"]


async def test_runs_lifecycle_completes_with_summary(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/runs", json=tiny_config(30))
    assert created.status_code == 201
    body = created.json()
    assert body["status"] in ("queued", "running") and body["config"]["training"]["steps"] == 30
    run = await wait_until(client, body["id"], TERMINAL)
    assert run["status"] == "completed", run["error"]
    assert run["steps_done"] == 30 and run["records"] == 30
    assert run["layers"] == ["block1", "block2", "readout"]
    assert run["final"]["step"] == 29 and run["error"] is None and run["created_at"]
    listed = (await client.get("/api/runs")).json()
    assert [r["id"] for r in listed] == [body["id"]]


async def test_runs_list_newest_first(client: httpx.AsyncClient) -> None:
    first = (await client.post("/api/runs", json=tiny_config(2))).json()["id"]
    second = (await client.post("/api/runs", json=tiny_config(2))).json()["id"]
    assert [r["id"] for r in (await client.get("/api/runs")).json()] == [second, first]


async def test_runs_empty_body_takes_defaults(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/runs", json={})
    assert created.status_code == 201 and created.json()["config"]["model"]["depth"] == 10
    await client.post(f"/api/runs/{created.json()['id']}/cancel")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"model": {"depth": 2, "colour": "red"}}, "colour"),
        ({"model": {"activation": "swish"}}, "activation"),
        ({"training": {"lr": -1}}, "lr"),
        ({"model": {"depth": 3, "residual_every": 5}}, "model.residual_every"),
        ({"data": {"dataset": "digits", "input_dim": 2}}, "data.input_dim"),
    ],
)
async def test_runs_bad_config_is_422_naming_field(
    client: httpx.AsyncClient, body: dict[str, Any], named: str
) -> None:
    response = await client.post("/api/runs", json=body)
    assert response.status_code == 422
    assert named in json.dumps(response.json()["detail"])


async def test_runs_digits_with_other_input_dim_is_422_at_the_field(
    client: httpx.AsyncClient,
) -> None:
    """The defaults (2 inputs, 2048 samples) do not fit digits: both fields are named."""
    response = await client.post("/api/runs", json={"data": {"dataset": "digits"}})
    assert response.status_code == 422
    where = [e["loc"] for e in response.json()["detail"]]
    assert where == [["body", "data", "n_samples"], ["body", "data", "input_dim"]]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
async def test_runs_cuda_without_gpu_is_422_naming_device(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/runs", json={"training": {"device": "cuda"}})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "training", "device"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
async def test_runs_on_cuda_through_the_worker(client: httpx.AsyncClient) -> None:
    """A run asked for on the GPU trains there in its worker process (forked from a server
    that has only asked whether CUDA exists) and its records match the same run on the CPU
    to float32 precision."""
    runs = {}
    for device in ("cpu", "cuda"):
        config = tiny_config(20, device=device)
        created = await client.post("/api/runs", json=config)
        assert created.status_code == 201, created.text
        run = await wait_until(client, created.json()["id"], TERMINAL)
        assert run["status"] == "completed", run["error"]
        runs[device] = (await client.get(f"/api/runs/{run['id']}/series?metric=act_std")).json()
    cpu, gpu = runs["cpu"], runs["cuda"]
    assert gpu["steps"] == cpu["steps"] == list(range(20))
    for a, b in zip(cpu["values"], gpu["values"], strict=True):
        assert b == pytest.approx(a, rel=1e-3, abs=1e-5)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("POST", "/cancel"),
        ("DELETE", ""),
        ("GET", "/series?metric=grad_norm"),
        ("GET", "/events"),
        ("GET", "/export"),
    ],
)
async def test_unknown_run_is_404(client: httpx.AsyncClient, method: str, path: str) -> None:
    response = await client.request(method, f"/api/runs/nope{path}")
    assert response.status_code == 404 and "nope" in response.json()["detail"]


async def test_runs_queue_full_is_429_with_retry_after(client: httpx.AsyncClient) -> None:
    ids = []
    for _ in range(4):  # 2 running + 2 queued fill the test settings' slots
        response = await client.post("/api/runs", json=tiny_config(100_000 // 32))
        assert response.status_code == 201
        ids.append(response.json()["id"])
    full = await client.post("/api/runs", json=tiny_config(10))
    assert full.status_code == 429 and int(full.headers["retry-after"]) > 0
    statuses = [(await client.get(f"/api/runs/{i}")).json()["status"] for i in ids]
    assert statuses[2:] == ["queued", "queued"]  # FIFO: the first two took the slots
    for run_id in reversed(ids):
        cancelled = await client.post(f"/api/runs/{run_id}/cancel")
        assert cancelled.json()["status"] == "cancelled"


async def test_cancel_stops_the_run_and_keeps_records(client: httpx.AsyncClient) -> None:
    # The cancel's latency is bounded by construction (asked, then killed after CANCEL_GRACE_S);
    # what is asserted is that the run has stopped when the answer comes and kept its records.
    run_id = (await client.post("/api/runs", json=tiny_config(3000))).json()["id"]
    deadline = time.monotonic() + 30
    while (await client.get(f"/api/runs/{run_id}")).json()["records"] < 5:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    run = (await client.post(f"/api/runs/{run_id}/cancel")).json()
    assert run["status"] == "cancelled"
    await asyncio.sleep(0.3)
    assert (await client.get(f"/api/runs/{run_id}")).json()["records"] == run["records"]
    exported = (await client.get(f"/api/runs/{run_id}/export?format=json")).json()
    final = (await client.get(f"/api/runs/{run_id}")).json()
    assert len(exported["records"]) == final["records"] >= 5


async def test_series_downsamples_to_max_points(client: httpx.AsyncClient) -> None:
    run = await finished_run(client, steps=50)
    full = (await client.get(f"/api/runs/{run['id']}/series?metric=act_std")).json()
    assert full["downsample"] == "none" and full["steps"] == list(range(50))
    assert len(full["values"]) == 3 and len(full["values"][0]) == 50
    small = await client.get(f"/api/runs/{run['id']}/series?metric=act_std&max_points=10")
    body = small.json()
    assert body["downsample"] == "extreme" and body["bucket"] == 5
    assert body["steps"] == list(range(0, 50, 5)) and len(body["values"][2]) == 10
    for layer in range(3):  # each column holds the max or min of its bucket
        for i, value in enumerate(body["values"][layer]):
            bucket = full["values"][layer][5 * i : 5 * i + 5]
            assert value in (pytest.approx(max(bucket)), pytest.approx(min(bucket)))
    loss = (await client.get(f"/api/runs/{run['id']}/series?metric=loss")).json()
    assert loss["layers"] == ["loss"] and len(loss["values"][0]) == 50
    bad = await client.get(f"/api/runs/{run['id']}/series?metric=bogus")
    assert bad.status_code == 422 and "bogus" in bad.text


async def test_export_json_and_csv_round_trip(client: httpx.AsyncClient) -> None:
    run = await finished_run(client, steps=12)
    exported = (await client.get(f"/api/runs/{run['id']}/export?format=json")).json()
    assert exported["run"]["id"] == run["id"] and len(exported["records"]) == 12
    assert [r["step"] for r in exported["records"]] == list(range(12))
    assert set(exported["records"][0]["layers"]) == set(METRICS)
    response = await client.get(f"/api/runs/{run['id']}/export?format=csv")
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 12 * 3
    for row in rows:
        record = exported["records"][int(row["step"])]
        index = int(row["layer_index"])
        assert float(row["grad_norm"]) == pytest.approx(record["layers"]["grad_norm"][index])
        assert float(row["loss"]) == pytest.approx(record["loss"])


async def test_delete_removes_run(client: httpx.AsyncClient) -> None:
    run = await finished_run(client, steps=3)
    assert (await client.delete(f"/api/runs/{run['id']}")).status_code == 204
    assert (await client.get(f"/api/runs/{run['id']}")).status_code == 404


async def test_runs_diverged_reports_first_non_finite_and_exports_valid_json(
    client: httpx.AsyncClient,
) -> None:
    presets = {p["id"]: p for p in (await client.get("/api/presets")).json()}
    created = await client.post("/api/runs", json=presets["exploding"]["config"])
    run = await wait_until(client, created.json()["id"], TERMINAL)
    assert run["status"] == "diverged"
    divergence = run["divergence"]
    assert set(divergence) == {"step", "layer", "layer_index", "metric", "message"}
    assert divergence["message"] == run["error"]  # one sentence, built once by the server
    assert run["error"] == (
        f"layer {divergence['layer']} went non-finite at step {divergence['step']} "
        f"({divergence['metric']})"
    )
    text = (await client.get(f"/api/runs/{run['id']}/export")).text
    assert "NaN" not in text and "Infinity" not in text
    records = json.loads(text)["records"]
    last = records[-1]["layers"][divergence["metric"]][divergence["layer_index"]]
    assert records[-1]["step"] == divergence["step"] and last is None


async def test_series_metric_is_an_enum_in_the_schema_and_every_choice_answers(
    client: httpx.AsyncClient,
) -> None:
    """Regression: `metric` was a free string in /openapi.json but an enum in the code, so a
    schema-valid request got 422."""
    schema = (await client.get("/openapi.json")).json()
    params = schema["paths"]["/api/runs/{run_id}/series"]["get"]["parameters"]
    metric = next(p for p in params if p["name"] == "metric")["schema"]
    assert metric["enum"] == [*METRICS, "loss", "accuracy", "grad_norm_total"]
    run = await finished_run(client, steps=3)
    for name in metric["enum"]:
        response = await client.get(f"/api/runs/{run['id']}/series", params={"metric": name})
        assert response.status_code == 200, name


async def test_every_body_taking_operation_documents_its_4xx(client: httpx.AsyncClient) -> None:
    """Each status a body can cause (413, 415, 422) is in the schema of every operation that
    takes one, so a schema-driven client knows them all."""
    schema = (await client.get("/openapi.json")).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                assert {"413", "415", "422"} <= set(operation["responses"]), (method, path)


async def test_export_limits_concurrency_per_client_and_in_total(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Regression: every export client that never read held a 1000-record page; 120 of them
    took the server to 6.4 GB."""
    run = await finished_run(client, steps=3)
    slots: StreamSlots = app.state.export_slots
    settings = app.state.settings
    for _ in range(settings.max_exports_per_client):
        assert slots.acquire("127.0.0.1", "exports") is None
    refused = await client.get(f"/api/runs/{run['id']}/export")
    assert refused.status_code == 429 and "per client" in refused.json()["detail"]
    assert refused.headers["retry-after"]
    for i in range(settings.max_exports - settings.max_exports_per_client):
        assert slots.acquire(f"10.0.0.{i}", "exports") is None
    slots.release("127.0.0.1")
    assert slots.acquire("10.0.0.99", "exports") is None  # the total is full again
    crowded = await client.get(f"/api/runs/{run['id']}/export")
    assert crowded.status_code == 429 and "8 exports" in crowded.json()["detail"]
    slots.release("10.0.0.0")
    served = await client.get(f"/api/runs/{run['id']}/export")
    assert served.status_code == 200 and len(served.json()["records"]) == 3
    assert slots.open_streams() == settings.max_exports - 1  # its own slot was given back


def test_export_streams_byte_bounded_pages(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.create_run("r", {}, [f"block{i}" for i in range(1, 201)] + ["readout"])
    store.append("r", [big_record(i) for i in range(40)])
    row = store.get_run("r")
    assert row is not None
    chunks = list(api_module._export_json(store, row))
    assert len(chunks) > 4
    assert max(len(c) for c in chunks) <= api_module.EXPORT_PAGE_BYTES + 1
    assert [r["step"] for r in json.loads("".join(chunks))["records"]] == list(range(40))
    csv_rows = "".join(api_module._export_csv(store, row)).splitlines()
    assert len(csv_rows) == 1 + 40 * 201


def form_defaults(schema: dict[str, Any], dataset: str) -> dict[str, dict[str, Any]]:
    """The config the explorer's form holds by default once `dataset` is chosen: every field's
    schema default, then the dataset's own defaults ("x-dataset-defaults"), as form.js does."""
    config: dict[str, dict[str, Any]] = {}
    for section, ref in schema["properties"].items():
        definition = schema["$defs"][ref["$ref"].split("/")[-1]]
        config[section] = {k: p["default"] for k, p in definition["properties"].items()}
    config["data"]["dataset"] = dataset
    for name, value in schema["x-dataset-defaults"].get(dataset, {}).items():
        section, field = name.split(".")
        config[section][field] = value
    return config


async def test_default_form_trains_every_dataset(client: httpx.AsyncClient) -> None:
    # Issue 16: the default form with dataset "teacher" diverged at step 2 (lr 0.05 is too large
    # for regression). Every dataset's default form now trains: no divergence, the loss falls.
    schema = (await client.get("/api/schema")).json()
    datasets = schema["$defs"]["DataConfig"]["properties"]["dataset"]["enum"]
    assert "teacher" in datasets and schema["x-dataset-defaults"]["teacher"]["training.lr"] < 0.05
    torch.set_num_threads(1)
    for dataset in datasets:
        config = form_defaults(schema, dataset)
        config["training"]["steps"] = 25  # the teacher's divergence came within 2 to 6 steps
        records: list[StepRecord] = []
        result = train(RunConfig.model_validate(config), records.append)
        assert result.status == "completed", (dataset, result.divergence)
        finite = [r.loss for r in records if r.loss is not None]
        assert len(finite) == 25, dataset
        assert sum(finite[-5:]) / 5 < finite[0], dataset  # it learns
