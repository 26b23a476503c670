"""What the browser tests share: console-error capture and the explorer page as a user drives it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx


class Console:
    """Every console error and uncaught exception of a page; tests assert there are none."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[str] = []  # substrings of errors a test expects (e.g. its own 422)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(a in e for a in self.allowed)]


class Explorer:
    """The page as a user sees it: a few actions and reads shared by the tests."""

    def __init__(self, page: Any, url: str, artifacts: Path) -> None:
        self.page, self.url, self.artifacts = page, url, artifacts

    def open(self, hash_: str = "") -> None:
        self.page.goto(f"{self.url}/{hash_}")
        self.page.wait_for_selector("body[data-ready=true]", timeout=20_000)

    def run_preset(self, index: int) -> str:
        """Click the index-th preset; returns the new run's id (the first selected run)."""
        before = self.selected()
        self.page.locator("button.preset").nth(index).click()
        self.page.wait_for_function(
            "b => { const r = window.depthscope.state.runs; return r.length && r[0] !== b; }",
            arg=before[0] if before else "",
            timeout=10_000,
        )
        return str(self.selected()[0])

    def selected(self) -> list[str]:
        return list(self.page.evaluate("window.depthscope.state.runs"))

    def columns(self, nth: int = 0) -> int:
        """Columns drawn in the nth heatmap (0 when none is drawn yet)."""
        value = self.page.evaluate(
            "n => document.querySelectorAll('#heatmaps .plot')[n]?.dataset.columns ?? '0'", nth
        )
        return int(value)

    def wait_columns(self, more_than: int, nth: int = 0, timeout: float = 15) -> int:
        self.page.wait_for_function(
            "([n, k]) => Number(document.querySelectorAll('#heatmaps .plot')[n]?.dataset.columns"
            " ?? 0) > k",
            arg=[nth, more_than],
            timeout=timeout * 1000,
        )
        return self.columns(nth)

    def set_field(self, name: str, value: str) -> None:
        selector = f"#f-{name.replace('.', '-')}"
        if self.page.eval_on_selector(selector, "e => e.tagName") == "SELECT":
            self.page.select_option(selector, value)
        else:
            self.page.fill(selector, value)

    def shot(
        self, name: str, into: Path | None = None, full_page: bool = True, toast: bool = False
    ) -> None:
        """Save a screenshot as a test artifact (and into `into` for the README's images).
        The toast is fixed to the window, so a full-page image shows it mid-page: hidden unless
        asked for."""
        if not toast:
            self.page.evaluate("() => { document.getElementById('toast').hidden = true; }")
        self.page.evaluate("() => new Promise(r => requestAnimationFrame(() => r(null)))")
        for folder in {self.artifacts, into or self.artifacts}:
            folder.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)


# Installed before any page script: every EventSource and every fetch the page makes is logged,
# so a test can count the streams still open and the requests sent.
INSTRUMENT = """
window.__streams = [];
window.__fetches = [];
const NativeEventSource = window.EventSource;
window.EventSource = class extends NativeEventSource {
  constructor(url, options) {
    super(url, options);
    window.__streams.push(this);
  }
};
const nativeFetch = window.fetch.bind(window);
window.fetch = (input, init) => {
  window.__fetches.push(`${(init && init.method) || 'GET'} ${String(input)}`);
  return nativeFetch(input, init);
};
window.__open = () => window.__streams.filter((s) => s.readyState !== 2)
  .map((s) => new URL(s.url).pathname);
"""

# A small net, a few steps: trains in a second or two.
SMALL = {
    "model": {"depth": 3, "width": 8},
    "training": {"steps": 30, "batch_size": 16},
    "recording": {"histogram_every": 5, "eval_every": 10},
}
# A small net that would train for a long time: something to watch live and to cancel.
LONG = {
    "model": {"depth": 3, "width": 8},
    "training": {"steps": 100_000, "batch_size": 16},
}


def merged(base: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    """`base` with some fields of some sections replaced."""
    return {k: {**base.get(k, {}), **sections.get(k, {})} for k in {*base, *sections}}


def start(api: httpx.Client, config: dict[str, Any]) -> str:
    created = api.post("/api/runs", json=config)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def start_paused(api: httpx.Client, config: dict[str, Any], steps: int = 0) -> dict[str, Any]:
    """A run that stays alive until it is cancelled: started, paused (a queued run starts paused,
    before step 0), then advanced exactly `steps` steps. Returns its summary once paused again.
    Live tests use it so that nothing depends on how fast this machine trains."""
    run_id = start(api, config)
    paused = api.post(f"/api/runs/{run_id}/pause")
    assert paused.status_code == 200, paused.text
    return advance(api, run_id, steps) if steps else dict(paused.json())


def advance(api: httpx.Client, run_id: str, steps: int, timeout: float = 60) -> dict[str, Any]:
    """Train a paused run exactly `steps` more steps; its summary once it is paused again."""
    before = int(api.get(f"/api/runs/{run_id}").json()["steps_done"])
    sent = api.post(f"/api/runs/{run_id}/advance", json={"steps": steps})
    assert sent.status_code == 200, sent.text
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary: dict[str, Any] = api.get(f"/api/runs/{run_id}").json()
        if summary["status"] == "paused" and summary["steps_done"] == before + steps:
            return summary
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not pause at step {before + steps}: {summary}")


def wait_ended(api: httpx.Client, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary: dict[str, Any] = api.get(f"/api/runs/{run_id}").json()
        if summary["status"] not in ("queued", "running"):
            return summary
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still running after {timeout} s")
