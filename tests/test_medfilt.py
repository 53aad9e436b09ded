"""median_filter_axis against scipy.ndimage.median_filter (the 2-D filter it replaces), value for value."""
import numpy as np
import pytest
from scipy.ndimage import median_filter

from audio_ext.dataset.medfilt import median_filter_axis


@pytest.mark.parametrize("shape", [(38, 500), (5, 40), (1, 30), (12, 9), (9, 12), (3, 4), (7, 1), (0, 5)])
@pytest.mark.parametrize("size,axis", [(17, 1), (9, 0), (1, 1), (3, 0)])
def test_equals_scipys_2d_median_filter(shape, size, axis):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1] + size)
    x = rng.random(shape) ** 4  # spectrogram-like: mostly small, a few large values
    if x.size:
        x[0, 0] = np.inf if shape[0] > 2 else 0.0
        x.flat[x.size // 2] = x.flat[0 if x.size < 3 else 1]  # ties
    ref = median_filter(x, size=(1, size) if axis == 1 else (size, 1), mode="reflect")
    ours = median_filter_axis(x, size, axis)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    np.testing.assert_array_equal(ours, ref)


def test_strided_input_and_bad_arguments():
    x = np.random.default_rng(0).random((40, 60))
    np.testing.assert_array_equal(median_filter_axis(x.T, 5, 1), median_filter(x.T, size=(1, 5), mode="reflect"))
    with pytest.raises(ValueError, match="size must be odd"):
        median_filter_axis(x, 4, 0)
    with pytest.raises(ValueError, match="2-D array and axis 0 or 1"):
        median_filter_axis(x[0], 3, 0)
