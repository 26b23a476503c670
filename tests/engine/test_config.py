"""RunConfig: the documented defaults (docs/api.md), every bound, unknown fields and choices,
non-finite numbers, wrong types, the cross-field rules and the compute budget, each error naming
its field."""

from __future__ import annotations

import math
from typing import Any

import pytest
from depthscope import RunConfig
from depthscope.engine.activations import ACTIVATIONS, NORMS
from depthscope.engine.budget import MAX_SECONDS, duration
from depthscope.engine.config import MAX_BOUNDARY_FRAMES, MAX_RECORDED_CELLS
from depthscope.engine.data import DATASETS
from depthscope.engine.inits import INITS
from depthscope.engine.model import build_model
from depthscope.engine.optim import OPTIMIZERS
from pydantic import ValidationError

DOCUMENTED_DEFAULTS = {
    "model": {
        "depth": 10,
        "width": 64,
        "activation": "relu",
        "init": "he_normal",
        "init_std": 0.1,
        "init_gain": 1.0,
        "bias_std": 0.0,
        "norm": "none",
        "norm_position": "pre_activation",
        "residual_every": 0,
        "bias": True,
    },
    "training": {
        "optimizer": "sgd",
        "lr": 0.05,
        "batch_size": 128,
        "steps": 500,
        "clip": "none",
        "clip_value": 1.0,
        "weight_decay": 0.0,
        "seed": 0,
        "device": "cpu",
    },
    "data": {"dataset": "spirals", "n_samples": 2048, "noise": 0.1, "input_dim": 2},
    "recording": {
        "record_every": 1,
        "histogram_every": 10,
        "eval_every": 50,
        "boundary_every": 50,
        "spectrum_every": 0,
    },
}

# (section, field, lowest accepted, highest accepted); a value just outside must fail.
BOUNDS: list[tuple[str, str, float, float]] = [
    ("model", "depth", 1, 200),
    ("model", "width", 1, 1024),
    ("model", "residual_every", 0, 200),
    ("training", "batch_size", 1, 4096),
    ("training", "steps", 1, 100_000),
    ("training", "seed", 0, 2**31 - 1),
    ("data", "n_samples", 16, 100_000),
    ("data", "input_dim", 2, 256),
    ("recording", "record_every", 1, 100_000),
    ("recording", "histogram_every", 0, 100_000),
    ("recording", "eval_every", 0, 100_000),
    ("recording", "boundary_every", 0, 100_000),
    ("recording", "spectrum_every", 0, 100_000),
]
# float fields: (section, field, exclusive lower bound or None, inclusive lower, upper)
FLOAT_BOUNDS: list[tuple[str, str, float, float]] = [
    ("model", "init_std", 0.0, 10.0),
    ("model", "init_gain", 0.0, 10.0),
    ("model", "bias_std", -1e-9, 10.0),
    ("training", "lr", 0.0, 10.0),
    ("training", "clip_value", 0.0, 1e6),
    ("training", "weight_decay", -1e-9, 1.0),
    ("data", "noise", -1e-9, 10.0),
]
CHOICES = {
    ("model", "activation"): ACTIVATIONS,
    ("model", "init"): INITS,
    ("model", "norm"): NORMS,
    ("training", "optimizer"): OPTIMIZERS,
    ("data", "dataset"): DATASETS,
}


def make(section: str, field: str, value: Any) -> RunConfig:
    return RunConfig.model_validate({section: {field: value}})


def error_locations(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[Any, ...]]:
    return [tuple(e["loc"]) for e in exc.value.errors()]


def test_config_defaults_are_design_section_4() -> None:
    assert RunConfig().model_dump() == DOCUMENTED_DEFAULTS
    assert RunConfig().n_layers == 11


def test_config_missing_fields_take_defaults() -> None:
    config = RunConfig.model_validate({"model": {"depth": 3}})
    assert config.model.width == 64 and config.training.lr == 0.05


@pytest.mark.parametrize(("section", "field", "low", "high"), BOUNDS)
def test_config_integer_bounds(section: str, field: str, low: int, high: int) -> None:
    # a tiny, long-recorded base so that only the field under test is near a limit
    base: dict[str, dict[str, Any]] = {
        "training": {"steps": 1, "batch_size": 1},
        "model": {"depth": 200, "width": 1},
        "recording": {"record_every": 100},
    }
    for ok in (low, high):
        merged = {**base, section: {**base.get(section, {}), field: ok}}
        if field == "residual_every" and ok == 200:
            continue  # needs depth > 200, which is out of bounds itself
        if field == "batch_size":
            merged["data"] = {"n_samples": 100_000}
        if field != "depth":  # depth 200 at the other fields' limits is over the time budget
            merged["model"] = {**merged["model"], "depth": 1}
        RunConfig.model_validate(merged)
    for bad in (low - 1, high + 1):
        with pytest.raises(ValidationError) as exc:
            make(section, field, bad)
        assert (section, field) in error_locations(exc)


