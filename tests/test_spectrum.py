"""audio_ext.core.stft.stft_hann against librosa.stft, which it must reproduce exactly."""
import librosa
import numpy as np
import pytest

from audio_ext.core.stft import stft_hann
from audio_ext.core.synth import techno_loop


@pytest.mark.parametrize("hop", [256, 512])
@pytest.mark.parametrize("n", [22050 * 3, 22050 * 3 + 77])
def test_equals_librosa_stft_bit_for_bit(hop, n):
    x = techno_loop(128, 3.5, sr=22050, seed=2)[:n]
    ref = librosa.stft(x, n_fft=2048, hop_length=hop)
    ours = stft_hann(x, 2048, hop)
    assert ours.dtype == np.complex64 and ours.shape == ref.shape
    np.testing.assert_array_equal(ours, ref)
    assert ours.strides == ref.strides  # same layout, so later BLAS calls see the same operands
    np.testing.assert_array_equal(stft_hann(x, 2048, hop, n_bins=38), ref[:38])


def test_short_input_and_bad_shape():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    with pytest.warns(UserWarning):
        ref = librosa.stft(x, n_fft=2048, hop_length=512)
    with pytest.warns(UserWarning):
        np.testing.assert_array_equal(stft_hann(x, 2048, 512), ref)
    with pytest.raises(ValueError, match="mono"):
        stft_hann(np.zeros((2, 4096), np.float32))
