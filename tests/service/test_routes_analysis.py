"""The analysis endpoints over httpx: /api/theory, a run's theory, spectrum and diagnosis, and
the init scan, with their 422s and bounds."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import httpx
import pytest
from conftest import tiny_config
from depthscope.analysis.scans import MAX_SCAN_WORK
from depthscope.service.status import TERMINAL

pytestmark = pytest.mark.anyio


async def finished(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    created = await client.post("/api/runs", json=body)
    assert created.status_code == 201, created.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        run: dict[str, Any] = (await client.get(f"/api/runs/{created.json()['id']}")).json()
        if run["status"] in TERMINAL:
            return run
        await asyncio.sleep(0.05)
    raise AssertionError("the run never ended")


async def test_theory_endpoint_gives_the_reference_values(client: httpx.AsyncClient) -> None:
    params = {"activation": "tanh", "sigma_w2": 1.0, "sigma_b2": 0.05, "depth": 5}
    body = (await client.get("/api/theory", params=params)).json()
    assert body["q_star"] == pytest.approx(0.1936, abs=5e-5)
    assert body["chi1"] == pytest.approx(0.7590, abs=5e-5)
    assert body["phase"] == "ordered" and len(body["q"]) == 5
    assert body["critical_sigma_w2"] == pytest.approx(1.7610, abs=5e-5)


async def test_theory_endpoint_answers_null_where_nothing_exists(
    client: httpx.AsyncClient,
) -> None:
    params = {"activation": "relu", "sigma_w2": 3.0, "sigma_b2": 0.1}
    body = (await client.get("/api/theory", params=params)).json()
    assert body["q_star"] is None and body["xi_c"] is None and body["phase"] == "chaotic"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"activation": "swish", "sigma_w2": 1}, "activation"),
        ({"activation": "tanh", "sigma_w2": 0}, "sigma_w2"),
        ({"activation": "tanh", "sigma_w2": 1, "sigma_b2": -0.1}, "sigma_b2"),
        ({"activation": "tanh", "sigma_w2": "nan"}, "sigma_w2"),
        ({"activation": "tanh", "sigma_w2": 1, "depth": 0}, "depth"),
        ({"activation": "tanh"}, "sigma_w2"),
    ],
)
async def test_theory_endpoint_bad_parameters_are_422_naming_them(
    client: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    response = await client.get("/api/theory", params=params)
    assert response.status_code == 422
    assert ["query", field] in [e["loc"] for e in response.json()["detail"]]


async def test_run_theory_predicts_the_measured_step_zero(client: httpx.AsyncClient) -> None:
    """Gaussian inputs in 64 dimensions: every layer is wide, as the theory assumes (a 2-D
    input's first layer is its weakest point: see docs/theory.md)."""
    body = tiny_config(steps=3)
    body["data"] = {"dataset": "teacher", "input_dim": 64, "n_samples": 512}
    body["training"]["batch_size"] = 64
    body["model"] = {
        "depth": 6,
        "width": 128,
        "activation": "tanh",
        "init": "scaled_normal",
        "init_gain": 1.2,
        "bias_std": 0.2,
    }
    run = await finished(client, body)
    theory = (await client.get(f"/api/runs/{run['id']}/theory")).json()
    assert theory["applicable"] and theory["layers"] == run["layers"][:6]
    assert theory["sigma_w2"][1] == pytest.approx(1.44)
    assert theory["sigma_b2"][1] == pytest.approx(0.04)
    predicted, measured = theory["predicted"], theory["measured"]
    assert measured["step"] == 0 and measured["log_act_grad_norm"][-1] == 0.0
    for got, lo, hi in zip(
        measured["act_std"], predicted["act_std_lo"], predicted["act_std_hi"], strict=True
    ):
        assert lo <= got <= hi
    assert theory["mean_field"]["chi1"] == pytest.approx(
        (
            await client.get(
                "/api/theory", params={"activation": "tanh", "sigma_w2": 1.44, "sigma_b2": 0.04}
            )
        ).json()["chi1"]
    )


async def test_run_theory_is_not_applicable_with_batch_norm(client: httpx.AsyncClient) -> None:
    body = tiny_config(steps=2)
    body["model"]["norm"] = "batchnorm"
    run = await finished(client, body)
    theory = (await client.get(f"/api/runs/{run['id']}/theory")).json()
    assert theory["applicable"] is False and "normalization" in theory["reason"]
    assert theory["predicted"] is None


async def test_spectrum_endpoint_lists_every_spectrum_step(client: httpx.AsyncClient) -> None:
    body = tiny_config(steps=12)
    body["recording"]["spectrum_every"] = 5
    run = await finished(client, body)
    spectrum = (await client.get(f"/api/runs/{run['id']}/spectrum")).json()
    assert spectrum["steps"] == [0, 5, 10, 11] and spectrum["skipped"] is None
    assert all(len(values) == 4 * 8 for values in spectrum["singular_values"])
    assert spectrum["theory"]["applicable"] and spectrum["theory"]["layers"] == 1
    assert spectrum["theory"]["mean"] > 0


async def test_spectrum_endpoint_says_why_a_network_is_skipped(
    client: httpx.AsyncClient,
) -> None:
    body = tiny_config(steps=1)
    body["model"] = {"depth": 1, "width": 8}
    run = await finished(client, body)
    spectrum = (await client.get(f"/api/runs/{run['id']}/spectrum")).json()
    assert spectrum["steps"] == [] and "one hidden block" in spectrum["skipped"]


async def test_diagnosis_of_the_exploding_preset_names_the_divergence(
    client: httpx.AsyncClient,
) -> None:
    presets = {p["id"]: p for p in (await client.get("/api/presets")).json()}
    run = await finished(client, presets["exploding"]["config"])
    findings = (await client.get(f"/api/runs/{run['id']}/diagnosis")).json()["findings"]
    (divergence,) = [f for f in findings if f["kind"] == "divergence"]
    assert divergence["message"] == f"Training stopped: {run['divergence']['message']}."
    assert divergence["layers"] == [run["divergence"]["layer"]]
    assert "Infinity" not in json.dumps(findings) and "NaN" not in json.dumps(findings)


@pytest.mark.parametrize("path", ["theory", "spectrum", "diagnosis"])
async def test_analysis_of_an_unknown_run_is_404(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(f"/api/runs/nope/{path}")).status_code == 404


async def test_scan_measures_every_cell_beside_the_theory(client: httpx.AsyncClient) -> None:
    body = {
        "activation": "tanh",
        "depth": 8,
        "width": 32,
        "sigma_w": {"min": 0.5, "max": 3.0, "num": 4},
        "sigma_b": {"min": 0.0, "max": 0.3, "num": 2},
    }
    response = await client.post("/api/scans/init", json=body)
    assert response.status_code == 200, response.text
    scan = response.json()
    assert scan["sigma_w"] == pytest.approx([0.5, 0.5 + 2.5 / 3, 0.5 + 5 / 3, 3.0])
    assert len(scan["log_grad_ratio"]) == 2 and len(scan["log_grad_ratio"][0]) == 4
    assert scan["chi1"][0][0] < 1 < scan["chi1"][0][3]
    assert scan["critical_sigma_w"][0] == pytest.approx(1.0)
    assert math.isfinite(scan["seconds"])


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"depth": 200, "width": 1024}, f"{MAX_SCAN_WORK:.3g}"),
        ({"sigma_w": {"min": 2.0, "max": 1.0, "num": 3}}, "below min"),
        ({"sigma_w": {"min": 0.0, "max": 1.0, "num": 3}}, "sigma_w.min"),
        ({"sigma_b": {"min": 0.0, "max": 1.0, "num": 65}}, "num"),
        ({"activation": "swish"}, "activation"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_scan_bad_requests_are_422_naming_the_limit(
    client: httpx.AsyncClient, body: dict[str, Any], says: str
) -> None:
    response = await client.post("/api/scans/init", json=body)
    assert response.status_code == 422
    assert says in json.dumps(response.json()["detail"])


async def test_schema_offers_the_new_fields_and_init(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/api/schema")).json()
    model = schema["$defs"]["ModelConfig"]["properties"]
    assert "scaled_normal" in model["init"]["enum"]
    assert model["init_gain"]["exclusiveMinimum"] == 0 and model["init_gain"]["maximum"] == 10
    assert model["bias_std"]["minimum"] == 0
    assert "spectrum_every" in schema["$defs"]["RecordingConfig"]["properties"]


@pytest.mark.parametrize(
    ("field", "value"), [("init_gain", 0), ("bias_std", -1), ("init_gain", 11)]
)
async def test_runs_init_scale_out_of_bounds_is_422_naming_it(
    client: httpx.AsyncClient, field: str, value: float
) -> None:
    response = await client.post("/api/runs", json={"model": {field: value}})
    assert response.status_code == 422
    assert ["body", "model", field] in [e["loc"] for e in response.json()["detail"]]