@pytest.mark.parametrize(("section", "field", "below", "high"), FLOAT_BOUNDS)
def test_config_float_bounds(section: str, field: str, below: float, high: float) -> None:
    make(section, field, high)
    for bad in (below, high * 1.001 + 1e-9):
        with pytest.raises(ValidationError) as exc:
            make(section, field, bad)
        assert (section, field) in error_locations(exc)


@pytest.mark.parametrize(("section", "field"), [(s, f) for s, f, *_ in FLOAT_BOUNDS])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_config_rejects_non_finite_numbers(section: str, field: str, value: float) -> None:
    with pytest.raises(ValidationError) as exc:
        make(section, field, value)
    assert (section, field) in error_locations(exc)


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("model", "depth", "10"),
        ("model", "depth", 2.5),
        ("model", "depth", True),
        ("model", "bias", "yes"),
        ("model", "bias", 1),
        ("training", "lr", "0.1"),
        ("training", "steps", None),
        ("data", "dataset", 3),
        ("recording", "record_every", [1]),
    ],
)
def test_config_rejects_wrong_types(section: str, field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        make(section, field, value)
    assert (section, field) in error_locations(exc)


@pytest.mark.parametrize(
    "body",
    [
        {"extra": 1},
        {"model": {"layers": 3}},
        {"training": {"learning_rate": 0.1}},
        {"data": {"samples": 10}},
        {"recording": {"every": 1}},
    ],
)
def test_config_rejects_unknown_fields(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as exc:
        RunConfig.model_validate(body)
    assert exc.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize(("section", "field"), list(CHOICES))
def test_config_rejects_unknown_choices_listing_the_allowed(section: str, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make(section, field, "nonsense")
    assert (section, field) in error_locations(exc)
    message = str(exc.value)
    assert all(name in message for name in CHOICES[(section, field)])


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("model", "norm_position", "middle"),
        ("training", "clip", "both"),
        ("training", "device", "tpu"),
    ],
)
def test_config_rejects_unknown_literals(section: str, field: str, value: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make(section, field, value)
    assert (section, field) in error_locations(exc)


def test_config_budget_error_names_limit_and_request() -> None:
    body = {
        "model": {"depth": 200, "width": 1024},
        "training": {"steps": 100_000, "batch_size": 4096},
        "data": {"n_samples": 100_000},
        "recording": {"record_every": 1000},
    }
    with pytest.raises(ValidationError, match="compute budget") as exc:
        RunConfig.model_validate(body)
    message = str(exc.value)
    assert f"limit {duration(MAX_SECONDS)}" in message  # the limit
    requested = RunConfig.model_construct(
        model=RunConfig().model.model_copy(update=body["model"]),
        training=RunConfig().training.model_copy(update=body["training"]),
    )
    assert f"{requested.parameter_count():,}" in message  # what was asked for
    assert "training.steps" in message


def test_config_recording_budget_names_the_limit() -> None:
    body = {
        "model": {"depth": 200, "width": 1},
        "training": {"steps": 100_000, "batch_size": 1},
        "data": {"n_samples": 16},
    }
    with pytest.raises(ValidationError, match="recording budget") as exc:
        RunConfig.model_validate(body)
    assert f"{MAX_RECORDED_CELLS:,}" in str(exc.value)
    body["recording"] = {"record_every": 10}
    with pytest.raises(ValidationError, match="compute budget"):  # 100k steps at depth 200
        RunConfig.model_validate(body)
    body["training"] = {"steps": 10_000, "batch_size": 1}
    RunConfig.model_validate(body)


def test_config_residual_every_must_be_below_depth() -> None:
    with pytest.raises(ValidationError, match=r"model\.residual_every"):
        RunConfig.model_validate({"model": {"depth": 4, "residual_every": 4}})
    RunConfig.model_validate({"model": {"depth": 4, "residual_every": 3}})


def test_config_batch_cannot_exceed_training_samples() -> None:
    with pytest.raises(ValidationError, match=r"training\.batch_size"):
        RunConfig.model_validate({"data": {"n_samples": 100}, "training": {"batch_size": 81}})
    RunConfig.model_validate({"data": {"n_samples": 100}, "training": {"batch_size": 80}})


def test_config_batchnorm_needs_two_samples() -> None:
    with pytest.raises(ValidationError, match=r"training\.batch_size"):
        RunConfig.model_validate({"model": {"norm": "batchnorm"}, "training": {"batch_size": 1}})


@pytest.mark.parametrize("input_dim", [2, 63, 65, 256])
def test_config_digits_needs_64_inputs(input_dim: int) -> None:
    with pytest.raises(ValidationError, match=r"data\.input_dim must be 64") as exc:
        RunConfig.model_validate(
            {"data": {"dataset": "digits", "input_dim": input_dim, "n_samples": 500}}
        )
    assert error_locations(exc) == [("data", "input_dim")]
    RunConfig.model_validate({"data": {"dataset": "digits", "input_dim": 64, "n_samples": 1797}})
    RunConfig.model_validate({"data": {"dataset": "spirals", "input_dim": input_dim}})


def test_config_digits_holds_1797_samples() -> None:
    body = {"data": {"dataset": "digits", "input_dim": 64, "n_samples": 1798}}
    with pytest.raises(ValidationError, match=r"data\.n_samples \(1798\).*1797") as exc:
        RunConfig.model_validate(body)
    assert error_locations(exc) == [("data", "n_samples")]
    config = RunConfig.model_validate({"data": {**body["data"], "n_samples": 1797}})
    assert config.output_dim == 10


def test_config_is_frozen() -> None:
    config = RunConfig()
    with pytest.raises(ValidationError):
        config.model.depth = 3  # type: ignore[misc]


def test_config_schema_choices_come_from_registries() -> None:
    schema = RunConfig.model_json_schema()
    defs = schema["$defs"]
    assert defs["ModelConfig"]["properties"]["activation"]["enum"] == list(ACTIVATIONS)
    assert defs["ModelConfig"]["properties"]["init"]["enum"] == list(INITS)
    assert defs["TrainingConfig"]["properties"]["optimizer"]["enum"] == list(OPTIMIZERS)
    assert defs["DataConfig"]["properties"]["dataset"]["enum"] == list(DATASETS)
    assert defs["ModelConfig"]["properties"]["depth"]["maximum"] == 200
    assert defs["ModelConfig"]["additionalProperties"] is False


@pytest.mark.parametrize(
    "model",
    [
        {},
        {"norm": "batchnorm", "activation": "prelu"},
        {"norm": "layernorm", "bias": False, "depth": 1},
        {"bias": False, "activation": "prelu", "width": 7, "depth": 5},
    ],
)
@pytest.mark.parametrize(
    "data",
    [
        {},
        {"dataset": "blobs", "input_dim": 5},
        {"dataset": "teacher"},
        {"dataset": "digits", "input_dim": 64, "n_samples": 1797},
    ],
)
def test_config_parameter_count_equals_built_model(
    model: dict[str, Any], data: dict[str, Any]
) -> None:
    config = RunConfig.model_validate({"model": model, "data": data})
    net = build_model(config.model, config.data.input_dim, config.output_dim, seed=0)
    assert config.parameter_count() == sum(p.numel() for p in net.parameters())


def test_config_boundary_frames_are_bounded_naming_the_field() -> None:
    steps = 100_000
    at_limit = (steps - 1) // (MAX_BOUNDARY_FRAMES - 2) + 1  # the smallest that fits
    config = RunConfig.model_validate(
        {
            "training": {"steps": steps, "batch_size": 1},
            "model": {"depth": 1, "width": 1},
            "recording": {"record_every": 100, "boundary_every": at_limit},
        }
    )
    assert config.boundary_frames() <= MAX_BOUNDARY_FRAMES
    with pytest.raises(ValidationError) as exc:
        config.model_validate(
            {
                **config.model_dump(),
                "recording": {"record_every": 100, "boundary_every": at_limit - 1},
            }
        )
    message = str(exc.value)
    assert "recording.boundary_every" in message and f"{MAX_BOUNDARY_FRAMES:,}" in message
    # 0: one grid, at the end
    assert (
        config.model_copy(
            update={"recording": config.recording.model_copy(update={"boundary_every": 0})}
        ).boundary_frames()
        == 1
    )


def test_config_spectra_are_bounded_naming_spectrum_every() -> None:
    RunConfig.model_validate({"training": {"steps": 1000}, "recording": {"spectrum_every": 10}})
    with pytest.raises(ValidationError, match=r"recording\.spectrum_every") as exc:
        RunConfig.model_validate({"training": {"steps": 1000}, "recording": {"spectrum_every": 9}})
    assert "limit 100" in str(exc.value)


def test_config_spectrum_steps_are_the_first_every_kth_and_the_last() -> None:
    config = RunConfig.model_validate(
        {"training": {"steps": 12}, "recording": {"spectrum_every": 5}}
    )
    assert [s for s in range(12) if config.spectrum_at(s)] == [0, 5, 10, 11]
    assert config.spectrum_count() == 4
    only_ends = RunConfig.model_validate({"training": {"steps": 12}})
    assert [s for s in range(12) if only_ends.spectrum_at(s)] == [0, 11]
