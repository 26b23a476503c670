"""The C statistics kernels: how they are found and checked, each kernel against torch, every
write bounds-checked, and whole runs through them against the same runs through tensor ops."""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
from array import array
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from depthscope import RunConfig, StepRecord
from depthscope.engine.activations import ACTIVATIONS
from depthscope.engine.trainer import Trainer
from depthscope.probe.backends import kernels as native
from depthscope.probe.backends.native import addresses, indices
from depthscope.probe.stats import RowHistograms, histogram_views

ROOT = Path(__file__).resolve().parents[2]
needs_kernels = pytest.mark.skipif(native.load() is None, reason="the C kernels were not built")


@pytest.fixture
def fresh_load() -> Iterator[None]:
    """No module loaded yet; the real one is loaded again after."""
    native._import.cache_clear()
    yield
    native._import.cache_clear()


# -- finding and checking them -------------------------------------------------------------------
def test_native_off_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPTHSCOPE_NATIVE", "0")
    assert native.load() is None
    assert Trainer(config()).probe.backend_name == "tensor ops"


@pytest.mark.skipif(shutil.which(os.environ.get("CC", "cc")) is None, reason="no C compiler")
def test_native_is_built_where_there_is_a_compiler() -> None:
    """`pip install -e .` built the extension here (a silent build failure would leave every
    CPU run on the slower tensor ops)."""
    module = native.load()
    assert module is not None and Path(module.__file__ or "").parent == native.HERE
    assert Trainer(config()).probe.backend_name == "C kernels"


