"""Frame interpolation: predict the STFT frames halfway between the stored ones.

An archive stores the magnitudes of a Hann STFT at hop ``a`` (R, the thesis) with ``n_fft = 2R``:
redundancy 2, where phase retrieval stalls near -13.5 dB spectral convergence on real music
(docs/audio.md). With the magnitudes at hop ``a/2`` as well it reaches about -23 dB. Those in-between
frames are not stored, but they are predictable from the stored ones (onsets, decays, steady
partials), and training pairs cost nothing: the STFT of any audio at hop ``a/2`` gives the stored
frames (even indices) and the missing ones (odd indices).

:class:`FrameInterpNet` maps the decoded log power of a clip, ``v = ln(|X|^2 + eps)`` of shape
``[B, R+1 bins, N frames]``, to the ``N-1`` in-between frames as a residual over the mean of the two
neighbours (their geometric mean in magnitude). Design (sizes for the defaults, the shipped 'small'):

* input normalised per clip: ``x = (v - mean(v)) / LOG_SCALE``, so a louder or quieter clip gives the
  same input up to the codec's clip floor;
* full-resolution stem: 3x3 conv, 1 -> ``width`` (8) channels;
* a body at 1/``down`` (1/8) of the frequency resolution (an (8, 1) strided conv, 8 -> 32 channels),
  with ``n_blocks`` (4) residual blocks of two 3x3 convs, the first dilated in time by 1, 2, 4, 8:
  the context that tells an onset from a decay;
* back to full resolution (transposed (8, 1) conv), concatenated with the stem's features, one 3x3
  conv (16 -> 8) and a final (3, 2) conv whose two time taps sit on frames n and n+1, so its output
  has exactly N-1 frames, one between each pair.

79,409 parameters (0.33 MB file); receptive field 146 bins x 44 stored frames
(:meth:`FrameInterpNet.receptive_field` measures it); ~0.8 CPU s per 1025 x 1025 image on 2 threads.
All convolutions are translation invariant, so one network runs on any number of bins and frames
(any R); it is only *trained* for one geometry, which the model file records.

Model files are plain data (``torch.save`` of dicts, lists, numbers, strings and tensors) and are
read with ``torch.load(weights_only=True)``: loading never runs code from the file. Reading and
checking them is :mod:`audio_ext.decoder.model_file`, the one validator for every door.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from audio_ext.core.geometry import StftGeometry, check_stats
from audio_ext.core.stft import stft
from stylegan2.misc import atomic_torch_save

#: ``format`` entry of every model file.
MODEL_FORMAT = "electrogan-frame-interp"
#: Layout version of the model file; a newer file is refused.
MODEL_VERSION = 1
#: Scale (ln power units) of the normalised network input and of its residual output.
LOG_SCALE = 6.0
#: The model shipped with the package, trained for the thesis geometry (R 1024, hop 1024, 44.1 kHz).
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "models" / "frame_interp_r1024_h1024.pt"
#: Environment variable naming a model file to use instead of the shipped one ("" or "none": no model).
MODEL_ENV = "ELECTROGAN_DECODER_MODEL"

#: Geometry keys that must agree between a model and the audio it decodes.
_GEOMETRY_MATCH = ("sample_rate", "resolution", "n_fft", "hop_length")


class ModelError(ValueError):
    """A model file that cannot be used: unreadable, not a frame-interpolation model, or the wrong geometry."""


#: Negative slope of the network's leaky ReLUs.
SLOPE = 0.2


class _Block(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=(1, dilation), dilation=(1, dilation))
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x + conv2(act(conv1(act(x)))), in place wherever the value is not needed again: fresh
        # full-size tensors cost page faults on every call (~5x the activation itself on a CPU)
        h = self.conv1(nn.functional.leaky_relu(x, SLOPE))
        return self.conv2(nn.functional.leaky_relu_(h, SLOPE)).add_(x)


class FrameInterpNet(nn.Module):
    """Stored frames' log power ``[B, F, N]`` -> in-between frames' log power ``[B, F, N-1]`` (see module doc)."""

    def __init__(self, width: int = 8, body_width: int = 32, n_blocks: int = 4,
                 dilations: tuple = (1, 2, 4, 8), down: int = 8) -> None:
        super().__init__()
        self.config = dict(width=int(width), body_width=int(body_width), n_blocks=int(n_blocks),
                           dilations=[int(d) for d in dilations], down=int(down))
        self.down_factor = f = int(down)
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.down = nn.Conv2d(width, body_width, (f, 1), stride=(f, 1))
        self.blocks = nn.Sequential(*[_Block(body_width, dilations[i % len(dilations)]) for i in range(n_blocks)])
        self.up = nn.ConvTranspose2d(body_width, width, (f, 1), stride=(f, 1))
        self.mix = nn.Conv2d(2 * width, width, 3, padding=1)
        self.head = nn.Conv2d(width, 1, (3, 2), padding=(1, 0))
        nn.init.zeros_(self.head.weight)  # start as the geometric-mean interpolation
        nn.init.zeros_(self.head.bias)

    def receptive_field(self) -> tuple:
        """(bins, stored frames) of input that one output cell depends on, measured by back-propagation
        from the centre cell of a 256 x 96 input (so it is exact for this configuration)."""
        was = self.training
        probe = FrameInterpNet(**{k: (tuple(v) if k == "dilations" else v) for k, v in self.config.items()})
        for p in probe.parameters():
            nn.init.constant_(p, 0.01)
        x = torch.zeros(1, 1, 256, 96, requires_grad=True)
        with torch.enable_grad():
            probe._residual(x)[0, 128, 47].backward()
        hit = x.grad[0, 0].abs() > 0
        rows, cols = hit.any(dim=1).nonzero(), hit.any(dim=0).nonzero()
        self.train(was)
        return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if v.dim() != 3 or v.shape[-1] < 2:
            raise ValueError(f"FrameInterpNet expects log power [batch, bins, frames >= 2], got {tuple(v.shape)}")
        ref = v.mean(dim=(-2, -1), keepdim=True)
        residual = self._residual(((v - ref) / LOG_SCALE).unsqueeze(1))
        return 0.5 * (v[..., :-1] + v[..., 1:]) + residual * LOG_SCALE

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input ``[B, 1, F, N]`` -> residual ``[B, F, N-1]`` in units of LOG_SCALE."""
        F = x.shape[-2]
        pad = (-F) % self.down_factor
        if pad:
            x = torch.nn.functional.pad(x, (0, 0, 0, pad), mode="replicate")
        skip = nn.functional.leaky_relu_(self.stem(x), SLOPE)
        h = self.up(self.blocks(self.down(skip)))
        # mix(cat([skip, h])) as two convolutions on the halves of its weight: the same sum without
        # a full-resolution concatenated copy (~10 % of the forward pass on a CPU)
        w = self.mix.weight
        n = skip.shape[1]
        h = nn.functional.conv2d(skip, w[:, :n], self.mix.bias, padding=self.mix.padding).add_(
            nn.functional.conv2d(h, w[:, n:], None, padding=self.mix.padding))
        h = nn.functional.leaky_relu_(h, SLOPE)
        return self.head(h)[:, 0, :F]


