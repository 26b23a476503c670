"""The Content-Security-Policy in real Chromium: the page and its plots run with no violation,
and the policy really bites (an injected inline script is refused)."""

from __future__ import annotations

from typing import Any

from .e2e_helpers import Console, Explorer

# Installed before any page script: every violation the browser reports lands in a list.
RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', e =>
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample}`));
"""
PROBE = "window.__probeRan = true; /* csp-probe */"


def test_csp_page_and_plots_run_without_violations(
    page: Any, explorer: Explorer, console: Console
) -> None:
    page.add_init_script(RECORD_VIOLATIONS)
    response = page.goto(f"{explorer.url}/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("body[data-ready=true]", timeout=20_000)
    explorer.run_preset(0)
    explorer.wait_columns(5)  # heatmaps drawn by plotly, live over the stream
    page.wait_for_timeout(500)
    assert page.evaluate("window.__csp") == []

    # The policy is enforced: an inline script injected into the page never runs.
    console.allowed.append("Content Security Policy")
    page.evaluate(
        "src => { const s = document.createElement('script'); s.textContent = src;"
        " document.body.append(s); }",
        PROBE,
    )
    page.wait_for_function("window.__csp.length > 0", timeout=5_000)
    assert page.evaluate("window.__probeRan") is None
    assert all("csp-probe" in v or "inline" in v for v in page.evaluate("window.__csp"))
