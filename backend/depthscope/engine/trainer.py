"""The trainer: optimizer, clipping, held-out evaluation, cancellation and divergence detection.

`Trainer.records()` is a generator of StepRecords whose return value is the RunResult, so a
caller can stream records (the service) or just collect them (tests, the CLI). The same config
and seed give identical records on the CPU. A caller that passes `on_boundary` also gets the
decision-boundary grids of a 2-D run (engine/boundary.py); without it none is computed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import Tensor
from torch.nn import functional

from depthscope.analysis.spectrum import SPECTRUM_INPUTS, singular_values, spectrum_skip_reason
from depthscope.engine.boundary import MAX_EXTRA_FRAMES, BoundaryFrame, BoundaryGrid
from depthscope.engine.config import RunConfig
from depthscope.engine.data import Dataset, make_dataset
from depthscope.engine.model import DeepNet, build_model
from depthscope.engine.optim import OPTIMIZERS
from depthscope.probe.probe import Probe, accuracy
from depthscope.records import Divergence, StepRecord, first_non_finite

Outcome = Literal["completed", "cancelled", "diverged"]


class DeviceUnavailableError(RuntimeError):
    """The config asks for a device this machine does not have."""


@dataclass
class RunResult:
    status: Outcome
    steps_done: int
    final: dict[str, Any] = field(default_factory=dict)  # last loss/accuracy, held-out too
    divergence: Divergence | None = None


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError("training.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


class Trainer:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.device = resolve_device(config.training.device)
        seed = config.training.seed
        self.data: Dataset = make_dataset(config.data, seed).to(self.device)
        self.model: DeepNet = build_model(
            config.model, config.data.input_dim, self.data.output_dim, seed
        )
        if self.device.type != "cpu":  # built on the CPU; `.to` walks every module (ms, deep)
            self.model.to(self.device)
        t = config.training
        self.optimizer = OPTIMIZERS[t.optimizer](self.model.parameters(), t.lr, t.weight_decay)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.probe = Probe(self.model)
        self._layer_names = self.model.layer_names  # made once: checked after every record
        m = config.model
        self.spectrum_skipped = spectrum_skip_reason(m.depth, m.width, SPECTRUM_INPUTS)
        self._not_clipped = torch.zeros((), dtype=torch.bool, device=self.device)
        self._batches = self._batch_indices(torch.Generator().manual_seed(seed + 2))
        self.boundary = BoundaryGrid.for_run(config, self.data)  # None unless 2-D with classes
        self.steps_done = 0  # optimizer steps applied so far
        self._frame_step = -1  # the step of the last boundary frame made (one per step at most)
        self._extra_frames = 0  # frames made off the schedule

    @property
    def layer_names(self) -> list[str]:
        return self._layer_names

    # -- pieces of a step -------------------------------------------------------------------
    def _batch_indices(self, g: torch.Generator) -> Iterator[Tensor]:
        """Shuffled epochs over the training split; the incomplete tail of an epoch is dropped."""
        n, bs = self.data.x_train.shape[0], self.config.training.batch_size
        while True:
            order = torch.randperm(n, generator=g)
            for start in range(0, n - bs + 1, bs):
                yield order[start : start + bs].to(self.device, non_blocking=True)

    def _loss(self, logits: Tensor, y: Tensor) -> Tensor:
        if self.data.is_regression:
            return functional.mse_loss(logits, y)
        return functional.cross_entropy(logits, y)

    def _clip(self, record: bool) -> Tensor | None:
        """Clip as configured. On a recorded step, returns whether clipping acted (0-d bool
        tensor, still on the device); otherwise None."""
        t = self.config.training
        if t.clip == "norm":
            total = torch.nn.utils.clip_grad_norm_(self.params, t.clip_value, foreach=True)
            return total > t.clip_value if record else None
        if t.clip == "value":
            largest = None
            if record:
                grads = [p.grad for p in self.params if p.grad is not None]
                largest = torch.stack(torch._foreach_norm(grads, math.inf)).max()
            torch.nn.utils.clip_grad_value_(self.params, t.clip_value, foreach=True)
            return None if largest is None else largest > t.clip_value
        return self._not_clipped if record else None

    def spectrum(self) -> list[float] | None:
        """Singular values of dh_D/dh_1 at the first training inputs, with the weights the
        next step's forward pass uses; None where the network is too large (see
        spectrum_skip_reason) or the Jacobian is not finite."""
        if self.spectrum_skipped is not None:
            return None
        return singular_values(self.model, self.data.x_train[:SPECTRUM_INPUTS])

    def _emit_spectrum(self, step: int, on_spectrum: Callable[[int, list[float]], None]) -> None:
        values = self.spectrum()
        if values is not None:
            on_spectrum(step, values)

    @torch.no_grad()
    def evaluate(self) -> tuple[float | None, float | None]:
        """Held-out loss and accuracy (None for regression), with the model in eval mode."""
        self.model.eval()
        try:
            logits, y = self.model(self.data.x_test), self.data.y_test
            values = torch.stack([self._loss(logits, y), accuracy(logits, y)]).tolist()
        finally:
            self.model.train()
        return tuple(v if math.isfinite(v) else None for v in values)  # type: ignore[return-value]

    def _step(
        self, step: int, idx: Tensor, record: bool, histograms: bool, evaluate: bool
    ) -> StepRecord | None:
        """One optimizer step. Returns its record, or None when it is not recorded.

        An unrecorded step whose loss is non-finite is redone with the probe attached (the
        weights have not moved yet), so a divergence is always located and recorded."""
        x, y = self.data.x_train[idx], self.data.y_train[idx]
        if record:
            self.probe.attach(histograms)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = self._loss(logits, y)
        if not record and not math.isfinite(loss.item()):
            return self._step(step, idx, record=True, histograms=False, evaluate=False)
        if record:
            self.probe.backward(loss)
            self.probe.before_update()
        else:
            loss.backward()  # type: ignore[no-untyped-call]
        clipped = self._clip(record)
        self.optimizer.step()
        if not record:
            return None
        assert clipped is not None
        result = self.probe.finish(step, loss, y, clipped)  # the accuracy too
        if evaluate:  # after finish: the probe has detached, so this forward is not tapped
            val_loss, val_accuracy = self.evaluate()
            result = replace(result, val_loss=val_loss, val_accuracy=val_accuracy)
        return result

    def boundary_frame(self, scheduled: bool = False) -> BoundaryFrame | None:
        """The network's prediction over the boundary grid now, after `steps_done` updates;
        None for a run without a boundary, when this step already has its frame, or past
        MAX_EXTRA_FRAMES frames off the schedule (each pause of the service asks for one)."""
        if self.boundary is None or self._frame_step == self.steps_done:
            return None
        if not scheduled:
            if self._extra_frames >= MAX_EXTRA_FRAMES:
                return None
            self._extra_frames += 1
        self._frame_step = self.steps_done
        return self.boundary.frame(self.model, self.steps_done)

    # -- the run ------------------------------------------------------------------------------
    def records(
        self,
        should_stop: Callable[[], bool] = lambda: False,
        on_boundary: Callable[[BoundaryFrame], None] | None = None,
        on_spectrum: Callable[[int, list[float]], None] | None = None,
    ) -> Generator[StepRecord, None, RunResult]:
        """Train, yielding each recorded step. `should_stop` is asked before every step, with
        the weights between updates (the service pauses a run inside it). `on_boundary` gets
        a frame before every `boundary_every`-th step and after the last one; `on_spectrum`
        (step, singular values of dh_D/dh_1) before step 0, every `spectrum_every`-th step and
        the last one. Without them neither is computed: a run costs what its records cost."""
        rec = self.config.recording
        steps = self.config.training.steps

        def boundary() -> None:
            if on_boundary is not None and (frame := self.boundary_frame(True)) is not None:
                on_boundary(frame)

        last: StepRecord | None = None
        with self.probe:
            for step in range(steps):
                if should_stop():
                    return RunResult("cancelled", step, final_of(last))
                if rec.boundary_every and step % rec.boundary_every == 0:
                    boundary()
                is_last = step == steps - 1
                evaluate = is_last or (rec.eval_every > 0 and step % rec.eval_every == 0)
                if on_spectrum is not None and self.config.spectrum_at(step):
                    self._emit_spectrum(step, on_spectrum)
                record = is_last or evaluate or step % rec.record_every == 0
                histograms = rec.histogram_every > 0 and step % rec.histogram_every == 0
                result = self._step(
                    step, next(self._batches), record, record and histograms, evaluate
                )
                self.steps_done = step + 1
                if result is None:
                    continue
                last = result
                yield result
                divergence = first_non_finite(result, self.layer_names)
                if divergence is not None:
                    return RunResult("diverged", step + 1, final_of(last), divergence)
        boundary()
        return RunResult("completed", steps, final_of(last))

    def run(
        self,
        on_record: Callable[[StepRecord], None],
        should_stop: Callable[[], bool] = lambda: False,
        on_boundary: Callable[[BoundaryFrame], None] | None = None,
        on_spectrum: Callable[[int, list[float]], None] | None = None,
    ) -> RunResult:
        """Drive `records()` to the end, handing each record to `on_record`."""
        gen = self.records(should_stop, on_boundary, on_spectrum)
        while True:
            try:
                record = next(gen)
            except StopIteration as done:
                result: RunResult = done.value
                return result
            on_record(record)


def final_of(record: StepRecord | None) -> dict[str, Any]:
    """A run's `final` summary from its last record (empty before the first)."""
    if record is None:
        return {}
    return {
        "step": record.step,
        "loss": record.loss,
        "accuracy": record.accuracy,
        "val_loss": record.val_loss,
        "val_accuracy": record.val_accuracy,
    }


def train(
    config: RunConfig,
    on_record: Callable[[StepRecord], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_boundary: Callable[[BoundaryFrame], None] | None = None,
    on_spectrum: Callable[[int, list[float]], None] | None = None,
) -> RunResult:
    """Train `config` to the end, handing each record to `on_record` (and, when asked for,
    decision-boundary frames and Jacobian spectra to theirs, as the service stores them); no
    server needed."""
    return Trainer(config).run(
        on_record or (lambda _record: None), should_stop, on_boundary, on_spectrum
    )


def iter_records(config: RunConfig) -> Iterator[StepRecord]:
    """The records of a run, one at a time (the RunResult is dropped)."""
    yield from Trainer(config).records()
