"""runs.js and runlist.js in the browser: each shown run's stream lives exactly as long as it
is shown, the stream alone keeps its summary current, and the run list agrees with the status."""

from __future__ import annotations

import re
from typing import Any

import httpx

from .e2e_helpers import (
    INSTRUMENT,
    LONG,
    SMALL,
    Explorer,
    merged,
    start,
    start_paused,
    wait_ended,
)


def open_instrumented(explorer: Explorer, hash_: str = "") -> None:
    explorer.page.add_init_script(INSTRUMENT)
    explorer.open(hash_)


def open_streams(explorer: Explorer) -> list[str]:
    return list(explorer.page.evaluate("window.__open()"))


# Few records, so that reopening a stream (which replays from the start) stays cheap.
SPARSE = merged(LONG, recording={"record_every": 25, "histogram_every": 0})


def test_hiding_a_run_closes_its_event_source(explorer: Explorer, api: httpx.Client) -> None:
    # Paused runs: their streams stay open however fast this machine would have finished them.
    ids = [start_paused(api, SPARSE, steps=30)["id"] for _ in range(2)]
    open_instrumented(explorer, f"#runs={','.join(ids)}")
    explorer.wait_columns(0, timeout=60)
    assert sorted(open_streams(explorer)) == sorted(f"/api/runs/{i}/events" for i in ids)
    # Untick the first: its stream closes at once, the other stays open.
    explorer.page.uncheck(f"#show-{ids[0]}")
    explorer.page.wait_for_function("() => window.__open().length === 1")
    assert open_streams(explorer) == [f"/api/runs/{ids[1]}/events"]
    # Ticking, unticking and ticking again many times never leaves more than one per shown run:
    # browsers allow six connections per origin, so leaked streams would stall every fetch.
    for _ in range(4):
        explorer.page.check(f"#show-{ids[0]}")
        explorer.page.uncheck(f"#show-{ids[0]}")
    explorer.page.check(f"#show-{ids[0]}")
    explorer.page.wait_for_function("() => window.__open().length === 2")
    assert len(explorer.page.evaluate("window.__streams")) == 7  # 1 + 1 + 5 reopenings
    assert api.get("/api/health").status_code == 200
    assert explorer.page.evaluate("fetch('/api/health').then((r) => r.status)") == 200
    # Deleting a shown run closes its stream too.
    body = explorer.page.locator(f"tbody[data-run='{ids[1]}']")
    body.locator("button.delete").click()
    body.locator("button.confirm-delete").click()
    explorer.page.wait_for_function("() => window.__open().length === 1")
    assert open_streams(explorer) == [f"/api/runs/{ids[0]}/events"]


def test_summary_updates_from_the_stream_alone(explorer: Explorer, api: httpx.Client) -> None:
    run_id = start(api, LONG)
    open_instrumented(explorer, f"#runs={run_id}")
    explorer.wait_columns(3, timeout=60)
    before = len(explorer.page.evaluate("window.__fetches"))
    status = explorer.page.locator(f"tbody[data-run='{run_id}']")
    # Cancelled by another client: the page learns it from its stream, with no request of its own.
    assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
    explorer.page.wait_for_selector(f"tbody[data-run='{run_id}'][data-status=cancelled]")
    explorer.page.wait_for_function(
        "id => window.depthscope.runs.summary(id).status === 'cancelled'", arg=run_id
    )
    explorer.page.wait_for_timeout(2500)  # longer than the old 2 s poll
    after = explorer.page.evaluate("window.__fetches")[before:]
    # No summary was fetched (the run or the list); data fetches (/series, /boundary) may happen.
    assert [f for f in after if re.fullmatch(r"GET /api/runs(/[^/?]+)?", f)] == []
    final = api.get(f"/api/runs/{run_id}").json()
    assert status.locator(".progress").inner_text().strip() == (
        f"{final['steps_done']}/{final['config']['training']['steps']}"
    )


def progress_pair(explorer: Explorer, run_id: str) -> tuple[str, str]:
    """The run list's progress and the status line's, read in the same instant."""
    got = explorer.page.evaluate(
        """id => [document.querySelector(`tbody[data-run='${id}'] .progress`)?.textContent ?? '',
                 document.querySelector('#run-status li')?.textContent ?? '']""",
        run_id,
    )
    return str(got[0]), str(got[1])


