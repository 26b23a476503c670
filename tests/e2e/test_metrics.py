"""frontend/metrics.js in real Chromium: the metric menu and the glossary come from GET
/api/metrics, so a metric added to the registry shows up with no frontend change."""

from __future__ import annotations

from typing import Any

import httpx

from .e2e_helpers import Console, Explorer


def test_metrics_menu_and_guide_come_from_the_api(
    page: Any, explorer: Explorer, api: httpx.Client, console: Console
) -> None:
    served = api.get("/api/metrics").json()
    explorer.open()
    options = page.eval_on_selector_all(
        "#metric option", "els => els.map(e => [e.value, e.textContent])"
    )
    assert [value for value, _ in options] == [m["name"] for m in served]
    for (_, text), metric in zip(options, served, strict=True):
        assert text.startswith(f"{metric['name']} — {metric['title']}")
    guide = page.inner_text("#guide")
    assert all(metric["description"] in guide for metric in served)
    # the colouring follows the registry's scale: fractions as they are, signed values by size
    labels = page.evaluate(
        "async () => { const m = await import('/metrics.js');"
        " return ['grad_norm', 'act_mean', 'dead'].map(m.colourLabel); }"
    )
    assert labels == ["log10 grad_norm", "log10 |act_mean|", "dead"]
    assert console.unexpected() == []
