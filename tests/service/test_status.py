"""Run statuses: one enum, split into active and terminal, visible in the OpenAPI schema."""

from __future__ import annotations

import httpx
import pytest
from conftest import tiny_config
from depthscope.service.status import ACTIVE, TERMINAL, RunStatus


def test_status_active_and_terminal_partition_the_enum() -> None:
    assert set(ACTIVE) | set(TERMINAL) == set(RunStatus)
    assert not set(ACTIVE) & set(TERMINAL)
    assert [s.terminal for s in ACTIVE] == [False] * len(ACTIVE)
    assert all(s.terminal for s in TERMINAL)


@pytest.mark.anyio
async def test_status_enum_is_declared_in_openapi(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert schemas["RunStatus"]["enum"] == [s.value for s in RunStatus]
    summary = schemas["RunSummary"]["properties"]
    assert summary["status"] == {"$ref": "#/components/schemas/RunStatus"}
    assert summary["terminal"]["type"] == "boolean"


@pytest.mark.anyio
async def test_status_summary_says_whether_it_is_terminal(client: httpx.AsyncClient) -> None:
    run = (await client.post("/api/runs", json=tiny_config(steps=2))).json()
    assert run["status"] == RunStatus.QUEUED and run["terminal"] is False
