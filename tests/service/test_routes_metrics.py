"""GET /api/metrics: the registry's metrics, in record order, as the OpenAPI schema says."""

from __future__ import annotations

import httpx
import pytest
from depthscope.probe.metrics import REGISTRY
from depthscope.records import METRICS

pytestmark = pytest.mark.anyio


async def test_routes_metrics_lists_the_registry_in_record_order(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/metrics")
    assert response.status_code == 200
    body = response.json()
    assert [m["name"] for m in body] == list(METRICS)
    for got, metric in zip(body, REGISTRY, strict=True):
        assert set(got) == {"name", "title", "description", "scale"}
        assert got["title"] == metric.title and got["description"] == metric.description
        assert got["scale"] == metric.scale
    scales = {m["name"]: m["scale"] for m in body}
    assert scales["grad_norm"] == "log" and scales["act_mean"] == "linear"
    assert scales["saturation"] == scales["dead"] == "fraction"


async def test_routes_metrics_is_in_the_openapi_schema(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/api/metrics"]["get"]
    item = operation["responses"]["200"]["content"]["application/json"]["schema"]["items"]
    assert item["$ref"].endswith("/MetricOut")
    scale = schema["components"]["schemas"]["MetricOut"]["properties"]["scale"]
    assert scale["enum"] == ["log", "linear", "fraction"]
