"""What a diagnosis reads: a run's recorded statistics as arrays, and the way findings quote
numbers and layers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def _nan_array(rows: Sequence[Sequence[float | None]]) -> Array:
    return np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=float)


@dataclass(frozen=True)
class Trace:
    """What a diagnosis reads: per recorded step the step number, loss and accuracy, and per
    metric a [records, layers] array (NaN for null); the layer names (hidden blocks, then the
    readout); the run's config sections and its divergence, if any."""

    layers: list[str]
    steps: Array
    metrics: Mapping[str, Array]
    loss: Array
    accuracy: Array
    config: Mapping[str, Any] = field(default_factory=dict)
    divergence: Mapping[str, Any] | None = None

    @classmethod
    def from_records(
        cls,
        records: Sequence[Mapping[str, Any]],
        layers: list[str],
        config: Mapping[str, Any],
        divergence: Mapping[str, Any] | None = None,
    ) -> Trace:
        """From wire records (StepRecord.to_wire() or an export)."""
        names = records[0]["layers"].keys() if records else ()
        return cls(
            layers=layers,
            steps=np.array([r["step"] for r in records], dtype=float),
            metrics={m: _nan_array([r["layers"][m] for r in records]) for m in names},
            loss=_nan_array([[r["loss"]] for r in records]).reshape(-1),
            accuracy=_nan_array([[r["accuracy"]] for r in records]).reshape(-1),
            config=config,
            divergence=divergence,
        )

    def setting(self, section: str, name: str, default: Any = None) -> Any:
        return self.config.get(section, {}).get(name, default)


def number(x: float) -> str:
    """Two significant digits, exponents without padding: 2e-14, 0.2, 3.1e4."""
    text = f"{x:.2g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def span(names: Sequence[str]) -> str:
    if len(names) <= 2:
        return " and ".join(names)
    if len(names) <= 4:
        return ", ".join(names[:-1]) + " and " + names[-1]
    return f"{names[0]} to {names[-1]} ({len(names)} layers)"
