"""A tiny TorchScript stand-in for the Inception detector, for tests and offline smoke runs.

It follows the real file's call convention (uint8-range NCHW input with 3 channels, any size;
``return_features=True`` gives [N, D] float features) so everything downstream runs through the
same code path as with Inception. Its numbers mean nothing perceptually: never report them as FID.
"""
from __future__ import annotations

import os
import warnings
from typing import Union

import torch
import torch.nn.functional as F

from ..misc import atomic_path


class ToyDetector(torch.nn.Module):
    """Resize to 32 x 32, scale to [-1, 1], one fixed random 3x3 conv + tanh, global average pool."""

    def __init__(self, num_features: int = 16, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(num_features, 3, 3, 3, generator=gen) * 0.5, requires_grad=False)
        self.head = torch.nn.Parameter(torch.randn(num_features, 5, generator=gen), requires_grad=False)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        if img.shape[1] != 3:
            raise RuntimeError("ToyDetector: expected 3 input channels")
        x = img.to(torch.float32)
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        x = (x - 128.0) / 128.0
        x = torch.tanh(F.conv2d(x, self.weight, padding=1))
        feats = x.mean(dim=(2, 3))
        if return_features:
            return feats
        return torch.softmax(feats @ self.head, dim=1)


def write_toy_detector(path: Union[str, os.PathLike], num_features: int = 16, seed: int = 0) -> str:
    """Script :class:`ToyDetector` and save it atomically to ``path``; return the path as a string."""
    with warnings.catch_warnings():  # TorchScript is deprecated in torch >= 2.9; the real detector still uses it
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        scripted = torch.jit.script(ToyDetector(num_features, seed))
        with atomic_path(path, suffix=".pt") as tmp:
            torch.jit.save(scripted, str(tmp))
    return str(path)
