"""The run budget: what a config will cost in CPU time and memory, before it is accepted.

Every part of a run that does work adds a `Cost` term, by name, to `COSTS`: training steps,
the probe on recorded steps and histograms, held-out evaluation, initialization, the data,
decision-boundary grids, Jacobian spectra.
A feature that runs forward passes of its own (a decision-boundary grid, a spectrum, a theory
check) registers its term with `register_cost`, and its work is then counted and bounded like
the rest. A term counts four kinds of work, each at a rate measured on the reference machine
(one core of the development machine; bench/budget.py, docs/operations.md "Budgets"):
  - `flops`: floating-point operations of matrix products;
  - `elements`: element-wise passes over tensors (memory-bound: activations, norms, copies);
  - `launches`: tensor operations dispatched (a few µs each, whatever their size);
  - `values`: numbers handled one by one in Python (a record's JSON and blocks);
and two kinds of memory: `resident` bytes held for the whole run (parameters, gradients,
optimizer state, the probe's copies, the data) and `transient` bytes of its own peak
(activations kept for the backward pass, an evaluation's batch), of which only the largest
counts. `seconds` is meant as an upper bound: measured pieces take 0.2-0.8 of their estimate
(bench/results/budget.json), and tests/engine/test_budget.py trains configs at the limits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from depthscope.engine.config import RunConfig

# The promise: a run accepted by the budget takes at most about this much CPU time on one core
# of the reference machine, and at most this much memory in its worker (beyond the ~300 MB
# that any process with torch imported has).
MAX_SECONDS = 300.0
MAX_BYTES = 2 * 2**30

# Rates on the reference machine (one core), about half the speed measured there, so that an
# estimate errs long.
SECONDS_PER_FLOP = 1 / 50e9
SECONDS_PER_ELEMENT = 1e-9
SECONDS_PER_LAUNCH = 5e-6
SECONDS_PER_VALUE = 1e-6  # a number turned into a record's JSON and blocks, in Python
FLOAT = 4  # bytes


@dataclass(frozen=True)
class Cost:
    flops: float = 0.0
    elements: float = 0.0
    launches: float = 0.0
    values: float = 0.0
    resident: float = 0.0  # bytes held for the whole run
    transient: float = 0.0  # bytes of this term's own peak

    @property
    def seconds(self) -> float:
        return (
            self.flops * SECONDS_PER_FLOP
            + self.elements * SECONDS_PER_ELEMENT
            + self.launches * SECONDS_PER_LAUNCH
            + self.values * SECONDS_PER_VALUE
        )

    def times(self, k: float) -> Cost:
        """The work done k times (memory is not multiplied: the same buffers serve each)."""
        return replace(
            self,
            flops=self.flops * k,
            elements=self.elements * k,
            launches=self.launches * k,
            values=self.values * k,
        )

    def __add__(self, other: Cost) -> Cost:
        """Two kinds of work in one term: their work and resident memory add, the transient
        peak is the larger one's."""
        return Cost(
            self.flops + other.flops,
            self.elements + other.elements,
            self.launches + other.launches,
            self.values + other.values,
            self.resident + other.resident,
            max(self.transient, other.transient),
        )


CostTerm = Callable[["RunConfig"], Cost]
COSTS: dict[str, CostTerm] = {}


def register_cost(name: str, term: CostTerm) -> None:
    """Count `term` in every run's budget (a feature's own passes, say); a name once."""
    COSTS[name] = term


@dataclass(frozen=True)
class Estimate:
    """A config's cost, term by term."""

    terms: dict[str, Cost]

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.terms.values())

    @property
    def bytes(self) -> float:
        resident = sum(c.resident for c in self.terms.values())
        return resident + max((c.transient for c in self.terms.values()), default=0.0)

    def largest(self, n: int = 3) -> list[tuple[str, float]]:
        """The `n` terms that cost the most time, as (name, seconds)."""
        ranked = sorted(((k, c.seconds) for k, c in self.terms.items()), key=lambda kv: -kv[1])
        return ranked[:n]


def estimate(config: RunConfig) -> Estimate:
    return Estimate({name: term(config) for name, term in COSTS.items()})


