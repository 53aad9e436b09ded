"""Image grids for training progress (``reals.png``, ``fakes_init.png``, ``fakesNNNNNN.png``).

A grid is ``gw`` images wide and ``gh`` high, image ``i`` at row ``i // gw`` and column ``i % gw``.
Each tile is copied unchanged, so a spectrogram keeps row 0 (its highest frequency) at the top of
its tile and low frequencies at the bottom. One channel gives a greyscale PNG, three an RGB one.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import torch

from .misc import atomic_path

PathLike = Union[str, os.PathLike]


def make_image_grid(images, drange: Sequence[float], grid_size: Tuple[int, int]) -> np.ndarray:
    """Tile ``images`` [N, C, H, W] (values in ``drange``) into a uint8 array [gh*H, gw*W, C].

    Values are mapped linearly so ``drange[0]`` -> 0 and ``drange[1]`` -> 255, rounded and clipped.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu", torch.float64).numpy()
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4:
        raise ValueError(f"image grid: expected images [N, C, H, W], got shape {list(images.shape)}")
    n, c, h, w = images.shape
    gw, gh = (int(v) for v in grid_size)
    if gw < 1 or gh < 1 or gw * gh != n:
        raise ValueError(f"image grid: grid_size {gw}x{gh} does not hold {n} images")
    if c not in (1, 3):
        raise ValueError(f"image grid: images have {c} channels; only 1 (greyscale) or 3 (RGB) can be saved")
    lo, hi = (float(v) for v in drange)
    if not hi > lo:
        raise ValueError(f"image grid: drange {list(drange)} must be increasing")
    pixels = np.clip(np.rint((images - lo) * (255 / (hi - lo))), 0, 255).astype(np.uint8)
    pixels = pixels.reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2)  # gh, H, gw, W, C
    return np.ascontiguousarray(pixels.reshape(gh * h, gw * w, c))


def save_image_grid(images, path: PathLike, drange: Sequence[float], grid_size: Tuple[int, int]) -> None:
    """Write ``images`` [N, C, H, W] as one PNG grid at ``path`` (atomically: never a partial file)."""
    grid = make_image_grid(images, drange, grid_size)
    image = PIL.Image.fromarray(grid[:, :, 0], "L") if grid.shape[2] == 1 else PIL.Image.fromarray(grid, "RGB")
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="png")


def snapshot_grid_size(resolution: int, max_images: Optional[int] = None) -> Tuple[int, int]:
    """Upstream's grid: ``gw = clip(7680 // W, 7, 32)``, ``gh = clip(4320 // H, 4, 32)`` (7x4 at 1024).

    ``max_images`` bounds ``gw * gh`` for small demos and the ``tiny`` preset. When it is smaller than
    upstream's grid, the grid is laid out near-square instead (a bounded upstream grid at 256 would be
    30 x 1, one long row): :func:`near_square_grid` of ``max_images``.
    """
    gw = int(np.clip(7680 // resolution, 7, 32))
    gh = int(np.clip(4320 // resolution, 4, 32))
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"snapshot grid: max_images must be >= 1, got {max_images}")
        if max_images < gw * gh:
            return near_square_grid(max_images)
    return gw, gh


def near_square_grid(n: int) -> Tuple[int, int]:
    """The ``(gw, gh)`` with ``gh <= gw <= 2 gh`` that holds the most of ``n`` images (``gw * gh <= n``).

    Ties go to the squarer grid; 1 image gives 1 x 1. E.g. 32 -> 8 x 4, 64 -> 8 x 8, 10 -> 3 x 3.
    """
    if n < 1:
        raise ValueError(f"grid: need at least one image, got {n}")
    best = (1, 1)
    for gh in range(1, int(math.isqrt(n)) + 1):
        gw = min(n // gh, 2 * gh)
        if gw < gh:
            continue
        if gw * gh > best[0] * best[1] or (gw * gh == best[0] * best[1] and gw - gh < best[0] - best[1]):
            best = (gw, gh)
    return best


def setup_snapshot_image_grid(dataset, random_seed: int = 0, max_images: Optional[int] = None):
    """Choose the reals shown in ``reals.png``: returns ``(gw, gh), images uint8 [N,C,H,W], labels [N,L]``.

    Without labels the images are a seeded random choice (repeating when the dataset is smaller
    than the grid). With labels every row holds one label, rows cycling through the distinct
    labels (class 0 first for one-hot labels), so the fakes drawn with the same labels line up with their reals.
    """
    gw, gh = snapshot_grid_size(dataset.resolution, max_images)
    rnd = np.random.RandomState(random_seed)
    order = np.arange(len(dataset))
    rnd.shuffle(order)
    if not getattr(dataset, "has_labels", False):
        indices = [int(order[i % order.size]) for i in range(gw * gh)]
    else:
        groups: dict = {}
        for i in order:
            groups.setdefault(tuple(np.asarray(dataset.get_label(int(i))).tolist()), []).append(int(i))
        keys = sorted(groups, reverse=True)  # one-hot labels: class 0 in the first row
        indices = []
        for row in range(gh):
            members = groups[keys[row % len(keys)]]
            indices += [members[(row // len(keys) * gw + col) % len(members)] for col in range(gw)]
    pairs = [dataset[i] for i in indices]
    images = np.stack([np.asarray(img) for img, _ in pairs])
    labels = np.stack([np.asarray(lab, dtype=np.float32) for _, lab in pairs])
    return (gw, gh), images, labels
