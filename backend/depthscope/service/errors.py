"""Error bodies that always encode: a 422's echo of the input made safe for JSON.

FastAPI's 422 echoes the offending input. Left alone, a NaN or infinity (JSON from Python
clients may carry them), a lone surrogate, or a deeply nested value would make the error
handler itself fail with a 500; `safe` turns each into something JSON can carry.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

MAX_ECHO_DEPTH = 8  # an echoed input deeper than this is elided: the error names its place
MAX_ECHO_ITEMS = 50  # and a long list or object is cut


async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
    """The 422 for an invalid request, `detail` listing each wrong field."""
    return JSONResponse({"detail": safe(error.errors())}, status_code=422)


def safe(value: Any, depth: int = 0) -> Any:
    """A JSON-encodable copy of `value`: non-finite floats as strings, lone surrogates
    replaced, containers past MAX_ECHO_DEPTH elided and cut to MAX_ECHO_ITEMS, anything else
    by its (sanitized) str(). Recursion is bounded by MAX_ECHO_DEPTH."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict | list | tuple):
        if depth >= MAX_ECHO_DEPTH:
            return "…"
        if isinstance(value, dict):
            items = list(value.items())[:MAX_ECHO_ITEMS]
            return {safe(str(k)): safe(v, depth + 1) for k, v in items}
        return [safe(v, depth + 1) for v in list(value)[:MAX_ECHO_ITEMS]]
    return safe(str(value))
