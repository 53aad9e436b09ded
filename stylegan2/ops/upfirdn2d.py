"""FIR up/down-sampling of images ("upfirdn" in 2-D): zero-insert, pad, filter, decimate.

StyleGAN2 resamples with a small low-pass FIR filter (``[1,3,3,1]``) instead of nearest/bilinear
interpolation, to limit aliasing (StyleGAN2; StyleGAN2-ADA ``torch_utils/ops/upfirdn2d.py``). Per
channel, ``upfirdn2d`` does

1. insert ``up - 1`` zeros after every pixel (per axis),
2. pad with zeros by ``padding`` (negative values crop),
3. convolve with the FIR filter ``f`` (true convolution; ``flip_filter=True`` correlates instead)
   and scale by ``gain``,
4. keep every ``down``-th pixel, starting with the first.

Along one axis this is what ``scipy.signal.upfirdn`` computes when the padding equals a full
convolution. The reference path uses only differentiable PyTorch ops (reshape, pad, depthwise
conv2d, strided slicing), so gradients of any order exist with respect to ``x``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import backend

IntOrPair = Union[int, Sequence[int]]


def _pair(value: IntOrPair, name: str) -> Tuple[int, int]:
    """``k`` -> ``(k, k)``; ``(kx, ky)`` stays; both must be integers >= 1."""
    if isinstance(value, (int, np.integer)):
        pair = (int(value), int(value))
    else:
        pair = tuple(int(v) for v in value)
        if len(pair) != 2:
            raise ValueError(f"upfirdn2d: {name} must be an int or a pair (x, y), got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"upfirdn2d: {name} must be >= 1, got {value!r}")
    return pair


def _padding4(padding: IntOrPair) -> Tuple[int, int, int, int]:
    """``p`` -> all four sides; ``(px, py)`` -> ``(px, px, py, py)``; ``(px0, px1, py0, py1)`` stays."""
    if isinstance(padding, (int, np.integer)):
        return (int(padding),) * 4
    pad = tuple(int(p) for p in padding)
    if len(pad) == 2:
        return (pad[0], pad[0], pad[1], pad[1])
    if len(pad) == 4:
        return pad
    raise ValueError(f"upfirdn2d: padding must be an int, (px, py) or (px0, px1, py0, py1); got {padding!r}")


def filter_size(f: Optional[torch.Tensor]) -> Tuple[int, int]:
    """Width and height (taps) of a filter made by :func:`setup_filter`; ``None`` counts as 1x1."""
    if f is None:
        return 1, 1
    if f.ndim == 1:
        return int(f.shape[0]), int(f.shape[0])
    if f.ndim == 2:
        return int(f.shape[1]), int(f.shape[0])
    raise ValueError(f"upfirdn2d: filter must be 1-D (separable) or 2-D, got shape {tuple(f.shape)}")


def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    """Turn filter taps (list, array or tensor; None = identity) into the float32 tensor the ops expect.

    A 1-D filter becomes the 2-D outer product with itself unless it is ``separable`` (default: it
    has 8 or more taps, where two 1-D passes are cheaper). ``normalize`` scales the taps to sum 1
    (unit DC gain); ``gain`` is the overall gain of the 2-D filter (split as sqrt(gain) per pass
    for a separable one); ``flip_filter`` reverses the taps.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32, device="cpu")  # explicit: also under a meta-device context
    if f.ndim == 0:
        f = f.reshape(1)
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"setup_filter: expected 1-D or 2-D filter taps, got shape {tuple(f.shape)}")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if separable and f.ndim != 1:
        raise ValueError("setup_filter: a 2-D filter cannot be separable")
    if normalize:
        total = f.sum()
        if total == 0:
            raise ValueError("setup_filter: cannot normalise a filter whose taps sum to zero")
        f = f / total
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl=None):
    """Upsample by zero insertion, pad, FIR-filter and downsample a batch of images ``[N, C, H, W]``.

    ``f`` comes from :func:`setup_filter` (1-D = separable, 2-D, or None for no filtering); ``up``,
    ``down`` are ints or ``(x, y)`` pairs; ``padding`` is an int, ``(px, py)`` or
    ``(px0, px1, py0, py1)`` in pixels of the upsampled image (negative crops). The output width is
    ``(W * up_x + px0 + px1 - filter_w) // down_x + 1``, and the same for the height.
    """
    up = _pair(up, "up")
    down = _pair(down, "down")
    padding = _padding4(padding)
    if impl != 'ref' and backend.kernels_for('upfirdn2d', x) is not None:
        from .upfirdn2d_cuda import upfirdn2d_cuda
        return upfirdn2d_cuda(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def _upfirdn2d_ref(x, f, up, down, padding, flip_filter=False, gain=1):
    """Reference path; ``up``/``down`` are ``(x, y)`` pairs and ``padding`` is ``(px0, px1, py0, py1)``."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"upfirdn2d: x must be a 4-D tensor [N, C, H, W], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    fw, fh = filter_size(f)
    n, c, h, w = x.shape
    ux, uy = up
    dx, dy = down
    px0, px1, py0, py1 = padding
    out_w = (w * ux + px0 + px1 - fw) // dx + 1
    out_h = (h * uy + py0 + py1 - fh) // dy + 1
    if out_w < 1 or out_h < 1:
        raise ValueError(f"upfirdn2d: padding {padding} leaves no output for a {h}x{w} input "
                         f"with a {fh}x{fw} filter")

    # 1. Zero insertion: every pixel is followed by (up - 1) zeros along each axis.
    if ux > 1 or uy > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, ux - 1, 0, 0, 0, uy - 1])
        x = x.reshape(n, c, h * uy, w * ux)

    # 2. Pad with zeros (negative amounts crop; F.pad handles both).
    if any(padding):
        x = F.pad(x, [px0, px1, py0, py1])

    # 3. FIR filter as a depthwise conv2d. conv2d correlates, so a true convolution needs the taps
    #    reversed; flip_filter=True asks for correlation and keeps them as they are.
    f = f.to(device=x.device, dtype=x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        weight = (f * gain)[None, None].expand(c, 1, fh, fw)
        x = F.conv2d(x, weight, groups=c)
    else:
        g = gain ** 0.5
        x = F.conv2d(x, (f * g)[None, None, None, :].expand(c, 1, 1, fw), groups=c)
        x = F.conv2d(x, (f * g)[None, None, :, None].expand(c, 1, fh, 1), groups=c)

    # 4. Decimation: keep every down-th pixel, starting with the first.
    if dx > 1 or dy > 1:
        x = x[:, :, ::dy, ::dx]
    return x


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl=None):
    """Filter ``x`` with ``f`` keeping its size (the filter is centred; extra ``padding`` enlarges it)."""
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Upsample ``x`` by ``up`` with FIR filter ``f``; output ``H*up x W*up`` (plus ``padding``).

    The filter gain is multiplied by ``up_x * up_y`` so that a constant image stays constant (zero
    insertion alone would divide the mean by that factor).
    """
    ux, uy = _pair(up, "up")
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)
    pad = [px0 + (fw + ux - 1) // 2, px1 + (fw - ux) // 2, py0 + (fh + uy - 1) // 2, py1 + (fh - uy) // 2]
    return upfirdn2d(x, f, up=(ux, uy), padding=pad, flip_filter=flip_filter, gain=gain * ux * uy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Low-pass filter ``x`` with ``f`` and keep every ``down``-th pixel; output ``H/down x W/down``."""
    dx, dy = _pair(down, "down")
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)
    pad = [px0 + (fw - dx + 1) // 2, px1 + (fw - dx) // 2, py0 + (fh - dy + 1) // 2, py1 + (fh - dy) // 2]
    return upfirdn2d(x, f, down=(dx, dy), padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)
