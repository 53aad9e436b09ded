"""Style modulation and demodulation: the convolution at the heart of StyleGAN2's generator.

Each sample ``n`` gets its own weight ``w'_n = weight * s_n`` (style ``s_n`` scales input channels);
demodulation divides each output channel by ``sqrt(sum_{i,kh,kw} w'^2 + 1e-8)`` so activations keep
unit variance without normalising them (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN", Sec. 2.2). Two equivalent executions exist:

- fused: the batch becomes the groups of one grouped convolution with per-sample weights (cheap
  for inference and batch 1);
- non-fused: scale the activations by ``s``, run one shared-weight convolution, scale the outputs
  by the demodulation coefficients (cheaper to differentiate; used in training).
"""
from __future__ import annotations

import torch

from .conv2d_resample import conv2d_resample


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """``1 / sqrt(sum over (in, kh, kw) of (weight * style)^2 + 1e-8)`` per sample and output channel ``[N, C_out]``."""
    w = weight[None] * styles[:, None, :, None, None]
    return (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                     demodulate=True, flip_weight=True, fused_modconv=True):
    """Modulated (and optionally demodulated) conv of ``x [N, C_in, H, W]`` with ``weight [C_out, C_in, kh, kw]``.

    ``styles [N, C_in]`` scale the input channels per sample; ``noise`` (broadcastable to the output,
    usually ``[N, 1, H', W']``) is added after the convolution; ``up``/``down``/``padding``/
    ``resample_filter``/``flip_weight`` are passed to :func:`conv2d_resample`. In fp16 the weight
    and styles are pre-scaled (which demodulation cancels) so intermediate values cannot overflow.
    """
    if x.ndim != 4 or weight.ndim != 4 or styles.ndim != 2:
        raise ValueError(f"modulated_conv2d: expected x [N,C,H,W], weight [O,I,kh,kw], styles [N,I]; got "
                         f"{tuple(x.shape)}, {tuple(weight.shape)}, {tuple(styles.shape)}")
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.shape[1] != in_channels or styles.shape != (batch, in_channels):
        raise ValueError(f"modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)} and "
                         f"styles {tuple(styles.shape)} disagree on batch or input channels")

    # fp16 guard: bring weights and styles to about unit magnitude first; demodulation undoes any
    # per-output-channel or per-sample scale, so the result is unchanged.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / (in_channels * kh * kw) ** 0.5
                           / weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)

    dcoefs = demodulation_coefficients(weight, styles) if demodulate else None

    if not fused_modconv:
        x = x * styles.to(x.dtype)[:, :, None, None]
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                            flip_weight=flip_weight)
        if demodulate and noise is not None:
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype)[:, :, None, None])
        if demodulate:
            return x * dcoefs.to(x.dtype)[:, :, None, None]
        if noise is not None:
            return x + noise.to(x.dtype)
        return x

    # Fused: per-sample weights, batch folded into the groups of one convolution.
    w = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        w = w * dcoefs[:, :, None, None, None]
    w = w.reshape(batch * out_channels, in_channels, kh, kw)
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                        groups=batch, flip_weight=flip_weight)
    x = x.reshape(batch, out_channels, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x
