"""Series downsampling: a [steps × layers] column squeezed to at most max_points columns.

Each bucket of consecutive recorded steps becomes one column holding, per layer, the bucket's
*extreme* value: its minimum or its maximum, whichever lies farther from the bucket's centre (by
ratio from the geometric mean when the bucket is all positive, as the log-coloured heatmap sees
it; by difference from the mean otherwise). A one-step spike or collapse that a mean would hide
stays visible, and every value shown really occurred at a step inside its column's bucket. Only
whole-array numpy reductions, so 100k steps × 100 layers takes tens of milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float32]


def downsample(
    steps: npt.NDArray[np.int64], values: Floats, max_points: int
) -> tuple[list[int], Floats, int]:
    """(steps of each column, values [columns, layers], bucket size). A column's step is the
    first step of its bucket. NaN (null) is ignored unless a whole bucket is NaN."""
    n = len(steps)
    if n <= max_points:
        return steps.tolist(), values, 1
    bucket = math.ceil(n / max_points)
    columns = math.ceil(n / bucket)
    # The last bucket is padded with copies of the last row: extremes stay exact, and only
    # that bucket's centre leans slightly towards its last value.
    cube = np.concatenate([values, np.repeat(values[-1:], columns * bucket - n, axis=0)])
    cube = cube.reshape(columns, bucket, -1)
    missing = np.isnan(cube)
    if missing.any():  # rare (a diverged run's last record): NaN-aware and slower
        high, low = np.fmax.reduce(cube, axis=1), np.fmin.reduce(cube, axis=1)
        count = np.maximum(bucket - missing.sum(axis=1), 1)
        cube = np.where(missing, np.float32(1), cube)  # 1: log 0, and only counted via `count`
    else:
        high, low, count = cube.max(axis=1), cube.min(axis=1), np.full(1, bucket)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if missing.any():
            mean = np.where(missing, np.float32(0), cube).sum(axis=1) / count
        else:
            mean = cube.sum(axis=1) / count
        # Geometric mean: a spike must not drag the centre its own way, as it drags the mean.
        log_centre = np.log(np.maximum(np.abs(cube), np.float32(1e-30))).sum(axis=1) / count
        by_ratio = np.log(high) + np.log(low) >= 2 * log_centre  # high/centre >= centre/low
        by_difference = high - mean >= mean - low
    pick_high = np.where(low > 0, by_ratio, by_difference)
    picked: Floats = high.copy()
    picked[~pick_high] = low[~pick_high]
    first_steps: list[int] = steps[::bucket].tolist()
    return first_steps, picked, bucket
