"""HTTP smoke test of a running depthscope server (stdlib only), used by docker-test.sh.

    docker_smoke.py wait URL [SEC]   wait (up to SEC, default 90) until /api/health answers ok
    docker_smoke.py create URL       create a short run, read its SSE stream to `end` and its
                                     series; print the run id
    docker_smoke.py check URL ID     the run is still there, completed, with the same series
Exits non-zero with a message on the first thing that is wrong.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

STEPS = 40
CONFIG = {
    "model": {"depth": 4, "width": 16},
    "training": {"steps": STEPS, "batch_size": 32},
    "data": {"n_samples": 256},
}
N_LAYERS = 5  # depth + readout


def fail(message: str) -> None:
    sys.exit(f"smoke: {message}")


def request(url: str, body: dict[str, Any] | None = None, timeout: float = 30) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.loads(response.read())


def wait(url: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if request(f"{url}/api/health", timeout=3).get("status") == "ok":
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    fail(f"{url}/api/health did not answer ok within {seconds:.0f} s")


def read_stream(url: str) -> list[dict[str, Any]]:
    """Every record from the run's SSE stream, read until the `end` event."""
    records: list[dict[str, Any]] = []
    event, data = "message", []
    with urllib.request.urlopen(url, timeout=120) as response:
        for raw in response:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line:  # a blank line dispatches the event
                if event == "end":
                    return records
                if event == "records" and data:
                    records.extend(json.loads("\n".join(data))["records"])
                event, data = "message", []
    fail("the stream closed without an `end` event")
    return records


def check_series(url: str, run_id: str) -> list[int]:
    series = request(f"{url}/api/runs/{run_id}/series?metric=grad_norm")
    if len(series["layers"]) != N_LAYERS or len(series["values"]) != N_LAYERS:
        fail(f"series has {len(series['layers'])} layers, expected {N_LAYERS}")
    steps: list[int] = series["steps"]
    if not steps or steps[-1] != STEPS - 1:
        fail(f"series steps end at {steps[-1:]} , expected {STEPS - 1}")
    if any(len(row) != len(steps) for row in series["values"]):
        fail("series rows do not match its steps")
    return steps


def create(url: str) -> None:
    try:
        run = request(f"{url}/api/runs", CONFIG)
    except urllib.error.HTTPError as error:
        fail(f"POST /api/runs answered {error.code}: {error.read().decode()[:300]}")
    run_id = run["id"]
    records = read_stream(f"{url}/api/runs/{run_id}/events")
    if [r["step"] for r in records] != list(range(STEPS)):
        steps = [r["step"] for r in records]
        fail(f"the stream carried steps {steps[:10]}…, expected 0..{STEPS - 1}")
    check_series(url, run_id)
    print(run_id)


def check(url: str, run_id: str) -> None:
    summary = request(f"{url}/api/runs/{run_id}")
    if summary["status"] != "completed" or summary["steps_done"] != STEPS:
        fail(f"after restart the run is {summary['status']} at {summary['steps_done']} steps")
    check_series(url, run_id)


def main() -> None:
    command, url, *rest = sys.argv[1:]
    url = url.rstrip("/")
    if command == "wait":
        wait(url, float(rest[0]) if rest else 90)
    elif command == "create":
        create(url)
    elif command == "check":
        check(url, rest[0])
    else:
        fail(f"unknown command {command!r}")


if __name__ == "__main__":
    main()