# --- codec-exact quantisation and training pairs -----------------------------------------------------

def quantise_logpower(v: torch.Tensor, geometry: StftGeometry, mean: float, std: float) -> torch.Tensor:
    """The codec's 8-bit round trip of ln power ``v [.., R+1, frames]`` (any number of frames).

    The same arithmetic as ``codec.logpower_to_image`` followed by ``codec.image_to_logpower``
    (affine map in float64, clamp to 0..255, round; back to float32 ``z`` and to ``z * std + mean``),
    and the Nyquist bin (index R, not stored) becomes ``ln(eps)`` (magnitude 0), as ``decode_magnitude``
    returns it. Result float32.
    """
    mean, std = check_stats(mean, std, "quantise_logpower")
    cs = geometry.clip_sigma
    steps = 255.0 / (2.0 * cs)
    scale, offset = steps / std, (cs - mean / std) * steps
    u = v.to(torch.float64).mul(scale).add_(offset).clamp_(0.0, 255.0).round_().to(torch.uint8)
    z = u.to(torch.float32) * (2.0 * cs / 255.0) - cs
    out = z * std + mean
    r = geometry.resolution
    if out.shape[-2] > r:
        out[..., r:, :] = math.log(geometry.eps)
    return out


def logpower_of_magnitude(mag: torch.Tensor, geometry: StftGeometry) -> torch.Tensor:
    """``ln(|X|^2 + eps)``, the inverse of ``decode_magnitude``'s ``sqrt(max(exp(v) - eps, 0))``."""
    return torch.log(mag.to(torch.float32).square() + geometry.eps)


def magnitude_of_logpower(v: torch.Tensor, geometry: StftGeometry) -> torch.Tensor:
    return torch.sqrt(torch.clamp(torch.exp(v) - geometry.eps, min=0.0))


