"""Inference-only fast path of the generator's layers on the CPU: fewer passes over the feature maps.

A synthesis layer computes ``clamp(gain * lrelu(conv(x, w') + noise + b))`` (StyleGAN2;
docs/references.md). Done step by step as the reference path does, each step reads and writes the whole
feature map (at 1024 x 1024 with 32 channels, 134 MB a pass) into a freshly allocated tensor; on a CPU
those passes took a third of the generator's time (issue 13). This path computes the same function with
the work moved where it is free or cheap:

- leaky ReLU is positively homogeneous (``g * lrelu(v) = lrelu(g * v)`` for ``g > 0``), so the
  gain is folded into the (per-sample) conv weights, the bias and the noise strength;
- the demodulation coefficients come from ``styles^2 @ sum_k(weight^2)`` (a matrix-vector
  product, the identity ``sum_{i,k} (W_oik s_i)^2 = sum_i s_i^2 sum_k W_oik^2``) and the
  modulated weight is made in one multiplication;
- the bias is added by the convolution itself (``F.conv2d(..., bias=...)``; after an upsampling
  conv, by the FIR filter's convolution, since the filter keeps DC);
- noise, activation and clamp are applied in place.

The result equals the reference path up to float32 rounding (a few ulp; tests/test_fused_inference.py).
It runs only where autograd is off (``torch.no_grad`` / ``torch.inference_mode``), on CPU float32
tensors, for linear / (leaky) ReLU activations and the fused (grouped) modulated convolution;
everything else -- training, R1 and path-length double-backward, CUDA kernels, fp16 -- takes the
reference path unchanged. ``set_enabled(False)`` or ``ELECTROGAN_FUSED=0`` switches it off (for
measuring "before" and for debugging).

Optional bfloat16 (``set_enabled(True, torch.bfloat16)`` or ``ELECTROGAN_FUSED=bf16``): the blocks
that run in fp16 on a GPU (the top ``num_fp16_res`` resolutions) compute in bfloat16 on CPUs whose
oneDNN has bf16 kernels (AVX512-BF16 / AMX), about three times faster per convolution; the image
sum stays float32. It is off by default because bf16 keeps 8 bits of mantissa:
``benchmarks/generate_speed.py`` measures its spectral convergence against float32 next to the
codec's own 8-bit error.
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F

from .upfirdn2d import _padding4, filter_size, upfirdn2d

ENV_VAR = "ELECTROGAN_FUSED"
#: Activations for which ``g * act(v) == act(g * v)`` (g > 0), so the gain can move into the weights.
HOMOGENEOUS = ("linear", "relu", "lrelu")

_enabled_override: Optional[bool] = None
_dtype_override: Optional[torch.dtype] = None


def set_enabled(enabled: Optional[bool], dtype: Optional[torch.dtype] = None) -> None:
    """Turn the fast path on or off for this process (``None`` goes back to ``$ELECTROGAN_FUSED``, default on).

    ``dtype=torch.bfloat16`` also runs the fp16 blocks in bfloat16 (see the module docstring).
    """
    global _enabled_override, _dtype_override
    if dtype not in (None, torch.float32, torch.bfloat16):
        raise ValueError(f"fused_inference: dtype must be float32 or bfloat16, got {dtype}")
    _enabled_override = None if enabled is None else bool(enabled)
    _dtype_override = None if enabled is None else (dtype or torch.float32)


def _env() -> str:
    return os.environ.get(ENV_VAR, "1").strip().lower()


def is_enabled() -> bool:
    """Whether the fast path may run: the override from :func:`set_enabled`, else ``$ELECTROGAN_FUSED`` != 0."""
    if _enabled_override is not None:
        return _enabled_override
    return _env() not in ("0", "false", "no", "off")


def bf16_supported() -> bool:
    """Whether this CPU's oneDNN has fast bfloat16 convolutions (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def low_precision_dtype() -> torch.dtype:
    """The dtype of the fp16 blocks on the fast path: bfloat16 when asked for and supported, else float32."""
    wanted = _dtype_override if _enabled_override is not None else \
        (torch.bfloat16 if _env() == "bf16" else torch.float32)
    return torch.bfloat16 if wanted == torch.bfloat16 and bf16_supported() else torch.float32


def applies(x: torch.Tensor, activation: str = "linear") -> bool:
    """True when a layer may take the fast path for input ``x``: enabled, no autograd, CPU float32 (or bf16)."""
    return (is_enabled() and not torch.is_grad_enabled() and x.device.type == "cpu"
            and (x.dtype == torch.float32 or x.dtype == low_precision_dtype()) and activation in HOMOGENEOUS)


