"""A small deterministic techno-loop synthesiser for tests, the demo and benchmarks.

Real DJ sets cannot ship with the project, yet the slicer, the codec and the metrics need music with
a known beat grid. :func:`techno_loop` renders four-to-the-floor audio whose kick onsets sit exactly
on the beat times that :func:`beat_grid` returns; :func:`dj_set` joins such loops into a multi-minute
"set" with a tempo change between segments and returns the true beat times with it.

Everything is float32 mono in [-1, 1] at ``sr`` Hz; times are in seconds; tempi in BPM.
The same arguments always give the same samples (numpy's PCG64 seeded by ``seed``).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence, Tuple

import numpy as np
from scipy.signal import lfilter

#: Parts :func:`techno_loop` knows; pass a subset as ``parts``.
PARTS = ("kick", "hat", "bass", "chord", "noise", "offbass")

# Minor-pentatonic-ish bass notes (semitones above the root) and chord shapes (semitones).
_BASS_STEPS = (0, 0, 3, 5, 7, 10, 12)
_CHORDS = ((0, 3, 7, 10), (0, 3, 7, 12), (-2, 2, 5, 9), (0, 5, 7, 10))


class SynthSet(NamedTuple):
    """A synthetic DJ set: the audio, the true beat times (s) and each segment's (start_s, bpm)."""

    audio: np.ndarray
    beats: np.ndarray
    segments: Tuple[Tuple[float, float], ...]


def beat_grid(bpm: float, seconds: float, offset: float = 0.0) -> np.ndarray:
    """Beat times in seconds, ``offset + k * 60 / bpm`` for every k with the time in [0, seconds)."""
    if not (bpm > 0 and math.isfinite(bpm)):
        raise ValueError(f"beat_grid: bpm must be positive and finite, got {bpm!r}")
    period = 60.0 / bpm
    first = offset - math.floor(offset / period) * period if offset < 0 else offset
    n = max(0, int(math.ceil((seconds - first) / period - 1e-9)))
    return first + period * np.arange(n, dtype=np.float64)


def _kick(sr: int, rng: np.random.Generator) -> np.ndarray:
    """A 909-style kick: a sine sweeping 160 -> 48 Hz with a fast click, 0.35 s long."""
    t = np.arange(int(0.35 * sr)) / sr
    f_hi, f_lo, k = 160.0, 48.0, 28.0
    # Instantaneous frequency f(t) = f_lo + (f_hi - f_lo) exp(-k t); phase is its integral.
    phase = 2 * np.pi * (f_lo * t + (f_hi - f_lo) * (1 - np.exp(-k * t)) / k)
    body = np.sin(phase) * np.exp(-t / 0.12)
    click = rng.standard_normal(t.size) * np.exp(-t / 0.002) * 0.3
    env_attack = np.minimum(1.0, t / 0.0005)  # 0.5 ms attack, so the onset is exactly at t = 0
    return (body + click) * env_attack


def _hat(sr: int, rng: np.random.Generator, decay: float = 0.03) -> np.ndarray:
    """A closed hi-hat: first-differenced white noise (a high-pass) with an exponential decay."""
    n = int(6 * decay * sr)
    noise = np.diff(rng.standard_normal(n + 1))
    return noise * np.exp(-np.arange(n) / sr / decay) * 0.5


def _saw(freq: float, n: int, sr: int) -> np.ndarray:
    """A naive sawtooth in [-1, 1] (a few aliases do no harm in test audio)."""
    ph = (freq * np.arange(n) / sr) % 1.0
    return 2.0 * ph - 1.0


def _onepole_lowpass(x: np.ndarray, cutoff: float, sr: int) -> np.ndarray:
    """One-pole low-pass at ``cutoff`` Hz (scipy's lfilter, so it is fast on long notes)."""
    a = math.exp(-2 * math.pi * cutoff / sr)
    return lfilter([1 - a], [1, -a], x)


def _place(out: np.ndarray, sound: np.ndarray, t: float, sr: int, gain: float = 1.0) -> None:
    """Add ``sound`` to ``out`` starting at time ``t`` (s), clipped to the buffer."""
    start = int(round(t * sr))
    if start >= out.size or start + sound.size <= 0:
        return
    s0 = max(0, -start)
    end = min(out.size, start + sound.size)
    out[start + s0:end] += gain * sound[s0:end - start]


