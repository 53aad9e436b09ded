"""Cut a tracked, stretched segment into beat-aligned training clips (the thesis recipe, issue 3).

Per segment: track the tempo (:mod:`audio_ext.dataset.beats`), drop segments outside the accepted
range or disagreeing with the rest of the file (:mod:`audio_ext.dataset.tempo_consistency`),
stretch to the target tempo and cut clips of ``geometry.clip_samples`` samples that start on a beat,
``stride_beats`` beats apart; near-silent clips are skipped. Levels in dBFS.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Container, Iterator, List, Optional, Tuple

import numpy as np

from audio_ext.core.audio_io import SEGMENT_SECONDS, AudioError, iter_segments, resample
from audio_ext.dataset.beats import (
    MAX_BPM,
    MIN_BPM,
    TARGET_BPM,
    Tempo,
    _broadband_onsets,
    _comb_phase,
    _kick_onsets,
    fold_tempo,
    track_tempo,
)
from audio_ext.dataset.stretch import STRETCH_CHOICES, available_stretcher, time_stretch
from audio_ext.dataset.tempo_consistency import SegmentEvidence, Verdict, judge_segments

STRIDE_BEATS = 8
#: Clips quieter than this RMS level (dBFS) are skipped; DJ sets sit around -15..-8 dBFS.
SILENCE_DB = -45.0


# ---------------------------------------------------------------------------------------------
# Slicing
# ---------------------------------------------------------------------------------------------

def rms_dbfs(x: np.ndarray) -> float:
    """RMS level in dB relative to full scale (-inf for digital silence)."""
    ms = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    return 10 * math.log10(ms) if ms > 0 else -math.inf


@dataclasses.dataclass
class SliceCounts:
    """What happened to one file's audio: seconds decoded, segments kept or discarded (and why), clips."""

    seconds: float = 0.0
    segments: int = 0
    segments_kept: int = 0
    segments_tempo: int = 0      # discarded: tempo outside [min_bpm, max_bpm]
    segments_silent: int = 0     # discarded: RMS below silence_db
    segments_no_beat: int = 0    # discarded: no steady beat
    segments_short: int = 0      # discarded: too short to hold one clip after stretching
    segments_relative: int = 0   # discarded: weak evidence for a 6:5..3:2 relative of the file's tempo (audio_ext.dataset.tempo_consistency)
    segments_off_track: int = 0  # discarded: weak evidence for a tempo the rest of the file disagrees with
    clips: int = 0
    clips_silent: int = 0
    stretcher: str = ""

    def add(self, other: "SliceCounts") -> None:
        for f in dataclasses.fields(self):
            if f.name != "stretcher":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        self.stretcher = self.stretcher or other.stretcher

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def why_no_clips(self, min_bpm: float = MIN_BPM, max_bpm: float = MAX_BPM) -> str:
        """A short reason for a file that gave no clips, from what happened to its segments."""
        n = self.segments
        if n == 0:
            return "contains no audio"
        if self.segments_silent == n:
            return "silent"
        if self.segments_no_beat + self.segments_silent == n:
            return "no steady beat"
        if self.segments_tempo + self.segments_silent + self.segments_no_beat == n and self.segments_tempo:
            return f"tempo outside {min_bpm:g}..{max_bpm:g} BPM"
        if self.segments_short == n:
            return "too short for one clip"
        if self.segments_kept and self.clips_silent:
            return "every clip near-silent"
        parts = [f"{v} {k}" for k, v in (("out of tempo range", self.segments_tempo), ("without beat", self.segments_no_beat),
                                          ("silent", self.segments_silent), ("too short", self.segments_short),
                                          ("at a relative of the track's tempo", self.segments_relative),
                                          ("off the track's tempo", self.segments_off_track)) if v]
        return "no usable segment (" + ", ".join(parts) + ")"


