"""rundata.js in the browser: bounded column stores, /series seeding, first non-finite cell."""

from __future__ import annotations

import itertools
from typing import Any

COLUMNS = """async (n) => {
  const m = await import('/rundata.js');
  const c = new m.Columns();
  for (let s = 0; s < n; s++) c.push(s, [s, -s]);
  c.push(n - 1, [0, 0]);  // a duplicate (a stream replay) is ignored
  const probes = [-1, 0, 1, 77, 1000, n - 2, n - 1, n + 5];
  return { max: m.MAX_COLUMNS, steps: c.steps, cols: c.cols, stride: c.stride,
           at: probes.map((p) => [p, c.indexAt(p)]) };
}"""


def test_columns_stay_bounded_and_keep_latest(modules: Any) -> None:
    n = 10_000
    got = modules.evaluate(COLUMNS, n)
    steps = got["steps"]
    assert len(steps) <= got["max"]
    assert steps[-1] == n - 1 and steps == sorted(set(steps))
    assert got["stride"] & (got["stride"] - 1) == 0 and got["stride"] > 1
    assert all(col == [s, -s] for s, col in zip(steps, got["cols"], strict=True))
    gaps = [b - a for a, b in itertools.pairwise(steps)]
    assert max(gaps) <= got["stride"], "old columns thin out, no stretch is left out"
    for probe, index in got["at"]:
        # reference: the last column at or before the probe; -1 (or < first) means the latest
        before = [i for i, s in enumerate(steps) if s <= probe]
        expected = len(steps) - 1 if probe < 0 or probe >= steps[-1] else max(before, default=0)
        assert index == expected, probe


def test_columns_seed_only_when_ahead(modules: Any) -> None:
    got = modules.evaluate(
        """async () => {
          const m = await import('/rundata.js');
          const c = new m.Columns();
          c.push(5, [1]);
          const stale = c.seed([0, 2, 4], [[9, 9, 9]]);  // behind live data: ignored
          const fresh = c.seed([0, 4, 8], [[1, 2, 3]]);
          const dup = c.push(8, [0]);
          const next = c.push(9, [4]);
          return { stale, fresh, dup, next, steps: c.steps, cols: c.cols };
        }"""
    )
    assert got["stale"] is False and got["fresh"] is True
    assert got["dup"] is False and got["next"] is True
    assert got["steps"] == [0, 4, 8, 9] and got["cols"] == [[1], [2], [3], [4]]


def test_rundata_names_first_non_finite_cell(modules: Any) -> None:
    got = modules.evaluate(
        """async () => {
          const m = await import('/rundata.js');
          const layers = ['block1', 'block2', 'readout'];
          const summary = { id: 'r', status: 'running', layers };
          const run = new m.RunData(summary, ['grad_norm', 'saturation']);
          const rec = (step, g, s) => ({ step, loss: 1, accuracy: 0.5, grad_norm_total: 1,
                                         clipped: false, layers: { grad_norm: g, saturation: s } });
          // saturation is undefined (null) from the start for this net: never counts as non-finite
          const none = [null, null, null];
          run.ingest([rec(0, [1, 2, 3], none), rec(1, [1, 2, 3], none)]);
          const before = run.divergenceText();
          run.ingest([rec(2, [1, null, null], none), rec(3, none, none)]);
          return { before, after: run.divergenceText(), bad: run.firstBad };
        }"""
    )
    assert got["before"] is None
    assert got["bad"] == {"step": 2, "layer": "block2", "metric": "grad_norm"}
    assert got["after"] == "layer block2 went non-finite at step 2 (grad_norm)"
