"""Loudness normalisation of survey clips: every clip at the same RMS level, none clipping.

Listeners prefer the louder of two otherwise equal sounds, so level must not decide a vote. The
measure is plain RMS over the whole clip (dB relative to a full-scale square wave, "dBFS RMS").
All clips of one survey get the same target; when a clip's peak would pass ``peak_limit`` at that
target, the target of *every* clip is lowered together, so the levels stay equal and nothing clips.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np

#: Default RMS target in dBFS (about where broadcast loudness targets put music without a limiter).
TARGET_DBFS = -23.0
#: Highest sample magnitude allowed after normalisation (16-bit full scale is 32767/32768).
PEAK_LIMIT = 0.99


def rms_db(audio: np.ndarray) -> float:
    """RMS level of ``audio`` in dBFS (``-inf`` for digital silence)."""
    x = np.asarray(audio, dtype=np.float64)
    ms = float(np.mean(np.square(x))) if x.size else 0.0
    return 10.0 * math.log10(ms) if ms > 0 else -math.inf


def normalise_set(clips: Sequence[np.ndarray], target_dbfs: float = TARGET_DBFS,
                  peak_limit: float = PEAK_LIMIT) -> Tuple[List[np.ndarray], float]:
    """Scale every clip to one common RMS level; returns (float32 clips, the level used in dBFS).

    The level is ``target_dbfs`` or lower, as far as needed for the loudest peak to stay at or
    under ``peak_limit``. Raises ValueError for a silent clip (it cannot be brought to any level).
    """
    levels = [rms_db(c) for c in clips]
    for i, level in enumerate(levels):
        if not math.isfinite(level):
            raise ValueError(f"clip {i} is digitally silent; it cannot be loudness-normalised")
    target = float(target_dbfs)
    for c, level in zip(clips, levels):
        peak = float(np.max(np.abs(c))) if np.size(c) else 0.0
        if peak > 0:
            # the level at which this clip's peak would sit exactly at the limit
            target = min(target, level + 20.0 * math.log10(peak_limit / peak))
    out = [(np.asarray(c, np.float64) * 10.0 ** ((target - level) / 20.0)).astype(np.float32)
           for c, level in zip(clips, levels)]
    return out, target
