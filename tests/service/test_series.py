"""Series downsampling: bounded columns, extremes kept, nulls only where a bucket is all null."""

from __future__ import annotations

import numpy as np
from depthscope.service.series import downsample


def test_downsample_passes_short_series_through() -> None:
    steps = np.arange(10, dtype=np.int64)
    values = np.ones((10, 3), dtype=np.float32)
    out_steps, out, bucket = downsample(steps, values, 20)
    assert out_steps == list(range(10)) and bucket == 1 and out is values


def test_downsample_bounds_columns_and_keeps_spikes_and_dips() -> None:
    n, layers = 1001, 2
    steps = np.arange(n, dtype=np.int64) * 5
    values = np.ones((n, layers), dtype=np.float32)
    values[123, 0] = 1e6  # a one-step spike in layer 0
    values[777, 1] = 1e-6  # a one-step collapse in layer 1
    out_steps, out, bucket = downsample(steps, values, 100)
    assert bucket == 11 and out.shape == (len(out_steps), layers) and len(out_steps) <= 100
    assert out_steps[:3] == [0, 55, 110]
    assert out[123 // bucket, 0] == np.float32(1e6)
    assert out[777 // bucket, 1] == np.float32(1e-6)
    others = np.delete(out[:, 0], 123 // bucket)
    np.testing.assert_array_equal(others, 1.0)


def test_downsample_signed_values_pick_farthest_from_mean() -> None:
    values = np.array([[0.0], [0.1], [-5.0], [0.2]], dtype=np.float32)
    _, out, bucket = downsample(np.arange(4, dtype=np.int64), values, 1)
    assert bucket == 4 and out[0, 0] == np.float32(-5.0)


def test_downsample_ignores_nan_unless_whole_bucket() -> None:
    values = np.array([[np.nan], [2.0], [np.nan], [np.nan]], dtype=np.float32)
    _, out, bucket = downsample(np.arange(4, dtype=np.int64), values, 2)
    assert bucket == 2 and out[0, 0] == 2.0 and np.isnan(out[1, 0])
