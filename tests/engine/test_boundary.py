"""The decision boundary: each frame is the softmax of the model itself at the grid's points, the
grid spans the training data plus its margin, frames come on schedule, and taking them leaves
training unchanged."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from depthscope import RunConfig, Trainer, train
from depthscope.engine.boundary import (
    GRID_SIZE,
    MARGIN,
    MAX_POINTS,
    BoundaryFrame,
    unsupported_reason,
)
from depthscope.engine.model import build_model


def config(**sections: dict[str, Any]) -> RunConfig:
    base: dict[str, dict[str, Any]] = {
        "model": {"depth": 3, "width": 16},
        "training": {"steps": 23, "batch_size": 32, "lr": 0.1},
        "data": {"dataset": "moons", "n_samples": 256},
        "recording": {"eval_every": 0, "histogram_every": 0, "boundary_every": 10},
    }
    for name, values in sections.items():
        base[name] = {**base[name], **values}
    return RunConfig.model_validate(base)


def trained(cfg: RunConfig) -> tuple[Trainer, list[BoundaryFrame]]:
    trainer, frames = Trainer(cfg), []
    trainer.run(lambda _record: None, on_boundary=frames.append)
    return trainer, frames


def softmax_at(model: torch.nn.Module, x: float, y: float) -> torch.Tensor:
    """The reference: one point through the model, in eval mode, by itself."""
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(torch.tensor([[x, y]])), dim=1)[0]


def test_boundary_final_frame_is_the_trained_models_softmax_at_each_cell() -> None:
    trainer, frames = trained(config())
    last = frames[-1]
    assert last.step == trainer.steps_done == 23 and last.classes is None
    layout = trainer.boundary.layout  # type: ignore[union-attr]
    assert last.prob.shape == (GRID_SIZE, GRID_SIZE) and GRID_SIZE >= 32
    for i, j in [(0, 0), (0, GRID_SIZE - 1), (7, 31), (GRID_SIZE - 1, 3), (20, 20)]:
        # rows follow y, columns x
        expected = softmax_at(trainer.model, float(layout.x[j]), float(layout.y[i]))[1]
        assert float(last.prob[i, j]) == pytest.approx(float(expected), abs=1e-6)
    assert float(last.prob.min()) >= 0 and float(last.prob.max()) <= 1


def test_boundary_first_frame_is_the_initial_network() -> None:
    cfg = config()
    trainer, frames = trained(cfg)
    fresh = build_model(cfg.model, 2, 2, cfg.training.seed)
    layout = trainer.boundary.layout  # type: ignore[union-attr]
    assert frames[0].step == 0
    for i, j in [(3, 5), (30, 12)]:
        expected = softmax_at(fresh, float(layout.x[j]), float(layout.y[i]))[1]
        assert float(frames[0].prob[i, j]) == pytest.approx(float(expected), abs=1e-6)
    assert not torch.equal(frames[0].prob, frames[-1].prob)  # it learned in between


def test_boundary_grid_spans_the_training_data_and_its_margin() -> None:
    trainer = Trainer(config(data={"n_samples": 2048}))
    layout = trainer.boundary.layout  # type: ignore[union-attr]
    x_train = trainer.data.x_train
    for axis, values in ((layout.x, x_train[:, 0]), (layout.y, x_train[:, 1])):
        lo, hi = float(values.min()), float(values.max())
        pad = MARGIN * (hi - lo)
        assert float(axis[0]) == pytest.approx(lo - pad, abs=1e-5)
        assert float(axis[-1]) == pytest.approx(hi + pad, abs=1e-5)
        assert torch.all(axis.diff() > 0)
    assert layout.points.shape == (MAX_POINTS, 2)  # 1638 training points, the first 1000 sent
    assert torch.equal(layout.points, x_train[:MAX_POINTS])
    assert torch.equal(layout.labels, trainer.data.y_train[:MAX_POINTS])


def test_boundary_more_classes_give_the_predicted_class_and_its_probability() -> None:
    trainer, frames = trained(config(data={"dataset": "blobs"}))
    last, layout = frames[-1], trainer.boundary.layout  # type: ignore[union-attr]
    assert layout.n_classes == 4 and last.classes is not None
    for i, j in [(0, 0), (10, 30), (39, 39)]:
        expected = softmax_at(trainer.model, float(layout.x[j]), float(layout.y[i]))
        assert int(last.classes[i, j]) == int(expected.argmax())
        assert float(last.prob[i, j]) == pytest.approx(float(expected.max()), abs=1e-6)
    assert float(last.prob.min()) >= 0.25 - 1e-6  # the largest of four probabilities


def test_boundary_with_batchnorm_uses_the_running_statistics() -> None:
    trainer, frames = trained(config(model={"norm": "batchnorm"}))
    assert trainer.model.training  # put back in training mode after each frame
    layout = trainer.boundary.layout  # type: ignore[union-attr]
    expected = softmax_at(trainer.model, float(layout.x[4]), float(layout.y[9]))[1]
    assert float(frames[-1].prob[9, 4]) == pytest.approx(float(expected), abs=1e-6)
    trainer.model.train()
    with torch.no_grad():  # in training mode the grid's own batch statistics would differ
        batch = torch.softmax(trainer.model(trainer.boundary.inputs), 1)[:, 1]  # type: ignore[union-attr]
    assert not torch.allclose(batch.reshape(GRID_SIZE, GRID_SIZE), frames[-1].prob, atol=1e-4)


@pytest.mark.parametrize(("every", "steps"), [(10, [0, 10, 20, 23]), (0, [23]), (23, [0, 23])])
def test_boundary_frames_come_every_k_steps_and_after_the_last(
    every: int, steps: list[int]
) -> None:
    cfg = config(recording={"boundary_every": every})
    _, frames = trained(cfg)
    assert [f.step for f in frames] == steps
    assert len(frames) == cfg.boundary_frames()


def test_boundary_taking_frames_leaves_training_unchanged() -> None:
    cfg = config(model={"norm": "batchnorm"}, recording={"boundary_every": 1})
    plain: list[Any] = []
    train(cfg, on_record=plain.append)
    with_frames: list[Any] = []
    frames: list[BoundaryFrame] = []
    train(cfg, on_record=with_frames.append, on_boundary=frames.append)
    assert len(frames) == 24
    assert [r.to_wire() for r in with_frames] == [r.to_wire() for r in plain]


def test_boundary_only_for_2d_inputs_with_classes() -> None:
    flat = config(data={"input_dim": 3})
    regression = config(data={"dataset": "teacher"})
    assert "data.input_dim=3" in (unsupported_reason(flat) or "")
    assert "regression" in (unsupported_reason(regression) or "")
    assert unsupported_reason(config()) is None
    for cfg in (flat, regression):
        trainer, frames = trained(cfg)
        assert trainer.boundary is None and frames == []


def test_boundary_frames_off_the_schedule_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from depthscope.engine import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "MAX_EXTRA_FRAMES", 3)
    cfg = config(recording={"boundary_every": 10})
    trainer, extra = Trainer(cfg), []

    def pause_every_step() -> bool:  # as the service's gate does when it parks
        frame = trainer.boundary_frame()
        if frame is not None:
            extra.append(frame.step)
        return False

    scheduled: list[BoundaryFrame] = []
    trainer.run(lambda _record: None, pause_every_step, scheduled.append)
    assert extra == [0, 1, 2]  # three off-schedule frames, then no more
    assert [f.step for f in scheduled] == [10, 20, 23]  # step 0's came from the pause
