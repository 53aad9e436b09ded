"""Autograd wrapper around our ``upfirdn2d`` CUDA kernels (gradients of any order w.r.t. ``x``).

upfirdn2d is linear in ``x``, and its adjoint is another upfirdn2d: up and down swap, the filter is
reversed (``flip_filter`` toggles) and the padding per axis becomes

    pad0' = taps - 1 - pad0
    pad1' = in * up - out * down + pad0 - up + 1

(derived from ``y[o] = sum_j P[o*down + j] w[j]`` with ``P[t] = x[(t - pad0) / up]``; ``pad1'`` makes the
result exactly ``in`` pixels long). Because the backward pass calls the same Function, every order
of gradient works. A 1-D (separable) filter runs as a horizontal then a vertical pass, each with
``sqrt(gain)`` as the reference does. The filter itself receives no gradient.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch

from . import plugin


def _axis_grad_padding(size_in: int, size_out: int, up: int, down: int, taps: int, pad0: int) -> Tuple[int, int]:
    """Padding of the adjoint upfirdn along one axis (see the module docstring)."""
    return taps - 1 - pad0, size_in * up - size_out * down + pad0 - up + 1


class _Upfirdn2dFunction(torch.autograd.Function):
    """One 2-D pass of the kernel; ``f`` is 2-D ``[f_h, f_w]``, factors and pads are per axis."""

    @staticmethod
    def forward(ctx, x, f, up: Tuple[int, int], down: Tuple[int, int], padding: Tuple[int, int, int, int],
                flip: bool, gain: float):
        ext = plugin.load("upfirdn2d", x.device)
        (ux, uy), (dx, dy) = up, down
        px0, px1, py0, py1 = padding
        y, _ = ext.upfirdn2d(x, f, ux, uy, dx, dy, px0, px1, py0, py1, flip, gain, True)
        ctx.save_for_backward(f)
        ctx.setup = (up, down, padding, flip, gain, tuple(x.shape), tuple(y.shape))
        return y

    @staticmethod
    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        up, down, padding, flip, gain, in_shape, out_shape = ctx.setup
        dx = None
        if ctx.needs_input_grad[0]:
            f_h, f_w = f.shape
            gx = _axis_grad_padding(in_shape[3], out_shape[3], up[0], down[0], f_w, padding[0])
            gy = _axis_grad_padding(in_shape[2], out_shape[2], up[1], down[1], f_h, padding[2])
            dx = _Upfirdn2dFunction.apply(dy, f, down, up, (gx[0], gx[1], gy[0], gy[1]), not flip, gain)
        return dx, None, None, None, None, None, None


def _out_size(size: int, up: int, pad0: int, pad1: int, taps: int, down: int) -> int:
    return (size * up + pad0 + pad1 - taps) // down + 1


def upfirdn2d_cuda(x: torch.Tensor, f: Optional[torch.Tensor], up: Sequence[int] = (1, 1),
                   down: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0, 0, 0),
                   flip_filter: bool = False, gain: float = 1) -> torch.Tensor:
    """Same contract as :func:`stylegan2.ops.upfirdn2d.upfirdn2d` with ``up``/``down`` as ``(x, y)``
    pairs and ``padding`` as ``(px0, px1, py0, py1)`` (pixels of the upsampled image)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"upfirdn2d: x must be a 4-D tensor [N, C, H, W], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.device.type != "cuda":
        raise ValueError("upfirdn2d_cuda: x must be a CUDA tensor")
    (ux, uy), (dx, dy) = tuple(int(v) for v in up), tuple(int(v) for v in down)
    px0, px1, py0, py1 = (int(p) for p in padding)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if f is None:
        f = torch.ones([1, 1], dtype=acc_dtype, device=x.device)
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"upfirdn2d: filter must be 1-D (separable) or 2-D, got shape {tuple(f.shape)}")
    f = f.to(device=x.device, dtype=acc_dtype)
    f_w = f.shape[-1]
    f_h = f.shape[0]
    _, _, h, w = x.shape
    if _out_size(w, ux, px0, px1, f_w, dx) < 1 or _out_size(h, uy, py0, py1, f_h, dy) < 1:
        raise ValueError(f"upfirdn2d: padding {(px0, px1, py0, py1)} leaves no output for a {h}x{w} input "
                         f"with a {f_h}x{f_w} filter")
    gain = float(gain)
    if f.ndim == 2:
        return _Upfirdn2dFunction.apply(x, f, (ux, uy), (dx, dy), (px0, px1, py0, py1), bool(flip_filter), gain)
    g = math.sqrt(gain) if gain >= 0 else None
    gains = (g, g) if g is not None else (gain, 1.0)
    x = _Upfirdn2dFunction.apply(x, f.reshape(1, f_w), (ux, 1), (dx, 1), (px0, px1, 0, 0), bool(flip_filter),
                                 gains[0])
    return _Upfirdn2dFunction.apply(x, f.reshape(f_h, 1), (1, uy), (1, dy), (0, 0, py0, py1), bool(flip_filter),
                                    gains[1])
