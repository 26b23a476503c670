"""RunStore: records round-trip through both forms, transitions guard, recovery, deletion."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config
from depthscope import RunConfig, iter_records
from depthscope.presets import BY_ID
from depthscope.records import METRICS
from depthscope.service.store import STEP_COLUMN, RunStore, StaleEpochError


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.db")


def test_store_append_round_trips_records_and_columns(store: RunStore) -> None:
    config = RunConfig.model_validate(tiny_config(steps=12))
    records = list(iter_records(config))
    store.create_run("r1", config.model_dump(), ["block1", "block2", "readout"])
    store.append("r1", records[:5])
    store.append("r1", records[5:])
    stored = store.records_since("r1", 0, 100)
    assert [json.loads(s) for s in stored] == [json.loads(json.dumps(r.to_wire())) for r in records]
    assert store.records_since("r1", 10, 100) == stored[10:]
    steps = store.column("r1", STEP_COLUMN, 1)
    np.testing.assert_array_equal(steps, [r.step for r in records])
    grad = store.column("r1", "grad_norm", 3)
    expected = np.array([r.layers["grad_norm"] for r in records], dtype=np.float32)
    np.testing.assert_array_equal(grad, expected)
    row = store.get_run("r1")
    assert row is not None and row.n_records == 12 and row.steps_done == 12


def test_store_blocks_cut_from_the_probes_tables_equal_those_read_from_the_lists(
    store: RunStore,
) -> None:
    # a run that overflows: its last records hold None (inf and NaN) in `layers`
    config = BY_ID["exploding"].config
    records = list(iter_records(config))
    assert all(r.table is not None for r in records)
    assert any(None in values for values in records[-1].layers.values())
    bare = [dataclasses.replace(r, table=None) for r in records]
    for run_id, batch in (("tables", records), ("lists", bare)):
        store.create_run(run_id, config.model_dump(), [])
        store.append(run_id, batch)
    width = config.n_layers
    for metric in METRICS:
        from_tables = store.column("tables", metric, width)
        np.testing.assert_array_equal(from_tables, store.column("lists", metric, width))
        assert from_tables.shape == (len(records), width)
    assert np.isnan(store.column("tables", "grad_norm", width)[-1]).any()


def test_store_peek_reads_what_cursor_reads(store: RunStore) -> None:
    config = RunConfig.model_validate(tiny_config(steps=7))
    store.create_run("r1", config.model_dump(), [])
    store.append("r1", list(iter_records(config)))
    assert store.peek("r1") == store.cursor("r1")
    assert store.peek("r1").n_records == 7  # type: ignore[union-attr]
    assert store.peek("absent") is None


def test_store_transition_never_leaves_a_terminal_state(store: RunStore) -> None:
    store.create_run("r1", {}, ["readout"])
    assert store.transition("r1", "running", only_from=("queued",))
    assert store.transition("r1", "cancelled")
    assert not store.transition("r1", "completed")  # a late worker cannot overwrite a cancel
    row = store.get_run("r1")
    assert row is not None and row.status == "cancelled" and row.status_version == 2


def test_store_recover_marks_active_runs_interrupted(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    for run_id in ("queued", "running", "done"):
        store.create_run(run_id, {}, ["readout"])
    store.transition("running", "running", only_from=("queued",))
    store.transition("done", "completed")
    store.close()
    reopened = RunStore(tmp_path / "runs.db")
    assert sorted(reopened.recover()) == ["queued", "running"]
    statuses = {r.id: r.status for r in reopened.list_runs()}
    assert statuses == {"queued": "interrupted", "running": "interrupted", "done": "completed"}


def test_store_delete_removes_rows_and_blocks(store: RunStore) -> None:
    config = RunConfig.model_validate(tiny_config(steps=3))
    store.create_run("r1", config.model_dump(), ["block1", "block2", "readout"])
    store.append("r1", list(iter_records(config)))
    assert store.delete_run("r1")
    assert store.get_run("r1") is None
    assert store.records_since("r1", 0, 10) == []
    assert len(store.column("r1", "loss", 1)) == 0
    assert not store.delete_run("r1")


def test_store_epoch_fence_refuses_a_stale_writers_records_and_status(tmp_path: Path) -> None:
    """Regression: after a restart, a dead server's workers kept writing into runs already
    marked interrupted (375 -> 1660 records)."""
    records = list(iter_records(RunConfig.model_validate(tiny_config(steps=6))))
    server = RunStore(tmp_path / "runs.db")
    first = server.claim()
    server.create_run("r1", {}, ["block1", "block2", "readout"])
    server.transition("r1", "running", only_from=("queued",))
    worker = RunStore(tmp_path / "runs.db", epoch=first)
    worker.append("r1", records[:3])  # its own server's epoch: accepted
    restarted = RunStore(tmp_path / "runs.db")
    assert restarted.claim() == first + 1
    assert restarted.recover() == ["r1"]
    with pytest.raises(StaleEpochError, match=f"epoch {first}, the store {first + 1}"):
        worker.append("r1", records[3:])
    with pytest.raises(StaleEpochError):
        worker.transition("r1", "completed", only_from=("interrupted", "running"))
    row = restarted.get_run("r1")
    assert row is not None and row.status == "interrupted" and row.n_records == 3
    assert len(restarted.records_since("r1", 0, 100)) == 3  # nothing half-written either
    restarted.append("r1", records[3:4])  # the owner itself still writes


def test_store_records_page_is_bounded_by_bytes(store: RunStore) -> None:
    records = list(iter_records(RunConfig.model_validate(tiny_config(steps=20))))
    store.create_run("r1", {}, ["block1", "block2", "readout"])
    store.append("r1", records)
    every = store.records_since("r1", 0, 100)
    budget = 3 * len(every[0])
    page = store.records_page("r1", 0, budget)
    assert sum(map(len, page)) <= budget < sum(map(len, every[: len(page) + 1]))  # full
    assert len(store.records_page("r1", 0, 1)) == 1  # a record bigger than the page goes alone
    assert store.records_page("r1", 20, 10**6) == []
    pages = list(store.iter_pages("r1", budget))
    assert [json.loads(r)["step"] for p in pages for r in p] == list(range(20))
    assert all(sum(map(len, p)) <= budget for p in pages)


def test_store_keeps_spectra_by_step_and_deletes_them(store: RunStore) -> None:
    store.create_run("r1", {}, ["block1", "block2", "readout"])
    store.put_spectrum("r1", 5, [2.5, 1.0, 1e-49])
    store.put_spectrum("r1", 0, [1.5, 0.5, 0.25])
    spectra = store.spectra("r1")
    assert [step for step, _ in spectra] == [0, 5]
    np.testing.assert_array_equal(spectra[0][1], np.array([1.5, 0.5, 0.25], dtype=np.float32))
    assert spectra[1][1][2] == 0.0  # float32: what is below its range underflows
    store.delete_run("r1")
    assert store.spectra("r1") == []