@dataclasses.dataclass(frozen=True)
class SliceParams:
    """Every knob of the slicing recipe, with the thesis defaults (see the module docstring)."""

    target_bpm: float = TARGET_BPM
    min_bpm: float = MIN_BPM
    max_bpm: float = MAX_BPM
    stride_beats: float = STRIDE_BEATS
    segment_seconds: float = SEGMENT_SECONDS
    silence_db: float = SILENCE_DB
    stretcher: str = "auto"

    def __post_init__(self) -> None:
        if not 0 < self.min_bpm <= self.target_bpm <= self.max_bpm:
            raise ValueError(f"need 0 < min_bpm <= target_bpm <= max_bpm, got {self.min_bpm}, "
                             f"{self.target_bpm}, {self.max_bpm}")
        if self.stride_beats <= 0:
            raise ValueError(f"stride_beats must be positive, got {self.stride_beats}")
        if self.segment_seconds <= 0:
            raise ValueError(f"segment_seconds must be positive, got {self.segment_seconds}")
        if self.stretcher not in STRETCH_CHOICES:
            raise ValueError(f"unknown stretcher {self.stretcher!r} ({', '.join(STRETCH_CHOICES)})")
        if self.stretcher == "rubberband" and available_stretcher() != "rubberband":
            raise ValueError("stretcher 'rubberband' requested but the rubberband command is not installed")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def clip_starts(n_samples: int, first_beat: float, sr: int, clip_samples: int, target_bpm: float,
                stride_beats: float) -> List[int]:
    """Start samples of every clip that fits: ``round((first_beat + k * stride) * sr)``, k = 0, 1, ...

    ``first_beat`` in seconds; the stride is ``stride_beats`` beats at ``target_bpm``.
    """
    stride = stride_beats * 60.0 / target_bpm * sr
    starts, k = [], 0
    while True:
        s = int(round(first_beat * sr + k * stride))
        if s + clip_samples > n_samples:
            return starts
        if s >= 0:
            starts.append(s)
        k += 1


def segment_tempo(audio: np.ndarray, sr: int, params: SliceParams = SliceParams()) -> Optional[Tempo]:
    """The tracked tempo of one segment, or None when it is silent (below ``params.silence_db``)."""
    if rms_dbfs(audio) < params.silence_db:
        return None
    return track_tempo(audio, sr, centre_bpm=params.target_bpm)


def slice_segment(audio: np.ndarray, sr: int, clip_samples: int, params: SliceParams = SliceParams(),
                  tempo: Optional[Tempo] = None, verdict: Optional[Verdict] = None,
                  ) -> Tuple[List[np.ndarray], List[dict], SliceCounts]:
    """Track, fold, stretch and cut one segment; returns (clips, per-clip records, counts).

    ``tempo``: the segment's :func:`segment_tempo` when already known (it is tracked here
    otherwise); ``verdict``: the file-level tempo-consistency verdict (:mod:`audio_ext.dataset.tempo_consistency`) for
    a segment whose tempo is in range. Record times are relative to the segment start, in source
    seconds: ``first_beat_s`` is the first beat, ``clip_start_s`` the clip start mapped back
    through the stretch.
    """
    counts = SliceCounts(seconds=audio.size / sr, segments=1)
    clips: List[np.ndarray] = []
    records: List[dict] = []
    if rms_dbfs(audio) < params.silence_db:
        counts.segments_silent += 1
        return clips, records, counts
    if tempo is None:
        tempo = track_tempo(audio, sr, centre_bpm=params.target_bpm)
    if not math.isfinite(tempo.bpm) or tempo.beats.size == 0:
        counts.segments_no_beat += 1
        return clips, records, counts
    bpm = fold_tempo(tempo.bpm, params.min_bpm, params.max_bpm)
    if not params.min_bpm <= bpm <= params.max_bpm:
        counts.segments_tempo += 1
        return clips, records, counts
    if verdict is not None and not verdict.keep:
        if verdict.reason == "relative":
            counts.segments_relative += 1
        else:
            counts.segments_off_track += 1
        return clips, records, counts
    # A folded tempo keeps the tracked phase: every tracked beat is also a beat at half tempo, and
    # at double tempo the first tracked beat stays a beat (the in-between ones are added).
    period = 60.0 / bpm
    first_src = float(tempo.beats[0]) % period
    ratio = bpm / params.target_bpm
    stretched, counts.stretcher = time_stretch(audio, sr, ratio, params.stretcher,
                                               beats=first_src + period * np.arange(int(counts.seconds / period) + 1))
    # The beat-locked phase vocoder puts each beat at exactly source time x ratio (to a fraction of
    # a millisecond). Other stretchers may shift transients by their latency handling, so there the
    # first beat is looked up again on the stretched audio, within 10 ms of where it should be.
    target_period = 60.0 / params.target_bpm
    first_out = first_src * ratio
    if counts.stretcher != "phase-vocoder":
        kick, rate = _kick_onsets(stretched, sr)
        if math.sqrt(float(np.mean(kick ** 2))) < 1e-7:
            kick, rate = _broadband_onsets(stretched, sr)
        first_out += _comb_phase(kick, rate, target_period, first_out, 0.010)
        first_out -= math.floor(first_out / target_period) * target_period
    starts = clip_starts(stretched.size, first_out, sr, clip_samples, params.target_bpm, params.stride_beats)
    if not starts:
        counts.segments_short += 1
        return clips, records, counts
    counts.segments_kept += 1
    for s in starts:
        clip = stretched[s:s + clip_samples]
        if rms_dbfs(clip) < params.silence_db:
            counts.clips_silent += 1
            continue
        clips.append(np.ascontiguousarray(clip, dtype=np.float32))
        records.append({"source_bpm": round(bpm, 4), "stretch_ratio": round(ratio, 6),
                        "first_beat_s": round(first_out / ratio, 5), "clip_start_s": round(s / sr / ratio, 5)})
        counts.clips += 1
    return clips, records, counts