def fine_stft_logpower(audio: torch.Tensor, geometry: StftGeometry) -> torch.Tensor:
    """ln power ``[B, R+1, frames]`` of ``audio [B, T]`` at hop ``hop_length / 2``, frames NOT centred.

    Frame ``j`` covers samples ``j * hop/2 .. j * hop/2 + n_fft``; with ``T = (P + 1) * hop`` there are
    ``2P - 1`` frames, the even ones at hop ``hop_length`` (what the archive stores) and the odd ones
    halfway between (what the model predicts). No padding, so every frame sees real audio.
    """
    n_fft, hop = geometry.n_fft, geometry.hop_length
    if hop % 2:
        raise ValueError(f"hop_length {hop} is odd; the in-between frames need hop/2 samples")
    X = stft(audio.to(torch.float32), n_fft, hop // 2, center=False)
    return (X.real.square() + X.imag.square() + geometry.eps).log()


def training_pairs(audio: torch.Tensor, geometry: StftGeometry, mean: float, std: float) -> tuple:
    """(input, target) for crops ``audio [B, (P + 1) * hop]``.

    input ``[B, R+1, P]``: the stored frames (even hop/2 frames) after the codec's 8-bit round trip;
    target ``[B, R+1, P-1]``: the true ln power of the odd frames, floored where the codec floors
    (``mean - clip_sigma * std``) since nothing below that can be told apart in the input.
    """
    v = fine_stft_logpower(audio, geometry)
    x = quantise_logpower(v[..., 0::2], geometry, mean, std)
    floor = mean - geometry.clip_sigma * std
    y = v[..., 1::2].clamp_min(floor)
    return x, y


def interpolation_baseline(v: torch.Tensor) -> torch.Tensor:
    """Geometric-mean interpolation of the in-between frames: the mean of the neighbours' ln power."""
    return 0.5 * (v[..., :-1] + v[..., 1:])


def loss_weights(target: torch.Tensor, geometry: StftGeometry) -> torch.Tensor:
    """Per-cell loss weights: the target's magnitude relative to the clip's loudest, floored at 0.01.

    Spectral convergence counts errors in linear magnitude, so loud cells matter most; the floor
    keeps the quiet ones from being ignored (PGHI integrates phase through them). The Nyquist bin,
    never stored, gets weight 0.
    """
    peak = target.amax(dim=(-2, -1), keepdim=True)
    w = torch.exp(0.5 * (target - peak)).clamp_min(0.01)
    w[..., geometry.resolution:, :] = 0.0
    return w


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return ((pred - target).abs() * weights).sum() / weights.sum().clamp_min(1e-12)


def convergence_loss(pred: torch.Tensor, target: torch.Tensor, geometry: StftGeometry) -> torch.Tensor:
    """Mean over crops of the squared spectral convergence of the in-between frames' magnitudes.

    ``pred`` and ``target`` are ln power ``[B, F, frames]``; per crop
    ``sum (|pred| - |target|)^2 / sum |target|^2`` over bins ``0..R-1`` (the Nyquist bin is never
    stored), with magnitudes ``exp(v / 2)`` taken relative to the crop's loudest target cell so the
    exponentials stay finite. This is the quantity the decoder is judged by (SC, an L2 norm in linear
    magnitude), so the network learns the conditional mean of the magnitude where the stored frames
    leave the in-between ones ambiguous (beating partials in the bass), not a log-domain median.
    Each crop counts the same whatever its gain. ``10 * log10`` of it is an SC in dB.
    """
    r = geometry.resolution
    p, t = pred[..., :r, :], target[..., :r, :]
    peak = t.detach().amax(dim=(-2, -1), keepdim=True)
    mp, mt = torch.exp(0.5 * (p - peak)), torch.exp(0.5 * (t - peak))
    err = (mp - mt).square().sum(dim=(-2, -1))
    return (err / mt.square().sum(dim=(-2, -1)).clamp_min(1e-30)).mean()


#: Training objectives of :func:`training_loss`: ``sc`` (:func:`convergence_loss`, the default since it
#: measured better on held-out music) and ``wl1`` (:func:`weighted_l1` with :func:`loss_weights`, the
#: objective of the first shipped model).
LOSSES = ("sc", "wl1")


def training_loss(pred: torch.Tensor, target: torch.Tensor, geometry: StftGeometry, loss: str = "sc") -> torch.Tensor:
    """The training objective named ``loss`` (one of :data:`LOSSES`) of predicted vs true ln power."""
    if loss == "sc":
        return convergence_loss(pred, target, geometry)
    if loss == "wl1":
        return weighted_l1(pred, target, loss_weights(target, geometry))
    raise ValueError(f"unknown decoder training loss {loss!r}; known: {', '.join(LOSSES)}")


# --- model files -------------------------------------------------------------------------------------

def model_payload(model: FrameInterpNet, geometry: StftGeometry, stats: Mapping[str, float],
                  training: Optional[Mapping[str, Any]] = None) -> dict:
    """The plain-data dict a model file holds."""
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "geometry": geometry.to_dict(),
        "stats": {"mean": float(stats["mean"]), "std": float(stats["std"])},
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "training": dict(training or {}),
    }


