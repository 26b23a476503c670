"""Series downsampling: a [steps × layers] column squeezed to at most max_points columns.

Each bucket of consecutive recorded steps becomes one column holding, per layer, the bucket's
*extreme* value: its minimum or its maximum, whichever lies farther from the bucket's centre (by
ratio from the geometric mean when the bucket is all positive, as the log-coloured heatmap sees
it; by difference from the mean otherwise). A one-step spike or collapse that a mean would hide
stays visible, and every value shown really occurred at a step inside its column's bucket. Only
whole-array numpy reductions over views (no copy), and the centre is estimated from a sample of
each bucket, so 100k steps × 100 layers takes tens of milliseconds.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import numpy.typing as npt

from depthscope.records import METRICS
from depthscope.service.store import SCALARS

Floats = npt.NDArray[np.float32]
# What `metric` may name: every per-layer metric, then the per-step scalars. The one list the
# route validates against and /openapi.json declares as the parameter's enum.
SERIES_METRICS: tuple[str, ...] = (*METRICS, *SCALARS)


def downsample(
    steps: npt.NDArray[np.int64], values: Floats, max_points: int
) -> tuple[list[int], Floats, int]:
    """(steps of each column, values [columns, layers], bucket size). A column's step is the
    first step of its bucket. NaN (null) is ignored unless a whole bucket is NaN."""
    n = len(steps)
    if n <= max_points:
        return steps.tolist(), values, 1
    bucket = math.ceil(n / max_points)
    whole = n // bucket * bucket  # full buckets are a reshaped view: no copy of the data
    parts = [extremes(values[:whole].reshape(whole // bucket, bucket, -1))]
    if whole < n:
        parts.append(extremes(values[whole:][None]))
    first_steps: list[int] = steps[::bucket].tolist()
    return first_steps, np.concatenate(parts), bucket


def extremes(cube: Floats) -> Floats:
    """[buckets, bucket, layers] → [buckets, layers]: each bucket's min or max, whichever is
    farther from the bucket's centre."""
    high, low = cube.max(axis=1), cube.min(axis=1)
    if np.isnan(high).any():  # max propagates NaN: only then the slower NaN-aware pass
        high, low = np.fmax.reduce(cube, axis=1), np.fmin.reduce(cube, axis=1)
    # The centre from a sample of up to 16 values per bucket: a single spike cannot drag it
    # far, and the logarithm, the costliest step, then touches a fraction of the data.
    stride = max(1, cube.shape[1] // 16)
    sample = cube[:, ::stride]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-null sample: centre NaN
        # Geometric mean for all-positive buckets, as the log-coloured heatmap sees them.
        log_centre = np.nanmean(np.log(np.maximum(np.abs(sample), np.float32(1e-30))), axis=1)
        by_ratio = np.log(high) + np.log(low) >= 2 * log_centre  # high/centre >= centre/low
        mean = np.nanmean(sample, axis=1)
        by_difference = high - mean >= mean - low
    pick_high = np.where(low > 0, by_ratio, by_difference)
    picked: Floats = high.copy()
    picked[~pick_high] = low[~pick_high]
    return picked
