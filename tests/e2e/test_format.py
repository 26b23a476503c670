"""format.js in the browser: numbers as a reader wants them in tooltips."""

from __future__ import annotations

from typing import Any

import pytest

FORMAT = "async (values) => values.map((await import('/format.js')).formatNumber)"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0000794, "7.94e-5"),  # issue 16: it read 0.0000794000
        (-0.00012346, "-1.235e-4"),
        (1.5e-12, "1.5e-12"),
        (0.001, "0.001"),
        (0.0123, "0.0123"),
        (3.0, "3"),
        (12345.678, "12350"),
        (123456.0, "1.235e+5"),
        (0.0, "0"),
        (None, "—"),
    ],
)
def test_format_number_uses_exponents_for_small_and_large(
    modules: Any, value: float | None, text: str
) -> None:
    assert modules.evaluate(FORMAT, [value]) == [text]