def test_native_missing_module_falls_back_with_a_warning(
    fresh_load: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An install without a compiler has no extension module: the probe uses tensor ops."""
    monkeypatch.setattr(native, "MODULE", "depthscope.probe.backends._no_such_kernels")
    with caplog.at_level(logging.WARNING, logger="depthscope.probe.backends.kernels"):
        assert native.load() is None
    assert "were not built" in caplog.text
    trainer = Trainer(config())
    assert trainer.probe.backend_name == "tensor ops"
    assert all(v is not None for v in next(trainer.records()).layers["act_std"])


def exported(**changes: Any) -> SimpleNamespace:
    """A stand-in for the module with the tables this code expects, changed as given."""
    tables: dict[str, Any] = {
        "COLUMNS": tuple(str(r) for r in native.HIDDEN_COLUMNS),
        "READOUT": tuple(str(r) for r in native.READOUT_SLOTS),
        "HEALTH_KINDS": {
            k: i for i, k in enumerate(["none", "within", "above", "relu", "prelu", "gelu", "silu"])
        },
        "TINY": 1.0000000031710769e-30,
        "SOURCE_SHA": "",
    }
    return SimpleNamespace(**{**tables, **changes})


def test_native_check_accepts_matching_tables() -> None:
    native.check(exported())


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"COLUMNS": ("sum(z)", "spread(z)", "sum(h)")}, "COLUMNS"),
        ({"READOUT": ("accuracy", "spread(z)", "sum(z)", "norm(dh)")}, "READOUT"),
        ({"HEALTH_KINDS": {"none": 0, "within": 1}}, "HEALTH_KINDS"),
        ({"TINY": 1e-20}, "TINY"),
        ({"SOURCE_SHA": "0" * 64}, "changed since the module was built"),
    ],
)
def test_native_check_fails_loudly_on_a_mismatch(change: dict[str, Any], named: str) -> None:
    with pytest.raises(native.KernelMismatchError, match=named):
        native.check(exported(**change))


@needs_kernels
def test_native_built_module_matches_this_code() -> None:
    module = native.load()
    native.check(module)  # type: ignore[arg-type]
    if native.source_sha() is not None:  # the sources sit beside it: an editable install
        assert native.source_sha() == module.SOURCE_SHA  # type: ignore[union-attr]


def test_native_importing_the_api_loads_nothing() -> None:
    """The kernels are loaded when a probe first needs them (or by the fork server), never by
    importing the service."""
    code = (
        "import sys, depthscope.service.api, depthscope.service.app; "
        "from depthscope.probe.backends import kernels as native; "
        "print(native.MODULE in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@pytest.mark.slow
def test_native_build_without_a_compiler_leaves_the_install_working(tmp_path: Path) -> None:
    """setup.py's extension is optional: with no compiler the build warns and goes on."""
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "LDSHARED": str(tmp_path / "no-ld")}
    build = [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "lib")]
    build += ["--build-temp", str(tmp_path / "tmp")]
    done = subprocess.run(build, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "building extension" in done.stderr and "failed" in done.stderr
    assert list((tmp_path / "lib").rglob("_kernels*")) == []


# -- each kernel against torch -----------------------------------------------------------------
@pytest.fixture
def lib() -> Any:
    kernels = native.load()
    if kernels is None:
        pytest.skip("the C kernels were not built")
    return kernels


def floats(n: int, fill: float = 0.0) -> array[float]:
    return array("f", [fill] * n)


def hidden(
    lib: Any,
    z: list[torch.Tensor],
    h: list[torch.Tensor] | None = None,
    g: list[torch.Tensor] | None = None,
    kind: int = 0,
    param: float = 0.0,
    slopes: list[torch.Tensor] | None = None,
) -> list[list[float]]:
    """The hidden kernel over [batch, width] tensors (u = z), as a [layers][column] table of
    numbers in the order of native.HIDDEN_COLUMNS."""
    layers, columns = len(z), len(native.HIDDEN_COLUMNS)
    batch, width = z[0].shape
    out = floats(layers * columns)
    keep: list[torch.Tensor] = []
    z_at = addresses(z, keep)
    lib.hidden(
        z_at,
        None if h is None else addresses(h, keep),
        z_at,
        None if g is None else addresses(g, keep),
        batch,
        width,
        kind,
        param,
        None if slopes is None else addresses([s.detach() for s in slopes], keep),
        out,
        indices(range(layers * columns)),
    )
    return [list(out[i * columns : (i + 1) * columns]) for i in range(layers)]


def column(table: list[list[float]], name: str) -> list[float]:
    index = [str(r) for r in native.HIDDEN_COLUMNS].index(name)
    return [row[index] for row in table]


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
            assert column(table, f"sum({name})")[i] == pytest.approx(float(exact.sum()), rel=1e-5)
            centred = float((exact - exact.mean()).norm())
            assert column(table, f"spread({name})")[i] == pytest.approx(centred, rel=1e-4, abs=1e-6)
    assert column(table, "norm(dh)") == pytest.approx([float(x.norm()) for x in h], rel=1e-5)
    # the collapsed sigmoid layer's spread is resolved, not float noise
    assert column(table, "spread(z)")[1] / math.sqrt(3000) == pytest.approx(1e-4, rel=0.05)


def test_native_non_finite_values_stay_non_finite(lib: Any) -> None:
    z = [torch.tensor([[1.0, math.nan, 2.0]]), torch.tensor([[1.0, math.inf, 2.0]])]
    table = hidden(lib, z)
    assert not any(map(math.isfinite, column(table, "sum(z)") + column(table, "spread(z)")))


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
    RowHistograms(500, bins, *histogram_views(expected, 4, 0, 4))(rows)
    got = floats(4 * (2 + bins), -1.0)
    lo, hi, counts = range(4), range(4, 8), [8 + r * bins for r in range(4)]
    lib.histograms(
        addresses(list(rows), []),
        indices([500] * 4),
        bins,
        got,
        indices(lo),
        indices(hi),
        indices(counts),
    )
    found = torch.tensor(got)
    assert torch.equal(found[:8].nan_to_num(), expected[:8].nan_to_num())
    if values in ("nan", "inf"):  # the host empties such rows: their counts do not matter
        assert sum(got[8:]) == 0
    else:
        assert found[8:].tolist() == expected[8:].tolist()


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
    kind = lib.HEALTH_KINDS[spec.rule.kind]
    table = hidden(lib, list(u), kind=kind, param=spec.rule.param, slopes=slopes)
    healthy = [batch * width] * layers if health.healthy is None else health.healthy.sum((1, 2))
    assert column(table, "healthy(u)") == [float(c) for c in healthy]
    if health.active is not None:
        live = (health.active.sum(1) > 0).sum(1)
        assert column(table, "live(u)") == [float(c) for c in live]


def test_native_readout_accuracy_follows_torch_argmax(lib: Any) -> None:
    """The first largest logit wins and a NaN counts as largest, as in torch.argmax."""
    logits = torch.tensor([[1.0, 3.0, 3.0], [math.nan, 5.0, 1.0], [0.0, math.nan, 9.0], [2, 1, 0]])
    targets = torch.tensor([1, 0, 1, 2])
    dlogits = torch.full_like(logits, 0.5)
    out = floats(4)
    lib.readout(
        logits.data_ptr(), 4, 3, targets.data_ptr(), dlogits.data_ptr(), out, indices(range(4))
    )
    assert out[0] == float((logits.argmax(1) == targets).float().mean()) == 0.75
    assert math.isnan(out[1]) and math.isnan(out[2])  # the logits' sum and spread
    assert out[3] == pytest.approx(0.5 * math.sqrt(12))


def test_native_readout_sum_and_spread_match_torch(lib: Any) -> None:
    torch.manual_seed(3)
    logits, dlogits, out = torch.randn(20, 3) + 2, torch.randn(20, 3), floats(4)
    lib.readout(logits.data_ptr(), 20, 3, None, dlogits.data_ptr(), out, indices(range(4)))
    exact = logits.double()
    assert math.isnan(out[0])  # no targets: a regression has no accuracy
    assert out[1] == pytest.approx(float(exact.sum()), rel=1e-6)
    assert out[2] == pytest.approx(float((exact - exact.mean()).norm()), rel=1e-6)
    assert out[3] == pytest.approx(float(dlogits.norm()), rel=1e-6)


# -- every write is bounds-checked ---------------------------------------------------------------
def test_native_refuses_to_write_outside_the_output(lib: Any) -> None:
    x = torch.randn(4, 5)
    at, five = addresses([x], []), indices([20])
    for where in (8, -2, 1 << 40):
        out = floats(8, 7.0)
        with pytest.raises(IndexError, match=f"slot {where} lies outside the output of 8"):
            lib.norms(at, five, None, out, indices([where]))
        assert list(out) == [7.0] * 8  # nothing written anywhere
    with pytest.raises(IndexError):
        lib.total_norm(at, five, floats(2), 2)
    with pytest.raises(IndexError):
        lib.difference_norms(at, at, five, floats(2), indices([5]))
    with pytest.raises(IndexError):  # the readout's slots
        lib.readout(at[0], 4, 5, None, at[0], floats(3), indices([0, 1, 2, 3]))
    with pytest.raises(IndexError):  # a histogram's counts must fit whole
        lib.histograms(at, five, 4, floats(8), indices([0]), indices([1]), indices([5]))
    table = indices([0, 1, 2, 3, 4, 5, 9, -1, -1])  # one layer; its dL/dh norm outside
    with pytest.raises(IndexError, match="slot 9"):
        lib.hidden(at, None, at, at, 4, 5, 0, 0.0, None, floats(7), table)


def test_native_checks_its_arguments_before_running(lib: Any) -> None:
    x = torch.randn(4, 5)
    at = addresses([x], [])
    with pytest.raises(ValueError, match="fewer than the 9 needed"):  # a short `where` table
        lib.hidden(at, None, at, None, 4, 5, 0, 0.0, None, floats(7), indices([0, 1]))
    with pytest.raises(ValueError, match="expected 1"):  # u for another number of layers
        lib.hidden(at, None, at * 2, None, 4, 5, 0, 0.0, None, floats(9), indices(range(9)))
    with pytest.raises(ValueError, match="PReLU needs its slopes"):
        lib.hidden(
            at,
            None,
            at,
            None,
            4,
            5,
            lib.HEALTH_KINDS["prelu"],
            0.05,
            None,
            floats(7),
            indices(range(7)),
        )
    with pytest.raises(ValueError, match="unknown health kind"):
        lib.hidden(at, None, at, None, 4, 5, 99, 0.0, None, floats(7), indices(range(7)))
    with pytest.raises(TypeError, match="'f' items"):  # float64 output
        lib.norms(at, indices([20]), None, array("d", [0.0]), indices([0]))
    with pytest.raises(ValueError, match="null address"):
        lib.norms([0], indices([20]), None, floats(1), indices([0]))


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
    assert fast.probe.backend_name == "C kernels"
    monkeypatch.setenv("DEPTHSCOPE_NATIVE", "0")
    portable = Trainer(config)
    assert portable.probe.backend_name == "tensor ops"
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
