"""benchmarks/fakes_vs_reals.py: the structure statistics against hand-made images with known answers."""
import numpy as np
import pytest

from audio_ext.core.geometry import StftGeometry
from benchmarks.fakes_vs_reals import compare, grid, line_shares, row_profile, to_sigma

R = 32


def test_vertical_stripes_are_all_column_share_and_horizontal_all_row_share():
    t = np.arange(R)
    vertical = np.tile(np.sin(t / 3.0), (R, 1))[None]          # every bin moves together in time
    horizontal = vertical.transpose(0, 2, 1)                    # a steady spectrum
    assert line_shares(vertical) == pytest.approx({"column": 1.0, "row": 0.0}, abs=1e-12)
    assert line_shares(horizontal) == pytest.approx({"column": 0.0, "row": 1.0}, abs=1e-12)
    noise = np.random.default_rng(0).standard_normal((20, R, R))
    shares = line_shares(noise)                                  # iid cells: about 1/R each
    assert shares["column"] == pytest.approx(1 / R, rel=0.3) and shares["row"] == pytest.approx(1 / R, rel=0.3)


def test_row_profile_and_sigma_units_match_a_naive_loop():
    img = np.random.default_rng(1).integers(0, 256, (3, R, R), dtype=np.uint8)
    x = to_sigma(img)
    assert x.min() >= -3 and x.max() <= 3 and to_sigma(np.array([[[0, 255]]])).tolist() == [[[-3.0, 3.0]]]
    want = [np.mean([x[n, r, t] for n in range(3) for t in range(R)]) for r in range(R)]
    np.testing.assert_allclose(row_profile(x), want)


def test_a_set_equal_to_the_reals_scores_zero_and_a_louder_one_does_not():
    block = StftGeometry(R, sample_rate=4410).audio_block(mean=-4.0, std=3.0, target_bpm=130.0)
    rng = np.random.default_rng(2)
    reals = np.clip(rng.normal(110, 30, (64, R, R)) + np.linspace(-40, 40, R)[:, None], 0, 255).astype(np.uint8)
    louder = np.clip(reals.astype(int) + 40, 0, 255).astype(np.uint8)
    summary, header, bands = compare({"reals": reals, "same": reals.copy(), "louder": louder}, block)
    by = {row[0]: row for row in summary}
    assert by["same"][2] == pytest.approx(0.0) and by["same"][3] == pytest.approx(1.0)
    assert by["same"][-1] == pytest.approx(0.0, abs=1e-6)
    # 40 grey levels are 40 * 6 / 255 = 0.94 sigma louder (minus what clipping at 255 eats).
    assert 0.8 < by["louder"][2] < 0.95 and by["louder"][-1] > 1.0
    assert header[0] == "images" and all(h.endswith(" dB") for h in header[1:])
    assert all(b_l > b_r for b_l, b_r in zip(bands[2][1:], bands[0][1:]))     # every octave band louder


def test_grid_puts_reals_above_fakes():
    top, bottom = np.zeros((8, R, R), np.uint8), np.full((8, R, R), 200, np.uint8)
    g = grid(top, bottom)
    assert g.shape == (2 * R + 2, 8 * R + 14)
    assert g[:R, :R].max() == 0 and g[R + 2:, :R].min() == 200 and g[R:R + 2].min() == 255
