"""Tempo consistency within a track: a segment that disagrees with its track on weak evidence is dropped.

Every segment of a file is beat-tracked on its own (:func:`audio_ext.dataset.beats.track_tempo`), which
lets a DJ set change tempo from track to track, but also lets one segment go wrong alone. Seen on
real music: the quiet, sparse outro of a ~117 BPM track (hats and a bass line, hardly any kick)
was read as ~140 BPM, a 6:5 relative, and its 8 clips went into the archive stretched by the
wrong ratio. The segments around it said 117 with strong evidence.

The rule (:func:`judge_segments`), applied to the segments of one file that have a tempo:

1. **Agreement.** Two tempi agree when, after moving one by octaves onto the other (65, 130 and
   260 BPM are one tempo to the folding that follows), they differ by at most
   :data:`AGREE_TOLERANCE` (2 %: segment tempi of a steady track agree to 0.1 %, a DJ's pitch
   fader moves by 0.1-1 % within a track, and the nearest confusion, 6:5, is 20 % away).
2. **The track's tempo** is the tempo with the most support: each segment is supported by the
   segments it agrees with, weighted by their duration times their onset strength.
3. **Weak evidence.** A segment's evidence is weak when its onset autocorrelation strength
   (:attr:`~audio_ext.dataset.beats.Tempo.strength`, 0..1) is below :data:`WEAK_STRENGTH` or when its
   kicks are few or faint: the percussive low-band comb fit at its tempo
   (:attr:`~audio_ext.dataset.beats.Tempo.kick`) is below :data:`WEAK_KICK_SHARE` of the median over the
   file's segments. Both measures are relative to the music, not to its level in dBFS, except
   that a quiet outro's kicks are faint next to the rest of the same track.
4. **Verdict.** A segment is discarded only when it agrees neither with the track's tempo nor
   with any other segment whose evidence is strong, *and* its own evidence is weak. It is
   counted as ``segments_relative`` when its tempo is a small-ratio relative of the track's
   (6:5, 5:4, 4:3 or 3:2, either way, within the tolerance; 2:1 is an octave and agrees), else as
   ``segments_off_track``. A segment with strong evidence is kept whatever its tempo (a DJ set
   that changes tempo), and so is every segment of a one-segment file.

The thresholds come from measurements: synthetic 12 s loops (:mod:`audio_ext.core.synth`, 117-140 BPM,
with and without bass, chords, swing, noise, an off-beat bass) have strengths of 0.70-0.93; the
13-track development set (60 s segments) has 0.53-0.83 on its steady segments
and 0.19 and 0.37 on the two short, quiet tails that read a wrong tempo (133.6 in a 130.7 BPM
track, 123.7 in a 130 BPM one), whose kick fits are 0.10 and 0.06 of their track's median against
at least 0.6 for every steady segment.
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence

#: Two tempi agree when within this relative distance of each other, octaves aside.
AGREE_TOLERANCE = 0.02
#: Small-ratio relatives a misread segment is found at (with their inverses; 2:1 is an octave).
RELATIVE_RATIOS = ((6, 5), (5, 4), (4, 3), (3, 2))
#: Onset autocorrelation strength below which a segment's tempo evidence is weak.
WEAK_STRENGTH = 0.4
#: Kick comb fit, as a share of the file's median, below which a segment's evidence is weak.
WEAK_KICK_SHARE = 0.5


@dataclasses.dataclass(frozen=True)
class SegmentEvidence:
    """What the tracker found in one segment: tempo (BPM, any octave), onset strength (0..1),
    kick comb fit (arbitrary units, comparable within a file) and duration (s)."""

    bpm: float
    strength: float
    kick: float
    seconds: float


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Whether to keep a segment; ``reason`` is '' (kept), 'relative' or 'off-track'; ``ratio`` names
    the relative (e.g. '6:5') and ``track_bpm`` the track's tempo it was compared with."""

    keep: bool
    reason: str = ""
    ratio: str = ""
    track_bpm: float = math.nan


def octave_distance(a: float, b: float) -> float:
    """Relative distance between two tempi after moving ``a`` by octaves as close to ``b`` as it gets
    (0.0 for 65 vs 130 BPM, 0.02 for 132.6 vs 130)."""
    octaves = abs(math.log2(a / b))
    octaves -= math.floor(octaves)
    return 2.0 ** min(octaves, 1.0 - octaves) - 1.0


def agree(a: float, b: float, tolerance: float = AGREE_TOLERANCE) -> bool:
    """Whether two tempi are the same up to octaves and ``tolerance``."""
    return octave_distance(a, b) <= tolerance


def relative_of(bpm: float, track_bpm: float, tolerance: float = AGREE_TOLERANCE) -> str:
    """The small ratio (e.g. '6:5', '3:4') at which ``bpm`` sits relative to ``track_bpm``, octaves
    aside, or '' when it is at none of :data:`RELATIVE_RATIOS`."""
    for p, q in RELATIVE_RATIOS:
        if agree(bpm, track_bpm * p / q, tolerance):
            return f"{p}:{q}"
        if agree(bpm, track_bpm * q / p, tolerance):
            return f"{q}:{p}"
    return ""


def is_weak(seg: SegmentEvidence, median_kick: float) -> bool:
    """Weak evidence: onset strength below :data:`WEAK_STRENGTH`, or kicks below
    :data:`WEAK_KICK_SHARE` of the file's median kick fit."""
    if not seg.strength >= WEAK_STRENGTH:
        return True
    return median_kick > 0 and not seg.kick >= WEAK_KICK_SHARE * median_kick


def track_tempo_consensus(segments: Sequence[SegmentEvidence]) -> float:
    """The tempo of the file: the segment tempo with the largest support, where a segment supports
    every tempo it agrees with by its duration times its onset strength (NaN without segments)."""
    best, best_support = math.nan, -1.0
    for s in segments:
        support = sum(o.seconds * max(o.strength, 0.0) for o in segments if agree(s.bpm, o.bpm))
        if support > best_support:
            best, best_support = s.bpm, support
    return best


def judge_segments(segments: Sequence[Optional[SegmentEvidence]]) -> List[Verdict]:
    """One :class:`Verdict` per entry (None entries, segments without a tempo, are kept: other
    rules decide about them). See the module docstring for the rule."""
    valid = [s for s in segments if s is not None and math.isfinite(s.bpm) and s.bpm > 0]
    if len(valid) < 2:
        return [Verdict(True) for _ in segments]
    kicks = sorted(s.kick for s in valid)
    mid = len(kicks) // 2
    median_kick = kicks[mid] if len(kicks) % 2 else 0.5 * (kicks[mid - 1] + kicks[mid])
    track = track_tempo_consensus(valid)
    strong = [s for s in valid if not is_weak(s, median_kick)]
    out = []
    for s in segments:
        if s is None or not (math.isfinite(s.bpm) and s.bpm > 0):
            out.append(Verdict(True, track_bpm=track))
            continue
        fits = agree(s.bpm, track) or any(o is not s and agree(s.bpm, o.bpm) for o in strong)
        if fits or not is_weak(s, median_kick):
            out.append(Verdict(True, track_bpm=track))
            continue
        ratio = relative_of(s.bpm, track)
        out.append(Verdict(False, "relative" if ratio else "off-track", ratio, track))
    return out
