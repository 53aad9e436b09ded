"""Change the tempo of generated clips (``gen_audio.py --bpm``) with the dataset tool's stretcher.

Generated clips play at the archive's ``target_bpm`` (130 in the thesis) and start on a beat. To
give them another tempo B they are stretched by the time ratio ``source_bpm / B`` with
:func:`audio_ext.dataset.beats.time_stretch` (Rubber Band when its command is installed, else the
beat-locked phase vocoder with a phase reset on every beat of the source grid), which keeps the
pitch and puts beat k at ``k * 60 / B`` seconds. Loops and walks are then cut in whole bars at B.
"""
from __future__ import annotations

import math

import numpy as np

from audio_ext.dataset.stretch import time_stretch

#: A sensible range for electronic dance music; outside it the stretch is large enough to smear transients.
MIN_BPM, MAX_BPM = 40.0, 300.0


def check_bpm(bpm: float) -> float:
    """``bpm`` as a float in [MIN_BPM, MAX_BPM]; ValueError with a one-line message otherwise."""
    if not (isinstance(bpm, (int, float)) and math.isfinite(bpm) and MIN_BPM <= bpm <= MAX_BPM):
        raise ValueError(f"--bpm must be a tempo between {MIN_BPM:g} and {MAX_BPM:g} BPM, got {bpm!r}")
    return float(bpm)


def stretched_length(n_samples: int, source_bpm: float, bpm: float) -> int:
    """Samples after stretching ``n_samples`` from ``source_bpm`` to ``bpm``: ``round(n * source_bpm / bpm)``."""
    return int(round(n_samples * float(source_bpm) / float(bpm)))


def change_tempo(audio: np.ndarray, sr: int, source_bpm: float, bpm: float, stretcher: str = "auto") -> np.ndarray:
    """``audio`` (a clip starting on a beat at ``source_bpm``) stretched to ``bpm``; float32, pitch kept.

    The result has :func:`stretched_length` samples. The same tempo returns a copy.
    """
    x = np.asarray(audio, dtype=np.float32)
    ratio = float(source_bpm) / float(bpm)
    period = 60.0 / float(source_bpm)
    beats = period * np.arange(int(x.size / sr / period) + 1)      # the clip's beat grid, seconds
    out, _ = time_stretch(x, sr, ratio, stretcher, beats=beats)
    n = stretched_length(x.size, source_bpm, bpm)
    out = np.asarray(out, dtype=np.float32)
    return out[:n] if out.size >= n else np.pad(out, (0, n - out.size))
