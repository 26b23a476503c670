"""422 bodies that always encode: non-finite numbers, lone surrogates, deep and long inputs."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest
from depthscope.service.errors import MAX_ECHO_DEPTH, MAX_ECHO_ITEMS, safe

pytestmark = pytest.mark.anyio


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):  # built without recursion, as a JSON parser would
        value = [value]
    return value


def test_safe_makes_any_echo_encodable() -> None:
    echo = safe(
        {
            "nan": math.nan,
            "inf": -math.inf,
            "lone": "a\ud800b",
            "\udfff": 1,
            "deep": nested(5000),
            "long": list(range(1000)),
            "error": ValueError("bad \ud800"),
            "tuple": (1, 2.5, None, True),
        }
    )
    text = json.dumps(echo, allow_nan=False).encode("utf-8")  # strict JSON, valid UTF-8
    assert json.loads(text)["nan"] == "nan" and echo["inf"] == "-inf"
    assert echo["lone"] == "a?b" and "?" in echo and echo["error"] == "bad ?"
    assert len(echo["long"]) == MAX_ECHO_ITEMS and echo["tuple"] == [1, 2.5, None, True]
    depth, value = 0, echo["deep"]
    while isinstance(value, list):
        depth, value = depth + 1, value[0] if value else None
    assert value == "…" and depth == MAX_ECHO_DEPTH - 1


async def test_nan_and_deep_inputs_in_a_field_are_a_clean_422(client: httpx.AsyncClient) -> None:
    """Regression: the 422 handler failed (500) on the input it echoes."""
    body = '{"model": {"depth": NaN, "width": ' + "[" * 30 + "]" * 30 + "}}"
    response = await client.post(
        "/api/runs", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    fields = {tuple(e["loc"]) for e in response.json()["detail"]}
    assert ("body", "model", "depth") in fields and ("body", "model", "width") in fields
