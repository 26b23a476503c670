"""Datasets: shapes, labels, standardization on the training split, seeding; digits' images."""

from __future__ import annotations

import pytest
import torch
from depthscope.engine.config import DataConfig
from depthscope.engine.data import (
    BLOB_CLASSES,
    DATASETS,
    FIXED_INPUT_DIM,
    make_dataset,
    output_dim,
    train_size,
)
from sklearn.datasets import load_digits

SYNTHETIC = [name for name in DATASETS if name not in FIXED_INPUT_DIM]


def data(name: str, **kw: object) -> DataConfig:
    return DataConfig.model_validate({"dataset": name, "n_samples": 500, **kw})


@pytest.mark.parametrize("input_dim", [2, 7])
@pytest.mark.parametrize("name", SYNTHETIC)
def test_data_shapes_and_split(name: str, input_dim: int) -> None:
    ds = make_dataset(data(name, input_dim=input_dim), seed=0)
    assert ds.x_train.shape == (train_size(500), input_dim) == (400, input_dim)
    assert ds.x_test.shape == (100, input_dim)
    assert ds.x_train.dtype == torch.float32
    if name == "teacher":
        assert ds.is_regression and ds.output_dim == 1
        assert ds.y_train.shape == (400, 1) and ds.y_train.dtype == torch.float32
    else:
        classes = BLOB_CLASSES if name == "blobs" else 2
        assert ds.n_classes == ds.output_dim == classes
        assert ds.y_train.dtype == torch.long
        assert set(ds.y_train.tolist()) == set(range(classes))


def dims(name: str) -> dict[str, int]:
    return {"input_dim": FIXED_INPUT_DIM.get(name, 3)}


@pytest.mark.parametrize("name", list(DATASETS))
def test_data_features_standardized_on_training_split(name: str) -> None:
    ds = make_dataset(data(name, **dims(name)), seed=1)
    d = ds.x_train.shape[1]
    varies = ds.x_train.std(0) > 0  # digits' corner pixels are blank in every image
    assert torch.allclose(ds.x_train.mean(0), torch.zeros(d), atol=1e-5)
    assert torch.allclose(ds.x_train.std(0)[varies], torch.ones(d)[varies], atol=1e-5)
    assert int(varies.sum()) >= d - 4


@pytest.mark.parametrize("name", list(DATASETS))
def test_data_same_seed_same_data_other_seed_other_data(name: str) -> None:
    a, b = (
        make_dataset(data(name, **dims(name)), seed=3),
        make_dataset(data(name, **dims(name)), seed=3),
    )
    c = make_dataset(data(name, **dims(name)), seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)


def test_data_moons_without_noise_lie_on_two_half_circles() -> None:
    ds = make_dataset(data("moons", noise=0.0), seed=0)
    # undo the standardization with the training split's own statistics: impossible here, so
    # check the class structure instead: each class forms one connected arc of equal size
    counts = torch.bincount(ds.y_train, minlength=2)
    assert abs(int(counts[0]) - int(counts[1])) < 40
    centres = torch.stack([ds.x_train[ds.y_train == k].mean(0) for k in range(2)])
    assert float((centres[0] - centres[1]).norm()) > 0.5


def test_data_train_size_keeps_eighty_percent() -> None:
    assert train_size(2048) == 2048 - 409
    assert train_size(16) == 13


def test_data_digits_are_sklearns_images_standardized() -> None:
    """All 1797 images, each once with its own label, split 80/20, every pixel an increasing
    affine map of scikit-learn's (the standardization)."""
    bunch = load_digits()
    raw, labels = torch.from_numpy(bunch.data), torch.from_numpy(bunch.target)
    ds = make_dataset(data("digits", n_samples=1797, input_dim=64, noise=0.0), seed=0)
    assert ds.n_classes == ds.output_dim == output_dim("digits") == 10
    assert ds.x_train.shape == (train_size(1797), 64) and ds.x_test.shape == (359, 64)
    x = torch.cat([ds.x_train, ds.x_test]).double()
    y = torch.cat([ds.y_train, ds.y_test])
    # per pixel, sorted values: x = a * raw + b with a > 0 (a blank pixel is all zeros)
    xs, rs = torch.sort(x, 0).values, torch.sort(raw, 0).values
    varies = rs[-1] > rs[0]
    a = (xs[-1] - xs[0])[varies] / (rs[-1] - rs[0])[varies]
    b = xs[0][varies] - a * rs[0][varies]
    assert bool((a > 0).all()) and bool((x[:, ~varies] == 0).all())
    assert torch.allclose(xs[:, varies], a * rs[:, varies] + b, atol=1e-4)
    back = torch.round((x[:, varies] - b) / a)  # raw pixels are whole numbers 0..16
    images = {tuple(r.tolist()): int(k) for r, k in zip(raw[:, varies], labels, strict=True)}
    assert all(images[tuple(r.tolist())] == int(k) for r, k in zip(back, y, strict=True))
    assert len({tuple(r.tolist()) for r in back}) == len(images)


def test_data_digits_subset_and_noise_follow_the_config() -> None:
    small = make_dataset(data("digits", n_samples=300, input_dim=64, noise=0.0), seed=0)
    assert small.x_train.shape == (240, 64) and small.x_test.shape == (60, 64)
    clean = make_dataset(data("digits", n_samples=300, input_dim=64, noise=0.0), seed=0)
    noisy = make_dataset(data("digits", n_samples=300, input_dim=64, noise=0.5), seed=0)
    assert torch.equal(small.x_train, clean.x_train)
    assert not torch.allclose(clean.x_train, noisy.x_train, atol=0.1)
    assert torch.equal(clean.y_train, noisy.y_train)  # the same images, noise added


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_data_a_feature_constant_on_the_training_split_is_not_scaled(seed: int) -> None:
    """In 400 training digits some pixel is blank in every image but not in the held-out
    ones; dividing by its std (0) would send those held-out values to 1e8."""
    ds = make_dataset(data("digits", n_samples=500, input_dim=64, noise=0.0), seed=seed)
    blank = ds.x_train.std(0) == 0
    assert bool((ds.x_train[:, blank] == 0).all())
    assert float(ds.x_test.abs().max()) < 50
