"""Render cost in headless Chromium: time to first heatmap after pressing Run, and one live update.

1. Time to first heatmap: on a real `depthscope serve`, click a preset and time (in the page,
   with performance.now) until its heatmap shows at least one column. This includes the
   request, the worker's start-up and its first step, so it depends on how busy the machine is.
2. Live update: a synthetic run of 100 layers × 1000 recorded steps is drawn by the real
   HeatmapPanel; then one record at a time is appended and the panel redrawn. Timed: the redraw
   call (Plotly.react with the rows grown in place) and the whole frame (until the next animation
   frame after it). Target < 50 ms per update. The same at depth 200 × 2048 columns (the most a
   run keeps in the browser) is reported beside it, and the cost of ingesting 100k records.
Writes bench/results/render.json.

    python bench/render.py [--repeats N] [--out PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TARGET_UPDATE_MS = 50.0

FIRST_HEATMAP_JS = """async (index) => {
  const before = window.depthscope.state.runs[0];
  const t0 = performance.now();
  document.querySelectorAll('button.preset')[index].click();
  for (;;) {
    await new Promise((r) => requestAnimationFrame(r));
    const runs = window.depthscope.state.runs;
    const plot = document.querySelector('#heatmaps .plot');
    if (runs[0] !== before && plot?.dataset.run === runs[0] && Number(plot.dataset.columns) > 0)
      return performance.now() - t0;
    if (performance.now() - t0 > 60000) return null;
  }
}"""

UPDATE_JS = """async ([layers, columns, updates]) => {
  const { RunData } = await import('/rundata.js');
  const { HeatmapPanel } = await import('/heatmap.js');
  const names = [...Array.from({ length: layers - 1 }, (_, i) => `block${i + 1}`), 'readout'];
  const run = new RunData({ id: 'bench', status: 'running', layers: names }, ['grad_norm']);
  const value = (step, l) => Math.exp(-0.1 * l) * (1 + 0.1 * Math.sin(step + l));
  const record = (step) => ({ step, loss: 1, accuracy: 0.5, grad_norm_total: 1, clipped: false,
    layers: { grad_norm: names.map((_, l) => value(step, l)) } });
  const records = [];
  for (let s = 0; s < columns; s++) records.push(record(s));
  run.ingest(records);
  const host = document.createElement('div');
  host.style.width = '1200px';
  document.body.append(host);
  const panel = new HeatmapPanel(host);
  const state = { view: 'single', metric: 'grad_norm' };
  const label = () => 'bench';
  let t = performance.now();
  panel.render([run], state, label);
  const first = performance.now() - t;
  const frame = () => new Promise((r) => requestAnimationFrame(r));
  await frame();
  const redraw = [];
  const whole = [];
  for (let i = 0; i < updates; i++) {
    run.ingest([record(columns + i)]);
    t = performance.now();
    panel.render([run], state, label);
    const drawn = performance.now();
    await frame();
    redraw.push(drawn - t);
    whole.push(performance.now() - t);
  }
  const shown = Number(host.querySelector('.plot').dataset.columns);
  host.remove();
  return { first_draw_ms: first, redraw_ms: redraw, frame_ms: whole, columns_shown: shown };
}"""

INGEST_JS = """async (n) => {
  const { RunData, MAX_COLUMNS } = await import('/rundata.js');
  const { METRIC_NAMES } = await import('/metrics.js');
  const names = [...Array.from({ length: 99 }, (_, i) => `block${i + 1}`), 'readout'];
  const run = new RunData({ id: 'ingest', status: 'running', layers: names }, METRIC_NAMES);
  const layers = Object.fromEntries(METRIC_NAMES.map((m) => [m, names.map((_, l) => 1 + l)]));
  const t = performance.now();
  for (let s = 0; s < n; s += 30) {
    const batch = [];  // the stream coalesces ~30 records per event
    for (let k = s; k < Math.min(n, s + 30); k++)
      batch.push({ step: k, loss: 1, accuracy: 0.5, grad_norm_total: 1, clipped: false, layers });
    run.ingest(batch);
  }
  const ms = performance.now() - t;
  return { records: n, total_ms: ms, us_per_record: (1000 * ms) / n,
           columns_kept: run.metrics.grad_norm.length, max_columns: MAX_COLUMNS };
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        cmd = [sys.executable, "-m", "depthscope", "serve", "--port", str(port), "--data-dir", data]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                        break
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def summarize(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max": round(ordered[-1], 2),
    }


def time_to_first_heatmap(page: Page, url: str, repeats: int) -> dict[str, Any]:
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    times = []
    for i in range(repeats):
        elapsed = page.evaluate(FIRST_HEATMAP_JS, i % 3)
        if elapsed is not None:
            times.append(float(elapsed))
        with httpx.Client(base_url=url, timeout=30) as api:
            for run in api.get("/api/runs").json():
                if run["status"] in ("queued", "running"):
                    api.post(f"/api/runs/{run['id']}/cancel")
    return {"runs": len(times), "ms": summarize(times) if times else None}


def live_update(page: Page, layers: int, columns: int, updates: int) -> dict[str, Any]:
    got = page.evaluate(UPDATE_JS, [layers, columns, updates])
    return {
        "layers": layers,
        "columns": columns,
        "columns_shown": got["columns_shown"],
        "first_draw_ms": round(got["first_draw_ms"], 2),
        "redraw_ms": summarize(got["redraw_ms"]),
        "frame_ms": summarize(got["frame_ms"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="preset runs to time")
    parser.add_argument("--updates", type=int, default=40, help="live updates to time")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "render.json")
    args = parser.parse_args()
    with server() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        first = time_to_first_heatmap(page, url, args.repeats)
        update = live_update(page, 100, 1000, args.updates)
        deep = live_update(page, 200, 2048, args.updates)
        ingest = page.evaluate(INGEST_JS, 100_000)
        version = browser.version
        browser.close()
    result = {
        "benchmark": "render",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            # shared machine: other processes' load shows up in every timing
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "browser": f"Chromium {version} (headless, software rendering)",
        "time_to_first_heatmap": first,
        "live_update_100x1000": update,
        "live_update_200x2048": deep,
        "ingest_100k_records_100_layers_11_metrics": ingest,
        "target_update_ms": TARGET_UPDATE_MS,
        "update_within_target": update["frame_ms"]["median"] < TARGET_UPDATE_MS,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