#: Tempo and beats are tracked on audio at this rate or above: the tracker's onset features and
#: kick band need the full-rate signal (at 4410 Hz it read a 124 BPM track as 92 and was 1-2 % off
#: on others), while beat times in seconds do not depend on the rate the clips are cut at.
TRACKING_SAMPLE_RATE = 44100

#: Files of at most this many segments keep their decoded audio between the two passes of
#: :func:`iter_track_clips` (5 one-minute segments: 53 MB of float32 at 44.1 kHz per worker).
_REUSE_SEGMENTS = 5


def iter_track_clips(path, geometry, params: SliceParams = SliceParams(), source: Optional[str] = None,
                     counts: Optional[SliceCounts] = None, segments: Optional[Container[int]] = None
                     ) -> Iterator[Tuple[np.ndarray, dict]]:
    """Yield ``(clip, record)`` for every clip of a file, one segment in memory at a time.

    ``geometry`` gives ``sample_rate`` and ``clip_samples`` (an :class:`~audio_ext.core.geometry.StftGeometry`).
    Below :data:`TRACKING_SAMPLE_RATE` the tempo is tracked on audio decoded at that rate, and the
    segment is then resampled to ``sample_rate`` to be stretched and cut.
    ``source`` is the name stored in the records (default: the path as given). Counts accumulate
    into ``counts`` if given; ``segments`` restricts the work to those segment indices (used to
    sample statistics). Every segment's tempo is tracked first and checked against the others
    (:func:`audio_ext.dataset.tempo_consistency.judge_segments`: a segment that disagrees with the file's tempo on
    weak evidence is discarded and counted), then the segments are cut. Raises
    :class:`AudioError` for unusable files.
    """
    sr = geometry.sample_rate
    track_sr = max(sr, TRACKING_SAMPLE_RATE)
    name = str(path) if source is None else source
    counts = SliceCounts() if counts is None else counts
    # Pass 1: every segment's tempo, so that each can be checked against the rest of the file
    # (audio_ext.dataset.tempo_consistency); the audio is decoded again in pass 2 rather than held (a set is hours long),
    # except for files of a few segments.
    tempos: List[Optional[Tempo]] = []
    seconds: List[float] = []
    kept_audio: Optional[List[Tuple[float, np.ndarray]]] = []
    for seg_start, audio in iter_segments(path, track_sr, params.segment_seconds, only=segments):
        tempos.append(segment_tempo(audio, track_sr, params))
        seconds.append(audio.size / track_sr)
        if kept_audio is not None and len(kept_audio) < _REUSE_SEGMENTS:
            kept_audio.append((seg_start, audio if track_sr == sr else resample(audio, track_sr, sr)))
        else:
            kept_audio = None
    verdicts = judge_segments([None if t is None or not math.isfinite(t.bpm) or t.beats.size == 0
                               else SegmentEvidence(t.bpm, t.strength, t.kick, secs)
                               for t, secs in zip(tempos, seconds)])
    pass2 = kept_audio if kept_audio is not None else iter_segments(path, sr, params.segment_seconds, only=segments)
    for k, (seg_start, audio) in enumerate(pass2):
        if k >= len(tempos):
            raise AudioError(f"{path}: the file changed while it was read (more segments on the second pass)")
        clips, records, c = slice_segment(audio, sr, geometry.clip_samples, params, tempos[k], verdicts[k])
        counts.add(c)
        for clip, rec in zip(clips, records):
            rec = {"source": name, "segment_start_s": round(seg_start, 5), **rec}
            rec["clip_start_s"] = round(seg_start + rec["clip_start_s"], 5)
            yield clip, rec


def slice_track(path, geometry, params: SliceParams = SliceParams(), source: Optional[str] = None,
                max_clips: Optional[int] = None) -> Tuple[List[np.ndarray], List[dict], SliceCounts]:
    """All clips of a file with their records (see :func:`iter_track_clips`) and the counts.

    Each record: ``source``, ``segment_start_s`` (s into the file), ``source_bpm`` (folded, refined),
    ``stretch_ratio`` (output/input duration), ``first_beat_s`` (first beat, s after the segment
    start, source time), ``clip_start_s`` (s into the file, source time).
    """
    counts = SliceCounts()
    clips, records = [], []
    for clip, rec in iter_track_clips(path, geometry, params, source, counts):
        clips.append(clip)
        records.append(rec)
        if max_clips is not None and len(clips) >= max_clips:
            break
    return clips, records, counts
