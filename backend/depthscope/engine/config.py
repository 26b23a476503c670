"""RunConfig: one typed, validated, bounded description of a run.

Choices are drawn from the registries, so the JSON schema, the form built from it and the code
never disagree. Every number has bounds, unknown fields are rejected, and a budget of time and
memory (budget.py) keeps any accepted request from exhausting the machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from depthscope.engine import budget
from depthscope.engine.activations import ACTIVATIONS, NORMS
from depthscope.engine.data import (
    DATASETS,
    FIXED_INPUT_DIM,
    MAX_SAMPLES,
    output_dim,
    train_size,
)
from depthscope.engine.inits import INITS
from depthscope.engine.optim import CLIPS, OPTIMIZERS

# The time and memory a run may take are bounded in budget.py (MAX_SECONDS, MAX_BYTES).
# recorded steps × layers: bounds what one run can write to the store and the stream.
MAX_RECORDED_CELLS = 10_000_000
# decision-boundary grids per run (each about 6 KB stored, one forward pass over 1,600 points).
MAX_BOUNDARY_FRAMES = 5_000
# Jacobian spectra per run (each about a second at the largest size computed; see
# depthscope.analysis.spectrum)
MAX_SPECTRA = 100


def choice(registry: Mapping[str, object], what: str) -> Any:
    """A string field whose allowed values are the keys of `registry`."""
    names = list(registry)

    def check(value: str) -> str:
        if value not in registry:
            raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(names)}")
        return value

    return Annotated[
        str,
        AfterValidator(check),
        WithJsonSchema({"type": "string", "enum": names, "description": f"one of the {what}s"}),
    ]


if TYPE_CHECKING:  # to a type checker these are plain strings; pydantic sees the choices
    Activation: TypeAlias = str
    Init: TypeAlias = str
    Norm: TypeAlias = str
    Optimizer: TypeAlias = str
    Clip: TypeAlias = str
    DatasetName: TypeAlias = str
else:
    Activation = choice(ACTIVATIONS, "activation")
    Init = choice(INITS, "init scheme")
    Norm = choice(NORMS, "normalization")
    Optimizer = choice(OPTIMIZERS, "optimizer")
    Clip = choice(dict.fromkeys(CLIPS), "clipping mode")
    DatasetName = choice(DATASETS, "dataset")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class ModelConfig(_Strict):
    depth: int = Field(10, ge=1, le=200, description="number of hidden blocks")
    width: int = Field(64, ge=1, le=1024, description="units per hidden block")
    activation: Activation = "relu"
    init: Init = "he_normal"
    init_std: float = Field(0.1, gt=0, le=10, description="weight std for init='normal'")
    init_gain: float = Field(
        1.0,
        gt=0,
        le=10,
        description="sigma_w for init='scaled_normal': weights ~ N(0, init_gain^2 / fan_in)",
    )
    bias_std: float = Field(
        0.0, ge=0, le=10, description="sigma_b for init='scaled_normal': biases ~ N(0, bias_std^2)"
    )
    norm: Norm = "none"
    norm_position: Literal["pre_activation", "post_activation"] = "pre_activation"
    residual_every: int = Field(
        0, ge=0, le=200, description="0 = no skips; k = a skip around every k blocks"
    )
    bias: bool = True


class TrainingConfig(_Strict):
    optimizer: Optimizer = "sgd"
    lr: float = Field(0.05, gt=0, le=10)
    batch_size: int = Field(128, ge=1, le=4096)
    steps: int = Field(500, ge=1, le=100_000)
    clip: Clip = "none"
    clip_value: float = Field(1.0, gt=0, le=1e6, description="max norm or max |g| when clipping")
    weight_decay: float = Field(0.0, ge=0, le=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["cpu", "cuda"] = "cpu"


class DataConfig(_Strict):
    dataset: DatasetName = "spirals"
    n_samples: int = Field(
        2048, ge=16, le=100_000, validate_default=True, description="at most 1797 for digits"
    )
    noise: float = Field(0.1, ge=0, le=10)
    input_dim: int = Field(
        2, ge=2, le=256, validate_default=True, description="64 for digits (8 × 8 pixels)"
    )

    @field_validator("n_samples")
    @classmethod
    def _samples_exist(cls, value: int, info: ValidationInfo) -> int:
        limit = MAX_SAMPLES.get(info.data.get("dataset", ""))
        if limit is not None and value > limit:
            raise ValueError(
                f"data.n_samples ({value}) exceeds the {limit} samples that dataset "
                f"{info.data['dataset']!r} holds"
            )
        return value

    @field_validator("input_dim")
    @classmethod
    def _input_dim_fits(cls, value: int, info: ValidationInfo) -> int:
        fixed = FIXED_INPUT_DIM.get(info.data.get("dataset", ""))
        if fixed is not None and value != fixed:
            raise ValueError(
                f"data.input_dim must be {fixed} for dataset {info.data['dataset']!r} "
                f"(its inputs have {fixed} features); got {value}"
            )
        return value


class RecordingConfig(_Strict):
    record_every: int = Field(1, ge=1, le=100_000, description="record statistics every k steps")
    histogram_every: int = Field(
        10, ge=0, le=100_000, description="histograms every k steps; 0 = never"
    )
    eval_every: int = Field(
        50, ge=0, le=100_000, description="held-out loss every k steps; 0 = only at the end"
    )
    boundary_every: int = Field(
        50,
        ge=0,
        le=100_000,
        description="decision-boundary grid every k steps (2-D inputs); 0 = only at the end",
    )
    spectrum_every: int = Field(
        0,
        ge=0,
        le=100_000,
        description="singular values of dh_D/dh_1 every k steps; 0 = at step 0 and the last step",
    )


class RunConfig(_Strict):
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    data: DataConfig = DataConfig()
    recording: RecordingConfig = RecordingConfig()

    @property
    def output_dim(self) -> int:
        return output_dim(self.data.dataset)

    @property
    def n_layers(self) -> int:
        """Hidden blocks plus the readout layer: the length of every per-layer list."""
        return self.model.depth + 1

    def parameter_count(self) -> int:
        m = self.model
        per_block_extra = (2 * m.width if m.norm != "none" else 0) + (
            1 if m.activation == "prelu" else 0
        )
        bias = 1 if m.bias else 0
        first = self.data.input_dim * m.width + bias * m.width
        hidden = (m.depth - 1) * (m.width * m.width + bias * m.width)
        readout = m.width * self.output_dim + bias * self.output_dim
        return first + hidden + readout + m.depth * per_block_extra

    def work(self) -> float:
        """parameters × batch_size × steps: the unit of a sweep's summed budget (sweeps.py). A
        single run's own budget is budget.py's estimate of its time and memory."""
        return float(self.parameter_count()) * self.training.batch_size * self.training.steps

    def spectrum_at(self, step: int) -> bool:
        """Whether the Jacobian spectrum is taken before `step`."""
        every = self.recording.spectrum_every
        return step == 0 or step == self.training.steps - 1 or (every > 0 and step % every == 0)

    def spectrum_count(self) -> int:
        every = self.recording.spectrum_every
        return 2 + ((self.training.steps - 1) // every if every else 0)

    def recorded_steps(self) -> int:
        """Steps the trainer records (every record_every, every evaluation, the last)."""
        return budget.recorded_steps(self)

    def boundary_frames(self) -> int:
        """Scheduled decision-boundary grids (every boundary_every steps from 0, and the end);
        a pause adds one more. Counted for every input; only 2-D classification records them."""
        every = self.recording.boundary_every
        return (self.training.steps - 1) // every + 2 if every else 1

    @model_validator(mode="after")
    def _within_limits(self) -> Self:
        m, t = self.model, self.training
        if m.residual_every and m.residual_every >= m.depth:
            raise ValueError(
                f"model.residual_every ({m.residual_every}) must be below model.depth "
                f"({m.depth}): a skip around k blocks needs k + 1 blocks"
            )
        n_train = train_size(self.data.n_samples)
        if t.batch_size > n_train:
            raise ValueError(
                f"training.batch_size ({t.batch_size}) exceeds the {n_train} training samples "
                f"of data.n_samples={self.data.n_samples}"
            )
        if m.norm == "batchnorm" and t.batch_size < 2:
            raise ValueError("training.batch_size must be at least 2 with model.norm='batchnorm'")
        if self.spectrum_count() > MAX_SPECTRA + 2:
            every = self.recording.spectrum_every
            raise ValueError(
                f"recording.spectrum_every ({every}) asks for {self.spectrum_count()} Jacobian "
                f"spectra over {self.training.steps} steps, limit {MAX_SPECTRA} plus the first "
                f"and last; raise recording.spectrum_every (0 = first and last step only)"
            )
        cells = self.recorded_steps() * self.n_layers
        if cells > MAX_RECORDED_CELLS:
            raise ValueError(
                f"recording budget exceeded: recorded steps × layers = {self.recorded_steps():,}"
                f" × {self.n_layers} = {cells:,}, limit {MAX_RECORDED_CELLS:,}; "
                f"raise recording.record_every or lower training.steps or model.depth"
            )
        if self.boundary_frames() > MAX_BOUNDARY_FRAMES:
            raise ValueError(
                f"recording.boundary_every ({self.recording.boundary_every}) gives "
                f"{self.boundary_frames():,} decision-boundary grids over "
                f"{self.training.steps:,} steps, limit {MAX_BOUNDARY_FRAMES:,}; raise it, or 0 "
                "for the last step only"
            )
        budget.check(self)  # after the structural limits: time and memory
        return self