def check(config: RunConfig) -> None:
    """Raise ValueError (a 422 at the API) naming the budget, what the run would take, its
    largest parts, the limit and the fields that lower it."""
    cost = estimate(config)
    if cost.seconds > MAX_SECONDS:
        parts = ", ".join(f"{name} {duration(s)}" for name, s in cost.largest())
        raise ValueError(
            f"compute budget exceeded: this run would take about {duration(cost.seconds)} of "
            f"one CPU core ({parts}; {config.parameter_count():,} parameters), limit "
            f"{duration(MAX_SECONDS)}; lower training.steps, model.depth, model.width, "
            "training.batch_size or data.n_samples, or raise recording.eval_every or "
            "recording.record_every"
        )
    if cost.bytes > MAX_BYTES:
        held = ", ".join(
            f"{name} {gib(c.resident)}" for name, c in cost.terms.items() if c.resident > 2**26
        )
        peak_name, peak = max(cost.terms.items(), key=lambda kv: kv[1].transient)
        raise ValueError(
            f"memory budget exceeded: this run would need about {gib(cost.bytes)} ({held} held; "
            f"{peak_name} {gib(peak.transient)} at its peak), limit {gib(MAX_BYTES)}; lower "
            "model.width, model.depth, training.batch_size or data.n_samples, or choose an "
            "optimizer with less state (sgd)"
        )


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


# -- the shape of a config's network ------------------------------------------------------------
def weights(config: RunConfig) -> int:
    """Weights of the Linear layers (the matrix products' size): every parameter but biases
    and norm parameters."""
    m = config.model
    return (
        config.data.input_dim * m.width + (m.depth - 1) * m.width**2 + m.width * config.output_dim
    )


def units(config: RunConfig, samples: int) -> float:
    """Activation elements of one forward pass over `samples` samples."""
    return float(samples) * config.model.width * config.model.depth


def n_test(config: RunConfig) -> int:
    from depthscope.engine.data import HELD_OUT_FRACTION

    return max(1, int(config.data.n_samples * HELD_OUT_FRACTION))


def _multiples(every: int, steps: int) -> int:
    """Steps 0 … steps-1 that are multiples of `every` (0: none)."""
    return math.ceil(steps / every) if every else 0


def evaluations(config: RunConfig) -> int:
    """Held-out evaluations, as the trainer runs them: every `eval_every` steps from step 0,
    and at the last step."""
    every, last = config.recording.eval_every, config.training.steps - 1
    on_last = 0 if every and last % every == 0 else 1
    return _multiples(every, config.training.steps) + on_last


def recorded_steps(config: RunConfig) -> int:
    """Steps the trainer records: every `record_every` steps, every evaluation step and the
    last one."""
    rec, steps = config.recording, config.training.steps
    r, e, last = rec.record_every, rec.eval_every, steps - 1
    both = _multiples(math.lcm(r, e), steps) if e else 0
    count = _multiples(r, steps) + _multiples(e, steps) - both
    return count + (0 if last % r == 0 or (e and last % e == 0) else 1)


def histogram_steps(config: RunConfig) -> int:
    """Recorded steps that also take histograms (an upper bound)."""
    every = config.recording.histogram_every
    return min(recorded_steps(config), _multiples(every, config.training.steps))


# -- the terms every run has --------------------------------------------------------------------
OPTIMIZER_STATE = {"sgd": 0, "momentum": 1, "adam": 2, "rmsprop": 1}  # tensors per parameter
OPTIMIZER_PASSES = {"sgd": 6, "momentum": 8, "adam": 12, "rmsprop": 10}  # element passes
OPTIMIZER_LAUNCHES = {"sgd": 0, "momentum": 4, "adam": 20, "rmsprop": 16}  # per layer


def training(config: RunConfig) -> Cost:
    """Forward and backward passes and the optimizer's update, every step."""
    m, t = config.model, config.training
    p = config.parameter_count()
    norm = 1 if m.norm != "none" else 0
    per_step = Cost(
        flops=6.0 * weights(config) * t.batch_size,
        elements=12 * (1 + norm) * units(config, t.batch_size) + OPTIMIZER_PASSES[t.optimizer] * p,
        launches=(20 + 10 * norm + OPTIMIZER_LAUNCHES[t.optimizer]) * m.depth + 150,
        resident=(2 + OPTIMIZER_STATE[t.optimizer]) * p * FLOAT,
        # what autograd keeps for the backward pass, per unit: z, u, h and their gradients
        transient=(6 + 4 * norm) * units(config, t.batch_size) * FLOAT,
    )
    return per_step.times(t.steps)


