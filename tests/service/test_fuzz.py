"""Hostile and odd input: schemathesis over /openapi.json, hypothesis over RunConfig, ids, queries.

Nothing here trains: the fuzzed app's run manager is shut down first, so an accepted run is only
stored (queued), never started.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from depthscope.service.app import create_app
from depthscope.service.settings import Settings
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def _fuzz_app() -> FastAPI:
    # Built at import: schemathesis reads the schema at collection. The store lives in a
    # temporary directory removed at exit.
    data = Path(tempfile.mkdtemp(prefix="depthscope-fuzz-"))
    atexit.register(shutil.rmtree, data, ignore_errors=True)
    # schemathesis calls through Starlette's TestClient, whose Host is "testserver".
    app = create_app(
        Settings(
            data_dir=data,
            max_queued_runs=10_000,
            max_stored_runs=10_000,
            allowed_hosts=["localhost", "testserver"],
        )
    )
    app.state.manager.shutdown()  # accepted runs stay queued: the fuzzer never trains
    return app


APP = _fuzz_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def fuzz_app() -> FastAPI:
    return APP


@schema.parametrize()
@FUZZ
def test_fuzz_every_endpoint_no_500_and_schema_holds(case: Any) -> None:
    case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])


# -- RunConfig through POST /api/runs ------------------------------------------------------------
class TestClient:
    """Blocking calls into the app over httpx's ASGI transport (no lifespan: no fork server)."""

    __test__ = False

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://localhost"
            ) as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(call())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@pytest.fixture(scope="module")
def client(fuzz_app: FastAPI) -> TestClient:
    return TestClient(fuzz_app)


FIELDS: dict[str, list[str]] = {
    "model": ["depth", "width", "init_std", "residual_every"],
    "training": ["lr", "batch_size", "steps", "clip_value", "weight_decay", "seed"],
    "data": ["n_samples", "noise", "input_dim"],
    "recording": ["record_every", "histogram_every", "eval_every"],
}
ENUMS = {
    ("model", "activation"),
    ("model", "init"),
    ("model", "norm"),
    ("training", "optimizer"),
    ("training", "clip"),
    ("data", "dataset"),
}
HOSTILE_NUMBERS = st.one_of(
    st.integers(min_value=-(10**30), max_value=-1),
    st.integers(min_value=10**7, max_value=10**30),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.5, 1e308]),
)
WRONG_TYPES = st.one_of(
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.none(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)


def post(client: TestClient, body: Any) -> httpx.Response:
    # allow_nan: the JSON encoders refuse NaN; a hostile client need not.
    raw = json.dumps(body, allow_nan=True)
    return client.post("/api/runs", content=raw, headers={"content-type": "application/json"})


@given(
    section=st.sampled_from(sorted(FIELDS)),
    data=st.data(),
    value=st.one_of(HOSTILE_NUMBERS, WRONG_TYPES),
)
@FUZZ
def test_fuzz_runconfig_hostile_numbers_and_types_are_422_naming_field(
    client: TestClient, section: str, data: st.DataObject, value: Any
) -> None:
    field = data.draw(st.sampled_from(FIELDS[section]))
    response = post(client, {section: {field: value}})
    if response.status_code == 201:  # a value that happens to be valid: only if it is a number
        assert isinstance(value, int | float) and not isinstance(value, bool)
        assert math.isfinite(value)  # NaN and infinities are never accepted
        return
    assert response.status_code == 422, response.text
    assert field in response.text  # the error names the field (or the budget it breaks)


@given(
    target=st.sampled_from(sorted(ENUMS)),
    value=st.text(min_size=1, max_size=20).filter(lambda s: s.isprintable()),
)
@FUZZ
def test_fuzz_runconfig_unknown_enum_values_are_422(
    client: TestClient, target: tuple[str, str], value: str
) -> None:
    section, field = target
    response = post(client, {section: {field: value}})
    if response.status_code == 201:
        return  # the fuzzer hit a real choice
    assert response.status_code == 422 and field in response.text


@given(
    where=st.sampled_from(["", *sorted(FIELDS)]),
    key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
)
@FUZZ
def test_fuzz_runconfig_unknown_fields_are_422(client: TestClient, where: str, key: str) -> None:
    known = set(FIELDS) if where == "" else {*FIELDS[where], *(f for s, f in ENUMS if s == where)}
    if key in known or key in {"norm_position", "bias", "device"}:
        return
    body: dict[str, Any] = {key: 1} if where == "" else {where: {key: 1}}
    response = post(client, body)
    assert response.status_code == 422 and key in response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": {"depth": 100_000, "width": 100_000}}, "depth"),
        ({"model": {"depth": 200, "width": 1024}, "training": {"steps": 100_000}}, "budget"),
        (
            {"model": {"depth": 200, "width": 2}, "training": {"steps": 100_000, "batch_size": 2}},
            "recording budget",
        ),
        ({"training": {"steps": 10**9}}, "steps"),
        ({"training": {"batch_size": 10**9}}, "batch_size"),
        ({"model": {"width": -1}}, "width"),
    ],
)
def test_runconfig_huge_or_negative_is_422_naming_limit(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    response = post(client, body)
    assert response.status_code == 422 and field in response.text.lower()


@pytest.mark.parametrize("body", [b"[]", b"null0", b'{"model": ', b"\xff\xfe", b'"x"', b"1e999"])
def test_runconfig_malformed_json_is_422_not_500(client: TestClient, body: bytes) -> None:
    response = client.post("/api/runs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422


# -- ids and query parameters --------------------------------------------------------------------
@given(
    run_id=st.text(min_size=1, max_size=80).filter(lambda s: "/" not in s and s not in {".", ".."})
)
@FUZZ
def test_fuzz_path_ids_are_404_or_422(client: TestClient, run_id: str) -> None:
    for suffix in ("", "/series?metric=loss", "/export", "/events"):
        response = client.get(f"/api/runs/{quote(run_id, safe='')}{suffix}")
        assert response.status_code in (404, 422), (run_id, suffix, response.status_code)
        assert response.json()["detail"]


@given(
    max_points=st.one_of(st.integers(), st.text(max_size=6)),
    metric=st.text(max_size=70),
    fmt=st.text(max_size=8),
)
@FUZZ
def test_fuzz_query_params_out_of_range_are_4xx(
    client: TestClient, fuzz_app: FastAPI, max_points: Any, metric: str, fmt: str
) -> None:
    run_id = _one_run(client)
    series = client.get(
        f"/api/runs/{run_id}/series", params={"metric": metric, "max_points": max_points}
    )
    assert series.status_code in (200, 422), series.text
    if series.status_code == 422:
        assert "metric" in series.text or "max_points" in series.text
    export = client.get(f"/api/runs/{run_id}/export", params={"format": fmt})
    assert export.status_code == (200 if fmt in ("json", "csv") else 422)


_RUN: dict[str, str] = {}


def _one_run(client: TestClient) -> str:
    if "id" not in _RUN:
        _RUN["id"] = client.post("/api/runs", json={"training": {"steps": 5}}).json()["id"]
    return _RUN["id"]
