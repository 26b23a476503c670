"""The trainer: determinism, cancellation, divergence, evaluation, clipping, devices and the
one-host-transfer-per-recorded-step rule."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import depthscope
import pytest
import torch
from conftest import CountOps
from depthscope import RunConfig, StepRecord, Trainer, iter_records, train
from depthscope.engine.trainer import DeviceUnavailableError
from torch.nn import functional


def config(**sections: dict[str, Any]) -> RunConfig:
    base: dict[str, dict[str, Any]] = {
        "model": {"depth": 3, "width": 16},
        "training": {"steps": 12, "batch_size": 32},
        "data": {"n_samples": 256},
        "recording": {"eval_every": 5, "histogram_every": 4},
    }
    for name, values in sections.items():
        base[name] = {**base[name], **values}
    return RunConfig.model_validate(base)


def run_all(cfg: RunConfig, **kwargs: Any) -> tuple[list[StepRecord], depthscope.RunResult]:
    records: list[StepRecord] = []
    result = train(cfg, on_record=records.append, **kwargs)
    return records, result


def test_trainer_same_config_and_seed_give_identical_records() -> None:
    cfg = config(model={"norm": "batchnorm", "activation": "tanh"}, training={"optimizer": "adam"})
    first, _ = run_all(cfg)
    second, _ = run_all(cfg)
    assert [r.to_wire() for r in first] == [r.to_wire() for r in second]


def test_trainer_different_seeds_give_different_records() -> None:
    a, _ = run_all(config(training={"seed": 1}))
    b, _ = run_all(config(training={"seed": 2}))
    assert a[0].layers != b[0].layers


def test_trainer_completes_and_reports_final_numbers() -> None:
    records, result = run_all(config())
    assert result.status == "completed"
    assert result.steps_done == 12
    assert [r.step for r in records] == list(range(12))
    assert result.final["step"] == 11
    assert result.final["val_loss"] == records[-1].val_loss is not None


def test_trainer_evaluates_on_eval_steps_and_the_last() -> None:
    records, _ = run_all(config())
    evaluated = [r.step for r in records if r.val_loss is not None]
    assert evaluated == [0, 5, 10, 11]
    assert all(0 <= (r.val_accuracy or 0) <= 1 for r in records)
    assert "val_loss" in records[0].to_wire()
    assert "val_loss" not in records[1].to_wire()


def test_trainer_record_every_skips_steps_but_keeps_the_last() -> None:
    records, _ = run_all(config(recording={"record_every": 4, "eval_every": 0}))
    assert [r.step for r in records] == [0, 4, 8, 11]


def test_trainer_cancellation_stops_and_keeps_records() -> None:
    seen: list[StepRecord] = []
    result = train(config(), on_record=seen.append, should_stop=lambda: len(seen) >= 3)
    assert result.status == "cancelled"
    assert result.steps_done == 3
    assert [r.step for r in seen] == [0, 1, 2]
    assert result.final["step"] == 2


def test_trainer_cancellation_before_the_first_step() -> None:
    records, result = run_all(config(), should_stop=lambda: True)
    assert (records, result.status, result.steps_done, result.final) == ([], "cancelled", 0, {})


def test_trainer_huge_learning_rate_diverges_located_without_exception() -> None:
    cfg = config(
        model={"depth": 6, "width": 32, "init": "normal", "init_std": 3.0},
        training={"lr": 10.0, "steps": 200, "optimizer": "sgd"},
        recording={"record_every": 7, "eval_every": 0},
    )
    records, result = run_all(cfg)
    assert result.status == "diverged"
    assert result.divergence is not None
    last = records[-1]
    assert result.divergence.step == last.step == result.steps_done - 1
    assert result.steps_done < 200
    # every earlier record is kept and finite
    assert all(v is not None for r in records[:-1] for vs in r.layers.values() for v in vs)
    where = result.divergence
    if where.layer is not None:
        assert where.layer == Trainer(cfg).layer_names[where.layer_index or 0]
        assert last.layers[where.metric][where.layer_index or 0] is None
    assert "non-finite at step" in where.describe()
    assert where.to_wire() == {**dataclasses.asdict(where), "message": where.describe()}


def test_trainer_regression_dataset_has_no_accuracy() -> None:
    records, result = run_all(config(data={"dataset": "teacher"}))
    assert result.status == "completed"
    assert all(r.accuracy is None and r.loss is not None for r in records)
    assert records[-1].val_accuracy is None and records[-1].val_loss is not None


def test_trainer_clip_by_norm_reports_pre_clip_norm_and_clipped() -> None:
    records, _ = run_all(config(training={"clip": "norm", "clip_value": 1e-3}))
    assert all(r.clipped for r in records)
    assert all((r.grad_norm_total or 0) > 1e-3 for r in records)
    unclipped, _ = run_all(config(training={"clip": "norm", "clip_value": 1e5}))
    assert not any(r.clipped for r in unclipped)
    assert unclipped[0].grad_norm_total == pytest.approx(records[0].grad_norm_total, rel=1e-5)


def test_trainer_clip_by_value_limits_the_update() -> None:
    cfg = config(training={"clip": "value", "clip_value": 1e-4, "lr": 0.5, "steps": 1})
    trainer = Trainer(cfg)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    record = next(trainer.records())
    assert record.clipped
    for p, b in zip(trainer.model.parameters(), before, strict=True):
        # float32 rounding of w - (w - 5e-5) for |w| ~ 2 is ~1%
        assert 0 < float((p.detach() - b).abs().max()) <= 0.5 * 1e-4 * 1.01


def test_trainer_grad_norm_total_is_norm_over_all_parameters() -> None:
    # 40 samples leave 32 for training: the batch is the whole split, in some order
    cfg = config(training={"steps": 1}, model={"norm": "layernorm"}, data={"n_samples": 40})
    trainer = Trainer(cfg)
    model = trainer.model
    loss = torch.nn.functional.cross_entropy(model(trainer.data.x_train), trainer.data.y_train)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    record = next(trainer.records())
    assert record.grad_norm_total == pytest.approx(expected, rel=1e-5)


def test_trainer_one_host_transfer_per_recorded_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tensor-op path, which also runs on CUDA, reads a step back with one `.cpu()` and
    nothing else. (The CPU's C kernels write into host memory directly: nothing to transfer.)"""
    monkeypatch.setenv("DEPTHSCOPE_NATIVE", "0")
    calls = {"cpu": 0, "tolist": 0, "item": 0}
    originals = {name: getattr(torch.Tensor, name) for name in calls}

    def counted(name: str) -> Any:
        def call(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return originals[name](self, *args, **kwargs)

        return call

    cfg = config(recording={"eval_every": 0, "histogram_every": 2}, training={"steps": 6})
    trainer = Trainer(cfg)
    for name in calls:
        monkeypatch.setattr(torch.Tensor, name, counted(name))
    gen = trainer.records()
    for _ in range(5):  # the last step also evaluates: a second transfer, by design
        next(gen)
    assert calls == {"cpu": 5, "tolist": 0, "item": 0}


def test_trainer_unrecorded_step_dispatches_what_a_plain_step_does() -> None:
    """A step that is not recorded costs what the loop a user would write costs: the same
    tensor ops, no probe, no accuracy."""
    cfg = config(recording={"record_every": 100, "eval_every": 0}, training={"steps": 20})
    trainer, plain = Trainer(cfg), Trainer(cfg)
    idx = next(trainer._batches)
    counted = CountOps()
    with counted:
        assert trainer._step(1, idx, record=False, histograms=False, evaluate=False) is None
    by_hand = CountOps()
    with by_hand:
        x, y = plain.data.x_train[idx], plain.data.y_train[idx]
        plain.optimizer.zero_grad(set_to_none=True)
        loss = functional.cross_entropy(plain.model(x), y)
        loss.item()
        loss.backward()  # type: ignore[no-untyped-call]
        plain.optimizer.step()
    assert counted.count == by_hand.count


def test_trainer_iter_records_yields_every_step() -> None:
    assert [r.step for r in iter_records(config())] == list(range(12))


def test_trainer_layer_names_are_blocks_then_readout() -> None:
    assert Trainer(config()).layer_names == ["block1", "block2", "block3", "readout"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_trainer_cuda_without_gpu_raises_device_unavailable() -> None:
    with pytest.raises(DeviceUnavailableError, match="cuda"):
        Trainer(config(training={"device": "cuda"}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_trainer_cuda_matches_cpu() -> None:
    cpu, _ = run_all(config(recording={"histogram_every": 1}))
    gpu, result = run_all(config(training={"device": "cuda"}, recording={"histogram_every": 1}))
    assert result.status == "completed"
    for a, b in zip(cpu, gpu, strict=True):
        for name, values in a.layers.items():
            assert b.layers[name] == pytest.approx(values, rel=1e-3, abs=1e-5), name
        assert b.histograms is not None
        assert sum(b.histograms["act"].counts[0]) == sum(a.histograms["act"].counts[0])  # type: ignore[index]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "training",
    [
        {"optimizer": "sgd", "clip": "none"},
        {"optimizer": "adam", "clip": "norm"},
        {"optimizer": "momentum", "clip": "value"},
    ],
)
@pytest.mark.parametrize("record_every", [1, 2])
def test_trainer_cuda_waits_for_the_device_once_per_step(
    training: dict[str, Any], record_every: int
) -> None:
    """On a GPU the one-transfer rule is about synchronisation: the host waits for the device
    once per step (the record's .tolist(), or an unrecorded step's loss.item()) and never
    inside the probe, the clipping or the optimizer. CUDA's sync debug mode warns at every
    synchronising call."""
    cfg = config(
        model={"norm": "batchnorm", "residual_every": 2},
        training={**training, "device": "cuda", "steps": 40},
        recording={"eval_every": 0, "histogram_every": 2, "record_every": record_every},
    )
    records = Trainer(cfg).records()
    first = next(records)  # the first step makes the plan and its buffers
    with warnings.catch_warnings():  # switching it on warns once that it is a prototype
        warnings.simplefilter("ignore")
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            last = [next(records) for _ in range(6)][-1]
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) == last.step - first.step, syncs


def test_trainer_hands_spectra_to_their_callback_on_their_steps() -> None:
    cfg = config(recording={"record_every": 4, "spectrum_every": 5, "eval_every": 0})
    spectra: list[tuple[int, list[float]]] = []
    records = []
    Trainer(cfg).run(records.append, on_spectrum=lambda step, v: spectra.append((step, v)))
    assert [step for step, _ in spectra] == [0, 5, 10, 11]
    assert [r.step for r in records] == [0, 4, 8, 11]  # spectra do not add records
    first = spectra[0][1]
    assert len(first) == 4 * 16 and first == sorted(first)[::-1]


def test_trainer_without_a_spectrum_callback_computes_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """depthscope.train() costs what its records cost: no Jacobian is built."""
    trainer = Trainer(config(recording={"spectrum_every": 2}))
    monkeypatch.setattr(trainer, "spectrum", lambda: pytest.fail("spectrum computed"))
    trainer.run(lambda _r: None)


def test_trainer_skips_spectra_above_the_size_limit() -> None:
    cfg = RunConfig.model_validate(
        {"model": {"depth": 60, "width": 512}, "training": {"steps": 1, "batch_size": 8}}
    )
    trainer = Trainer(cfg)
    assert trainer.spectrum_skipped is not None and "limit" in trainer.spectrum_skipped
    assert trainer.spectrum() is None
    spectra: list[int] = []
    trainer.run(lambda _r: None, on_spectrum=lambda step, _v: spectra.append(step))
    assert spectra == []