def save_model(path: Union[str, Path], payload: Mapping[str, Any]) -> None:
    """Write a model payload atomically (temp file + rename); an existing file survives a failure."""
    atomic_torch_save(path, dict(payload))


def model_geometry(payload: Mapping[str, Any], path: Union[str, Path] = "model") -> StftGeometry:
    try:
        return StftGeometry.from_dict(payload["geometry"])
    except (ValueError, TypeError) as e:
        raise ModelError(f"{path}: model geometry is invalid ({e})") from None


def check_geometry(trained: StftGeometry, wanted: StftGeometry, path: Union[str, Path] = "model") -> None:
    """ModelError (one line) unless a model trained for ``trained`` can decode audio of ``wanted``."""
    a, b = trained.to_dict(), wanted.to_dict()
    diff = [f"{k} {a[k]} (model) vs {b[k]} (audio)" for k in _GEOMETRY_MATCH if a[k] != b[k]]
    if diff:
        raise ModelError(f"{path}: decoder model was trained for another geometry: {', '.join(diff)}")


def build_model(payload: Mapping[str, Any], path: Union[str, Path] = "model") -> FrameInterpNet:
    cfg = payload["config"]
    try:
        model = FrameInterpNet(width=cfg["width"], body_width=cfg["body_width"], n_blocks=cfg["n_blocks"],
                               dilations=tuple(cfg["dilations"]), down=cfg["down"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError, ValueError, IndexError) as e:
        raise ModelError(f"{path}: model weights do not fit its configuration ({str(e).splitlines()[0][:200]})") from None
    return model.eval()


class DecoderModel:
    """A loaded frame-interpolation model with the geometry it was trained for and where it came from;
    ``payload`` is one that :mod:`audio_ext.decoder.model_file` has checked."""

    def __init__(self, payload: Mapping[str, Any], path: Union[str, Path] = "model") -> None:
        self.path = str(path)
        self.geometry = model_geometry(payload, path)
        self.stats = dict(payload["stats"])
        self.training = dict(payload.get("training") or {})
        # channels-last weights select oneDNN's faster NHWC convolutions: ~1.8x less CPU time per image
        self.net = build_model(payload, path).to(memory_format=torch.channels_last)

    @property
    def name(self) -> str:
        return Path(self.path).name

    def check(self, geometry: StftGeometry) -> None:
        check_geometry(self.geometry, geometry, self.path)

    @torch.no_grad()
    def predict(self, v: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
        """In-between ln power ``[B, F, N-1]`` for stored ln power ``v [B, F, N]``, on ``v``'s device."""
        net = self.net.to(v.device)
        outs = [net(v[i:i + batch_size].to(torch.float32)) for i in range(0, v.shape[0], batch_size)]
        return torch.cat(outs) if outs else v.new_zeros(v.shape[0], v.shape[1], max(v.shape[2] - 1, 0))


def interleave(stored: torch.Tensor, between: torch.Tensor) -> torch.Tensor:
    """``[.., F, N]`` and ``[.., F, N-1]`` -> ``[.., F, 2N-1]`` with the stored frames at even indices (copied bit for bit)."""
    if stored.shape[-1] != between.shape[-1] + 1 or stored.shape[:-1] != between.shape[:-1]:
        raise ValueError(f"interleave: {tuple(stored.shape)} stored and {tuple(between.shape)} in-between frames")
    out = stored.new_empty(*stored.shape[:-1], 2 * stored.shape[-1] - 1)
    out[..., 0::2] = stored
    out[..., 1::2] = between.to(stored.dtype)
    return out


def upsample_magnitude(mag: torch.Tensor, geometry: StftGeometry, model: DecoderModel) -> torch.Tensor:
    """Magnitudes ``[B, R+1, N]`` at hop ``a`` -> ``[B, R+1, 2N-1]`` at hop ``a/2`` (stored frames unchanged)."""
    model.check(geometry)
    v = logpower_of_magnitude(mag, geometry)
    between = magnitude_of_logpower(model.predict(v), geometry)
    between[..., geometry.resolution:, :] = 0.0  # Nyquist: never stored, decoded as silence
    return interleave(mag, between)
