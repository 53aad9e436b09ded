"""2-D convolution with built-in FIR up- or down-sampling, as StyleGAN2's resampling layers use it.

Definition (StyleGAN2-ADA ``torch_utils/ops/conv2d_resample.py``; docs/references.md): with
``up > 1`` the input is upsampled by zero insertion,
padded once by ``padding`` plus the filter's own padding, low-pass filtered with ``f`` (gain up^2,
so DC is kept) and then convolved ("valid") with ``w``; with ``down > 1`` the input is padded once,
convolved, filtered with ``f`` and decimated. Faster but identical executions are picked:
transposed convolution with stride ``up`` before the filter, filtering before a strided
convolution, or resampling on the cheap side of a 1x1 convolution.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .upfirdn2d import _padding4, filter_size, upfirdn2d


def _conv2d(x, w, stride=1, groups=1, flip_weight=True):
    """``conv2d`` without padding; ``flip_weight=False`` turns torch's correlation into a convolution."""
    w = w.to(x.dtype)
    if not flip_weight:
        w = w.flip([2, 3])
    return F.conv2d(x, w, stride=stride, groups=groups)


def _check_factor(value, name):
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"conv2d_resample: {name} must be an integer >= 1, got {value!r}")
    return value


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """Convolve ``x [N, C_in, H, W]`` with ``w [C_out, C_in/groups, kh, kw]``, resampling with FIR filter ``f``.

    ``f`` comes from :func:`~stylegan2.ops.upfirdn2d.setup_filter`; ``up``/``down`` are integer
    factors (the same along both axes); ``padding`` is in pixels of the (upsampled) input, as an int,
    ``(px, py)`` or ``(px0, px1, py0, py1)``. ``flip_weight=True`` correlates (like ``F.conv2d``),
    False convolves. With ``padding = k // 2`` the output is ``H*up/down x W*up/down``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError("conv2d_resample: x must be a 4-D tensor [N, C, H, W]")
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise ValueError("conv2d_resample: w must be a 4-D tensor [C_out, C_in/groups, kh, kw]")
    if x.shape[1] != w.shape[1] * groups or w.shape[0] % groups != 0:
        raise ValueError(f"conv2d_resample: weight {tuple(w.shape)} with groups={groups} does not fit "
                         f"input with {x.shape[1]} channels")
    up = _check_factor(up, "up")
    down = _check_factor(down, "down")
    out_channels, in_per_group, kh, kw = w.shape
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = _padding4(padding)

    # The filter's own padding: centre it on the up/down-sampled grid.
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    pad = [px0, px1, py0, py1]

    # 1x1 kernels: resample where the image is smallest (before a down conv, after an up conv).
    if kw == 1 and kh == 1 and up == 1 and down > 1:
        x = upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter)
        return _conv2d(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv2d(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter)

    # Downsampling only: filter first, then a strided conv does the decimation.
    if up == 1 and down > 1:
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return _conv2d(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling: a stride-`up` transposed conv does zero insertion + conv in one step and returns
    # the full (untruncated) result; the filter then runs with the padding shifted accordingly.
    # Valid only when the requested padding does not crop the input (then fall through).
    if up > 1 and min(pad) >= 0:
        cx0, cx1 = px0 - (kw - 1), px1 - kw + up
        cy0, cy1 = py0 - (kh - 1), py1 - kh + up
        wt = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
        wt = wt.reshape(groups * in_per_group, out_channels // groups, kh, kw).to(x.dtype)
        if flip_weight:
            wt = wt.flip([2, 3])
        x = F.conv_transpose2d(x, wt, stride=up, groups=groups)
        x = upfirdn2d(x, f, padding=[cx0, cx1, cy0, cy1], gain=up ** 2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # No resampling: a plain conv (torch's own padding when it is symmetric and non-negative).
    if up == 1 and down == 1:
        if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            w = w.to(x.dtype) if flip_weight else w.to(x.dtype).flip([2, 3])
            return F.conv2d(x, w, padding=(py0, px0), groups=groups)
        return _conv2d(F.pad(x, pad), w, groups=groups, flip_weight=flip_weight)

    # General case (cropping padding with up > 1, or up and down together): the definition itself.
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter)
    x = _conv2d(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x
