"""The anchor: a deliberately degraded clip that any attentive listener rates "bad" or "poor".

It is a real clip made worse in two audible ways: low-passed (a 4th-order Butterworth at
``cutoff_hz``, so it sounds muffled) and mixed with white noise ``snr_db`` below the clip's RMS.
Listeners who rate anchors "fair" or better were probably not listening; the scorer can drop them
(``survey score --exclude-failed-anchors``).
"""
from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfiltfilt

#: Low-pass corner of the anchor in Hz (telephone-like bandwidth).
CUTOFF_HZ = 3500.0
#: Noise level below the clip's RMS, in dB.
SNR_DB = 10.0


def degrade(audio: np.ndarray, sample_rate: int, seed: int, cutoff_hz: float = CUTOFF_HZ,
            snr_db: float = SNR_DB) -> np.ndarray:
    """``audio`` low-passed at ``cutoff_hz`` plus white noise at ``snr_db`` below its RMS (float32).

    The noise comes from ``numpy.random.default_rng(seed)``, so the same seed gives the same anchor.
    """
    x = np.asarray(audio, dtype=np.float64)
    if not 0 < cutoff_hz < sample_rate / 2:
        raise ValueError(f"anchor cutoff {cutoff_hz} Hz must lie between 0 and half the sample rate")
    sos = butter(4, cutoff_hz, btype="low", fs=sample_rate, output="sos")
    y = sosfiltfilt(sos, x)
    rms = float(np.sqrt(np.mean(y ** 2))) if y.size else 0.0
    noise = np.random.default_rng(seed).standard_normal(y.shape)
    y = y + noise * rms * 10.0 ** (-snr_db / 20.0)
    return y.astype(np.float32)
