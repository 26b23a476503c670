"""Request and response shapes of the analysis endpoints: theory, spectra, diagnoses, scans."""

from __future__ import annotations

from enum import Enum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from depthscope.analysis.gaussian import ACTIVATIONS
from depthscope.analysis.scans import scan_limit_error
from depthscope.engine.config import Activation

# the activation registry as an enum, so the OpenAPI schema lists the choices
ActivationName = Enum("ActivationName", {name: name for name in ACTIVATIONS}, type=str)  # type: ignore[misc]

MAX_THEORY_DEPTH = 1000
MAX_SIGMA_W2 = 1000.0
MAX_SIGMA_B2 = 100.0


class TheoryOut(BaseModel):
    activation: str
    sigma_w2: float
    sigma_b2: float
    depth: int
    q: list[float | None]
    q_star: float | None
    chi1: float | None
    xi_q: float | None
    xi_c: float | None
    phase: str | None
    critical_sigma_w2: float | None


class PredictedOut(BaseModel):
    q: list[float | None]
    act_std: list[float | None]
    act_std_lo: list[float | None]
    act_std_hi: list[float | None]
    log_act_grad_norm: list[float | None]
    log_act_grad_norm_lo: list[float | None]
    log_act_grad_norm_hi: list[float | None]


class MeasuredOut(BaseModel):
    step: int
    act_std: list[float | None]
    log_act_grad_norm: list[float | None]


class RunTheoryOut(BaseModel):
    applicable: bool
    reason: str | None
    activation: str
    layers: list[str]  # the hidden blocks the lists below follow
    sigma_w2: list[float]
    sigma_b2: list[float]
    predicted: PredictedOut | None
    measured: MeasuredOut | None
    mean_field: TheoryOut | None


class SpectrumTheoryOut(BaseModel):
    applicable: bool
    mean: float | None = None
    variance: float | None = None
    layers: int = 0
    reason: str | None = None


class SpectrumOut(BaseModel):
    steps: list[int]
    singular_values: list[list[float | None]]
    theory: SpectrumTheoryOut
    skipped: str | None  # why no spectrum is computed for this network, if none is


class FindingOut(BaseModel):
    kind: str
    severity: str
    layers: list[str]
    steps: list[int]
    evidence: dict[str, Any]
    message: str
    suggestions: list[str]


class DiagnosisOut(BaseModel):
    findings: list[FindingOut]


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    min: float = Field(ge=0, le=10)
    max: float = Field(ge=0, le=10)
    num: int = Field(ge=1, le=64, description="evenly spaced values from min to max")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self

    def values(self) -> list[float]:
        if self.num == 1:
            return [self.min]
        step = (self.max - self.min) / (self.num - 1)
        return [self.min + i * step for i in range(self.num)]


class ScanRequest(BaseModel):
    """sigma_w and sigma_b are the scaled_normal init's init_gain and bias_std, so any cell
    can be started as a run."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    activation: Activation = "tanh"
    depth: int = Field(30, ge=1, le=200)
    width: int = Field(256, ge=2, le=1024)
    sigma_w: Range = Range(min=0.5, max=4.0, num=16)
    sigma_b: Range = Range(min=0.0, max=0.5, num=11)
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _within_budget(self) -> Self:
        if self.sigma_w.min <= 0:
            raise ValueError("sigma_w.min must be above 0")
        refused = scan_limit_error(self.sigma_w.num * self.sigma_b.num, self.depth, self.width)
        if refused:
            raise ValueError(refused)
        return self


class ScanOut(BaseModel):
    activation: str
    depth: int
    width: int
    sigma_w: list[float]
    sigma_b: list[float]
    log_grad_ratio: list[list[float | None]]
    last_act_std: list[list[float | None]]
    chi1: list[list[float | None]]
    predicted_log_grad_ratio: list[list[float | None]]
    critical_sigma_b: list[float]
    critical_sigma_w: list[float | None]
    seconds: float
