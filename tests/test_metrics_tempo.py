"""Tempo fidelity: librosa beat tracking plus a beat-time line fit, octave folding, share within +-2 BPM."""
import math

import numpy as np
import pytest

from audio_ext.core.synth import techno_loop
from audio_ext.generation.metrics import _check_tempo_geometry, detect_tempo, fold_tempo, tempo_fidelity

SR = 22050


def test_synth_loops_at_130_pass_and_at_110_fail():
    clips = [techno_loop(130, 6.0, sr=SR, seed=1), techno_loop(130, 6.0, sr=SR, seed=2, offset=0.11),
             techno_loop(110, 6.0, sr=SR, seed=3)]
    r = tempo_fidelity(clips, SR, target_bpm=130, tolerance=2)
    assert abs(r["tempi"][0] - 130) < 1 and abs(r["tempi"][1] - 130) < 1
    assert abs(r["tempi"][2] - 110) < 1
    assert r["fidelity"] == pytest.approx(2 / 3)


def test_tempo_is_finer_than_librosas_grid():
    # librosa's tempo grid near 130 BPM at hop 256 / 22.05 kHz steps by ~3 BPM; the beat-time fit does not
    bpm = detect_tempo(techno_loop(131.0, 8.0, sr=SR, seed=4), SR)
    assert abs(bpm - 131.0) < 0.5


def test_silence_has_no_tempo_and_counts_as_a_miss():
    r = tempo_fidelity([np.zeros(SR * 5, np.float32)], SR)
    assert math.isnan(r["tempi"][0]) and r["fidelity"] == 0.0


@pytest.mark.parametrize("bpm, folded", [(65.0, 130.0), (260.0, 130.0), (131.5, 131.5), (92.0, 92.0), (91.0, 182.0)])
def test_fold_tempo_into_octave_around_target(bpm, folded):
    assert fold_tempo(bpm, 130.0) == pytest.approx(folded)


def test_too_short_clips_are_refused_with_the_reason():
    block = dict(sample_rate=44100, resolution=64, n_fft=128, hop_length=64, window="hann", center=True,
                 eps=1e-10, clip_sigma=3.0, mean=0.0, std=1.0)
    with pytest.raises(ValueError, match=r"clips of 0\.09 s .* too short"):
        _check_tempo_geometry(block)
