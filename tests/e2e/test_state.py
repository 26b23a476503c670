"""state.js in the browser: the UI state survives a trip through the URL hash."""

from __future__ import annotations

from typing import Any

ROUND_TRIP = """async (states) => {
  const m = await import('/state.js');
  return states.map((s) => m.decodeState(m.encodeState({ ...m.defaultState(), ...s })));
}"""


def test_state_round_trips_through_hash(modules: Any) -> None:
    states: list[dict[str, Any]] = [
        {},
        {"runs": ["a1", "b2"], "metric": "act_std", "view": "ratio", "layer": 3, "step": 120},
        {"hist": "act_grad", "config": {"model": {"depth": 7, "activation": "tanh"}, "x": "é→∞"}},
    ]
    defaults = modules.evaluate("async () => (await import('/state.js')).defaultState()")
    decoded = modules.evaluate(ROUND_TRIP, states)
    assert decoded == [{**defaults, **s} for s in states]


def test_state_malformed_hash_falls_back_to_defaults(modules: Any) -> None:
    decoded = modules.evaluate(
        """async () => {
          const m = await import('/state.js');
          return m.decodeState('#view=nope&metric=bogus&layer=x&config=%%%', ['grad_norm']);
        }"""
    )
    defaults = modules.evaluate("async () => (await import('/state.js')).defaultState()")
    assert decoded == defaults
