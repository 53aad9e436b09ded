"""A median filter along one axis of a 2-D array, equal to ``scipy.ndimage.median_filter`` but several times faster.

The beat tracker's harmonic-percussive split (:func:`audio_ext.dataset.beats._kick_salience`) median-
filters a 38 x ~10,000 spectrogram across 17 frames and across 9 bins for every one-minute
segment. scipy's n-dimensional rank filter gathers and selects every window anew; its 1-D path
keeps a sorted window as it slides (O(log k) per step). Here every line of the array (a row for
``axis=1``, a column for ``axis=0``) is padded the way scipy's ``mode='reflect'`` pads (``d c b a |
a b c d | d c b a``, numpy's ``'symmetric'``), the padded lines are laid end to end, and one 1-D
median filter runs over the lot. Each kept output's window lies inside its own padded line, so
the result is the same selection, hence the same numbers, as the 2-D filter (issue 13: ~6x along
rows, ~2x along columns on the devset's spectrograms).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter


def median_filter_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """``scipy.ndimage.median_filter(x, size=(1, size) or (size, 1), mode='reflect')`` of a 2-D array.

    ``size``: the window length (odd, >= 1) along ``axis`` (0 or 1). Lines shorter than half the
    window, where reflecting once does not cover the padding, go through scipy itself.
    """
    x = np.asarray(x)
    if x.ndim != 2 or axis not in (0, 1):
        raise ValueError(f"median_filter_axis: expected a 2-D array and axis 0 or 1, got shape {x.shape}, axis {axis}")
    if size < 1 or size % 2 == 0:
        raise ValueError(f"median_filter_axis: size must be odd and positive, got {size}")
    half = size // 2
    lines = x if axis == 1 else x.T
    n = lines.shape[1]
    if n <= half or lines.shape[0] == 0:
        return median_filter(x, size=(1, size) if axis == 1 else (size, 1), mode="reflect")
    padded = np.pad(lines, ((0, 0), (half, half)), mode="symmetric")  # a C-ordered copy
    flat = median_filter(padded.reshape(-1), size=size, mode="reflect")
    out = flat.reshape(padded.shape)[:, half:half + n]
    return np.ascontiguousarray(out if axis == 1 else out.T)
