"""The STFT geometry of an ElectroGAN archive (docs/contract.md, "STFT geometry") as one immutable value.

Resolution R fixes everything else: an R x R image holds R frequency bins (0..R-1, the Nyquist bin
dropped) and R frames of a Hann-windowed STFT with ``n_fft = 2R`` and ``center=True`` (reflect
padding). The hop is R (the thesis) or R/2 (twice the redundancy, much better phase recovery, half
the seconds per image). Code never assumes a geometry: it reads one from an archive's or a
snapshot's ``audio`` block with :meth:`StftGeometry.from_dict`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Tuple

#: Version of the ``audio`` block layout written into ``dataset.json`` and snapshots.
FORMAT_VERSION = 1

#: Keys of the ``audio`` block that the geometry owns (the block also has mean, std,
#: target_bpm and format_version, which belong to the dataset, not to the STFT).
GEOMETRY_KEYS = ("sample_rate", "resolution", "n_fft", "hop_length", "window", "center", "eps", "clip_sigma")

#: Every key of a complete ``audio`` block, in the order docs/contract.md lists them.
AUDIO_BLOCK_KEYS = ("sample_rate", "resolution", "n_fft", "hop_length", "window", "center", "eps",
                    "mean", "std", "clip_sigma", "target_bpm", "format_version")

WINDOW = "hann"
CENTER = True
PAD_MODE = "reflect"

# Physical ranges of an audio block's fields. Blocks come from files (dataset.json, snapshots) that
# may be damaged or hostile; a value outside these ranges cannot describe music this code could
# train on or play, and some (a tempo of 1e300, a sample rate of 2**40) would make generation loop
# or allocate without end, so they are refused at load with the field named.
#: Sample rates in Hz: telephone-grade 8 kHz and below down to 1 kHz, up to 768 kHz (the highest
#: rate audio interfaces offer).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
#: Largest image side: 8192 (a 8192 x 8192 image is 64 Mpixel; the thesis uses 1024).
MAX_RESOLUTION = 8192
#: eps is added to |X|^2 before the log: positive, and at most 1 (beyond that it hides the music).
MAX_EPS = 1.0
#: clip_sigma: the +- range kept in standard deviations (3 in docs/contract.md).
MAX_CLIP_SIGMA = 100.0
#: Tempi in beats per minute that a target_bpm may have (ambient at 20 to extratone at 1000).
MIN_BPM, MAX_BPM = 20.0, 1000.0
#: Smallest std of ln power: below it every image would be one grey level.
MIN_STD = 1e-3
#: Headroom above full scale (in ln power, ln(100) = 20 dB) allowed for the mean of sources that
#: were float audio beyond [-1, 1].
MEAN_HEADROOM = math.log(100.0)


class AudioBlockError(ValueError):
    """An ``audio`` block field is missing, of the wrong type or outside its physical range.

    The message is one line naming the field and its value; callers prefix the file.
    """


def _is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def _is_number(x: Any) -> bool:
    """A real number that is not a bool (JSON true would otherwise pass as 1)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_stats(mean: float, std: float, what: str) -> Tuple[float, float]:
    """Dataset statistics of ln power as floats: a finite ``mean`` and a positive finite ``std``.

    Raises ValueError starting with ``what`` (the caller, e.g. ``'codec'`` or ``'audio block'``).
    """
    mean, std = float(mean), float(std)
    if not math.isfinite(mean):
        raise ValueError(f"{what}: mean must be finite, got {mean!r}")
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"{what}: std must be positive and finite, got {std!r}")
    return mean, std


