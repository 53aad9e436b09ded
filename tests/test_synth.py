"""The test-music synthesiser: kicks exactly on the returned beat grid, deterministic, well-formed."""
import numpy as np
import pytest

from audio_ext.core.synth import beat_grid, dj_set, techno_loop, tempo_change

SR = 22050


def _onsets(x, sr, threshold=0.05):
    """Sample indices where |x| first rises above ``threshold`` after at least 50 ms below it (naive loop)."""
    quiet = int(0.05 * sr)
    out, last_loud = [], -quiet
    for i, v in enumerate(np.abs(x)):
        if v > threshold:
            if i - last_loud >= quiet:
                out.append(i)
            last_loud = i
    return np.array(out)


def test_beat_grid_spacing_and_bounds():
    g = beat_grid(120, 3.0, offset=0.2)
    np.testing.assert_allclose(g, [0.2, 0.7, 1.2, 1.7, 2.2, 2.7])
    # A negative offset wraps to the first beat inside the window.
    np.testing.assert_allclose(beat_grid(120, 1.0, offset=-0.4)[:2], [0.1, 0.6])
    with pytest.raises(ValueError, match="bpm"):
        beat_grid(0, 1.0)


@pytest.mark.parametrize("bpm,offset", [(124, 0.0), (137, 0.31)])
def test_kick_onsets_sit_on_the_beat_grid(bpm, offset):
    x = techno_loop(bpm, 4.0, sr=SR, offset=offset, parts=("kick",))
    onsets = _onsets(x, SR)
    beats = beat_grid(bpm, 4.0, offset)
    assert len(onsets) == len(beats)
    # Attack is 0.5 ms, so the threshold is crossed within about a millisecond of the beat.
    assert np.max(np.abs(onsets / SR - beats)) < 0.002
    assert np.all(x[: int(offset * SR)] == 0)


def test_output_is_float32_mono_in_range_and_deterministic():
    a = techno_loop(128, 2.0, sr=SR, seed=3, parts=("kick", "hat", "bass", "chord", "noise"))
    b = techno_loop(128, 2.0, sr=SR, seed=3, parts=("kick", "hat", "bass", "chord", "noise"))
    c = techno_loop(128, 2.0, sr=SR, seed=4, parts=("kick", "hat", "bass", "chord", "noise"))
    assert a.dtype == np.float32 and a.shape == (2 * SR,)
    assert np.max(np.abs(a)) <= 1.0
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_hats_fall_on_the_off_beats_and_kick_is_low():
    bpm = 105  # 12600 samples per beat at 22050 Hz: halves split evenly
    hat = techno_loop(bpm, 2.0, sr=SR, parts=("hat",)).astype(np.float64)
    period = int(SR * 60 / bpm)
    frames = hat[: 3 * period].reshape(6, period // 2)  # alternating on-beat / off-beat halves
    energy = (frames ** 2).sum(axis=1)
    assert np.all(energy[1::2] > 20 * energy[0::2])
    kick = techno_loop(bpm, 2.0, sr=SR, parts=("kick",))
    spec = np.abs(np.fft.rfft(kick))
    freqs = np.fft.rfftfreq(kick.size, 1 / SR)
    assert freqs[np.argmax(spec)] < 200


def test_unknown_part_and_bad_swing_are_rejected():
    with pytest.raises(ValueError, match="unknown part"):
        techno_loop(128, 1.0, parts=("kick", "cowbell"))
    with pytest.raises(ValueError, match="swing"):
        techno_loop(128, 1.0, swing=0.9)


def test_dj_set_changes_tempo_and_keeps_a_continuous_grid():
    s = dj_set([124, 137], segment_seconds=3.0, sr=SR, offset=0.1)
    assert s.audio.shape == (6 * SR,) and s.audio.dtype == np.float32
    assert s.segments == ((0.0, 124.0), (3.0, 137.0))
    first, second = s.beats[s.beats < 3.0], s.beats[s.beats >= 3.0]
    np.testing.assert_allclose(np.diff(first), 60 / 124)
    np.testing.assert_allclose(np.diff(second), 60 / 137)
    assert abs((second[0] - first[-1]) - 60 / 124) < 1e-9
    # The kicks of the audio follow the returned beat times in both segments.
    kicks = dj_set([124, 137], segment_seconds=3.0, sr=SR, offset=0.1, parts=("kick",))
    onsets = _onsets(kicks.audio, SR)
    assert len(onsets) == len(kicks.beats)
    assert np.max(np.abs(onsets / SR - kicks.beats)) < 0.002


def test_tempo_change_is_a_two_segment_set():
    s = tempo_change(128, 132, seconds_each=1.0, sr=SR)
    assert [bpm for _, bpm in s.segments] == [128.0, 132.0]
    assert s.audio.size == 2 * SR


def test_offbass_leads_the_low_band_on_the_off_beats_and_leaves_other_parts_alone():
    bpm, offset = 126, 0.1  # 10500 samples per beat at 22050 Hz, first beat at sample 2205
    period = int(SR * 60 / bpm)
    from scipy.signal import butter, sosfiltfilt
    sos = butter(4, [30, 150], btype="band", fs=SR, output="sos")
    low = lambda x: sosfiltfilt(sos, x.astype(np.float64))
    both = low(techno_loop(bpm, 4.0, sr=SR, offset=offset, parts=("kick", "offbass")))
    s0 = int(offset * SR)
    frames = both[s0:s0 + 6 * period].reshape(12, period // 2) ** 2
    on_beat, off_beat = frames[0::2].sum(), frames[1::2].sum()
    assert off_beat > 3 * on_beat  # the bass, not the kick, carries the 30-150 Hz band
    # The off-beat bass draws no random numbers: hats and noise keep their samples (up to the
    # peak normalisation) wherever the bass is silent (from 0.1 beat before to half a beat after a beat).
    plain = techno_loop(bpm, 4.0, sr=SR, offset=offset, parts=("hat", "noise"))
    with_bass = techno_loop(bpm, 4.0, sr=SR, offset=offset, parts=("hat", "noise", "offbass"))
    quiet = np.concatenate([np.arange(b + period // 10, b + period // 2) for b in range(s0, s0 + 6 * period, period)])
    scale = np.dot(with_bass[quiet], plain[quiet]) / np.dot(plain[quiet], plain[quiet])
    assert 0 < scale < 1  # renormalised: the louder bass set the peak
    np.testing.assert_allclose(with_bass[quiet], scale * plain[quiet], atol=1e-6)
