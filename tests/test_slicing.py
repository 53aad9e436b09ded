"""Slicing: decode and resample, track and fold the tempo, stretch to 130 BPM, cut clips on the beat.

The music is synthesised (audio_ext.core.synth), so the true tempo and beat times are known exactly.
Segments are shortened from one minute to a few seconds to keep the suite fast.
"""
import math

import numpy as np
import pytest
import soundfile as sf

from audio_ext.core.audio_io import AudioError, iter_segments, load_audio
from audio_ext.core.geometry import StftGeometry
from audio_ext.core.synth import beat_grid, dj_set, techno_loop
from audio_ext.dataset.beats import fold_tempo, track_tempo
from audio_ext.dataset.cut import SliceParams, clip_starts, rms_dbfs, slice_segment, slice_track
from audio_ext.dataset.stretch import beat_locked_phase_vocoder, time_stretch

SR = 44100
FULL = ("kick", "hat", "bass", "chord", "noise")


def _nearest_beat_error(t, beats):
    return float(np.min(np.abs(np.asarray(beats) - t)))


# --- decoding ---------------------------------------------------------------------------------

def test_load_audio_mixes_to_mono_and_resamples_a_sine_exactly(tmp_path):
    # A 1 kHz sine recorded at 48 kHz must come back as the same sine sampled at 44.1 kHz.
    t48 = np.arange(48000) / 48000
    left = 0.5 * np.sin(2 * np.pi * 1000 * t48)
    stereo = np.stack([left, left * 0.5], axis=1)  # mono mix = 0.75 * left
    sf.write(tmp_path / "a.wav", stereo, 48000, subtype="FLOAT")
    y = load_audio(tmp_path / "a.wav", sr=SR)
    assert y.dtype == np.float32 and y.ndim == 1 and y.size == SR
    ref = 0.375 * np.sin(2 * np.pi * 1000 * np.arange(SR) / SR)
    mid = slice(2000, SR - 2000)  # away from the resampler's edge transients
    assert np.max(np.abs(y[mid] - ref[mid])) < 2e-3


@pytest.mark.parametrize("fmt", ["FLAC", "OGG", "MP3"])
def test_load_audio_reads_compressed_formats(tmp_path, fmt):
    x = techno_loop(128, 2.0, sr=SR, parts=("kick", "bass"))
    path = tmp_path / f"loop.{fmt.lower()}"
    sf.write(path, x, SR, format=fmt)
    y = load_audio(path, sr=SR)
    # Lossy codecs add delay/padding; compare the levels and a length within 0.1 s.
    assert abs(y.size - x.size) < 0.1 * SR
    assert abs(rms_dbfs(y) - rms_dbfs(x)) < 1.0


def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError, match="missing.wav: no such file"):
        load_audio(missing)
    text = tmp_path / "notes.mp3"
    text.write_text("these are not the droids")
    with pytest.raises(AudioError, match=r"notes\.mp3: not a readable audio file"):
        load_audio(text)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="empty.wav: contains no audio samples"):
        load_audio(empty)
    with pytest.raises(AudioError, match="empty.wav: contains no audio samples"):
        list(iter_segments(empty, SR))
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.0, np.nan, 0.1], dtype=np.float32), SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="nan.wav: contains NaN"):
        load_audio(nan)
    for exc in (AudioError,):
        try:
            load_audio(text)
        except exc as e:
            assert "\n" not in str(e)


def test_iter_segments_cuts_consecutive_segments_that_add_up_to_the_file(tmp_path):
    x = (np.random.default_rng(0).standard_normal(int(2.5 * SR)) * 0.1).astype(np.float32)
    sf.write(tmp_path / "n.wav", x, SR, subtype="FLOAT")
    segs = list(iter_segments(tmp_path / "n.wav", SR, segment_seconds=1.0))
    assert [s for s, _ in segs] == [0.0, 1.0, 2.0]
    assert [a.size for _, a in segs] == [SR, SR, SR // 2]
    np.testing.assert_array_equal(np.concatenate([a for _, a in segs]), x)


# --- tempo -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bpm,expected", [(130, 130), (65, 130), (260, 130), (118, 118), (59, 118),
                                          (150, 150), (75, 150), (290, 145), (30, 120)])
def test_fold_tempo_halves_or_doubles_into_the_range(bpm, expected):
    assert fold_tempo(bpm, 120, 145) == pytest.approx(expected)


def test_fold_tempo_with_another_range_and_bad_input():
    assert fold_tempo(130, 60, 90) == pytest.approx(65)
    with pytest.raises(ValueError, match="positive"):
        fold_tempo(0)
    with pytest.raises(ValueError, match="min_bpm"):
        fold_tempo(120, 150, 140)


