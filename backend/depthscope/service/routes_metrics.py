"""`GET /api/metrics`: every per-layer metric of the registry, as the frontend's menu, glossary
and colour scales show it."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from depthscope.probe.metrics import REGISTRY

router = APIRouter(prefix="/api")


class MetricOut(BaseModel):
    name: str = Field(description="the key of the metric in a record's `layers`")
    title: str = Field(description="a short title, with the formula where there is one")
    description: str = Field(description="what it measures and what to look for, in a paragraph")
    scale: Literal["log", "linear", "fraction"] = Field(
        description="log: positive, spans decades (shown as log10); linear: signed, shown as it"
        " is; fraction: in [0, 1]"
    )


@router.get("/metrics", response_model=list[MetricOut])
def metrics() -> list[dict[str, str]]:
    """Every per-layer metric, in the order records list them."""
    return [m.public() for m in REGISTRY]