@dataclasses.dataclass(frozen=True)
class StftGeometry:
    """STFT layout of one R x R image; see the module docstring.

    ``resolution`` R (power of two, >= 4), ``hop_length`` in samples (R by default, or R/2),
    ``sample_rate`` in Hz, ``eps`` added to the power before the natural log, ``clip_sigma`` the
    normalised range kept (+- that many standard deviations).
    """

    resolution: int
    hop_length: Optional[int] = None
    sample_rate: int = 44100
    eps: float = 1e-10
    clip_sigma: float = 3.0

    def __post_init__(self) -> None:
        r = self.resolution
        if isinstance(r, bool) or not isinstance(r, int) or not _is_power_of_two(r) or r < 4:
            raise ValueError(f"StftGeometry: resolution must be a power of two >= 4, got {r!r}")
        if r > MAX_RESOLUTION:
            raise ValueError(f"StftGeometry: resolution {r} is beyond the largest supported, {MAX_RESOLUTION}")
        hop = r if self.hop_length is None else self.hop_length
        if isinstance(hop, bool) or not isinstance(hop, int) or hop not in (r, r // 2):
            raise ValueError(f"StftGeometry: hop_length must be the resolution ({r}) or half of it ({r // 2}), "
                             f"got {self.hop_length!r}")
        object.__setattr__(self, "hop_length", hop)
        sr = self.sample_rate
        if isinstance(sr, bool) or not isinstance(sr, int) or sr <= 0:
            raise ValueError(f"StftGeometry: sample_rate must be a positive integer (Hz), got {sr!r}")
        if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
            raise ValueError(f"StftGeometry: sample_rate {sr} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
        if not (_is_number(self.eps) and math.isfinite(self.eps) and self.eps > 0):
            raise ValueError(f"StftGeometry: eps must be a positive finite number, got {self.eps!r}")
        if self.eps > MAX_EPS:
            raise ValueError(f"StftGeometry: eps {self.eps!r} is larger than {MAX_EPS:g}")
        if not (_is_number(self.clip_sigma) and math.isfinite(self.clip_sigma) and self.clip_sigma > 0):
            raise ValueError(f"StftGeometry: clip_sigma must be a positive finite number, got {self.clip_sigma!r}")
        if self.clip_sigma > MAX_CLIP_SIGMA:
            raise ValueError(f"StftGeometry: clip_sigma {self.clip_sigma!r} is larger than {MAX_CLIP_SIGMA:g}")
        object.__setattr__(self, "eps", float(self.eps))
        object.__setattr__(self, "clip_sigma", float(self.clip_sigma))

    # --- derived quantities -------------------------------------------------------------
    @property
    def n_fft(self) -> int:
        """FFT size and Hann window length in samples (2R)."""
        return 2 * self.resolution

    @property
    def win_length(self) -> int:
        """Window length in samples (equal to ``n_fft``)."""
        return self.n_fft

    @property
    def window(self) -> str:
        """Window name as stored in the audio block ('hann', periodic as in librosa/torch)."""
        return WINDOW

    @property
    def center(self) -> bool:
        """Frames are centred on ``t * hop_length`` (the signal is reflect-padded by n_fft/2)."""
        return CENTER

    @property
    def pad_mode(self) -> str:
        """Padding used for ``center=True`` ('reflect', the docs/contract.md choice)."""
        return PAD_MODE

    @property
    def n_bins(self) -> int:
        """Frequency bins of the full one-sided STFT (R+1, including Nyquist)."""
        return self.resolution + 1

    @property
    def n_frames(self) -> int:
        """Frames of the full STFT of one clip (R+1, with center padding)."""
        return self.resolution + 1

    @property
    def clip_samples(self) -> int:
        """Samples in one clip (R * hop_length)."""
        return self.resolution * self.hop_length

    @property
    def clip_seconds(self) -> float:
        """Duration of one clip in seconds."""
        return self.clip_samples / self.sample_rate

    @property
    def bin_hz(self) -> float:
        """Spacing of frequency bins in Hz (sample_rate / n_fft)."""
        return self.sample_rate / self.n_fft

    def bin_frequency(self, k: int) -> float:
        """Centre frequency of bin ``k`` in Hz."""
        return k * self.bin_hz

    def image_row(self, k: int) -> int:
        """Image row that holds frequency bin ``k`` (row 0 is the highest kept bin, R-1)."""
        if not 0 <= k < self.resolution:
            raise ValueError(f"bin {k} is not kept in the image (kept bins: 0..{self.resolution - 1})")
        return self.resolution - 1 - k

    # --- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The geometry's keys of the ``audio`` block (see ``GEOMETRY_KEYS``), as plain JSON values."""
        return {
            "sample_rate": self.sample_rate,
            "resolution": self.resolution,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "window": self.window,
            "center": self.center,
            "eps": self.eps,
            "clip_sigma": self.clip_sigma,
        }

    def audio_block(self, mean: float, std: float, target_bpm: Optional[float] = None) -> dict:
        """A complete ``audio`` block (docs/contract.md) with the dataset statistics of ln power."""
        mean, std = check_stats(mean, std, "audio block")
        d = self.to_dict()
        block = {k: d[k] for k in ("sample_rate", "resolution", "n_fft", "hop_length", "window", "center", "eps")}
        block.update(mean=mean, std=std, clip_sigma=self.clip_sigma,
                     target_bpm=None if target_bpm is None else float(target_bpm), format_version=FORMAT_VERSION)
        return block

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "StftGeometry":
        """Rebuild from an ``audio`` block (extra keys such as mean/std are ignored).

        Fails with a one-line message when a key is missing or the block describes an STFT this
        code cannot produce (another window, no centring, an ``n_fft`` that is not 2R, a newer format).
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"audio block must be a mapping, got {type(d).__name__}")
        if "resolution" not in d:
            raise ValueError("audio block is missing 'resolution'")
        version = d.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(f"audio block format_version {version!r} is newer than this code supports ({FORMAT_VERSION})")
        kwargs = {"resolution": d["resolution"]}
        for key in ("hop_length", "sample_rate", "eps", "clip_sigma"):
            if key in d and d[key] is not None:
                kwargs[key] = d[key]
        geom = cls(**kwargs)
        if "n_fft" in d and d["n_fft"] != geom.n_fft:
            raise ValueError(f"audio block n_fft {d['n_fft']!r} does not match 2 x resolution ({geom.n_fft})")
        if "window" in d and d["window"] != WINDOW:
            raise ValueError(f"audio block window {d['window']!r} is not supported (only {WINDOW!r})")
        if "center" in d and d["center"] is not CENTER:
            raise ValueError(f"audio block center={d['center']!r} is not supported (frames must be centred)")
        return geom


def logpower_range(geometry: StftGeometry) -> Tuple[float, float]:
    """The range of ``ln(|X|^2 + eps)`` for audio in [-1, 1]: ``(ln eps, ln(R^2 + eps))``.

    A periodic Hann window of ``n_fft = 2R`` samples sums to R, so ``|X| <= R`` for samples in
    [-1, 1]; the dataset mean of ln power lies in this range and its std is at most half its width.
    """
    return math.log(geometry.eps), math.log(float(geometry.resolution) ** 2 + geometry.eps)


def validate_audio_block(block: Any) -> Mapping[str, Any]:
    """Check every field of an ``audio`` block against its physical range; return the block unchanged.

    One validator for archives (``dataset.json``) and snapshots: the geometry (sample_rate 1 kHz to
    768 kHz, resolution a power of two 4..8192, hop R or R/2, n_fft 2R, hann, centred, eps in
    (0, 1], clip_sigma in (0, 100]), the statistics (``mean`` finite and within the range ln power
    can take for audio in [-1, 1] plus 20 dB, ``std`` finite, >= 1e-3 and at most that range's
    half width) and ``target_bpm`` (absent/None, or 20..1000 BPM). Raises :class:`AudioBlockError`
    with one line naming the first bad field and its value.
    """
    if not isinstance(block, Mapping):
        raise AudioBlockError(f"audio block must be a mapping, got {type(block).__name__}")
    for key in ("sample_rate", "resolution", "mean", "std"):
        if block.get(key) is None:
            raise AudioBlockError(f"audio block is missing {key!r}")
    try:
        geometry = StftGeometry.from_dict(block)
    except ValueError as e:
        raise AudioBlockError(f"audio block {str(e).replace('StftGeometry: ', '')}") from None
    for key in ("mean", "std"):
        value = block[key]
        if not _is_number(value) or not math.isfinite(value):
            raise AudioBlockError(f"audio block {key} {value!r} is not a finite number")
    lo, hi = logpower_range(geometry)
    mean, std = float(block["mean"]), float(block["std"])
    if not lo - 1e-6 <= mean <= hi + MEAN_HEADROOM:
        raise AudioBlockError(f"audio block mean {mean!r} is outside the range of ln power for this geometry "
                              f"({lo:.4g}..{hi + MEAN_HEADROOM:.4g})")
    max_std = (hi + MEAN_HEADROOM - lo) / 2
    if not MIN_STD <= std <= max_std:
        raise AudioBlockError(f"audio block std {std!r} is outside {MIN_STD:g}..{max_std:.4g} for this geometry")
    bpm = block.get("target_bpm")
    if bpm is not None:
        if not _is_number(bpm) or not math.isfinite(bpm):
            raise AudioBlockError(f"audio block target_bpm {bpm!r} is not a finite number")
        if not MIN_BPM <= bpm <= MAX_BPM:
            raise AudioBlockError(f"audio block target_bpm {bpm!r} is outside {MIN_BPM:g}..{MAX_BPM:g} BPM")
    return block