def techno_loop(bpm: float, seconds: float, sr: int = 44100, seed: int = 0, offset: float = 0.0,
                swing: float = 0.0, parts: Sequence[str] = ("kick", "hat", "bass", "chord"),
                noise_db: float = -50.0) -> np.ndarray:
    """Render ``seconds`` of four-to-the-floor techno at ``bpm``; float32 mono at ``sr`` Hz.

    The kick starts exactly on every time of ``beat_grid(bpm, seconds, offset)``; an open-ish hat
    plays on each off-beat, delayed by ``swing`` (0..0.5) of a half beat; a filtered saw bass plays a
    seeded 16th-note line; chord stabs land on beat 1 (and the "and" of 3) of each bar. ``'noise'``
    in ``parts`` adds white noise at ``noise_db`` dBFS RMS. ``'offbass'`` (not in the default parts)
    adds a house-style sub bass on every off-beat: a sustained sine at the root with a 10 ms attack,
    lasting 0.4 beat, carrying several times the kick's energy in the 30-150 Hz band (material whose
    low band is led by the off-beat, not by the kick). Peak level is normalised to -1 dBFS.
    """
    if not 0.0 <= swing <= 0.5:
        raise ValueError(f"techno_loop: swing must be in [0, 0.5], got {swing!r}")
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"techno_loop: unknown part(s) {sorted(unknown)}; known: {', '.join(PARTS)}")
    if seconds <= 0:
        raise ValueError(f"techno_loop: seconds must be positive, got {seconds!r}")
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n, dtype=np.float64)
    period = 60.0 / bpm
    beats = beat_grid(bpm, seconds, offset)
    # Bar index of each beat counts from the grid origin (possibly before t=0), so that bar
    # positions do not depend on where the rendering window starts.
    origin_k = int(round((beats[0] - offset) / period)) if beats.size else 0
    kick = _kick(sr, rng)
    hat = _hat(sr, rng)
    root = 55.0 * 2 ** (rng.integers(0, 5) / 12)  # A1 .. C#2
    bass_line = [rng.choice(_BASS_STEPS) if rng.random() < 0.8 else None for _ in range(16)]
    chord_seq = [_CHORDS[i] for i in rng.integers(0, len(_CHORDS), size=4)]

    if "kick" in parts:
        for t in beats:
            _place(out, kick, t, sr, 0.9)
    if "hat" in parts:
        for t in beats:
            _place(out, hat, t + period * (0.5 + swing * 0.5), sr, 0.25)
        # The off-beat before the first beat, if it falls inside the buffer.
        if beats.size:
            _place(out, hat, beats[0] - period * (0.5 - swing * 0.5), sr, 0.25)
    if "bass" in parts:
        step = period / 4
        note_len = int(step * 0.8 * sr)
        env = np.exp(-np.arange(note_len) / sr / (step * 0.4))
        grid0 = beats[0] - period if beats.size else offset
        n_steps = int((seconds - grid0) / step) + 1
        for i in range(n_steps):
            st = bass_line[i % 16]
            if st is None or i % 4 == 0:  # leave room for the kick on the beat
                continue
            f = root * 2 ** (st / 12)
            note = _onepole_lowpass(_saw(f, note_len, sr), 600.0, sr) * env
            _place(out, note, grid0 + i * step, sr, 0.35)
    if "chord" in parts:
        stab_len = int(period * 0.6 * sr)
        env = np.exp(-np.arange(stab_len) / sr / (period * 0.18))
        for j, t in enumerate(beats):
            pos = (origin_k + j) % 4
            if pos not in (0, 2):
                continue
            bar = (origin_k + j) // 4
            shape = chord_seq[bar % len(chord_seq)]
            stab = sum(_saw(root * 4 * 2 ** (s / 12) * (1 + d), stab_len, sr)
                       for s in shape for d in (-0.003, 0.003))
            stab = _onepole_lowpass(stab, 2500.0, sr) * env / 8
            _place(out, stab, t + (0.0 if pos == 0 else period * 0.5), sr, 0.3)
    if "offbass" in parts:
        # Drawn from no random numbers, so adding it leaves every other part's samples unchanged.
        note_len = int(0.4 * period * sr)
        tn = np.arange(note_len) / sr
        env = np.minimum(1.0, tn / 0.010) * np.minimum(1.0, (note_len - np.arange(note_len)) / (0.02 * sr))
        note = np.sin(2 * np.pi * root * tn) * env
        for t in beats:
            _place(out, note, t + period / 2, sr, 1.3)
        if beats.size:
            _place(out, note, beats[0] - period / 2, sr, 1.3)
    if "noise" in parts:
        out += rng.standard_normal(n) * 10 ** (noise_db / 20)
    peak = np.max(np.abs(out)) if n else 0.0
    if peak > 0:
        out *= 10 ** (-1 / 20) / peak
    return out.astype(np.float32)


def dj_set(tempi: Sequence[float], segment_seconds: float = 60.0, sr: int = 44100, seed: int = 0,
           offset: float = 0.0, parts: Sequence[str] = ("kick", "hat", "bass", "chord")) -> SynthSet:
    """Join one :func:`techno_loop` per tempo into a set with a tempo change at each segment boundary.

    Segment i covers ``[i * segment_seconds, (i+1) * segment_seconds)`` at ``tempi[i]`` BPM. The beat
    grid is continuous: the first beat of a segment falls one old period after the last beat of the
    previous one, as when a DJ moves the pitch fader at the boundary (the first segment's first beat
    is at ``offset`` s). Returns :class:`SynthSet`.
    """
    if not tempi:
        raise ValueError("dj_set: need at least one tempo")
    pieces, beats, segments = [], [], []
    next_beat = offset
    seg_n = int(round(segment_seconds * sr))
    for i, bpm in enumerate(tempi):
        start = i * seg_n / sr
        local = next_beat - start
        audio = techno_loop(bpm, seg_n / sr, sr=sr, seed=seed + i, offset=local, parts=parts)
        grid = beat_grid(bpm, seg_n / sr, local) + start
        pieces.append(audio)
        beats.append(grid)
        segments.append((start, float(bpm)))
        next_beat = (grid[-1] if grid.size else next_beat) + 60.0 / bpm
    return SynthSet(np.concatenate(pieces), np.concatenate(beats), tuple(segments))


def tempo_change(bpm_a: float, bpm_b: float, seconds_each: float = 60.0, sr: int = 44100, seed: int = 0,
                 offset: float = 0.0) -> SynthSet:
    """Two segments, ``bpm_a`` then ``bpm_b``: the simplest set with a tempo change (see :func:`dj_set`)."""
    return dj_set([bpm_a, bpm_b], seconds_each, sr=sr, seed=seed, offset=offset)
