"""Whole-bar loops, seamless loop points and beat-grid joins (audio_ext/generation/loops.py)."""
from fractions import Fraction

import numpy as np
import pytest

from audio_ext.generation import loops

SR = 8000  # a low rate keeps the arrays small; nothing below depends on 44.1 kHz


def exact_bar_samples(bars, sr, bpm):
    """Independent reference: exact rational samples, rounded to the nearest integer (ties to even)."""
    return round(Fraction(bars) * 4 * 60 * sr / Fraction(bpm).limit_denominator(10**6))


def techno_like(seconds, sr=SR, bpm=130.0, seed=0):
    """A bass tone, a detuned lead and a decaying noise 'kick' on every beat (no whole-bar periodicity)."""
    rng = np.random.RandomState(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.4 * np.sin(2 * np.pi * 55.3 * t + 0.7) + 0.2 * np.sin(2 * np.pi * 447.1 * t)
    beat = 60.0 / bpm
    env = np.exp(-(t % beat) * 30.0)
    x += 0.3 * env * rng.randn(t.size)
    return x.astype(np.float32)


@pytest.mark.parametrize("bars, bpm", [(1, 130), (4, 130), (8, 128), (3, 97.5), (16, 174)])
def test_bars_to_samples_matches_exact_rational_rounding(bars, bpm):
    assert loops.bars_to_samples(bars, 44100, bpm) == exact_bar_samples(bars, 44100, bpm)


def test_grid_positions_never_drift_more_than_half_a_sample():
    pos = loops.grid_positions(200, 44100, 130.0, beats_per_unit=1)
    exact = np.arange(201) * 60.0 * 44100 / 130.0
    assert np.max(np.abs(pos - exact)) <= 0.5


@pytest.mark.parametrize("bpm", [120.0, 130.0, 137.0])
def test_trim_to_bars_keeps_a_whole_number_of_bars(bpm):
    x = techno_like(9.0, bpm=bpm)
    y = loops.trim_to_bars(x, SR, bpm, bars=2)
    assert y.shape == (exact_bar_samples(2, SR, bpm),)
    np.testing.assert_array_equal(y, x[:y.size])


def test_trim_to_bars_default_takes_every_whole_bar_that_fits():
    bpm = 130.0
    x = techno_like(9.0, bpm=bpm)  # 9 s = 4.875 bars of 1.846 s
    y = loops.trim_to_bars(x, SR, bpm)
    assert y.size == exact_bar_samples(4, SR, bpm)
    assert loops.whole_bars(x.size, SR, bpm) == 4


def test_trim_to_bars_starts_at_offset_and_handles_channels():
    x = np.stack([techno_like(5.0), techno_like(5.0, seed=1)])
    y = loops.trim_to_bars(x, SR, 130.0, bars=1, offset=100)
    n = exact_bar_samples(1, SR, 130.0)
    assert y.shape == (2, n)
    np.testing.assert_array_equal(y, x[:, 100:100 + n])


def test_trim_to_bars_refuses_more_bars_than_the_clip_holds():
    x = techno_like(3.0)  # 1.6 bars at 130 BPM
    with pytest.raises(ValueError, match="holds 1 whole bar"):
        loops.trim_to_bars(x, SR, 130.0, bars=2)
    with pytest.raises(ValueError, match="holds 0 whole bar"):
        loops.trim_to_bars(x[:1000], SR, 130.0)


def loop_point_jump(y):
    """Size of the discontinuity when ``y`` plays in a loop: value jump and slope jump at the wrap."""
    value = abs(float(y[0]) - float(y[-1]))
    slope = abs((float(y[1]) - float(y[0])) - (float(y[-1]) - float(y[-2])))
    return value, slope


def test_seamless_loop_point_is_continuous_and_far_better_than_plain_trim():
    bpm = 130.0
    x = techno_like(6.0, bpm=bpm, seed=3)
    plain = loops.trim_to_bars(x, SR, bpm, bars=2)
    looped = loops.loop_clip(x, SR, bpm, bars=2, crossfade_s=0.02)
    assert looped.size == plain.size == exact_bar_samples(2, SR, bpm)
    typical_step = np.median(np.abs(np.diff(x)))
    plain_value, _ = loop_point_jump(plain)
    value, slope = loop_point_jump(looped)
    # The loop point continues exactly as the clip did at the loop end: the wrap looks like any other step.
    n = plain.size
    assert value == pytest.approx(abs(float(x[n]) - float(x[n - 1])), abs=1e-6)
    assert value < 4 * typical_step
    local_curvature = np.max(np.abs(np.diff(x[n - 3:n + 3].astype(np.float64), 2)))
    assert slope <= local_curvature + 0.02 * np.max(np.abs(x))
    assert value < 0.1 * np.max(np.abs(x))
    assert plain_value > 10 * value  # untreated clip: a click


def test_seamless_loop_crossfade_is_equal_power_and_leaves_the_rest_untouched():
    rng = np.random.RandomState(0)
    x = rng.randn(1000)
    y = loops.make_seamless_loop(x, 1000, 0.1, loop_samples=800)  # 100-sample fade
    assert y.shape == (800,)
    np.testing.assert_array_equal(y[100:], x[100:800])
    k = np.arange(100)
    fade_in, fade_out = np.sin(np.pi / 2 * k / 100), np.cos(np.pi / 2 * k / 100)
    np.testing.assert_allclose(y[:100], x[:100] * fade_in + x[800:900] * fade_out, rtol=1e-12)
    np.testing.assert_allclose(fade_in ** 2 + fade_out ** 2, 1.0)


def test_seamless_loop_needs_audio_past_the_loop_end():
    x = np.zeros(1000)
    with pytest.raises(ValueError, match="needs 1100 samples"):
        loops.make_seamless_loop(x, 1000, 0.1, loop_samples=1000)
    with pytest.raises(ValueError, match="crossfade"):
        loops.make_seamless_loop(x, 1000, -1.0)


def test_loop_clip_leaves_room_for_the_crossfade():
    bpm = 120.0  # a bar is exactly 2 s
    x = techno_like(4.0, bpm=bpm)  # exactly 2 bars, nothing after the second bar line
    assert loops.loop_clip(x, SR, bpm, crossfade_s=0.01).size == exact_bar_samples(1, SR, bpm)
    with pytest.raises(ValueError, match="cannot loop 2"):
        loops.loop_clip(x, SR, bpm, bars=2, crossfade_s=0.01)


def test_walk_joins_fall_on_the_bar_grid():
    bpm, bars = 130.0, 1
    levels = [0.1, 0.2, 0.3, 0.4]
    clips = [np.full(3 * SR, v, dtype=np.float64) for v in levels]
    piece = loops.join_on_beats(clips, SR, bpm, bars_each=bars, crossfade_s=0.0)
    joins = [exact_bar_samples(k * bars, SR, bpm) for k in range(len(clips) + 1)]
    assert piece.size == joins[-1]
    changes = np.flatnonzero(np.diff(piece)) + 1
    np.testing.assert_array_equal(changes, joins[1:-1])
    beat = 60.0 * SR / bpm
    for j in joins:  # each join is a whole number of beats from the start (to the nearest sample)
        assert abs(j / beat - round(j / beat)) * beat <= 0.5


def test_walk_crossfades_from_the_outgoing_continuation_into_the_next_clip():
    bpm = 120.0
    a, b = techno_like(5.0, bpm=bpm, seed=1), techno_like(5.0, bpm=bpm, seed=2)
    n, fade = exact_bar_samples(1, SR, bpm), int(0.05 * SR)
    piece = loops.join_on_beats([a, b], SR, bpm, bars_each=1, crossfade_s=0.05)
    assert piece.size == 2 * n
    np.testing.assert_array_equal(piece[:n], a[:n])
    np.testing.assert_allclose(piece[n + fade:], b[fade:n])
    k = np.arange(fade)
    expected = b[:fade] * np.sin(np.pi / 2 * k / fade) + a[n:n + fade] * np.cos(np.pi / 2 * k / fade)
    np.testing.assert_allclose(piece[n:n + fade], expected, rtol=1e-6, atol=1e-7)
    # the join does not click: it continues the outgoing clip
    assert abs(piece[n] - piece[n - 1]) == pytest.approx(abs(a[n] - a[n - 1]), abs=1e-6)


def test_walk_uses_each_clips_first_beat_offset():
    clips = [np.arange(20000, dtype=np.float64), np.arange(20000, dtype=np.float64) + 1e5]
    piece = loops.join_on_beats(clips, SR, 120.0, 1, crossfade_s=0.0, offsets=[10, 250])
    n = exact_bar_samples(1, SR, 120.0)
    np.testing.assert_array_equal(piece[:n], clips[0][10:10 + n])
    np.testing.assert_array_equal(piece[n:], clips[1][250:250 + n])


def test_walk_refuses_clips_too_short_for_their_bars():
    clips = [np.zeros(SR), np.zeros(SR)]
    with pytest.raises(ValueError, match="clip 0"):
        loops.join_on_beats(clips, SR, 130.0, bars_each=1)
    with pytest.raises(ValueError, match="no clips"):
        loops.join_on_beats([], SR, 130.0, bars_each=1)


def test_beat_offset_found_on_a_click_track():
    bpm, sr = 125.0, 22050
    beat = 60.0 * sr / bpm
    true_offset = 3000
    x = np.zeros(int(8 * sr), dtype=np.float32)
    rng = np.random.RandomState(0)
    for k in range(40):
        start = int(round(true_offset + k * beat))
        if start + 400 < x.size:
            x[start:start + 400] += rng.randn(400).astype(np.float32) * np.exp(-np.arange(400) / 80.0)
    found = loops.estimate_beat_offset(x, sr, bpm, hop_length=256)
    assert abs(found - true_offset) <= 2 * 256


@pytest.mark.parametrize("sr, bpm", [(0, 120), (44100, 0), (44100, float("nan"))])
def test_bad_tempo_or_rate_rejected(sr, bpm):
    with pytest.raises(ValueError):
        loops.bars_to_samples(1, sr, bpm)
