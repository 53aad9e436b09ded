"""Image grids tile images row-major, keep each tile's row 0 on top, and map drange to 0..255 exactly."""
import io
import json
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from stylegan2.dataset import ImageFolderDataset
from stylegan2.grid import (
    make_image_grid,
    near_square_grid,
    save_image_grid,
    setup_snapshot_image_grid,
    snapshot_grid_size,
)


def _naive_grid(images, gw, gh):
    """Reference tiling by explicit loops: image i goes to tile row i // gw, tile column i % gw."""
    n, c, h, w = images.shape
    out = np.zeros((gh * h, gw * w, c), dtype=images.dtype)
    for i in range(n):
        r, col = divmod(i, gw)
        for y in range(h):
            for x in range(w):
                out[r * h + y, col * w + x, :] = images[i, :, y, x]
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_tiling_matches_a_naive_loop(channels):
    rnd = np.random.default_rng(0)
    images = rnd.integers(0, 256, size=(6, channels, 4, 5)).astype(np.float64)
    grid = make_image_grid(images, drange=[0, 255], grid_size=(3, 2))
    assert grid.shape == (8, 15, channels) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid, _naive_grid(images, 3, 2).astype(np.uint8))


def test_drange_maps_linearly_with_rounding_and_clipping():
    values = torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]).view(7, 1, 1, 1)
    grid = make_image_grid(values, drange=[-1, 1], grid_size=(7, 1))
    expected = np.clip(np.rint((values.numpy().ravel() + 1) * 127.5), 0, 255)
    np.testing.assert_array_equal(grid[0, :, 0], expected)
    assert grid[0, :, 0].tolist() == [0, 0, 64, 128, 191, 255, 255]


def test_saved_greyscale_grid_keeps_highest_frequency_row_on_top(tmp_path):
    spec = -np.ones((4, 1, 8, 8))
    spec[:, :, 0] = 1.0  # the top row (highest frequency) is loud in every tile
    path = tmp_path / "fakes000000.png"
    save_image_grid(spec, path, drange=[-1, 1], grid_size=(2, 2))
    with PIL.Image.open(path) as im:
        assert im.mode == "L" and im.size == (16, 16)
        pixels = np.asarray(im)
    assert (pixels[[0, 8]] == 255).all() and (np.delete(pixels, [0, 8], axis=0) == 0).all()
    assert [p.name for p in tmp_path.iterdir()] == ["fakes000000.png"]


def test_saved_rgb_grid(tmp_path):
    images = np.zeros((2, 3, 2, 2))
    images[0, 0] = 1  # red
    images[1, 2] = 1  # blue
    save_image_grid(images, tmp_path / "g.png", drange=[0, 1], grid_size=(2, 1))
    with PIL.Image.open(tmp_path / "g.png") as im:
        assert im.mode == "RGB"
        pixels = np.asarray(im)
    assert pixels[0, 0].tolist() == [255, 0, 0] and pixels[0, 3].tolist() == [0, 0, 255]


@pytest.mark.parametrize("shape, grid, message", [
    ((5, 1, 4, 4), (3, 2), "does not hold 5 images"),
    ((2, 2, 4, 4), (2, 1), "2 channels"),
    ((2, 4, 4), (2, 1), r"expected images \[N, C, H, W\]"),
])
def test_bad_grids_write_nothing(tmp_path, shape, grid, message):
    with pytest.raises(ValueError, match=message):
        save_image_grid(np.zeros(shape), tmp_path / "g.png", drange=[0, 1], grid_size=grid)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("resolution, expected", [(1024, (7, 4)), (512, (15, 8)), (256, (30, 16)),
                                                  (64, (32, 32)), (16, (32, 32))])
def test_grid_size_follows_upstream_formula(resolution, expected):
    assert snapshot_grid_size(resolution) == expected


def test_grid_size_bounded_for_small_demos():
    # bounded grids are near-square, not one long row (issue 10, item 7)
    assert snapshot_grid_size(64, max_images=64) == (8, 8)
    assert snapshot_grid_size(64, max_images=10) == (3, 3)
    assert snapshot_grid_size(256, max_images=32) == (8, 4)   # the tiny preset's limit; was 30 x 1
    assert snapshot_grid_size(1024, max_images=100) == (7, 4)  # upstream's grid is already smaller
    assert snapshot_grid_size(1024, max_images=28) == (7, 4)


@pytest.mark.parametrize("n", list(range(1, 70)))
def test_near_square_grid_against_brute_force(n):
    gw, gh = near_square_grid(n)
    pairs = [(w, h) for h in range(1, n + 1) for w in range(h, 2 * h + 1) if w * h <= n]
    most = max(w * h for w, h in pairs)
    assert gw * gh == most and gh <= gw <= 2 * gh
    assert gw - gh == min(w - h for w, h in pairs if w * h == most)


def _zip_dataset(tmp_path, labels=None, n=6):
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i in range(n):
            buf = io.BytesIO()
            PIL.Image.fromarray(np.full((16, 16), i * 10, np.uint8)).save(buf, format="png")
            z.writestr(f"{i}.png", buf.getvalue())
        if labels is not None:
            z.writestr("dataset.json", json.dumps({"labels": [[f"{i}.png", lab] for i, lab in enumerate(labels)]}))
    return ImageFolderDataset(path, use_labels=labels is not None)


def test_setup_grid_without_labels_is_seeded_and_repeats_a_small_dataset(tmp_path):
    ds = _zip_dataset(tmp_path)
    (gw, gh), images, labels = setup_snapshot_image_grid(ds, random_seed=0, max_images=24)
    assert (gw, gh) == (6, 4) and images.shape == (24, 1, 16, 16) and images.dtype == np.uint8
    assert labels.shape == (24, 0)
    ids = images[:, 0, 0, 0] // 10
    assert sorted(ids[:6].tolist()) == list(range(6))  # one shuffled pass, then it repeats
    np.testing.assert_array_equal(ids[:6], ids[6:12])
    again = setup_snapshot_image_grid(ds, random_seed=0, max_images=24)[1]
    np.testing.assert_array_equal(images, again)


def test_setup_grid_puts_one_label_per_row(tmp_path):
    ds = _zip_dataset(tmp_path, labels=[1, 0, 1, 2, 0, 2])
    (gw, gh), images, labels = setup_snapshot_image_grid(ds, random_seed=3, max_images=4 * 32)
    assert (gw, gh) == (16, 8)
    rows = labels.reshape(gh, gw, -1)
    for r in range(gh):
        assert (rows[r] == rows[r, 0]).all()
        assert int(rows[r, 0].argmax()) == r % 3  # rows cycle through classes 0, 1, 2, 0
    # every image shown in a row really has that row's label
    ids = images[:, 0, 0, 0] // 10
    true = np.array([1, 0, 1, 2, 0, 2])
    np.testing.assert_array_equal(true[ids], labels.argmax(axis=1))
