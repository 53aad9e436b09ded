"""Spectral-feature Fréchet distance: features checked against known values, ~0 for one set, grows with noise."""
import numpy as np
import pytest
import torch

from audio_ext.core.codec import audio_to_logpower, encode
from audio_ext.core.geometry import StftGeometry
from audio_ext.core.synth import techno_loop
from audio_ext.generation.metrics import (
    feature_names,
    spectral_feature_extractor,
    spectral_features,
    standardized_frechet_distance,
)

G = StftGeometry(128)  # 128 x 128 images, 16384 samples = 0.37 s per clip at 44.1 kHz


def block_for(clips):
    v = audio_to_logpower(np.stack(clips), G)
    return G.audio_block(float(v.mean()), float(v.std()), target_bpm=130)


def loops(seeds, noise_db=None):
    out = []
    for s in seeds:
        y = techno_loop(130, 0.5, seed=s, offset=(s % 7) * 0.05)[: G.clip_samples].astype(np.float64)
        if noise_db is not None:
            y = y + np.random.default_rng(1000 + s).standard_normal(y.size) * 10 ** (noise_db / 20)
        out.append(y)
    return out


def stats(feats):
    return feats.mean(0), np.cov(feats, rowvar=False, bias=True)


def test_white_noise_flatness_is_minus_euler_gamma():
    # bin powers of white Gaussian noise are exponential, whose E[ln P] - ln E[P] = -gamma = -2.507 dB
    rng = np.random.default_rng(0)
    noise = [rng.standard_normal(G.clip_samples) * 0.1 for _ in range(4)]
    block = block_for(noise)
    feats = spectral_features(encode(np.stack(noise), G, block["mean"], block["std"]), block)
    flat = feats[:, feature_names(block).index("flatness_db")]
    np.testing.assert_allclose(flat, -10 * np.euler_gamma / np.log(10), atol=0.3)


def test_band_energy_peaks_in_the_band_of_a_tone_and_silence_share_sees_gaps():
    t = np.arange(G.clip_samples) / G.sample_rate
    tone = 0.5 * np.sin(2 * np.pi * 3000 * t)
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(G.clip_samples) * 0.1
    block = block_for([noise])  # a "dataset" of noise: the tone's empty bins are far below its mean
    names = feature_names(block)
    feats = spectral_features(encode(np.stack([tone, noise]), G, block["mean"], block["std"]), block)
    bands = [i for i, n in enumerate(names) if n.startswith("band_") and n.endswith("hz_db")]
    assert names[bands[int(np.argmax(feats[0, bands]))]] == "band_2000_4000hz_db"
    silence = names.index("silence_share")
    # a tone leaves most cells quiet; in noise only P(ln E < -gamma - 2 * 1.28) = 4 % of cells fall that low
    assert feats[0, silence] > 0.5 and feats[1, silence] < 0.08


def test_accepts_nchw_tensors_and_rejects_rgb():
    clips = loops([1, 2])
    block = block_for(clips)
    u8 = torch.from_numpy(encode(np.stack(clips), G, block["mean"], block["std"]))
    a = spectral_features(u8[:, None], block)
    b = spectral_features(u8.numpy(), block)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, len(feature_names(block)))
    with pytest.raises(ValueError, match="1-channel"):
        spectral_features(u8[:, None].repeat(1, 3, 1, 1), block)


def test_fd_is_zero_for_one_set_and_grows_with_broadband_noise():
    real_clips = loops(range(40))
    block = block_for(real_clips)
    feat = lambda clips: spectral_features(encode(np.stack(clips), G, block["mean"], block["std"]), block)
    real = feat(real_clips)
    same_kind = feat(loops(range(100, 140)))
    noisy = feat(loops(range(100, 140), noise_db=-30))
    mu_r, s_r = stats(real)
    assert abs(standardized_frechet_distance(mu_r, s_r, mu_r, s_r)) < 1e-6
    d_same = standardized_frechet_distance(mu_r, s_r, *stats(same_kind))
    d_noisy = standardized_frechet_distance(mu_r, s_r, *stats(noisy))
    assert d_noisy > 3 * d_same
    silence = feature_names(block).index("silence_share")
    assert noisy[:, silence].mean() < real[:, silence].mean()  # noise fills the quiet cells


def test_standardisation_makes_the_distance_unit_free():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(50, 3)), rng.normal(0.3, 1.2, size=(50, 3))
    scale = np.array([1.0, 1000.0, 0.001])
    d1 = standardized_frechet_distance(*stats(a), *stats(b))
    d2 = standardized_frechet_distance(*stats(a * scale), *stats(b * scale))
    assert d1 == pytest.approx(d2, rel=1e-6)


def test_extractor_identity_changes_with_the_dataset_statistics():
    block = G.audio_block(-5.0, 3.0)
    other = G.audio_block(-5.0, 3.5)
    assert spectral_feature_extractor(block).identity != spectral_feature_extractor(other).identity
