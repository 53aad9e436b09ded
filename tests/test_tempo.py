"""Tempo consistency within a file (issue 9, item 10): a segment that disagrees with its track on weak
evidence is discarded and counted; strong segments and segments that agree are kept."""
import math

import numpy as np
import pytest
import soundfile as sf

from audio_ext.core.geometry import StftGeometry
from audio_ext.core.synth import techno_loop
from audio_ext.dataset.beats import track_tempo
from audio_ext.dataset.build import BuildOptions, build_archive
from audio_ext.dataset.cut import SliceParams, slice_segment, slice_track
from audio_ext.dataset.tempo_consistency import (
    AGREE_TOLERANCE,
    agree,
    judge_segments,
    octave_distance,
    relative_of,
    track_tempo_consensus,
)
from audio_ext.dataset.tempo_consistency import SegmentEvidence as E

SR = 44100
SEG = 12.0
G = StftGeometry(64)
PARAMS = SliceParams(segment_seconds=SEG, stride_beats=4)


def test_octave_distance_and_relatives_against_hand_computed_ratios():
    assert octave_distance(65, 130) == 0 and octave_distance(260, 130) == 0
    assert octave_distance(132.6, 130) == pytest.approx(0.02)
    assert octave_distance(66.3, 130) == pytest.approx(0.02)  # an octave away and 2 % off
    assert agree(130 * (1 + AGREE_TOLERANCE) * 0.999, 130) and not agree(130 * (1 + AGREE_TOLERANCE) * 1.001, 130)
    assert relative_of(140.4, 117) == "6:5"          # the case seen on real music
    assert relative_of(117, 140.4) == "5:6"
    assert relative_of(130 * 5 / 4, 130) == "5:4"
    assert relative_of(130 * 4 / 3 / 2, 130) == "4:3"  # octaves aside
    assert relative_of(94, 141) == "4:3"             # 2:3 is 4:3 an octave down: labels are modulo octaves
    assert relative_of(123.7, 130) == "" and relative_of(260, 130) == ""


def test_a_weak_segment_at_a_relative_of_its_track_is_discarded_and_named():
    strong, weak_kicks = E(117.0, 0.75, 100.0, 60.0), E(140.4, 0.70, 7.0, 60.0)
    v = judge_segments([strong, strong, weak_kicks])
    assert [x.keep for x in v] == [True, True, False]
    assert v[2].reason == "relative" and v[2].ratio == "6:5" and v[2].track_bpm == 117.0
    # Weak by onset strength instead of kicks, and not at a small ratio: 'off-track'.
    v = judge_segments([E(130.7, 0.76, 53, 60), E(130.7, 0.78, 51, 60), E(133.6, 0.19, 50, 5)])
    assert [x.keep for x in v] == [True, True, False] and v[2].reason == "off-track" and v[2].ratio == ""


@pytest.mark.parametrize("segments, keep", [
    # A DJ set changing tempo: strong segments are kept whatever their tempo.
    ([E(124, 0.8, 100, 60), E(124, 0.8, 100, 60), E(137, 0.8, 100, 60)], [True, True, True]),
    # A weak segment that agrees with a strong one (not the consensus) is kept.
    ([E(124, 0.8, 100, 60), E(124, 0.8, 100, 60), E(137, 0.8, 100, 60), E(137.2, 0.3, 10, 60)], [True] * 4),
    # A weak segment within the tolerance of the track (a breakdown with the same tempo) is kept.
    ([E(130, 0.8, 100, 60), E(130, 0.8, 100, 60), E(130.5, 0.2, 5, 60)], [True] * 3),
    # Octave readings agree.
    ([E(130, 0.8, 100, 60), E(65, 0.2, 5, 60)], [True, True]),
    # One segment, or segments without a tempo, decide nothing.
    ([E(140.4, 0.1, 1, 60)], [True]),
    ([None, E(117, 0.8, 100, 60), None, E(140.4, 0.3, 5, 60)], [True, True, True, False]),
])
def test_strong_or_agreeing_segments_are_kept(segments, keep):
    assert [v.keep for v in judge_segments(segments)] == keep


def test_the_consensus_is_the_best_supported_tempo_not_the_first_or_the_loudest():
    segs = [E(140.4, 0.9, 100, 10), E(117, 0.7, 100, 60), E(117.3, 0.7, 100, 60)]
    assert track_tempo_consensus(segs) in (117, 117.3)
    assert math.isnan(track_tempo_consensus([]))


def _track_with_outro(main_bpm, outro_bpm, gain=0.25):
    """Two segments of a full loop at ``main_bpm`` and a quiet, sparse (hats and bass, no kick) outro."""
    main = techno_loop(main_bpm, 2 * SEG, sr=SR, seed=1)
    outro = gain * techno_loop(outro_bpm, SEG, sr=SR, seed=4, parts=("hat", "bass"))
    return np.concatenate([main, outro]).astype(np.float32)


def test_a_quiet_outro_read_at_6_5_is_dropped_while_the_track_keeps_its_clips(tmp_path):
    main_bpm = 120.5
    audio = _track_with_outro(main_bpm, main_bpm * 6 / 5)
    outro = audio[int(2 * SEG * SR):]
    # The engineered misreading is real: alone, the outro tracks at 6:5 and would give clips.
    assert track_tempo(outro, SR).bpm == pytest.approx(main_bpm * 6 / 5, abs=0.5)
    assert slice_segment(outro, SR, G.clip_samples, PARAMS)[2].clips > 0
    path = tmp_path / "track.wav"
    sf.write(path, audio, SR)
    clips, records, counts = slice_track(path, G, PARAMS)
    assert counts.segments == 3 and counts.segments_kept == 2 and counts.segments_relative == 1
    assert counts.segments_off_track == 0 and len(clips) == counts.clips > 0
    assert all(r["source_bpm"] == pytest.approx(main_bpm, abs=0.3) for r in records)
    assert max(r["clip_start_s"] for r in records) < 2 * SEG


def test_a_slow_track_whose_outro_reads_in_range_gives_nothing_and_the_summary_counts_why(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sf.write(src / "117.wav", _track_with_outro(117.0, 117.0 * 6 / 5), SR)
    stats = tmp_path / "stats.json"
    stats.write_text('{"mean": -8.0, "std": 5.0}')
    lines = []
    opts = BuildOptions(resolution=64, slicing=PARAMS, stats_path=str(stats), progress=False)
    with pytest.raises(Exception, match="nothing usable"):
        build_archive(src, tmp_path / "a.zip", opts, log=lines.append)
    text = "\n".join(lines)
    assert "2 discarded by tempo, 1 at a small-ratio relative and 0 off their file's tempo" in text
    assert "skipped  117.wav: no usable segment (2 out of tempo range, 1 at a relative of the track's tempo)" in text