@pytest.mark.parametrize("bpm", [118, 124, 128, 137, 150])
def test_track_tempo_finds_tempo_within_1_bpm_and_beats_on_the_kicks(bpm):
    rng = np.random.default_rng(bpm)
    offset = float(rng.uniform(0, 60 / bpm))
    x = techno_loop(bpm, 12.0, sr=SR, seed=bpm, offset=offset, parts=FULL)
    tempo = track_tempo(x, SR)
    assert abs(tempo.bpm - bpm) < 1.0
    truth = beat_grid(bpm, 12.0, offset)
    # Every returned beat lies within 5 ms of a true kick (not on the off-beat hats).
    errors = [_nearest_beat_error(t, truth) for t in tempo.beats]
    assert max(errors) < 0.005
    assert len(tempo.beats) >= len(truth) - 1


def test_tempo_survives_a_breakdown_and_swung_hats():
    bpm, offset, n = 127, 0.17, 20
    full = techno_loop(bpm, n, sr=SR, offset=offset, swing=0.3, parts=("kick", "hat", "bass", "chord"))
    no_kick = techno_loop(bpm, n, sr=SR, offset=offset, swing=0.3, parts=("hat", "bass", "chord"))
    x = full.copy()
    x[6 * SR:14 * SR] = no_kick[6 * SR:14 * SR]  # 8 s without kick: trackers drift off here
    tempo = track_tempo(x, SR)
    assert abs(tempo.bpm - bpm) < 0.1
    truth = beat_grid(bpm, n, offset)
    assert max(_nearest_beat_error(t, truth) for t in tempo.beats) < 0.005


@pytest.mark.parametrize("bpm", [65, 260])
def test_half_and_double_tempo_fold_to_130(bpm):
    x = techno_loop(bpm, 12.0, sr=SR, seed=1, offset=0.05, parts=("kick", "hat", "bass"))
    tempo = track_tempo(x, SR)
    assert abs(fold_tempo(tempo.bpm, 120, 145) - 130) < 1.0


def test_noise_and_silence_have_no_beat():
    silence = np.zeros(10 * SR, dtype=np.float32)
    assert math.isnan(track_tempo(silence, SR).bpm)
    geom = StftGeometry(64)
    noise = (np.random.default_rng(0).standard_normal(10 * SR) * 1e-4).astype(np.float32)  # -80 dBFS
    clips, records, counts = slice_segment(noise, SR, geom.clip_samples, SliceParams())
    assert clips == [] and counts.segments_silent == 1 and counts.why_no_clips() == "silent"


# --- stretching ------------------------------------------------------------------------------

@pytest.mark.parametrize("bpm", [118, 126, 137])
def test_beat_locked_phase_vocoder_keeps_every_kick_on_the_stretched_grid(bpm):
    ratio = bpm / 130
    beats = beat_grid(bpm, 6.0, 0.2)
    x = techno_loop(bpm, 6.0, sr=SR, parts=("kick", "hat", "bass"), offset=0.2)
    y, name = time_stretch(x, SR, ratio, "phase-vocoder", beats=beats)
    assert name == "phase-vocoder" and y.size == round(x.size * ratio) and y.dtype == np.float32
    env = np.abs(y)
    for t in beats[1:-1] * ratio:
        s = int((t - 0.05) * SR)
        seg = env[s:s + int(0.1 * SR)]
        onset = (s + int(np.argmax(seg > 0.2 * seg.max()))) / SR
        assert abs(onset - t) < 0.002
    # The result is at 130 BPM for the tracker.
    assert abs(track_tempo(y, SR).bpm - 130) < 0.5


def test_phase_vocoder_keeps_pitch_and_level_of_a_sine():
    x = (0.5 * np.sin(2 * np.pi * 440 * np.arange(2 * SR) / SR)).astype(np.float32)
    y, _ = time_stretch(x, SR, 1.1, "phase-vocoder")
    peak_hz = np.fft.rfftfreq(y.size, 1 / SR)[np.argmax(np.abs(np.fft.rfft(y)))]
    assert abs(peak_hz - 440) < 1.0
    assert abs(np.std(y[4096:-4096]) * np.sqrt(2) - 0.5) < 0.01


def test_phase_vocoder_without_resets_matches_librosa_and_ratio_one_is_identity():
    import librosa
    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    x = sum(0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (110, 330, 987, 2500)).astype(np.float32)
    ours, _ = time_stretch(x, SR, 0.93, "phase-vocoder")
    ref = librosa.effects.time_stretch(x, rate=1 / 0.93)
    n = min(ours.size, ref.size)
    mag = lambda a: np.abs(librosa.stft(a[4096:n - 4096], n_fft=2048))
    a, b = mag(ours), mag(ref)
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.1
    same = beat_locked_phase_vocoder(x, 1.0, reset_samples=[SR])  # no shortcut inside: a real round trip
    np.testing.assert_allclose(same, x, atol=1e-4)


