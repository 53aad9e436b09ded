"""Audio-safe adaptive discriminator augmentation (ADA) for spectrogram images.

Upstream ADA (Karras et al. 2020, arXiv 2006.06676) flips, rotates, scales and translates images.
On an STFT image (x = time, y = frequency, row 0 = highest frequency, value ~ log power) those
would reverse time, swap time and frequency or shift every partial by a constant number of Hz,
which is not how music varies. This pipeline keeps only transforms with an audio meaning
(our choice; docs/references.md, StyleGAN2-ADA), each an element-wise or indexing op, so it is
exact and twice differentiable (R1 is taken through it):

============  =============================================================================
``xint``      circular time shift by a whole number of columns, up to ``xint_max`` of the width
``gain``      ``u + b``, ``b ~ N(0, gain_std^2)`` image units: one gain in dB for the whole clip
``contrast``  ``mean + (u - mean) * c``, ``c = 2^N(0, contrast_std^2)``: dynamic-range scaling about
              the image mean (a power law on the magnitudes)
``tilt``      ``u + s * r(row)``, ``s ~ N(0, tilt_std^2)``; ``r`` rises linearly in log-frequency from
              -1 at the bottom row (DC) to +1 at row 0: a constant-dB-per-octave EQ tilt
``noise``     ``u + sigma * N(0, 1)`` per pixel, ``sigma = |N(0, noise_std^2)|`` per image
``time_mask`` one full-height stripe of up to ``time_mask_max`` of the width set to -1 (silence)
``freq_mask`` one full-width stripe of up to ``freq_mask_max`` of the height set to -1 (silence)
============  =============================================================================

Each transform fires independently per image with probability ``strength * p``; ``p`` is a 0-d
buffer set by the ADA controller (:mod:`stylegan2.ada`). Nothing here ever flips, rotates, scales
or moves content along the frequency axis. ``--aug noaug`` means no pipe at all (:func:`build_augment_pipe`).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

# ------------------------------------------------------------------------------------------------
# The transforms themselves, each with its parameters given explicitly (one value per image).


def time_shift(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Roll each image ``i`` by ``shifts[i]`` columns along time (the last axis), like ``torch.roll``."""
    n, c, h, w = images.shape
    cols = (torch.arange(w, device=images.device).unsqueeze(0) - shifts.to(torch.long).unsqueeze(1)) % w
    return images.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def apply_gain(images: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Add ``gain[i]`` (image units) to every pixel of image ``i``: a uniform level change in dB."""
    return images + gain.view(-1, 1, 1, 1).to(images.dtype)


def scale_dynamic_range(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale each image's deviation from its own mean level by ``factor[i]``."""
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (images - mean) * factor.view(-1, 1, 1, 1).to(images.dtype)


def tilt_profile(height: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The tilt shape per row: linear in log2(bin + 1), -1 at the last row (DC), +1 at row 0."""
    bins = torch.arange(height - 1, -1, -1, device=device, dtype=torch.float64)  # row 0 = highest bin
    logf = torch.log2(bins + 1)
    top = max(math.log2(height), 1e-12)
    return (2 * logf / top - 1).to(dtype)


def spectral_tilt(images: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    """Add ``slope[i] * tilt_profile(row)`` to image ``i``: a smooth EQ that moves nothing in frequency."""
    profile = tilt_profile(images.shape[2], images.device, images.dtype).view(1, 1, -1, 1)
    return images + slope.view(-1, 1, 1, 1).to(images.dtype) * profile


def add_noise(images: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Add ``sigma[i] * noise`` (``noise`` image-shaped, N(0, 1)) to image ``i``."""
    return images + sigma.view(-1, 1, 1, 1).to(images.dtype) * noise


def _stripe(length: int, start: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    pos = torch.arange(length, device=start.device).unsqueeze(0)
    return (pos >= start.unsqueeze(1)) & (pos < (start + width).unsqueeze(1))


def time_mask(images: torch.Tensor, start: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Set columns ``start[i] .. start[i] + width[i] - 1`` of image ``i`` to -1 (silence)."""
    mask = _stripe(images.shape[3], start, width).view(images.shape[0], 1, 1, -1)
    return torch.where(mask, torch.full_like(images, -1), images)


def freq_mask(images: torch.Tensor, start: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """Set rows ``start[i] .. start[i] + width[i] - 1`` of image ``i`` to -1 (silence)."""
    mask = _stripe(images.shape[2], start, width).view(images.shape[0], 1, -1, 1)
    return torch.where(mask, torch.full_like(images, -1), images)


# ------------------------------------------------------------------------------------------------

AUGMENT_PRESETS = {
    "audio": dict(xint=1, gain=1, contrast=1, tilt=1, noise=1, time_mask=1, freq_mask=1),
    "audio-nomask": dict(xint=1, gain=1, contrast=1, tilt=1, noise=1),
    "audio-level": dict(gain=1, contrast=1, tilt=1),
    "audio-shift": dict(xint=1),
}
AUG_MODES = ("ada", "noaug", "fixed")


class AugmentPipe(torch.nn.Module):
    """Apply the audio-safe transforms to NCHW images in about [-1, 1], each with prob ``strength * p``."""

    def __init__(self, xint: float = 0, xint_max: float = 0.125,
                 gain: float = 0, gain_std: float = 0.1,
                 contrast: float = 0, contrast_std: float = 0.2,
                 tilt: float = 0, tilt_std: float = 0.1,
                 noise: float = 0, noise_std: float = 0.1,
                 time_mask: float = 0, time_mask_max: float = 0.1,
                 freq_mask: float = 0, freq_mask_max: float = 0.1):
        super().__init__()
        self.init_kwargs = dict(xint=xint, xint_max=xint_max, gain=gain, gain_std=gain_std,
                                contrast=contrast, contrast_std=contrast_std, tilt=tilt, tilt_std=tilt_std,
                                noise=noise, noise_std=noise_std, time_mask=time_mask,
                                time_mask_max=time_mask_max, freq_mask=freq_mask, freq_mask_max=freq_mask_max)
        for key, value in self.init_kwargs.items():
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"AugmentPipe: {key} must be a number >= 0, got {value!r}")
        for key in ("xint_max", "time_mask_max", "freq_mask_max"):
            if self.init_kwargs[key] > 1:
                raise ValueError(f"AugmentPipe: {key} is a fraction of the image and must be <= 1")
        for key, value in self.init_kwargs.items():
            setattr(self, key, float(value))
        self.register_buffer("p", torch.zeros([]))
        self._p_host = (None, -1, 0.0)      # (data_ptr, version of p, float value): see :meth:`p_value`

    def p_value(self) -> float:
        """The augmentation probability as a Python float, without a device sync in the steady state.

        ``p`` lives on the training device (it is a buffer, saved with the module). Reading it there
        costs a host sync, so the last value read is cached together with the tensor's identity and
        in-place version counter: any change to ``p`` (``fill_``, ``copy_``, ``load_state_dict``,
        moving the module) is noticed and read once; :meth:`set_p` updates both sides without a read.
        """
        key = (self.p.data_ptr(), self.p._version)
        if self._p_host[:2] != key:
            self._p_host = key + (float(self.p),)
        return self._p_host[2]

    def set_p(self, value: float) -> None:
        """Set ``p`` to ``value`` from the host (a fill kernel, no sync) and remember the value."""
        self.p.fill_(float(value))
        # The value as p's dtype holds it (float32 rounding), computed on the host.
        self._p_host = (self.p.data_ptr(), self.p._version, float(torch.tensor(float(value), dtype=self.p.dtype)))

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "AugmentPipe":
        """Build the pipe named ``name`` in :data:`AUGMENT_PRESETS`, with optional keyword overrides."""
        if name not in AUGMENT_PRESETS:
            raise ValueError(f"unknown augment preset {name!r}; choose from {', '.join(AUGMENT_PRESETS)}")
        return cls(**{**AUGMENT_PRESETS[name], **overrides})

    def extra_repr(self) -> str:
        on = [k for k in ("xint", "gain", "contrast", "tilt", "noise", "time_mask", "freq_mask") if getattr(self, k)]
        return f"transforms={on}, p={float(self.p):.4f}"

    @staticmethod
    def _fires(prob: float, n: int, device, generator) -> Optional[torch.Tensor]:
        if prob <= 0:
            return None
        return torch.rand([n], device=device, generator=generator) < prob

    def forward(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Augment a batch; ``generator`` fixes the random draws (defaults to torch's global RNG)."""
        if images.ndim != 4:
            raise ValueError(f"AugmentPipe expects NCHW images, got shape {list(images.shape)}")
        p = self.p_value()  # cached on the host: no device sync per call (see p_value)
        if p <= 0:
            return images
        n, _, h, w = images.shape
        dev, dt = images.device, images.dtype
        x = images

        def rand(*shape):
            return torch.rand(shape, device=dev, generator=generator, dtype=dt)

        def randn(*shape):
            return torch.randn(shape, device=dev, generator=generator, dtype=dt)

        def keep(fire, new, old):
            return torch.where(fire.view(-1, 1, 1, 1), new, old)

        fire = self._fires(self.xint * p, n, dev, generator)
        if fire is not None:
            shifts = torch.round((rand(n) * 2 - 1) * self.xint_max * w).to(torch.long)
            x = time_shift(x, torch.where(fire, shifts, torch.zeros_like(shifts)))

        fire = self._fires(self.gain * p, n, dev, generator)
        if fire is not None:
            x = keep(fire, apply_gain(x, randn(n) * self.gain_std), x)

        fire = self._fires(self.contrast * p, n, dev, generator)
        if fire is not None:
            x = keep(fire, scale_dynamic_range(x, torch.exp2(randn(n) * self.contrast_std)), x)

        fire = self._fires(self.tilt * p, n, dev, generator)
        if fire is not None:
            x = keep(fire, spectral_tilt(x, randn(n) * self.tilt_std), x)

        fire = self._fires(self.noise * p, n, dev, generator)
        if fire is not None:
            sigma = (randn(n) * self.noise_std).abs()
            x = keep(fire, add_noise(x, sigma, randn(*x.shape)), x)

        fire = self._fires(self.time_mask * p, n, dev, generator)
        if fire is not None:
            width = torch.floor(rand(n) * (round(self.time_mask_max * w) + 1)).to(torch.long)
            start = torch.floor(rand(n) * (w - width + 1)).to(torch.long)
            x = time_mask(x, start, torch.where(fire, width, torch.zeros_like(width)))

        fire = self._fires(self.freq_mask * p, n, dev, generator)
        if fire is not None:
            width = torch.floor(rand(n) * (round(self.freq_mask_max * h) + 1)).to(torch.long)
            start = torch.floor(rand(n) * (h - width + 1)).to(torch.long)
            x = freq_mask(x, start, torch.where(fire, width, torch.zeros_like(width)))
        return x


def build_augment_pipe(aug: str = "ada", preset: str = "audio", p: float = 0.0, **overrides) -> Optional[AugmentPipe]:
    """The pipe for upstream's ``--aug`` modes: ``noaug`` -> None; ``ada``/``fixed`` -> a pipe with p set.

    With ``fixed`` the caller keeps ``p`` constant; with ``ada`` an :class:`~stylegan2.ada.AdaController` moves it.
    """
    if aug not in AUG_MODES:
        raise ValueError(f"unknown --aug mode {aug!r}; choose from {', '.join(AUG_MODES)}")
    if aug == "noaug":
        return None
    if p < 0:
        raise ValueError(f"augment probability p must be >= 0, got {p}")
    pipe = AugmentPipe.from_preset(preset, **overrides)
    pipe.set_p(float(p))
    return pipe
