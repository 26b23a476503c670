"""The metric registry: consistent at import, torch-free, the README's table made from it, and
open to a new metric built from existing reductions with nothing but its entry."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from depthscope import RunConfig
from depthscope.engine.model import Taps
from depthscope.engine.trainer import Trainer
from depthscope.probe import metrics, transfer
from depthscope.probe.metrics import (
    H_SPREAD,
    H_SUM,
    REDUCTIONS,
    REGISTRY,
    Metric,
    Reduction,
    markdown_table,
)

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_metrics_readme_table_is_the_registry() -> None:
    """The README's table is `python -m depthscope.probe.metrics`'s output, line for line."""
    assert markdown_table() in README


def test_metrics_registry_imports_no_torch() -> None:
    code = "import sys, depthscope.probe.metrics, depthscope.records; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_metrics_every_metric_is_described_and_built_from_the_vocabulary() -> None:
    for m in REGISTRY:
        assert m.needs and set(m.needs) <= set(REDUCTIONS), m.name
        assert m.title and len(m.description) > 80 and m.scale in metrics.SCALES, m.name
        assert m.public() == {
            "name": m.name,
            "title": m.title,
            "description": m.description,
            "scale": m.scale,
        }


def entry(name: str, needs: tuple[Reduction, ...], scale: str = "log") -> Metric:
    return Metric(name, needs, lambda r: r[needs[0]], "t", "d", scale)  # type: ignore[arg-type]


WITHOUT_SUM_Z = tuple(m for m in REGISTRY if metrics.Z_SUM not in m.needs)


@pytest.mark.parametrize(
    ("registry", "message"),
    [
        ((*REGISTRY, entry("grad_norm", REGISTRY[0].needs)), "repeat"),
        ((*REGISTRY, entry("x", (Reduction("u", "max"),))), "no backend computes"),
        ((*REGISTRY, entry("x", REGISTRY[0].needs, scale="cubic")), "unknown scale"),
        (WITHOUT_SUM_Z, r"no metric needs .*sum\(z\)"),
    ],
)
def test_metrics_registry_check_refuses_inconsistencies(
    registry: tuple[Metric, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        metrics._check(registry)


def test_metrics_a_new_metric_needs_only_its_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """`act_rms`, the root mean square of h, from the sum and the spread the backends already
    compute: added to the registry the host reads, it is in every record, held here to the
    network's own h (on both backends' shared host side)."""

    def rms(r: metrics.Reduced) -> list[float]:
        return [
            math.sqrt((s * s + total * total / n) / n)
            for s, total, n in zip(r[H_SPREAD], r[H_SUM], r.n, strict=True)
        ]

    act_rms = Metric("act_rms", (H_SPREAD, H_SUM), rms, "activation RMS", "…", "log")
    monkeypatch.setattr(transfer, "REGISTRY", (*REGISTRY, act_rms))
    config = RunConfig.model_validate(
        {
            "model": {"depth": 3, "width": 8, "activation": "tanh"},
            "training": {"batch_size": 16, "steps": 1},
            "data": {"n_samples": 20, "input_dim": 3},  # 16 training samples: one whole batch
        }
    )
    trainer = Trainer(config)
    net = copy.deepcopy(trainer.model)
    record = next(trainer.records())
    net.taps = taps = Taps()
    with torch.no_grad():
        logits = net(trainer.data.x_train)
    expected = [float(h.double().square().mean().sqrt()) for h in [*taps.h, logits]]
    assert record.layers["act_rms"] == pytest.approx(expected, rel=1e-4)
