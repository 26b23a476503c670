"""rundata.js in the browser: bounded column stores, /series seeding, first non-finite cell."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

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


def test_rundata_divergence_is_the_servers_message_as_sent(modules: Any) -> None:
    got = modules.evaluate(
        """async () => {
          const m = await import('/rundata.js');
          const layers = ['block1', 'block2', 'readout'];
          const sent = 'layer block2 went non-finite at step 3 (preact_std)';
          const where = { step: 3, layer: 'block2', layer_index: 1, metric: 'preact_std' };
          where.message = sent;
          const run = (summary) => new m.RunData({ id: 'r', layers, ...summary }, ['grad_norm']);
          const running = run({ status: 'running', divergence: null });
          // records with nulls do not make a sentence of their own: only the server's counts
          running.ingest([{ step: 0, loss: 1, accuracy: 0.5, grad_norm_total: 1, clipped: false,
                            layers: { grad_norm: [1, 2, 3] } },
                          { step: 1, loss: null, accuracy: null, grad_norm_total: null,
                            clipped: false, layers: { grad_norm: [null, null, null] } }]);
          const diverged = run({ status: 'diverged', divergence: where });
          return {
            running: [running.divergenceText(), running.firstNonFinite()],
            text: diverged.divergenceText(),
            where: diverged.firstNonFinite(),
          };
        }"""
    )
    assert got["running"] == [None, None]
    assert got["text"] == "layer block2 went non-finite at step 3 (preact_std)"
    assert got["where"]["layer"] == "block2" and got["where"]["step"] == 3


ALIGN = """async ([a, b]) => (await import('/rundata.js')).alignLayers(a, b)"""


def names(depth: int) -> list[str]:
    return [f"block{i + 1}" for i in range(depth)] + ["readout"]


def test_align_layers_pairs_readouts_and_blocks_by_name(modules: Any) -> None:
    same = modules.evaluate(ALIGN, [names(3), names(3)])
    assert [(r["a"], r["b"]) for r in same["rows"]] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert same["note"] == ""
    deeper_b = modules.evaluate(ALIGN, [names(2), names(5)])
    # readout with readout (A's 2, B's 5), blocks from the input; B's block3-block5 left out
    assert [(r["name"], r["a"], r["b"]) for r in deeper_b["rows"]] == [
        ("block1", 0, 0),
        ("block2", 1, 1),
        ("readout", 2, 5),
    ]
    assert "left out: B's block3–block5" in deeper_b["note"]
    deeper_a = modules.evaluate(ALIGN, [names(4), names(1)])
    assert [r["name"] for r in deeper_a["rows"]] == ["block1", "readout"]
    assert "A's block2–block4" in deeper_a["note"]


def test_log_ratio_matches_step_aligned_reference(modules: Any) -> None:
    a_steps, b_steps = [0, 1, 2, 4, 6, 8], [0, 2, 3, 4, 8, 9]
    a_vals = [[10.0 ** (s % 3), 0.5] for s in a_steps]
    b_vals = [[10.0 ** (s % 4), None] for s in b_steps]
    got = modules.evaluate(
        """async ([as, av, bs, bv]) => {
          const m = await import('/rundata.js');
          const { transformFor } = await import('/metrics.js');
          const ca = new m.Columns();
          const cb = new m.Columns();
          as.forEach((s, i) => ca.push(s, av[i]));
          bs.forEach((s, i) => cb.push(s, bv[i]));
          return m.logRatio(ca, cb, transformFor('grad_norm'), [{ a: 0, b: 0 }, { a: 1, b: 1 }]);
        }""",
        [a_steps, a_vals, b_steps, b_vals],
    )
    common = sorted(set(a_steps) & set(b_steps))
    assert got["x"] == common
    for step, col in zip(common, got["cols"], strict=True):
        a, b = a_vals[a_steps.index(step)], b_vals[b_steps.index(step)]
        assert col[0] == pytest.approx(math.log10(b[0]) - math.log10(a[0]))
        assert col[1] is None  # B's value is missing: no ratio
    # B's second row never held a number: undefined (grey), not non-finite (magenta)
    assert all(bad == [0, 0] for bad in got["mask"])
    assert got["top"] == pytest.approx(max(abs(c[0]) for c in got["cols"]))
