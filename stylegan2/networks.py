"""StyleGAN2 generator and discriminator (Karras et al. 2020, config F), written from the paper and
StyleGAN2-ADA's ``training/networks.py`` (docs/references.md).

Generator = mapping network (z -> w, 8 or 2 FC layers with lr multiplier 0.01) + synthesis network
(learned 4x4 constant, modulated/demodulated 3x3 convs, per-layer noise, skip ToRGB outputs summed
with FIR upsampling). Discriminator = residual blocks from R down to 8, minibatch standard
deviation and a 4x4 epilogue, optionally conditioned by projection onto a label embedding.

Equalized learning rate: weights are stored as N(0, 1) (divided by the lr multiplier) and scaled at
run time by ``lr_mul / sqrt(fan_in)``, so that Adam's per-parameter step sizes act alike on every
layer. Every module keeps its constructor kwargs in ``self.init_kwargs`` (plain data) so that a
snapshot can rebuild it without pickled code.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .ops import fused_inference
from .ops.bias_act import activation_funcs, bias_act
from .ops.conv2d_resample import conv2d_resample
from .ops.modulated_conv import modulated_conv2d
from .ops.upfirdn2d import downsample2d, setup_filter, upsample2d

DEFAULT_FILTER = [1, 3, 3, 1]


def _plain(value):
    """Constructor kwargs as plain Python data (lists, dicts, numbers) for ``init_kwargs``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_resolution(img_resolution: int, who: str) -> int:
    if not isinstance(img_resolution, (int, np.integer)) or img_resolution < 4 or \
            img_resolution & (img_resolution - 1):
        raise ValueError(f"{who}: img_resolution must be a power of two >= 4, got {img_resolution!r}")
    return int(img_resolution)


def _compute_dtype(use_fp16: bool, force_fp32: bool, x_device: torch.device) -> torch.dtype:
    """fp16 only on CUDA (CPU convs in fp16 are slow or missing) and only when not forced to fp32."""
    if use_fp16 and not force_fp32 and x_device.type == "cuda":
        return torch.float16
    return torch.float32


