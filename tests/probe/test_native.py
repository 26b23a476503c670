"""The C statistics kernels: how they are built and found, each kernel against torch, and whole
runs through them against the same runs through the probe's tensor ops."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from depthscope import RunConfig, StepRecord
from depthscope.engine.activations import ACTIVATIONS
from depthscope.engine.trainer import Trainer
from depthscope.probe.backends import kernels as native
from depthscope.probe.stats import RowHistograms

needs_kernels = pytest.mark.skipif(
    native.kernels() is None, reason="no C compiler to build the kernels"
)


@pytest.fixture
def fresh_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty cache directory and no library loaded yet; the real one is loaded again after."""
    monkeypatch.setenv("DEPTHSCOPE_CACHE_DIR", str(tmp_path))
    native._load.cache_clear()
    yield tmp_path
    native._load.cache_clear()


# -- building and finding them ---------------------------------------------------------------
def test_native_off_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPTHSCOPE_NATIVE", "0")
    assert native.kernels() is None
    assert Trainer(config()).probe.kernels is None


def test_native_without_compiler_falls_back_with_a_warning(
    fresh_load: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CC", str(fresh_load / "no-such-cc"))
    with caplog.at_level(logging.WARNING, logger="depthscope.probe.backends.kernels"):
        assert native.kernels() is None
    assert "no C compiler" in caplog.text
    trainer = Trainer(config())
    assert trainer.probe.kernels is None
    assert all(v is not None for v in next(trainer.records()).layers["act_std"])


def test_native_compiler_error_is_reported(
    fresh_load: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failing = fresh_load / "failing-cc"
    failing.write_text("#!/bin/sh\necho 'kernels.c:1: error: broken' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setenv("CC", str(failing))
    with caplog.at_level(logging.WARNING, logger="depthscope.probe.backends.kernels"):
        assert native.kernels() is None
    assert "kernels.c:1: error: broken" in caplog.text
    assert list(fresh_load.glob("*.so*")) == []  # no half-written library left behind


@needs_kernels
def test_native_build_is_cached_by_source_and_flags(fresh_load: Path) -> None:
    built = native.build()
    assert built.parent == fresh_load and built == native.library_path()
    stamp = built.stat().st_mtime_ns
    assert native.build() == built and built.stat().st_mtime_ns == stamp  # not rebuilt
    assert built.stat().st_mode & 0o555 == 0o555  # any user may load it (the Docker image's)
    assert native.kernels() is not None


# -- each kernel against torch -----------------------------------------------------------------
@pytest.fixture
def lib() -> Any:
    kernels = native.kernels()
    if kernels is None:
        pytest.skip("no C compiler to build the kernels")
    return kernels


def hidden(
    lib: Any,
    z: list[torch.Tensor],
    h: list[torch.Tensor] | None = None,
    g: list[torch.Tensor] | None = None,
    kind: int = 0,
    param: float = 0.0,
    slopes: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """ds_hidden over [batch, width] tensors (u = z), as a [layers, columns] table of numbers
    named by native.HIDDEN_COLUMNS."""
    layers, columns = len(z), len(native.HIDDEN_COLUMNS)
    batch, width = z[0].shape
    where = [i * columns + c for i in range(layers) for c in range(columns)]
    out, per_unit = torch.zeros(layers * columns), torch.zeros(width, dtype=torch.int32)
    z_at = native.addresses(z)
    lib.ds_hidden(
        layers,
        batch,
        width,
        z_at,
        None if h is None else native.addresses(h),
        z_at,
        None if g is None else native.addresses(g),
        kind,
        param,
        None if slopes is None else native.addresses(slopes),
        per_unit.data_ptr(),
        out.data_ptr(),
        native.indices(where),
    )
    return out.view(layers, columns)


def column(table: torch.Tensor, name: str) -> list[float]:
    return table[:, native.HIDDEN_COLUMNS.index(name)].tolist()


def test_native_moments_match_torch_in_double(lib: Any) -> None:
    """Sums and spreads in one pass about a shift (the first row's mean), against float64,
    also where the first row is far from the rest and where the values collapse to 0.5."""
    torch.manual_seed(0)
    outlier_first = torch.randn(30, 100)
    outlier_first[0] = 1000.0
    z = [torch.randn(30, 100), 0.5 + 1e-4 * torch.randn(30, 100), outlier_first]
    h = [torch.full((30, 100), 7.0), torch.randn(30, 100).relu(), 3 + torch.randn(30, 100)]
    table = hidden(lib, z, h, g=h)
    for name, values in (("z", z), ("h", h)):
        for i, x in enumerate(values):
            exact = x.double()
            assert column(table, f"{name}_sum")[i] == pytest.approx(float(exact.sum()), rel=1e-5)
            centred = float((exact - exact.mean()).norm())
            assert column(table, f"{name}_norm")[i] == pytest.approx(centred, rel=1e-4, abs=1e-6)
    assert column(table, "g_norm") == pytest.approx([float(x.norm()) for x in h], rel=1e-5)
    # the collapsed sigmoid layer's spread is resolved, not float noise
    assert column(table, "z_norm")[1] / math.sqrt(3000) == pytest.approx(1e-4, rel=0.05)


def test_native_non_finite_values_stay_non_finite(lib: Any) -> None:
    z = [torch.tensor([[1.0, math.nan, 2.0]]), torch.tensor([[1.0, math.inf, 2.0]])]
    table = hidden(lib, z)
    assert not any(map(math.isfinite, column(table, "z_sum") + column(table, "z_norm")))


@pytest.mark.parametrize("values", ["normal", "ties", "constant", "nan", "inf"])
def test_native_histograms_match_the_tensor_ops(lib: Any, values: str) -> None:
    torch.manual_seed(1)
    rows = {
        "normal": torch.randn(4, 500),
        "ties": torch.randint(0, 5, (4, 500)).float(),
        "constant": torch.full((4, 500), 3.0),
        "nan": torch.randn(4, 500).index_fill_(1, torch.tensor([7]), math.nan),
        "inf": torch.randn(4, 500).index_fill_(1, torch.tensor([7]), -math.inf),
    }[values]
    bins = 32
    expected = torch.zeros(4 * (2 + bins))
    RowHistograms(4, 500, bins, expected)(rows)
    got = torch.full((4 * (2 + bins),), -1.0)
    lo, hi, counts = range(4), range(4, 8), [8 + r * bins for r in range(4)]
    lib.ds_histograms(
        4,
        native.addresses(list(rows)),
        native.indices([500] * 4),
        bins,
        got.data_ptr(),
        native.indices(lo),
        native.indices(hi),
        native.indices(counts),
    )
    assert torch.equal(got[:8].nan_to_num(), expected[:8].nan_to_num())
    if values in ("nan", "inf"):  # the host empties such rows: their counts do not matter
        assert sum(got[8:].tolist()) == 0
    else:
        assert got[8:].tolist() == expected[8:].tolist()


@pytest.mark.parametrize("name", [n for n, spec in ACTIVATIONS.items() if spec.rule])
def test_native_health_counts_match_the_activation_masks(lib: Any, name: str) -> None:
    """Each activation's rule as C applies it against the masks its `health` makes."""
    spec = ACTIVATIONS[name]
    torch.manual_seed(2)
    layers, batch, width = 3, 50, 16
    u = 4 * torch.randn(layers, batch, width)
    u[1, :, :5] = -1.0  # five units of layer 2 pass no gradient through a ReLU
    modules = [spec.make() for _ in range(layers)]
    if name == "prelu":  # one slope dead, one tiny (saturated), one ordinary
        for module, slope in zip(modules, (0.0, 0.01, 0.25), strict=True):
            module.get_parameter("weight").data.fill_(slope)
    health = spec.health(u, modules, torch.empty_like(u))
    assert spec.rule is not None
    slopes = [m.get_parameter("weight") for m in modules] if name == "prelu" else None
    kind = native.HEALTH_KINDS[spec.rule.kind]
    table = hidden(lib, list(u), kind=kind, param=spec.rule.param, slopes=slopes)
    healthy = [batch * width] * layers if health.healthy is None else health.healthy.sum((1, 2))
    assert column(table, "healthy") == [float(c) for c in healthy]
    if health.active is not None:
        live = (health.active.sum(1) > 0).sum(1)
        assert column(table, "live") == [float(c) for c in live]


def test_native_readout_accuracy_follows_torch_argmax(lib: Any) -> None:
    """The first largest logit wins and a NaN counts as largest, as in torch.argmax."""
    logits = torch.tensor([[1.0, 3.0, 3.0], [math.nan, 5.0, 1.0], [0.0, math.nan, 9.0], [2, 1, 0]])
    targets = torch.tensor([1, 0, 1, 2])
    dlogits = torch.full_like(logits, 0.5)
    out = torch.zeros(4)
    lib.ds_readout(
        logits.data_ptr(),
        4,
        3,
        targets.data_ptr(),
        dlogits.data_ptr(),
        out.data_ptr(),
        native.indices([0, 1, 2, 3]),
    )
    assert float(out[0]) == float((logits.argmax(1) == targets).float().mean()) == 0.75
    assert math.isnan(out[1]) and math.isnan(out[2])
    assert float(out[3]) == pytest.approx(0.5 * math.sqrt(12))


# -- whole runs: the C path against the tensor-op path -------------------------------------------
def config(**model: Any) -> RunConfig:
    data = model.pop("data", {"n_samples": 300})
    return RunConfig.model_validate(
        {
            "model": {"depth": 5, "width": 24, **model},
            "training": {"batch_size": 64, "steps": 4, "optimizer": "adam", "lr": 0.01},
            "data": data,
            "recording": {"histogram_every": 2, "eval_every": 0},
        }
    )


def run_both(config: RunConfig, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    fast = Trainer(config)
    assert fast.probe.kernels is not None
    monkeypatch.setenv("DEPTHSCOPE_NATIVE", "0")
    portable = Trainer(config)
    assert portable.probe.kernels is None
    return list(fast.records()), list(portable.records())


def assert_records_agree(fast: StepRecord, portable: StepRecord, rel: float = 1e-4) -> None:
    assert fast.step == portable.step and fast.clipped == portable.clipped
    for name in ("loss", "accuracy", "grad_norm_total"):
        a, b = getattr(fast, name), getattr(portable, name)
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-4), name
    for metric, values in portable.layers.items():
        if metric in ("saturation", "dead"):
            assert fast.layers[metric] == values, metric
        else:
            assert fast.layers[metric] == pytest.approx(values, rel=rel, abs=1e-6), metric
    assert (fast.histograms is None) == (portable.histograms is None)
    if fast.histograms and portable.histograms:
        for kind, hist in portable.histograms.items():
            assert fast.histograms[kind].lo == pytest.approx(hist.lo, rel=1e-6)
            assert fast.histograms[kind].hi == pytest.approx(hist.hi, rel=1e-6)
            # the same float operations in the same order: the same bins, value for value
            assert fast.histograms[kind].counts == hist.counts


@needs_kernels
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize(
    ("norm", "position"),
    [("none", "pre_activation"), ("batchnorm", "pre_activation"), ("layernorm", "post_activation")],
)
def test_native_run_matches_tensor_ops(
    activation: str, norm: str, position: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(activation=activation, norm=norm, norm_position=position, residual_every=2)
    for fast, portable in zip(*run_both(cfg, monkeypatch), strict=True):
        assert_records_agree(fast, portable)


@needs_kernels
def test_native_run_matches_on_regression_and_large_layers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression (no accuracy) and layers large enough for the hook path. On 512 × 512
    weights the tensor ops' float32 norm of the update drifts by ~2e-4 of itself; the
    kernels' blockwise sums agree with a float64 reference to 1e-6."""
    cfg = config(activation="tanh", width=512, data={"dataset": "teacher", "n_samples": 200})
    trainer = Trainer(cfg)
    before = [w.detach().clone().double() for w in trainer.probe.weights]
    first = next(trainer.records())
    update = [
        float((w.detach().double() - b).norm() / b.norm())
        for w, b in zip(trainer.probe.weights, before, strict=True)
    ]
    assert first.layers["update_ratio"] == pytest.approx(update, rel=1e-6)
    fast, portable = run_both(cfg, monkeypatch)
    assert fast[0].accuracy is None
    for a, b in zip(fast, portable, strict=True):
        assert_records_agree(a, b, rel=1e-3)
