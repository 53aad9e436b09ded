"""benchmarks/layer_control.py: the onset-pattern feature reads hits more than pixel texture; groups; shares."""
import numpy as np
import pytest
import torch
from snapshot_helpers import tiny_generator

from audio_ext.core.geometry import StftGeometry
from audio_ext.generation.audio_projection import SpectralLoss
from benchmarks.layer_control import frames_per_step, layer_groups, measure, onset_pattern, step_pattern

R = 64


def _hit_image(frame: int, level: float = 1.0) -> torch.Tensor:
    """A quiet [1, 1, R, R] image with one broadband hit (a vertical line) at ``frame``."""
    x = torch.full((1, 1, R, R), -0.5)
    x[..., frame] += level
    return x


def test_onset_pattern_equals_a_naive_loop_over_octave_bands():
    img = torch.rand(2, 1, R, R, generator=torch.Generator().manual_seed(0)) * 2 - 1
    spec = img[:, 0].flip(-2).numpy()            # bin 0 = DC
    edges = [0, 2, 4, 8, 16, 32, 64]              # six octaves at R = 64 (geomspace 1..64 in 6 steps)
    want = np.zeros((2, R - 1))
    for n in range(2):
        for t in range(R - 1):
            rises = [max(0.0, spec[n, lo:hi, t + 1].mean() - spec[n, lo:hi, t].mean())
                     for lo, hi in zip(edges, edges[1:])]
            want[n, t] = np.mean(rises)
    np.testing.assert_allclose(onset_pattern(img).numpy(), want, atol=1e-6)


def test_onset_pattern_moves_with_a_hit_and_hardly_with_texture():
    a, b = _hit_image(20), _hit_image(40)
    env_a, env_b = onset_pattern(a)[0], onset_pattern(b)[0]
    assert int(env_a.argmax()) == 19 and int(env_b.argmax()) == 39          # the rise into frame 20 / 40
    per_pixel = SpectralLoss.onset_envelope
    moved, moved_pixel = [], []
    for seed in range(3):   # texture: +-0.3 sigma of frame-to-frame noise on every pixel, the hit unmoved
        texture = a + 0.3 * torch.randn(a.shape, generator=torch.Generator().manual_seed(seed))
        moved.append(float((onset_pattern(texture)[0] - env_a).norm() / (env_b - env_a).norm()))
        moved_pixel.append(float((per_pixel(texture)[0] - per_pixel(a)[0]).norm()
                                 / (per_pixel(b)[0] - per_pixel(a)[0]).norm()))
    # Per-pixel flux reads the texture as nearly as big a change as moving the hit (~0.9); pooling the
    # levels over bands before rectifying about halves that.
    assert np.mean(moved_pixel) > 0.7 and np.mean(moved) < 0.7 * np.mean(moved_pixel)


@pytest.mark.parametrize("resolution,groups", [(64, {"coarse (4-8)": [0, 1, 2], "middle (16-32)": [3, 4, 5, 6],
                                                      "fine (64+)": [7, 8, 9]}),
                                               (32, {"coarse (4-8)": [0, 1, 2], "middle (16-32)": [3, 4, 5, 6, 7]})])
def test_small_resolutions_have_the_groups_their_blocks_allow(resolution, groups):
    assert layer_groups(resolution) == groups


def test_measure_gives_a_share_per_group_and_pair_and_swapping_everything_is_one():
    G = tiny_generator(R, width=8, mapping_layers=1).eval()
    out = measure(G, pairs=3)
    assert list(out) == list(layer_groups(R))
    for onset, band, step in out.values():
        assert len(onset) == len(band) == len(step) == 3
        assert all(np.isfinite(onset + band + step)) and all(v >= 0 for v in onset + band + step)
    # A "group" holding every layer is B itself: both shares are exactly 1.
    import benchmarks.layer_control as lc
    every = {"all": list(range(G.num_ws))}
    orig = lc.layer_groups
    try:
        lc.layer_groups = lambda r: every
        (onset, band, step), = lc.measure(G, pairs=2).values()
    finally:
        lc.layer_groups = orig
    np.testing.assert_allclose(onset, 1.0, atol=1e-5)
    np.testing.assert_allclose(band, 1.0, atol=1e-5)
    np.testing.assert_allclose(step, 1.0, atol=1e-5)


def test_step_pattern_sums_whole_steps_and_ignores_moves_within_a_step():
    env = torch.arange(1.0, 64.0)[None]                        # 63 values, as from a 64-frame image
    got = step_pattern(env, 7.95)                              # R=64, hop 64, 4410 Hz, 130 BPM
    want = [sum(range(1, 64)[t] for t in range(63) if int(t // 7.95) == k) for k in range(7)]
    assert got.shape == (1, 7) and got[0].tolist() == pytest.approx(want)
    a, b = torch.zeros(1, 63), torch.zeros(1, 63)
    a[0, 17], b[0, 20] = 1.0, 1.0                              # a hit moved by 3 frames inside step 2 (16..23)
    assert torch.equal(step_pattern(a, 8.0), step_pattern(b, 8.0))
    b[0, 20], b[0, 30] = 0.0, 1.0                              # ... or into step 3
    assert not torch.equal(step_pattern(a, 8.0), step_pattern(b, 8.0))


def test_frames_per_step_from_the_audio_block():
    block = StftGeometry(R, sample_rate=4410).audio_block(mean=-3.0, std=3.0, target_bpm=130.0)
    assert frames_per_step(block, R) == pytest.approx(60 / 130 / 4 * 4410 / 64)      # 7.95 frames = 0.115 s
    assert frames_per_step(None, R) == R / 8