def block_dtype(x: torch.Tensor, use_fp16: bool) -> Optional[torch.dtype]:
    """dtype a synthesis block computes in on the fast path (``x``: its input or its ws), None when the path is off.

    float32, or bfloat16 for a block that would run fp16 on a GPU when bf16 was asked for.
    """
    if not applies(x):
        return None
    return low_precision_dtype() if use_fp16 else torch.float32


def _activate_(x: torch.Tensor, activation: str, alpha: float, clamp: Optional[float]) -> torch.Tensor:
    """Activation and optional clamp of ``x``, in place."""
    if activation == "lrelu":
        F.leaky_relu_(x, alpha)
    elif activation == "relu":
        F.relu_(x)
    if clamp is not None and clamp >= 0:
        x.clamp_(-clamp, clamp)
    return x


def _weight_power(weight: torch.Tensor) -> torch.Tensor:
    """``sum over (kh, kw) of weight^2``, ``[O, I]``, cached on the tensor while it is unchanged.

    The cache key is the tensor's version counter (bumped by every in-place update, e.g. an
    optimizer step), so a trained-on weight is never served stale.
    """
    key = (weight._version, weight.data_ptr(), weight.dtype)
    cached = getattr(weight, "_fused_power", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    power = weight.square().sum(dim=[2, 3])
    try:
        weight._fused_power = (key, power)
    except (AttributeError, RuntimeError):  # some tensor subclasses refuse new attributes
        pass
    return power


def scaled_linear_params(weight: torch.Tensor, weight_gain: float, bias: Optional[torch.Tensor],
                         bias_gain: float):
    """``(weight * weight_gain, bias * bias_gain)`` of a FullyConnectedLayer, cached while both are unchanged.

    The generator's 33 dense layers (mapping + one affine per conv) each rescaled their 512 x 512
    weight on every call; on a busy 2-core machine each such small parallel op costs milliseconds.
    Same key as :func:`_weight_power` (version counters, data pointers).
    """
    key = (weight._version, weight.data_ptr(), float(weight_gain), None if bias is None else
           (bias._version, bias.data_ptr()), float(bias_gain))
    cached = getattr(weight, "_fused_scaled", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    b = None if bias is None else (bias * bias_gain if bias_gain != 1 else bias)
    params = (weight * weight_gain, b)
    try:
        weight._fused_scaled = (key, params)
    except (AttributeError, RuntimeError):
        pass
    return params


def _filter_with_bias(x: torch.Tensor, f: torch.Tensor, pad, gain: float, bias: torch.Tensor) -> torch.Tensor:
    """``upfirdn2d(x, f, padding=pad, gain=gain) + bias`` (per channel), as one depthwise convolution."""
    channels = x.shape[1]
    px0, px1, py0, py1 = pad
    if f.ndim != 2:  # separable filters: the generic op, then the bias in place
        return upfirdn2d(x, f, padding=pad, gain=gain).add_(bias[None, :, None, None])
    fh, fw = f.shape
    taps = (f.to(x.dtype) * gain).flip([0, 1])[None, None].expand(channels, 1, fh, fw)
    taps = taps.contiguous(memory_format=torch.channels_last)
    if px0 == px1 == py0 == py1 and px0 >= 0:
        return F.conv2d(x, taps, bias, padding=px0, groups=channels)
    return F.conv2d(F.pad(x, [px0, px1, py0, py1]), taps, bias, groups=channels)


def _conv_one(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, up: int, padding,
              resample_filter: Optional[torch.Tensor]) -> torch.Tensor:
    """One sample's conv (``x [1, I, H, W]`` channels-last, ``w [O, I, kh, kw]``) plus bias, resampled."""
    out_channels, _, kh, kw = w.shape
    px0, px1, py0, py1 = _padding4(padding)
    if up == 1:
        # modulated_conv2d calls conv2d_resample with flip_weight=True for up == 1: a correlation
        if px0 == px1 == py0 == py1 and px0 >= 0:
            return F.conv2d(x, w, b, padding=px0)
        return F.conv2d(F.pad(x, [px0, px1, py0, py1]), w, b)
    # up == 2: a transposed conv (zero insertion + conv in one step), then the FIR filter with the
    # bias; the padding arithmetic of conv2d_resample (flip_weight=False there: a true convolution)
    fw, fh = filter_size(resample_filter)
    px0, px1 = px0 + (fw + 1) // 2, px1 + (fw - 2) // 2
    py0, py1 = py0 + (fh + 1) // 2, py1 + (fh - 2) // 2
    pad = [px0 - (kw - 1), px1 - kw + 2, py0 - (kh - 1), py1 - kh + 2]
    y = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
    return _filter_with_bias(y, resample_filter, pad, 4.0, b)


def modulated_layer(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, bias: torch.Tensor,
                    noise: Optional[torch.Tensor] = None, up: int = 1, padding: int = 1,
                    resample_filter: Optional[torch.Tensor] = None, demodulate: bool = True,
                    activation: str = "lrelu", alpha: float = 0.2, gain: float = 1.0,
                    clamp: Optional[float] = None) -> torch.Tensor:
    """``clamp(gain * act(modconv(x) + noise + bias))`` for ``x [N, I, H, W]``: a SynthesisLayer or ToRGB.

    ``weight [O, I, kh, kw]`` (with its equalized-lr gain already in ``styles`` or the weight),
    ``styles [N, I]``, ``bias [O]``, ``noise`` broadcastable to ``[N, 1, H', W']`` (already scaled
    by the noise strength), ``up`` 1 or 2 with ``resample_filter`` (upfirdn2d's ``f``), ``padding``
    the conv padding as in :func:`~stylegan2.ops.modulated_conv.modulated_conv2d`. Returns a new
    ``[N, O, H', W']`` tensor in channels-last layout (oneDNN's convolutions run about twice as
    fast on it as on NCHW). Only for the cases :func:`applies` accepts.
    """
    batch, in_channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    if up not in (1, 2) or (up == 2 and resample_filter is None):
        raise ValueError(f"fused_inference.modulated_layer: unsupported up={up}")
    if up == 2 and min(_padding4(padding)) < 0:
        raise ValueError("fused_inference.modulated_layer: negative padding with up=2 is not supported")
    scale = styles[:, None, :] * gain  # [N, 1, I]
    if demodulate:
        dcoefs = (styles.square() @ _weight_power(weight).t() + 1e-8).rsqrt()  # [N, O]
        scale = scale * dcoefs[:, :, None]                                     # [N, O, I]
    b = (bias.to(torch.float32) * gain).to(x.dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    if kh == kw == 1 and up == 1 and _padding4(padding) == (0, 0, 0, 0):
        # 1x1 (ToRGB): a matrix product over the pixels of the channels-last map, much faster than
        # oneDNN's convolution with a handful of output channels
        rows = x.permute(0, 2, 3, 1).reshape(batch, height * width, in_channels)
        w = (weight[None, :, :, 0, 0] * scale).to(x.dtype)  # [N, O, I]
        y = torch.baddbmm(b[None, None, :], rows, w.transpose(1, 2))
        y = y.reshape(batch, height, width, out_channels).permute(0, 3, 1, 2)
    else:
        parts = []
        for n in range(batch):
            # the modulated weight made directly in the layout oneDNN wants (channels-last; for the
            # transposed conv of up=2, [I, O, kh, kw]), which it would otherwise copy it into
            if up == 1:
                w = torch.empty_like(weight, memory_format=torch.channels_last)
                torch.mul(weight, scale[n, :, :, None, None], out=w)
            else:
                w = torch.empty((in_channels, out_channels, kh, kw), dtype=weight.dtype,
                                memory_format=torch.channels_last)
                torch.mul(weight.transpose(0, 1), scale[n].t()[:, :, None, None], out=w)
                w = w.transpose(0, 1)  # viewed back as [O, I, kh, kw]; _conv_one transposes it again
            w = w.to(x.dtype)
            parts.append(_conv_one(x[n:n + 1], w, b, up, padding, resample_filter))
        y = parts[0] if batch == 1 else torch.cat(parts)
    if noise is not None:
        y.add_(noise.to(y.dtype), alpha=gain)
    return _activate_(y, activation, alpha, clamp)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """``upfirdn.upsample2d(x, f)`` (factor 2, no extra padding) as one transposed convolution.

    Zero insertion followed by a K-tap filter equals a stride-2 transposed convolution with the
    (unflipped) taps and padding ``K - 1 - (K + 1) // 2``; it skips the three zeros in four.
    """
    from .upfirdn2d import upsample2d as reference
    if f is None or f.ndim != 2 or f.shape[0] != f.shape[1] or f.shape[0] % 2:
        return reference(x, f)
    k = f.shape[0]
    channels = x.shape[1]
    taps = (f.to(x.dtype) * 4.0)[None, None].expand(channels, 1, k, k).contiguous()
    return F.conv_transpose2d(x, taps, stride=2, padding=k - 1 - (k + 1) // 2, groups=channels)