def test_run_list_and_status_line_agree_on_progress(explorer: Explorer, api: httpx.Client) -> None:
    run_id = start(api, LONG)
    explorer.open(f"#runs={run_id}")
    seen = set()
    for _ in range(5):
        explorer.wait_columns(explorer.columns())
        listed, line = progress_pair(explorer, run_id)
        count = re.search(r"(\d+)/100000", listed)
        assert count is not None, listed
        assert f"{count.group(1)}/100000 steps" in line, (listed, line)
        seen.add(count.group(1))
    assert len(seen) > 1  # it moved while we watched


def test_run_names_are_unique(explorer: Explorer, api: httpx.Client) -> None:
    config = merged(SMALL, model={"depth": 2, "activation": "tanh"})
    ids = [start(api, config) for _ in range(3)]
    explorer.open(f"#runs={','.join(ids)}")
    names = [explorer.page.inner_text(f"tbody[data-run='{i}'] label") for i in ids]
    assert len(set(names)) == 3
    assert names[1] == f"{names[0]} #2" and names[2] == f"{names[0]} #3"  # oldest keeps the name


def test_delete_asks_for_confirmation(explorer: Explorer, api: httpx.Client) -> None:
    run_id = start(api, SMALL)
    explorer.open()
    body = explorer.page.locator(f"tbody[data-run='{run_id}']")
    body.locator("button.delete").click()
    # Nothing is deleted yet: the row asks, and the safe answer has the focus.
    assert "Delete" in body.locator(".confirm").inner_text()
    assert explorer.page.evaluate("document.activeElement.className") == "keep"
    assert api.get(f"/api/runs/{run_id}").status_code == 200
    body.locator("button.keep").click()
    assert body.locator("button.delete").count() == 1
    assert api.get(f"/api/runs/{run_id}").status_code == 200
    body.locator("button.delete").click()
    body.locator("button.confirm-delete").click()
    explorer.page.wait_for_selector(f"tbody[data-run='{run_id}']", state="detached")
    assert api.get(f"/api/runs/{run_id}").status_code == 404


def test_share_link_naming_a_deleted_run_says_so(explorer: Explorer, api: httpx.Client) -> None:
    kept, deleted = start(api, SMALL), start(api, SMALL)
    wait_ended(api, deleted)
    assert api.delete(f"/api/runs/{deleted}").status_code == 204
    explorer.open(f"#runs={deleted},{kept}&metric=act_std")
    gone = explorer.page.locator("#gone")
    gone.wait_for(state="visible")
    assert deleted in gone.inner_text() and "no longer has" in gone.inner_text()
    # The rest of the link still opens; the dead id leaves the state (and the URL).
    assert explorer.selected() == [kept]
    assert explorer.page.evaluate("window.depthscope.state.metric") == "act_std"
    explorer.wait_columns(0, timeout=60)
    explorer.page.click("#gone-dismiss")
    assert gone.is_hidden()


def test_edit_duplicate_and_reseed_a_run(explorer: Explorer, api: httpx.Client) -> None:
    config = merged(SMALL, model={"depth": 4, "activation": "elu"}, training={"lr": 0.03})
    source = start(api, config)
    explorer.open()
    body = explorer.page.locator(f"tbody[data-run='{source}']")
    # Edit: the form holds that run's config, opened and scrolled to.
    body.locator("button.edit").click()
    assert explorer.page.input_value("#f-model-depth") == "4"
    assert explorer.page.input_value("#f-model-activation") == "elu"
    assert explorer.page.input_value("#f-training-lr") == "0.03"
    assert explorer.page.evaluate("window.depthscope.state.config.model.depth") == 4
    stored = api.get(f"/api/runs/{source}").json()["config"]

    def newest_after(known: set[str]) -> dict[str, Any]:
        explorer.page.wait_for_function(
            "known => window.depthscope.state.runs.some((id) => !known.includes(id))",
            arg=sorted(known),
        )
        new = next(i for i in explorer.selected() if i not in known)
        return dict(api.get(f"/api/runs/{new}").json())

    body.locator("button.duplicate").click()
    duplicate = newest_after({source})
    assert duplicate["config"] == stored
    body.locator("button.reseed").click()
    reseeded = newest_after({source, duplicate["id"]})
    seed = stored["training"]["seed"] + 1
    expected = {**stored, "training": {**stored["training"], "seed": seed}}
    assert reseeded["config"] == expected
    assert explorer.page.locator("#toast").inner_text().startswith("Started ")