def test_time_stretch_rejects_unknown_stretchers_and_ratios():
    with pytest.raises(ValueError, match="unknown stretcher"):
        time_stretch(np.zeros(100, np.float32), SR, 1.1, "elastique")
    with pytest.raises(ValueError, match="ratio"):
        time_stretch(np.zeros(100, np.float32), SR, 0.0)


# --- cutting ---------------------------------------------------------------------------------

def test_clip_starts_follow_the_stride_and_fit():
    sr, bpm = 1000, 120  # 500 samples per beat
    starts = clip_starts(5000, first_beat=0.25, sr=sr, clip_samples=1200, target_bpm=bpm, stride_beats=2)
    assert starts == [250, 1250, 2250, 3250]  # 4250 + 1200 > 5000
    assert clip_starts(1000, 0.25, sr, 1200, bpm, 2) == []


def test_slice_track_counts_clips_discards_out_of_range_and_cuts_on_beats(tmp_path):
    seg = 12.0
    geom = StftGeometry(64)  # clip 4096 samples
    s = dj_set([124, 150, 137, 118], segment_seconds=seg, sr=SR, seed=3, offset=0.137)
    path = tmp_path / "set.wav"
    sf.write(path, s.audio, SR, subtype="FLOAT")
    params = SliceParams(segment_seconds=seg, stride_beats=4)
    clips, records, counts = slice_track(path, geom, params, source="set.wav")
    assert counts.segments == 4 and counts.segments_kept == 2 and counts.segments_tempo == 2
    assert counts.clips == len(clips) == len(records) and counts.stretcher == "phase-vocoder"
    assert all(c.shape == (geom.clip_samples,) and c.dtype == np.float32 for c in clips)
    by_segment = {}
    for r in records:
        by_segment.setdefault(r["segment_start_s"], []).append(r)
    assert sorted(by_segment) == [0.0, 2 * seg]
    for start, bpm in [(0.0, 124), (2 * seg, 137)]:
        recs = by_segment[start]
        assert all(abs(r["source_bpm"] - bpm) < 1.0 and r["source"] == "set.wav" for r in recs)
        ratio = bpm / 130
        assert recs[0]["stretch_ratio"] == pytest.approx(ratio, rel=0.01)
        # Expected count from the lengths: stretched segment, first beat, clip, stride of 4 beats at 130.
        seg_beats = s.beats[(s.beats >= start) & (s.beats < start + seg)]
        first_out = (seg_beats[0] - start) * ratio
        stride = 4 * 60 / 130
        n_out = round(seg * SR * ratio)
        expected = math.floor((n_out / SR - first_out - geom.clip_samples / SR) / stride) + 1
        assert len(recs) == expected
        for k, r in enumerate(recs):
            # Each clip starts on a true beat of the source (within 5 ms), 4 beats after the last.
            assert _nearest_beat_error(r["clip_start_s"], s.beats) < 0.005
            assert abs(r["first_beat_s"] - (seg_beats[0] - start)) < 0.005
            if k:
                gap_beats = (r["clip_start_s"] - recs[k - 1]["clip_start_s"]) * bpm / 60
                assert abs(gap_beats - 4) < 0.01


def test_after_stretching_the_next_kick_is_one_target_beat_after_the_clip_start():
    # R=256 at hop 128: 32768-sample clips (0.74 s) hold the clip's first and second kick.
    geom = StftGeometry(256, hop_length=128)
    bpm = 126
    x = techno_loop(bpm, 8.0, sr=SR, offset=0.31, parts=("kick",))
    clips, records, counts = slice_segment(x, SR, geom.clip_samples, SliceParams(stride_beats=4))
    assert counts.segments_kept == 1 and len(clips) >= 3
    beat = 60 / 130
    for clip in clips:
        env = np.abs(clip)
        # Onset of the second kick: first sample above 20 % of the clip peak after 3/4 of a beat.
        after = int(0.75 * beat * SR)
        onset = after + int(np.argmax(env[after:] > 0.2 * env.max()))
        assert abs(onset / SR - beat) < 0.004
        # And the clip opens on the first kick: the first 10 ms are loud.
        assert rms_dbfs(clip[: int(0.01 * SR)]) > rms_dbfs(clip) - 6


