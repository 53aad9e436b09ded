"""Audio clip <-> uint8 STFT image, exactly as docs/contract.md fixes it, batched in torch (CPU or CUDA).

Forward (``encode``): Hann STFT with ``n_fft = 2R``, hop R or R/2, centred frames with reflect
padding; keep bins 0..R-1 and frames 0..R-1; ``v = ln(|X|^2 + eps)``; ``z = (v - mean) / std``
clipped to +-clip_sigma; mapped linearly onto 0..255 and rounded; bins flipped so that row 0 holds
the highest kept frequency and the last row DC.

Backward (``decode_magnitude``): undo the mapping and the flip, ``|X| = sqrt(max(exp(v) - eps, 0))``,
then append a zero Nyquist bin and repeat the last frame so the result is the full
``[.., R+1, R+1]`` magnitude of the STFT of one clip, ready for phase reconstruction.

Images may be uint8 (0..255, the archive) or floating point generator output in [-1, 1]; the two
correspond through ``x = u / 127.5 - 1`` (docs/architecture.md), which makes ``x = z / clip_sigma``.
Float images are clamped to [-1, 1] because training data never leaves that range. Every function
accepts numpy arrays or torch tensors and returns the same kind, keeping a tensor's device.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from audio_ext.core import stft as transforms
from audio_ext.core.geometry import StftGeometry, check_stats, validate_audio_block

ArrayLike = Union[np.ndarray, torch.Tensor]

#: A float image whose magnitude exceeds this cannot be generator output in about [-1, 1]; it is
#: almost certainly a 0..255 image stored as float, which would decode to nonsense.
_FLOAT_IMAGE_LIMIT = 2.0


def _to_tensor(x: ArrayLike, name: str) -> Tuple[torch.Tensor, bool]:
    """(tensor, was_numpy); numpy arrays are wrapped without copying where possible.

    Strided arrays are wrapped as they are (the log power of an STFT is laid out frame-major, and
    copying it to row order costs more than the whole normalisation); only negative strides,
    which torch cannot wrap, are copied first.
    """
    if isinstance(x, torch.Tensor):
        return x, False
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x if min(x.strides, default=0) >= 0 else np.ascontiguousarray(x)), True
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _back(t: torch.Tensor, was_numpy: bool) -> ArrayLike:
    return t.detach().cpu().numpy() if was_numpy else t


def _check_image_shape(t: torch.Tensor, geometry: StftGeometry, what: str) -> None:
    """Refuse a tensor whose last two axes are not ``(R, R)``; ``what`` names it in the message."""
    r = geometry.resolution
    if t.dim() < 2 or tuple(t.shape[-2:]) != (r, r):
        raise ValueError(f"{what} shape {tuple(t.shape)} does not end in ({r}, {r}) for resolution {r}")


def stft(audio: ArrayLike, geometry: StftGeometry) -> ArrayLike:
    """Complex STFT ``[.., R+1 bins, R+1 frames]`` of clips ``[.., clip_samples]`` in the archive geometry.

    Periodic Hann window of ``n_fft`` samples, frames centred on multiples of the hop with reflect
    padding (the same numbers as ``librosa.stft(..., pad_mode='reflect')``). float64 audio gives
    complex128, anything else complex64.
    """
    t, was_numpy = _to_tensor(audio, "audio")
    if not (t.is_floating_point()):
        raise TypeError(f"audio must hold floating-point samples in [-1, 1], got dtype {t.dtype}")
    if t.dim() < 1 or t.shape[-1] != geometry.clip_samples:
        raise ValueError(f"audio has {tuple(t.shape)[-1:] or 'no'} samples per clip; resolution {geometry.resolution} "
                         f"with hop {geometry.hop_length} needs exactly {geometry.clip_samples}")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    lead = t.shape[:-1]
    flat = t.reshape(-1, t.shape[-1])
    spec = transforms.stft(flat, geometry.n_fft, geometry.hop_length, pad_mode=geometry.pad_mode)
    return _back(spec.reshape(*lead, *spec.shape[-2:]), was_numpy)


def audio_to_logpower(audio: ArrayLike, geometry: StftGeometry) -> ArrayLike:
    """``ln(|X|^2 + eps)`` of clips ``[.., clip_samples]``: shape ``[.., R bins, R frames]`` (bin 0 = DC first).

    This is the quantity whose dataset mean and std go into the audio block.
    """
    t, was_numpy = _to_tensor(audio, "audio")
    spec = stft(t, geometry)
    r = geometry.resolution
    kept = spec[..., :r, :r]
    # The same operations, in the same order, as log(re^2 + im^2 + eps), in place: one buffer, not four.
    v = kept.real.square()
    v.add_(kept.imag.square()).add_(geometry.eps).log_()
    return _back(v, was_numpy)


def logpower_to_image(logpower: ArrayLike, geometry: StftGeometry, mean: float, std: float) -> ArrayLike:
    """Normalise, clip to +-clip_sigma, map to 0..255, round and flip: uint8 ``[.., R rows, R columns]``."""
    mean, std = check_stats(mean, std, "codec")
    v, was_numpy = _to_tensor(logpower, "logpower")
    _check_image_shape(v, geometry, "log-power")
    cs = geometry.clip_sigma
    # round((clip((v - mean) / std, -cs, cs) + cs) * 255 / (2 cs)) folded into one affine map
    # u = v * scale + offset clamped to [0, 255] (the same thing, as the map is increasing), done in
    # place on one float64 copy: about 3x faster than the step-by-step version at R = 1024, and
    # float64 keeps every rounding where it was (float32 would move a few values per clip by one level).
    steps = 255.0 / (2.0 * cs)
    scale, offset = steps / std, (cs - mean / std) * steps
    u = v.to(torch.float64).mul_(scale).add_(offset).clamp_(0.0, 255.0).round_()
    u = u.to(torch.uint8).contiguous()  # row-major images whatever v's layout (a cheap 1-byte copy)
    return _back(torch.flip(u, dims=(-2,)), was_numpy)


def encode(audio: ArrayLike, geometry: StftGeometry, mean: float, std: float) -> ArrayLike:
    """Clips ``[.., clip_samples]`` (float, [-1, 1]) to uint8 images ``[.., R, R]``, row 0 = highest frequency."""
    return logpower_to_image(audio_to_logpower(audio, geometry), geometry, mean, std)


def image_to_z(image: ArrayLike, geometry: StftGeometry) -> ArrayLike:
    """Normalised log power ``z`` in [-clip_sigma, clip_sigma], still in image orientation (row 0 = top).

    uint8 images map 0 -> -clip_sigma, 255 -> +clip_sigma; float images are generator output with
    ``x = u / 127.5 - 1``, so ``z = clip_sigma * clamp(x, -1, 1)``.
    """
    t, was_numpy = _to_tensor(image, "image")
    _check_image_shape(t, geometry, "image")
    cs = geometry.clip_sigma
    if t.dtype == torch.uint8:
        z = t.to(torch.float32) * (2.0 * cs / 255.0) - cs
    elif t.is_floating_point():
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise ValueError("float image contains NaN or infinity")
        if t.numel() and float(t.abs().max()) > _FLOAT_IMAGE_LIMIT:
            raise ValueError(f"float image values reach {float(t.abs().max()):.4g}; expected generator output in "
                             f"about [-1, 1] (pass 0..255 images as uint8)")
        z = t.clamp(-1.0, 1.0) * cs
        if z.dtype not in (torch.float32, torch.float64):
            z = z.to(torch.float32)
    else:
        raise TypeError(f"image must be uint8 (0..255) or float in [-1, 1], got dtype {t.dtype}")
    return _back(z, was_numpy)


def image_to_logpower(image: ArrayLike, geometry: StftGeometry, mean: float, std: float) -> ArrayLike:
    """Inverse of :func:`logpower_to_image` up to the clip and the 8-bit step: ``v [.., R bins, R frames]``.

    The error for unclipped values is at most half a step, ``std * 2 * clip_sigma / 255 / 2`` in ln power.
    """
    mean, std = check_stats(mean, std, "codec")
    was_numpy = isinstance(image, np.ndarray)
    z, _ = _to_tensor(image_to_z(image, geometry), "z")
    v = torch.flip(z, dims=(-2,)) * std + mean
    return _back(v, was_numpy)


def decode_magnitude(image: ArrayLike, geometry: StftGeometry, mean: float, std: float) -> ArrayLike:
    """STFT magnitude ``|X|`` of shape ``[.., R+1, R+1]`` from images ``[.., R, R]`` (uint8 or float in [-1, 1]).

    The dropped Nyquist bin comes back as zeros and the dropped last frame as a copy of frame R-1,
    so the result is the magnitude of one whole clip in the archive geometry.
    """
    was_numpy = isinstance(image, np.ndarray)
    v, _ = _to_tensor(image_to_logpower(image, geometry, mean, std), "logpower")
    mag = torch.sqrt(torch.clamp(torch.exp(v) - geometry.eps, min=0.0))
    mag = torch.cat([mag, torch.zeros_like(mag[..., :1, :])], dim=-2)  # Nyquist bin
    mag = torch.cat([mag, mag[..., -1:]], dim=-1)  # last frame repeated
    return _back(mag, was_numpy)


class AudioCodec:
    """A geometry plus the dataset statistics: the codec of one archive or snapshot.

    Build it from an ``audio`` block (``AudioCodec(block)`` or ``AudioCodec.from_audio_block(block)``)
    or from parts (``AudioCodec(geometry, mean, std, target_bpm=None)``).
    """

    def __init__(self, block_or_geometry: Union[Mapping[str, Any], StftGeometry], mean: Optional[float] = None,
                 std: Optional[float] = None, target_bpm: Optional[float] = None) -> None:
        if isinstance(block_or_geometry, StftGeometry):
            if mean is None or std is None:
                raise ValueError("AudioCodec(geometry, mean, std): mean and std are required")
            geometry = block_or_geometry
        elif isinstance(block_or_geometry, Mapping):
            block = validate_audio_block(block_or_geometry)  # every field in its physical range
            geometry = StftGeometry.from_dict(block)
            mean, std, target_bpm = block["mean"], block["std"], block.get("target_bpm")
        else:
            raise TypeError(f"AudioCodec expects an audio block (dict) or a StftGeometry, "
                            f"got {type(block_or_geometry).__name__}")
        self.geometry = geometry
        self.mean, self.std = check_stats(mean, std, "codec")
        self.target_bpm = None if target_bpm is None else float(target_bpm)

    @classmethod
    def from_audio_block(cls, block: Mapping[str, Any]) -> "AudioCodec":
        """The codec described by a dataset.json / snapshot ``audio`` block."""
        return cls(block)

    def audio_block(self) -> dict:
        """The complete ``audio`` block (docs/contract.md) of this codec."""
        return self.geometry.audio_block(self.mean, self.std, self.target_bpm)

    def audio_to_logpower(self, audio: ArrayLike) -> ArrayLike:
        return audio_to_logpower(audio, self.geometry)

    def encode(self, audio: ArrayLike) -> ArrayLike:
        return encode(audio, self.geometry, self.mean, self.std)

    def image_to_logpower(self, image: ArrayLike) -> ArrayLike:
        return image_to_logpower(image, self.geometry, self.mean, self.std)

    def decode_magnitude(self, image: ArrayLike) -> ArrayLike:
        return decode_magnitude(image, self.geometry, self.mean, self.std)

    def __repr__(self) -> str:
        g = self.geometry
        return (f"AudioCodec(resolution={g.resolution}, hop_length={g.hop_length}, sample_rate={g.sample_rate}, "
                f"mean={self.mean:.6g}, std={self.std:.6g})")