def channels_for(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps of the blocks at ``resolution``: ``min(channel_base // resolution, channel_max)``."""
    return min(channel_base // resolution, channel_max)


def fp16_resolution(img_resolution: int, num_fp16_res: int) -> int:
    """Lowest block resolution that runs in fp16 when ``num_fp16_res`` top resolutions do (at least 8)."""
    return max(2 ** (int(np.log2(img_resolution)) + 1 - num_fp16_res), 8)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit root-mean-square along ``dim`` (the mapping net's input normalisation)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ------------------------------------------------------------------------------------ basic layers

class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalized lr: effective weight ``stored * lr_multiplier / sqrt(in_features)``.

    The stored weight starts as ``N(0, 1) / lr_multiplier`` (so the effective weight starts N(0,
    1/in_features)); the bias is stored as ``bias_init / lr_multiplier`` and scaled by
    ``lr_multiplier`` at run time, so it starts at ``bias_init``.
    """

    def __init__(self, in_features, out_features, bias=True, activation='linear', lr_multiplier=1.0,
                 bias_init=0.0):
        super().__init__()
        self.init_kwargs = _plain(dict(in_features=in_features, out_features=out_features, bias=bias,
                                       activation=activation, lr_multiplier=lr_multiplier, bias_init=bias_init))
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init) / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused_inference.applies(x):
            # inference on the CPU: the scaled weight and bias are cached while the parameters are unchanged
            w, b = fused_inference.scaled_linear_params(self.weight, self.weight_gain, self.bias, self.bias_gain)
        else:
            w = self.weight.to(x.dtype) * self.weight_gain
            b = self.bias
            if b is not None:
                b = b.to(x.dtype)
                if self.bias_gain != 1:
                    b = b * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(torch.nn.Module):
    """Conv layer with equalized lr (weight gain ``1/sqrt(in_channels * k * k)``), FIR resampling,
    bias, activation and an optional output clamp (``conv_clamp``, scaled by the call's ``gain``).

    ``trainable=False`` stores weight and bias as buffers (used to freeze discriminator layers).
    """

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation='linear', up=1, down=1,
                 resample_filter=DEFAULT_FILTER, conv_clamp=None, channels_last=False, trainable=True):
        super().__init__()
        self.init_kwargs = _plain(dict(in_channels=in_channels, out_channels=out_channels,
                                       kernel_size=kernel_size, bias=bias, activation=activation, up=up,
                                       down=down, resample_filter=resample_filter, conv_clamp=conv_clamp,
                                       channels_last=channels_last, trainable=trainable))
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = activation_funcs[activation].def_gain
        self.register_buffer('resample_filter', setup_filter(resample_filter))
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias_value = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias_value) if bias else None
        else:
            self.register_buffer('weight', weight)
            self.register_buffer('bias', bias_value)

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = self.weight * self.weight_gain
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=(self.up == 1))
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp)


# ------------------------------------------------------------------------------------ mapping

class MappingNetwork(torch.nn.Module):
    """z (and label c) -> w: 2nd-moment normalisation, ``num_layers`` FC layers with lr multiplier.

    Keeps ``w_avg``, the running mean of w (``w_avg <- lerp(mean(w), w_avg, w_avg_beta)`` when called
    with ``update_emas=True``), for the truncation trick ``w <- w_avg + psi * (w - w_avg)``.
    ``num_ws=None`` returns ``[N, w_dim]`` (the discriminator's label embedding); otherwise w is
    broadcast to ``[N, num_ws, w_dim]``.
    """

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation='lrelu', lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        self.init_kwargs = _plain(dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=num_ws, num_layers=num_layers,
                                       embed_features=embed_features, layer_features=layer_features,
                                       activation=activation, lr_multiplier=lr_multiplier,
                                       w_avg_beta=w_avg_beta))
        if z_dim == 0 and c_dim == 0:
            raise ValueError("MappingNetwork: needs z_dim > 0 or c_dim > 0")
        if num_layers < 1:
            raise ValueError(f"MappingNetwork: num_layers must be >= 1, got {num_layers}")
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f'fc{idx}', layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        parts = []
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ValueError(f"MappingNetwork: z must be [N, {self.z_dim}], got "
                                 f"{None if z is None else tuple(z.shape)}")
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"MappingNetwork: c must be [N, {self.c_dim}], got "
                                 f"{None if c is None else tuple(c.shape)}")
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        if update_emas and self.num_ws is not None and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            if self.num_ws is None or self.w_avg_beta is None:
                raise ValueError("MappingNetwork: truncation needs num_ws and w_avg tracking")
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"


# ------------------------------------------------------------------------------------ synthesis

NOISE_MODES = ('random', 'const', 'none')


class SynthesisLayer(torch.nn.Module):
    """Modulated, demodulated conv + noise + bias + lrelu (+ clamp) at one resolution of the generator.

    The style comes from an affine FC layer of w (bias init 1, so styles start near 1). Noise is one
    channel ``[N, 1, res, res]`` scaled by the learned ``noise_strength`` (starts at 0).
    """

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation='lrelu', resample_filter=DEFAULT_FILTER, conv_clamp=None, channels_last=False):
        super().__init__()
        self.init_kwargs = _plain(dict(in_channels=in_channels, out_channels=out_channels, w_dim=w_dim,
                                       resolution=resolution, kernel_size=kernel_size, up=up, use_noise=use_noise,
                                       activation=activation, resample_filter=resample_filter,
                                       conv_clamp=conv_clamp, channels_last=channels_last))
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = activation_funcs[activation].def_gain
        self.register_buffer('resample_filter', setup_filter(resample_filter))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}; got {noise_mode!r}")
        styles = self.affine(w)
        noise = None
        fast = fused_modconv and self.up in (1, 2) and fused_inference.applies(x, self.activation)
        if fast and self.use_noise and noise_mode != 'none':
            # the same random draw as below, scaled inside the fused layer
            noise = (torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
                     if noise_mode == 'random' else self.noise_const) * self.noise_strength
        if fast:
            act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
            return fused_inference.modulated_layer(x, self.weight, styles, self.bias, noise=noise, up=self.up,
                                                   padding=self.padding, resample_filter=self.resample_filter,
                                                   activation=self.activation,
                                                   alpha=activation_funcs[self.activation].def_alpha,
                                                   gain=self.act_gain * gain, clamp=act_clamp)
        if self.use_noise and noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) \
                * self.noise_strength
        elif self.use_noise and noise_mode == 'const':
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=act_clamp)


class ToRGBLayer(torch.nn.Module):
    """1x1 modulated conv without demodulation to ``img_channels`` (1 for spectrograms), plus bias."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.init_kwargs = _plain(dict(in_channels=in_channels, out_channels=out_channels, w_dim=w_dim,
                                       kernel_size=kernel_size, conv_clamp=conv_clamp, channels_last=channels_last))
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        if fused_modconv and fused_inference.applies(x):
            return fused_inference.modulated_layer(x, self.weight, styles, self.bias, padding=0, demodulate=False,
                                                   activation='linear', clamp=self.conv_clamp)
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


GENERATOR_ARCHITECTURES = ('orig', 'skip', 'resnet')


class SynthesisBlock(torch.nn.Module):
    """One resolution of the generator: (const or up-conv0) -> conv1 -> ToRGB added to the upsampled image."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture='skip',
                 resample_filter=DEFAULT_FILTER, conv_clamp=None, use_fp16=False, fp16_channels_last=False,
                 **layer_kwargs):
        super().__init__()
        if architecture not in GENERATOR_ARCHITECTURES:
            raise ValueError(f"SynthesisBlock: architecture must be one of {GENERATOR_ARCHITECTURES}, "
                             f"got {architecture!r}")
        self.init_kwargs = _plain(dict(in_channels=in_channels, out_channels=out_channels, w_dim=w_dim,
                                       resolution=resolution, img_channels=img_channels, is_last=is_last,
                                       architecture=architecture, resample_filter=resample_filter,
                                       conv_clamp=conv_clamp, use_fp16=use_fp16,
                                       fp16_channels_last=fp16_channels_last, **layer_kwargs))
        self.in_channels = in_channels
        self.resolution = resolution
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer('resample_filter', setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, noise_mode='random'):
        """``ws [N, num_conv + num_torgb, w_dim]``; returns the features and the running image (fp32)."""
        w_iter = iter(ws.unbind(dim=1))
        device = ws.device if x is None else x.device
        dtype = _compute_dtype(self.use_fp16, force_fp32, device)
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        fast_dtype = fused_inference.block_dtype(ws if x is None else x, self.use_fp16) \
            if device.type == "cpu" else None
        fast = fast_dtype is not None
        if fast:  # CPU inference: float32 (bfloat16 if asked for) in channels-last (fused_inference.py)
            dtype, memory_format = fast_dtype, torch.channels_last
        if fused_modconv is None:
            # Fused grouped convs are faster for inference, non-fused ones for training (cheaper backward).
            fused_modconv = (not self.training) and (dtype == torch.float32 or ws.shape[0] == 1)

        if self.in_channels == 0:
            const = self.const.to(dtype=dtype) if fast else self.const.to(dtype=dtype, memory_format=memory_format)
            x = const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
        elif self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv, gain=np.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused_modconv)

        if img is not None:
            img = fused_inference.upsample2d(img, self.resample_filter) if fast else \
                upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == 'skip':
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img + y if img is not None else y
        return x, img


class SynthesisNetwork(torch.nn.Module):
    """ws ``[N, num_ws, w_dim]`` -> image ``[N, img_channels, R, R]`` (float32, nominally in [-1, 1]).

    Blocks at 4, 8, ..., R with ``min(channel_base // res, channel_max)`` feature maps; the top
    ``num_fp16_res`` resolutions run in fp16 on CUDA. ``num_ws = 2 * log2(R) - 2``.
    """

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 **block_kwargs):
        super().__init__()
        img_resolution = _check_resolution(img_resolution, "SynthesisNetwork")
        if img_channels < 1:
            raise ValueError(f"SynthesisNetwork: img_channels must be >= 1, got {img_channels}")
        self.init_kwargs = _plain(dict(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                       channel_base=channel_base, channel_max=channel_max,
                                       num_fp16_res=num_fp16_res, **block_kwargs))
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: channels_for(res, channel_base, channel_max) for res in self.block_resolutions}
        fp16_res = fp16_resolution(img_resolution, num_fp16_res)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=(res == img_resolution),
                                   use_fp16=(res >= fp16_res and num_fp16_res > 0), **block_kwargs)
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f'b{res}', block)

    def forward(self, ws, noise_mode='random', force_fp32=False, **block_kwargs):
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"SynthesisNetwork: ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, force_fp32=force_fp32, noise_mode=noise_mode, **block_kwargs)
        return img

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, " \
               f"img_channels={self.img_channels}"


class Generator(torch.nn.Module):
    """z ``[N, z_dim]`` (+ one-hot c ``[N, c_dim]``) -> image ``[N, img_channels, R, R]``: mapping + synthesis."""

    def __init__(self, z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=1, mapping_kwargs=None,
                 **synthesis_kwargs):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        self.init_kwargs = _plain(dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                                       img_channels=img_channels, mapping_kwargs=mapping_kwargs,
                                       **synthesis_kwargs))
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, noise_mode='random', force_fp32=False,
                update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32, **synthesis_kwargs)


# ------------------------------------------------------------------------------------ discriminator

DISCRIMINATOR_ARCHITECTURES = ('orig', 'skip', 'resnet')


class DiscriminatorBlock(torch.nn.Module):
    """One resolution of D: (FromRGB) -> conv0 3x3 -> conv1 3x3 down 2, plus a 1x1 down-2 skip ('resnet').

    Both branches of a residual block are scaled by sqrt(0.5) so their sum keeps unit variance.
    Layers with index < ``freeze_layers`` (counted from the input) are frozen (buffers).
    """

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels, first_layer_idx,
                 architecture='resnet', activation='lrelu', resample_filter=DEFAULT_FILTER, conv_clamp=None,
                 use_fp16=False, fp16_channels_last=False, freeze_layers=0):
        super().__init__()
        if architecture not in DISCRIMINATOR_ARCHITECTURES:
            raise ValueError(f"DiscriminatorBlock: architecture must be one of {DISCRIMINATOR_ARCHITECTURES}, "
                             f"got {architecture!r}")
        self.init_kwargs = _plain(dict(in_channels=in_channels, tmp_channels=tmp_channels, out_channels=out_channels,
                                       resolution=resolution, img_channels=img_channels,
                                       first_layer_idx=first_layer_idx, architecture=architecture,
                                       activation=activation, resample_filter=resample_filter,
                                       conv_clamp=conv_clamp, use_fp16=use_fp16,
                                       fp16_channels_last=fp16_channels_last, freeze_layers=freeze_layers))
        self.in_channels = in_channels
        self.resolution = resolution
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer('resample_filter', setup_filter(resample_filter))
        self.num_layers = 0

        def trainable_next():
            idx = first_layer_idx + self.num_layers
            self.num_layers += 1
            return idx >= freeze_layers

        common = dict(conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       trainable=trainable_next(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 trainable=trainable_next(), **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 resample_filter=resample_filter, trainable=trainable_next(), **common)
        if architecture == 'resnet':
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    resample_filter=resample_filter, trainable=trainable_next(),
                                    channels_last=self.channels_last)

    def forward(self, x, img, force_fp32=False):
        device = img.device if x is None else x.device
        dtype = _compute_dtype(self.use_fp16, force_fp32, device)
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if x is not None:
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == 'skip':
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None
        if self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img


class MinibatchStdLayer(torch.nn.Module):
    """Append ``num_channels`` feature maps holding the std of features across groups of samples.

    Samples ``i, i + N/G, i + 2N/G, ...`` form a group of ``G = min(group_size, N)``; features are
    split into ``num_channels`` parts; each part's std over the group (``sqrt(var + 1e-8)``),
    averaged over its channels and pixels, is broadcast as one extra channel. This lets D see the
    variety of a batch and so penalise mode collapse.
    """

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        if n % g != 0:
            raise ValueError(f"minibatch-stddev: batch of {n} is not divisible by the group size {g}")
        if c % f != 0:
            raise ValueError(f"minibatch-stddev: {c} channels are not divisible by num_channels {f}")
        y = x.reshape(g, n // g, f, c // f, h, w).to(torch.float32)
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()     # [n/g, f, c/f, h, w]
        y = y.mean(dim=[2, 3, 4])                       # [n/g, f]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)   # [n, f, h, w]
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(torch.nn.Module):
    """4x4 head of D (always fp32): minibatch-std -> 3x3 conv -> FC -> FC to 1 logit (or cmap_dim)."""

    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture='resnet', mbstd_group_size=4,
                 mbstd_num_channels=1, activation='lrelu', conv_clamp=None):
        super().__init__()
        self.init_kwargs = _plain(dict(in_channels=in_channels, cmap_dim=cmap_dim, resolution=resolution,
                                       img_channels=img_channels, architecture=architecture,
                                       mbstd_group_size=mbstd_group_size, mbstd_num_channels=mbstd_num_channels,
                                       activation=activation, conv_clamp=conv_clamp))
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.architecture = architecture
        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False):
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            # Projection discriminator: the logit is the scaled inner product with the label embedding.
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


class Discriminator(torch.nn.Module):
    """Image ``[N, img_channels, R, R]`` (+ one-hot c) -> logits ``[N, 1]`` (real > 0, fake < 0 after training)."""

    def __init__(self, c_dim=0, img_resolution=1024, img_channels=1, architecture='resnet', channel_base=32768,
                 channel_max=512, num_fp16_res=0, conv_clamp=None, cmap_dim=None, mbstd_group_size=4,
                 mbstd_num_channels=1, block_kwargs=None, mapping_kwargs=None, epilogue_kwargs=None):
        super().__init__()
        img_resolution = _check_resolution(img_resolution, "Discriminator")
        block_kwargs = dict(block_kwargs or {})
        mapping_kwargs = dict(mapping_kwargs or {})
        epilogue_kwargs = dict(epilogue_kwargs or {})
        self.init_kwargs = _plain(dict(c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels,
                                       architecture=architecture, channel_base=channel_base,
                                       channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp,
                                       cmap_dim=cmap_dim, mbstd_group_size=mbstd_group_size,
                                       mbstd_num_channels=mbstd_num_channels, block_kwargs=block_kwargs,
                                       mapping_kwargs=mapping_kwargs, epilogue_kwargs=epilogue_kwargs))
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: channels_for(res, channel_base, channel_max) for res in self.block_resolutions + [4]}
        fp16_res = fp16_resolution(img_resolution, num_fp16_res)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim

        cur_layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res],
                                       channels[res // 2], resolution=res, img_channels=img_channels,
                                       first_layer_idx=cur_layer_idx, architecture=architecture,
                                       conv_clamp=conv_clamp, use_fp16=(res >= fp16_res and num_fp16_res > 0),
                                       **block_kwargs)
            setattr(self, f'b{res}', block)
            cur_layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, img_channels=img_channels,
                                        architecture=architecture, mbstd_group_size=mbstd_group_size,
                                        mbstd_num_channels=mbstd_num_channels, conv_clamp=conv_clamp,
                                        **epilogue_kwargs)

    def forward(self, img, c=None, update_emas=False, force_fp32=False):
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        if img.ndim != 4 or tuple(img.shape[1:]) != expected:
            raise ValueError(f"Discriminator: images must be [N, {expected[0]}, {expected[1]}, {expected[2]}], "
                             f"got {tuple(img.shape)}")
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, force_fp32=force_fp32)
        cmap = None
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ValueError(f"Discriminator: labels must be [N, {self.c_dim}], got "
                                 f"{None if c is None else tuple(c.shape)}")
            cmap = self.mapping(None, c)
        return self.b4(x, img, cmap)

    def extra_repr(self) -> str:
        return f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"