def test_silent_clips_are_skipped():
    # A loop with a silent gap: the segment is tracked, but clips that fall in the gap are dropped.
    x = techno_loop(130, 12.0, sr=SR, parts=("kick", "hat", "bass"))
    x[int(5 * SR):int(9 * SR)] = 0
    geom = StftGeometry(64)
    clips, records, counts = slice_segment(x, SR, geom.clip_samples, SliceParams(stride_beats=1))
    assert counts.clips_silent > 0
    assert all(rms_dbfs(c) >= -45 for c in clips)
    assert all(not (5.0 <= r["clip_start_s"] < 8.9) for r in records)


def test_slice_params_reject_inconsistent_ranges():
    with pytest.raises(ValueError, match="min_bpm"):
        SliceParams(min_bpm=140, max_bpm=130)
    with pytest.raises(ValueError, match="stride_beats"):
        SliceParams(stride_beats=0)


def test_iter_segments_can_skip_to_chosen_segments(tmp_path):
    x = (np.random.default_rng(1).standard_normal(int(4.5 * SR)) * 0.1).astype(np.float32)
    sf.write(tmp_path / "n.wav", x, SR, subtype="FLOAT")
    segs = list(iter_segments(tmp_path / "n.wav", SR, segment_seconds=1.0, only={1, 4}))
    assert [s for s, _ in segs] == [1.0, 4.0]
    np.testing.assert_array_equal(segs[0][1], x[SR:2 * SR])
    np.testing.assert_array_equal(segs[1][1], x[4 * SR:])


def test_rubberband_command_is_used_when_installed(tmp_path, monkeypatch):
    # A stand-in `rubberband` on PATH: checks the time-ratio flag and writes a linearly
    # resampled copy (not pitch-preserving, but enough to test the plumbing).
    import os
    import stat
    import sys
    script = tmp_path / "rubberband"
    script.write_text(f"""#!{sys.executable}
import sys, numpy as np, soundfile as sf
args = sys.argv[1:]
ratio = float(args[args.index("-t") + 1])
x, sr = sf.read(args[-2], dtype="float32")
n = int(round(x.size * ratio))
sf.write(args[-1], np.interp(np.arange(n) / ratio, np.arange(x.size), x).astype("float32"), sr, subtype="FLOAT")
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    x = techno_loop(124, 3.0, sr=SR, parts=("kick",), offset=0.1)
    y, name = time_stretch(x, SR, 124 / 130)
    assert name == "rubberband" and y.size == round(x.size * 124 / 130)
    expected = np.interp(np.arange(y.size) / (124 / 130), np.arange(x.size), x)
    assert np.max(np.abs(y - expected)) < 1e-5


@pytest.mark.parametrize("bpm", [124, 128, 137])
def test_clips_start_on_the_kick_when_an_off_beat_bass_is_louder_in_the_low_band(bpm):
    # House-style sub bass on every off-beat with several times the kick's 30-150 Hz energy
    # (tests/test_synth.py checks that): a kick-band onset alone would cut on the off-beat.
    offset = float(np.random.default_rng(bpm + 7).uniform(0, 60 / bpm))
    x = techno_loop(bpm, 12.0, sr=SR, seed=bpm, offset=offset, parts=("kick", "hat", "bass", "chord", "offbass"))
    truth = beat_grid(bpm, 12.0, offset)
    geom = StftGeometry(64)
    clips, records, counts = slice_segment(x, SR, geom.clip_samples, SliceParams(stride_beats=4))
    assert counts.segments_kept == 1 and len(records) >= 4
    for r in records:
        assert abs(r["source_bpm"] - bpm) < 0.5
        # Within 3 ms of a kick in source time, which the beat-locked stretch maps onto 130 BPM.
        assert _nearest_beat_error(r["clip_start_s"], truth) < 0.003


# 121 and 144, not the range ends 120 and 145: a refined 145.003 is rightly discarded.
@pytest.mark.parametrize("bpm,extra,kept", [(121, (), True), (126, (), True), (133, (), True), (141, (), True),
                                            (144, (), True), (141, ("offbass",), True), (95, (), False),
                                            (100, (), False)])
def test_three_two_confusions_are_resolved_by_the_kicks(bpm, extra, kept):
    # Off-beat hats make 1.5 beats as periodic as one beat to a broadband onset envelope, and the
    # autocorrelation read 141 BPM as 94 (seed 0, no swing), which was then discarded; an off-beat
    # bass makes the wrong comb's in-between teeth strong too. The kick comb decides; a loop with
    # a kick on every beat at 95 or 100 BPM must not be pulled up 3:2 into the range (142.5, 150)
    # but read as itself and discarded.
    x = techno_loop(bpm, 20.0, sr=SR, seed=0, parts=("kick", "hat", "bass", "chord") + extra)
    tempo = track_tempo(x, SR)
    folded = fold_tempo(tempo.bpm, 120, 145)
    assert abs(folded - bpm) < 1.0
    assert (120 <= folded <= 145) == kept