def recording(config: RunConfig) -> Cost:
    """The probe on recorded steps (every layer's statistics, the weights' copies and norms),
    histograms of h and dL/dh on histogram steps, and turning each record into its JSON and
    blocks for the store."""
    m, t = config.model, config.training
    probe = Cost(
        elements=8 * units(config, t.batch_size) + 2 * weights(config),
        launches=10 * m.depth + 80,
        values=(m.depth + 1) * 6 + 100,  # the record's metrics: JSON and float32 blocks
        resident=3 * weights(config) * FLOAT,  # gradients, values before, updates
        transient=4 * units(config, t.batch_size) * FLOAT,  # the kept dL/dh_l
    )
    histograms = Cost(
        elements=12 * units(config, t.batch_size),
        launches=4 * m.depth + 20,
        values=(m.depth + 1) * 8,  # two histograms per layer: integer counts, JSON only
    )
    return probe.times(recorded_steps(config)) + histograms.times(histogram_steps(config))


def evaluation(config: RunConfig) -> Cost:
    """A forward pass over the held-out split (up to 20,000 samples) per evaluation."""
    n = n_test(config)
    once = Cost(
        flops=2.0 * weights(config) * n,
        elements=8 * units(config, n) + 50 * n,  # the layers, then loss and accuracy
        launches=16 * config.model.depth + 40,
        transient=5 * n * config.model.width * FLOAT,  # a layer's input, output and temporaries
    )
    return once.times(evaluations(config))


STARTUP_LAUNCHES = 200_000  # a run's first steps: lazy imports and first allocations, ~1 s
STARTUP_BYTES = 128 * 2**20  # and what those hold (measured: ~80 MB)


def initialization(config: RunConfig) -> Cost:
    """Building the model and drawing its weights (`orthogonal` also factors a matrix per
    layer: QR, ~w³ each), and what a run's first step costs once."""
    m = config.model
    qr = 8.0 * m.width**3 * (m.depth + 1) if m.init == "orthogonal" else 0.0
    return Cost(
        flops=qr,
        elements=16 * config.parameter_count(),
        launches=100 * m.depth + STARTUP_LAUNCHES,
        resident=STARTUP_BYTES,
    )


def data(config: RunConfig) -> Cost:
    """Generating, embedding, splitting and standardizing the samples."""
    d = config.data
    values = d.n_samples * (d.input_dim + 1)
    return Cost(
        flops=4.0 * d.n_samples * d.input_dim,  # the random rotation of planar tasks
        elements=40 * values,
        launches=100,
        resident=values * FLOAT * 2,  # features (float32) and labels (int64)
        transient=3 * values * FLOAT,  # the raw, embedded and standardized copies
    )


def boundary(config: RunConfig) -> Cost:
    """A 2-D classification run's decision-boundary grids: a forward pass over the grid's
    cells on every boundary_every step and the last (engine/boundary.py)."""
    from depthscope.engine.boundary import GRID_SIZE, unsupported_reason

    if unsupported_reason(config) is not None:
        return Cost()
    cells = GRID_SIZE**2
    once = Cost(
        flops=2.0 * weights(config) * cells,
        elements=8 * units(config, cells) + 50 * cells,
        launches=16 * config.model.depth + 60,
        transient=5 * cells * config.model.width * FLOAT,
    )
    return once.times(config.boundary_frames())


def spectra(config: RunConfig) -> Cost:
    """The Jacobian spectra a worker takes (analysis/spectrum.py): per spectrum, J pushed
    through blocks 2..D at a few inputs (a width x width product per block and input), then
    one SVD per input in float64; at step 0, every spectrum_every steps and the last."""
    from depthscope.analysis.spectrum import SPECTRUM_INPUTS, spectrum_skip_reason

    m = config.model
    if spectrum_skip_reason(m.depth, m.width, SPECTRUM_INPUTS) is not None:
        return Cost()
    jac = SPECTRUM_INPUTS * float(m.width) ** 2  # entries of the inputs' Jacobians
    once = Cost(
        # batched width x width products (about a third of a large one's rate here), SVDs
        flops=6.0 * jac * m.width * (m.depth - 1) + 30.0 * jac * m.width,
        elements=6 * jac * m.depth,
        launches=8 * m.depth + 20,
        transient=4 * jac * 8,  # J, the block's product and their float64 copies
    )
    return once.times(config.spectrum_count())


for _name, _term in [
    ("training", training),
    ("recording", recording),
    ("evaluation", evaluation),
    ("initialization", initialization),
    ("data", data),
    ("boundary", boundary),
    ("spectra", spectra),
]:
    register_cost(_name, _term)
