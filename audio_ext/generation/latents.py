"""Latents for generation beyond seeds: projected latents, walks that mix seeds and projections,
spherical interpolation in Z, and variations around a projected latent.

**Walk syntax** (``gen_audio.py --walk``): comma-separated items, each a seed (``5``), an inclusive
seed range (``5-8``) or a projected latent written by ``project_audio.py``, ``proj:FILE``
(``proj:out/projected_w.npz``; FILE may not contain a comma). Example: ``--walk proj:me/projected_w.npz,5,9``
walks from your track to seed 5 and on to seed 9.

**Walk space** (``--walk-space``): ``z`` (default) interpolates between two seeds along the great
circle through their z vectors (:func:`slerp`) and maps every point, so the path keeps the norm of
typical latents instead of cutting through the low-density middle that a straight line in Z
crosses (the midpoint of two orthogonal z of norm r has norm r/sqrt(2)); ``w`` interpolates the
mapped w linearly. A step with a projected latent at either end has no z and is always linear in W.

**Variations** (``--variations N --spread S``): clip k (k = 0..N-1) uses
``w_k = w_proj + S * (mapping(z_k) - w_avg)`` with ``z_k`` the latent of seed k: the projection
moved by S times a typical offset of a random sample from the mean (S = 0 repeats the projection,
S = 1 moves as far as a random clip lies from the average one). ``w_avg`` is the snapshot's tracked
``G.mapping.w_avg``.
"""
from __future__ import annotations

import dataclasses
import math
import stat
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from numpy.lib import format as npy

from audio_ext.core.seeds import SeedSyntaxError, parse_seeds

PROJ_PREFIX = "proj:"
WALK_SPACES = ("z", "w")


@dataclasses.dataclass(frozen=True)
class Projected:
    """A projected latent named on the command line: the npz path as given."""

    path: str

    @property
    def label(self) -> str:
        return Path(self.path).stem if Path(self.path).name != "projected_w.npz" else Path(self.path).parent.name or "proj"


WalkItem = Union[int, Projected]


def parse_walk(spec: str) -> List[WalkItem]:
    """``"proj:a.npz,5,9-11"`` -> ``[Projected('a.npz'), 5, 9, 10, 11]`` (see the module docstring).

    Raises SeedSyntaxError with a one-line message for bad seed items or an empty ``proj:``.
    """
    if spec is None or not str(spec).strip():
        raise SeedSyntaxError("walk: empty list (expected e.g. '1,5,9' or 'proj:out/projected_w.npz,5')")
    items: List[WalkItem] = []
    for raw in str(spec).split(","):
        item = raw.strip()
        if not item:
            raise SeedSyntaxError(f"walk {spec!r}: empty item between commas")
        if item.startswith(PROJ_PREFIX):
            path = item[len(PROJ_PREFIX):].strip()
            if not path:
                raise SeedSyntaxError(f"walk {spec!r}: 'proj:' needs a file, e.g. proj:out/projected_w.npz")
            items.append(Projected(path))
        else:
            try:
                items.extend(parse_seeds(item))
            except SeedSyntaxError as e:
                raise SeedSyntaxError(f"walk {spec!r}: {str(e).split(': ', 1)[-1]}") from None
    return items


