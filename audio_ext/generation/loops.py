"""Musical time for generated clips: whole-bar loops, click-free loop points and beat-grid joins.

A bar is 4 beats (4/4 time, as in the house/techno/electro of the thesis); one beat lasts
``60 / bpm`` seconds. Positions on the grid are computed from the exact (fractional) number of
samples and rounded once, to the nearest sample (ties to even, Python's ``round``), so that
rounding errors do not pile up over many bars: bar ``k`` starts at ``round(k * 4 * 60 * sr / bpm)``
samples. Audio is a float array whose last axis is time (mono ``[T]`` or ``[channels, T]``).

Loop points are made seamless by folding: the audio that follows the loop end in the clip (the
music goes on there) is cross-faded into the loop's head with an equal-power (sin/cos) fade, so
the sample after the last one of the loop is, at the loop point, the original continuation.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np

BEATS_PER_BAR = 4


def _check_rate_tempo(sr: int, bpm: float) -> None:
    if not (isinstance(sr, (int, np.integer)) and sr > 0):
        raise ValueError(f"sample rate must be a positive integer (Hz), got {sr!r}")
    if not (isinstance(bpm, (int, float, np.floating, np.integer)) and math.isfinite(bpm) and bpm > 0):
        raise ValueError(f"tempo must be a positive number of beats per minute, got {bpm!r}")


def beats_to_samples(beats: float, sr: int, bpm: float) -> int:
    """Samples spanned by ``beats`` beats at ``bpm`` and sample rate ``sr`` (Hz), rounded to nearest."""
    _check_rate_tempo(sr, bpm)
    return int(round(beats * 60.0 * sr / float(bpm)))


def bars_to_samples(bars: float, sr: int, bpm: float) -> int:
    """Samples spanned by ``bars`` bars of 4 beats: ``round(bars * 4 * 60 / bpm * sr)``."""
    return beats_to_samples(bars * BEATS_PER_BAR, sr, bpm)


def whole_bars(n_samples: int, sr: int, bpm: float) -> int:
    """The largest number of whole bars that fit in ``n_samples`` samples."""
    _check_rate_tempo(sr, bpm)
    bars = int(math.floor(n_samples * bpm / (BEATS_PER_BAR * 60.0 * sr)))
    while bars > 0 and bars_to_samples(bars, sr, bpm) > n_samples:  # guard the float floor
        bars -= 1
    while bars_to_samples(bars + 1, sr, bpm) <= n_samples:
        bars += 1
    return max(bars, 0)


def grid_positions(n_units: int, sr: int, bpm: float, beats_per_unit: float = BEATS_PER_BAR,
                   offset: int = 0) -> np.ndarray:
    """Sample positions of ``n_units + 1`` grid lines, ``beats_per_unit`` beats apart, from ``offset``.

    With the default 4 beats per unit these are bar lines; with 1 they are beats. Each position is
    rounded separately from its exact value, so the error never exceeds half a sample.
    """
    _check_rate_tempo(sr, bpm)
    return np.array([offset + beats_to_samples(k * beats_per_unit, sr, bpm) for k in range(n_units + 1)],
                    dtype=np.int64)


def _as_audio(audio) -> np.ndarray:
    x = np.asarray(audio)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError("audio is empty")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"audio must be floating point, got {x.dtype}")
    return x


def trim_to_bars(audio, sr: int, bpm: float, bars: Optional[int] = None, offset: int = 0) -> np.ndarray:
    """Cut ``audio`` to a whole number of bars starting at sample ``offset`` (a beat, ideally a downbeat).

    ``bars=None`` keeps as many whole bars as fit. The result has exactly
    ``bars_to_samples(bars, sr, bpm)`` samples. Raises ValueError when not even one bar (or not the
    requested number) fits.
    """
    x = _as_audio(audio)
    available = x.shape[-1] - int(offset)
    if offset < 0 or available <= 0:
        raise ValueError(f"offset {offset} is outside the clip of {x.shape[-1]} samples")
    fit = whole_bars(available, sr, bpm)
    if bars is None:
        bars = fit
    if bars < 1 or bars > fit:
        raise ValueError(f"clip of {available / sr:.3f} s holds {fit} whole bar(s) at {bpm:g} BPM "
                         f"(one bar = {bars_to_samples(1, sr, bpm) / sr:.3f} s); cannot cut {bars}")
    n = bars_to_samples(bars, sr, bpm)
    return x[..., offset:offset + n].copy()


def equal_power_fades(n: int) -> tuple:
    """Fade-in and fade-out gains for an ``n``-sample equal-power crossfade (sin/cos, sum of squares 1).

    The fade-in starts at exactly 0 and the fade-out at exactly 1, so the first crossfaded sample is
    the outgoing signal unchanged.
    """
    t = np.arange(n, dtype=np.float64) / max(n, 1)
    return np.sin(0.5 * np.pi * t), np.cos(0.5 * np.pi * t)


def make_seamless_loop(audio, sr: int, crossfade_s: float, loop_samples: Optional[int] = None) -> np.ndarray:
    """Return the first ``loop_samples`` samples of ``audio`` with a click-free loop point.

    The ``F = round(crossfade_s * sr)`` samples that follow the loop end in ``audio`` (its
    continuation) are faded out over the loop's first ``F`` samples while the head fades in, so
    playing the result in a loop continues exactly as the original clip did at the loop end.
    ``loop_samples`` defaults to ``len - F``; the caller passes a whole-bar length
    (:func:`bars_to_samples`) to keep the loop on the beat. Needs ``loop_samples + F`` samples of input.
    """
    x = _as_audio(audio)
    if not (isinstance(crossfade_s, (int, float)) and math.isfinite(crossfade_s) and crossfade_s >= 0):
        raise ValueError(f"crossfade must be a non-negative number of seconds, got {crossfade_s!r}")
    n_fade = int(round(crossfade_s * sr))
    total = x.shape[-1]
    n_loop = total - n_fade if loop_samples is None else int(loop_samples)
    if n_loop < 1:
        raise ValueError(f"clip of {total} samples is too short for a {n_fade}-sample crossfade")
    if n_fade > n_loop:
        raise ValueError(f"crossfade of {n_fade} samples is longer than the loop of {n_loop} samples")
    if n_loop + n_fade > total:
        raise ValueError(f"a loop of {n_loop} samples with a {n_fade}-sample crossfade needs "
                         f"{n_loop + n_fade} samples of audio; the clip has {total}")
    out = x[..., :n_loop].astype(np.float64, copy=True)
    if n_fade:
        fade_in, fade_out = equal_power_fades(n_fade)
        out[..., :n_fade] = x[..., :n_fade] * fade_in + x[..., n_loop:n_loop + n_fade] * fade_out
    return out.astype(x.dtype, copy=False)


def loop_clip(audio, sr: int, bpm: float, bars: Optional[int] = None, crossfade_s: float = 0.01,
              offset: int = 0) -> np.ndarray:
    """A whole-bar seamless loop from ``audio``: :func:`trim_to_bars` plus :func:`make_seamless_loop`.

    ``bars=None`` takes the most whole bars that leave room for the crossfade after the loop end.
    """
    x = _as_audio(audio)
    if offset < 0 or offset >= x.shape[-1]:
        raise ValueError(f"offset {offset} is outside the clip of {x.shape[-1]} samples")
    x = x[..., offset:]
    n_fade = int(round(max(crossfade_s, 0) * sr))
    fit = whole_bars(x.shape[-1] - n_fade, sr, bpm) if x.shape[-1] > n_fade else 0
    if bars is None:
        bars = fit
    if bars < 1 or bars > fit:
        raise ValueError(f"clip of {x.shape[-1] / sr:.3f} s holds {fit} whole bar(s) at {bpm:g} BPM with room "
                         f"for a {crossfade_s * 1000:g} ms crossfade (one bar = "
                         f"{bars_to_samples(1, sr, bpm) / sr:.3f} s); cannot loop {bars}")
    return make_seamless_loop(x, sr, crossfade_s, loop_samples=bars_to_samples(bars, sr, bpm))


def join_on_beats(clips: Sequence, sr: int, bpm: float, bars_each: int, crossfade_s: float = 0.01,
                  offsets: Optional[Sequence[int]] = None) -> np.ndarray:
    """Concatenate ``clips`` into one piece, each contributing ``bars_each`` bars, joined on bar lines.

    Clip ``k`` starts at bar line ``k * bars_each`` of one continuous grid
    (``grid_positions(len(clips), sr, bpm, 4 * bars_each)``), so joins fall on beats and the piece
    keeps its tempo. At each join the outgoing clip's continuation fades out while the incoming clip
    fades in over ``crossfade_s`` seconds (equal power). ``offsets`` (samples) give each clip's first
    beat (default 0). Every clip but the last needs its bars plus the crossfade of audio.
    """
    if len(clips) == 0:
        raise ValueError("no clips to join")
    if not (isinstance(bars_each, (int, np.integer)) and bars_each >= 1):
        raise ValueError(f"bars per clip must be a positive integer, got {bars_each!r}")
    xs: List[np.ndarray] = [_as_audio(c) for c in clips]
    lead_shape = xs[0].shape[:-1]
    if any(x.shape[:-1] != lead_shape for x in xs):
        raise ValueError("clips differ in their number of channels")
    offsets = [0] * len(xs) if offsets is None else [int(o) for o in offsets]
    if len(offsets) != len(xs):
        raise ValueError(f"{len(offsets)} offsets for {len(xs)} clips")
    n_fade = int(round(max(crossfade_s, 0) * sr))
    pos = grid_positions(len(xs), sr, bpm, beats_per_unit=BEATS_PER_BAR * bars_each)
    seg = np.diff(pos)
    if n_fade > seg.min():
        raise ValueError(f"crossfade of {n_fade} samples is longer than {bars_each} bar(s)")
    for k, (x, o) in enumerate(zip(xs, offsets)):
        need = o + seg[k] + (n_fade if k + 1 < len(xs) else 0)
        if o < 0 or x.shape[-1] < need:
            raise ValueError(f"clip {k} has {x.shape[-1] / sr:.3f} s from its first beat at {o} samples; "
                             f"{bars_each} bar(s) at {bpm:g} BPM plus the crossfade need {need / sr:.3f} s")
    out = np.zeros(lead_shape + (int(pos[-1]),), dtype=np.float64)
    fade_in, fade_out = equal_power_fades(n_fade)
    for k, (x, o) in enumerate(zip(xs, offsets)):
        start, n = int(pos[k]), int(seg[k])
        out[..., start:start + n] = x[..., o:o + n]
        if k > 0 and n_fade:
            prev, po, pn = xs[k - 1], offsets[k - 1], int(seg[k - 1])
            tail = prev[..., po + pn:po + pn + n_fade]
            out[..., start:start + n_fade] = x[..., o:o + n_fade] * fade_in + tail * fade_out
    return out.astype(xs[0].dtype, copy=False)


def estimate_beat_offset(audio, sr: int, bpm: float, hop_length: int = 512) -> int:
    """Where the beat grid starts (samples, in ``[0, one beat)``) in a clip at a known tempo.

    Folds librosa's onset-strength envelope onto one beat period and returns the phase with the
    most onset energy; generated clips at the archive's target tempo usually start near a beat
    because training clips were cut on beats, but this lets loops start on the strongest pulse.
    """
    import librosa  # lazy: heavy: ~1 s to import (numba JIT); only this path needs it
    x = _as_audio(audio)
    mono = x if x.ndim == 1 else x.reshape(-1, x.shape[-1]).mean(axis=0)
    env = librosa.onset.onset_strength(y=mono.astype(np.float32), sr=sr, hop_length=hop_length)
    period = 60.0 * sr / float(bpm) / hop_length  # frames per beat (fractional)
    n_phase = max(int(round(period)), 1)
    score = np.zeros(n_phase)
    for p in range(n_phase):
        beats = np.round(p + np.arange(0, (env.shape[-1] - p) / period) * period).astype(int)
        beats = beats[beats < env.shape[-1]]
        score[p] = env[beats].mean() if beats.size else 0.0
    return int(round(int(np.argmax(score)) * hop_length)) % max(beats_to_samples(1, sr, bpm), 1)