def load_projected_w(path, num_ws: int, w_dim: int) -> torch.Tensor:
    """The ``w`` of a ``projected_w.npz`` as float32 ``[num_ws, w_dim]`` (``[1, num_ws, w_dim]`` is accepted,
    as StyleGAN2-ADA writes it). Raises ValueError naming the file for anything else.

    The array's shape and type are read from its ``.npy`` header inside the zip, and the member's
    declared size checked, before any data is read: a 1 MB file that inflates to 1 GiB, or a device
    such as /dev/zero, is refused without reading it.
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
        raise ValueError(f"{path}: is {kind}, not a projected_w.npz file")
    shapes = ((num_ws, w_dim), (1, num_ws, w_dim))
    try:
        with zipfile.ZipFile(p) as z:
            try:
                info = z.getinfo("w.npy")
            except KeyError:
                raise ValueError(f"{path}: has no 'w' array (is it a projected_w.npz from project_audio.py?)") from None
            with z.open(info) as f:
                version = npy.read_magic(f)
                read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
                shape, fortran, dtype = read_header(f)
                if shape not in shapes:
                    shown = shape[1:] if len(shape) == 3 and shape[0] == 1 else shape
                    raise ValueError(f"{path}: w has shape {list(shown)}, this network needs [{num_ws}, {w_dim}] "
                                     f"(projected with another snapshot?)")
                if dtype.kind != "f" or dtype.itemsize > 8:
                    raise ValueError(f"{path}: w holds {dtype}, not floating-point numbers")
                if info.file_size > num_ws * w_dim * dtype.itemsize + 65536:
                    raise ValueError(f"{path}: w.npy declares {info.file_size} bytes, more than its shape holds")
                f.seek(0)
                w = np.asarray(npy.read_array(f, allow_pickle=False), dtype=np.float32)
    except ValueError:
        raise
    except Exception as e:  # not a zip, truncated, pickled objects
        raise ValueError(f"{path}: not a readable .npz file ({type(e).__name__})") from None
    if w.ndim == 3:
        w = w[0]
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{path}: w contains NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(w))


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation ``sin((1-t) W)/sin W * a + sin(t W)/sin W * b``, W the angle between a and b.

    ``t = 0`` gives ``a`` and ``t = 1`` gives ``b`` exactly; nearly parallel vectors fall back to a
    straight line.
    """
    a64, b64 = a.double(), b.double()
    cos = float((a64 @ b64) / (a64.norm() * b64.norm()).clamp_min(1e-300))
    omega = math.acos(max(-1.0, min(1.0, cos)))
    if t == 0:
        return a.clone()
    if t == 1:
        return b.clone()
    if math.sin(omega) < 1e-6:
        return torch.lerp(a, b, float(t))
    s = math.sin(omega)
    return (math.sin((1 - t) * omega) / s * a64 + math.sin(t * omega) / s * b64).to(a.dtype)


def seed_z(seed: int, z_dim: int) -> torch.Tensor:
    """``RandomState(seed).randn(z_dim)`` as float32 (the StyleGAN2-ADA seed convention)."""
    return torch.from_numpy(np.random.RandomState(seed).randn(z_dim).astype(np.float32))


def walk_path(G, items: Sequence[WalkItem], c: torch.Tensor, trunc: float, steps: int, space: str,
              device, projected: Optional[dict] = None) -> torch.Tensor:
    """``[K, num_ws, w_dim]``: every walk point and ``steps`` interpolated points between neighbours.

    ``projected`` maps each :class:`Projected` item to its ``[num_ws, w_dim]`` tensor. Seeds are mapped
    one at a time, so a walk's end points are bit-identical to the seeds' own clips.
    """
    if space not in WALK_SPACES:
        raise ValueError(f"--walk-space {space!r} is not one of {', '.join(WALK_SPACES)}")
    projected = projected or {}
    c1 = c[:1]

    def map_z(z):
        with torch.no_grad():
            return G.mapping(z[None].to(device), c1, truncation_psi=trunc)[0]

    def point_w(item):
        return projected[item].to(device) if isinstance(item, Projected) else map_z(seed_z(item, int(G.z_dim)))

    path = []
    for a, b in zip(items[:-1], items[1:]):
        wa, wb = point_w(a), point_w(b)
        path.append(wa)
        for j in range(1, steps + 1):
            t = j / (steps + 1)
            if space == "z" and not isinstance(a, Projected) and not isinstance(b, Projected):
                path.append(map_z(slerp(seed_z(a, int(G.z_dim)), seed_z(b, int(G.z_dim)), t)))
            else:
                path.append(torch.lerp(wa, wb, t))
    path.append(point_w(items[-1]))
    return torch.stack(path)


def variations(G, w: torch.Tensor, n: int, spread: float, device, start: int = 0) -> torch.Tensor:
    """``[n, num_ws, w_dim]`` latents around ``w`` (see the module docstring): variations ``start`` ..
    ``start + n - 1``, variation k using seed k (so a long run is made in batches)."""
    c = torch.zeros(1, int(getattr(G, "c_dim", 0)), device=device)
    with torch.no_grad():  # one seed at a time, as for walks: the same w as that seed's own clip
        mapped = torch.cat([G.mapping(seed_z(k, int(G.z_dim))[None].to(device), c) for k in range(start, start + n)])
    offsets = mapped - G.mapping.w_avg.to(device)[None, None]
    return w.to(device)[None] + float(spread) * offsets


def walk_label(items: Sequence[WalkItem]) -> str:
    """A file-name friendly name of a walk: ``walk-proj_mytrack-5-9``."""
    return "walk-" + "-".join(f"proj_{i.label}" if isinstance(i, Projected) else str(i) for i in items)
