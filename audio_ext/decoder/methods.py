"""The named phase-reconstruction methods and the way from images to audio.

:func:`reconstruct` runs one of :data:`METHODS` on magnitudes; :func:`decode_audio` goes from
archive or generator images straight to audio. ``learned+pghi+fgla`` first fills in the STFT
frames between the stored ones with the decoder model (:mod:`audio_ext.decoder.frame_model`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Union

import numpy as np
import torch

from audio_ext.core.codec import AudioCodec, decode_magnitude
from audio_ext.core.geometry import StftGeometry
from audio_ext.decoder.frame_model import ModelError, upsample_magnitude
from audio_ext.decoder.griffin_lim import (
    ArrayLike,
    RandomSource,
    _as_mag,
    fine_geometry,
    griffin_lim,
    griffin_lim_stored,
)
from audio_ext.decoder.model_choice import DecoderChoice, choose_decoder_model
from audio_ext.decoder.pghi import pghi

# --- named methods ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PhaseMethod:
    """A named reconstruction recipe: ``run(mag, geometry, n_iter, generator, decoder) -> audio tensor``
    (``decoder``: the :class:`~audio_ext.decoder.model_choice.DecoderChoice`; only the learned method reads it)."""

    name: str
    description: str
    default_iters: int
    run: Callable[..., torch.Tensor]


def _run_gla(momentum: float):
    def run(S, geometry, n_iter, generator, decoder):
        return griffin_lim(S, geometry, n_iter=n_iter, momentum=momentum, init="random", generator=generator)
    return run


def _run_pghi_gla(momentum: float):
    def run(S, geometry, n_iter, generator, decoder):
        start = pghi(S, geometry, generator=generator)
        return griffin_lim(S, geometry, n_iter=n_iter, momentum=momentum, init=start)
    return run


#: Name of the learned decoder: predicted in-between frames, then PGHI and fast Griffin-Lim at hop/2.
LEARNED_METHOD = "learned+pghi+fgla"


def learned_magnitude(S: torch.Tensor, geometry: StftGeometry, decoder: DecoderChoice) -> torch.Tensor:
    """Magnitudes ``[B, R+1, N]`` at hop ``a`` -> ``[B, R+1, 2N-1]`` at hop ``a/2`` with the decoder model.

    The stored frames land at the even indices bit for bit (they are copied, never recomputed);
    the odd ones are the model's prediction by ``decoder``'s model. ModelError when it has none that fits ``geometry``.
    """
    return upsample_magnitude(S, geometry, decoder.model_for(geometry))


def _run_learned(momentum: float):
    def run(S, geometry, n_iter, generator, decoder):
        M, lead, was_numpy = _as_mag(S, geometry)
        fine = fine_geometry(geometry)
        S_fine = learned_magnitude(M, geometry, decoder)
        start = pghi(S_fine, fine, generator=generator)
        y = griffin_lim_stored(S_fine, fine, n_iter, momentum, start)
        y = y.reshape(*lead, y.shape[-1])
        return y.detach().cpu().numpy() if was_numpy else y
    return run


METHODS: Dict[str, PhaseMethod] = {m.name: m for m in (
    PhaseMethod("thesis", "Griffin-Lim from random phase, no momentum, 10 iterations (the thesis decoder)",
                10, _run_gla(0.0)),
    PhaseMethod("gla", "classic Griffin-Lim from random phase (momentum 0)", 32, _run_gla(0.0)),
    PhaseMethod("fgla", "fast Griffin-Lim from random phase, momentum 0.99", 32, _run_gla(0.99)),
    PhaseMethod("pghi", "phase-gradient heuristic integration alone (no iterations)", 0, _run_pghi_gla(0.0)),
    PhaseMethod("pghi+fgla", "PGHI start, then fast Griffin-Lim with momentum 0.5", 10, _run_pghi_gla(0.5)),
    PhaseMethod("pghi+fgla99", "PGHI start, then fast Griffin-Lim with momentum 0.99", 10, _run_pghi_gla(0.99)),
    PhaseMethod(LEARNED_METHOD, "in-between frames predicted by the decoder model (audio_ext.decoder.frame_model), then PGHI and "
                "fast Griffin-Lim (momentum 0.5) at hop/2, stored frames' magnitudes kept exactly, predicted ones re-estimated",
                10, _run_learned(0.5)),
)}

def _or_default(decoder: Optional[DecoderChoice]) -> DecoderChoice:
    return decoder if decoder is not None else choose_decoder_model()


#: The classic method: the default wherever no decoder model fits the geometry (best measured
#: quality per second without a model, docs/audio.md).
DEFAULT_METHOD = "pghi+fgla"


def default_method(geometry: Optional[StftGeometry] = None, decoder: Optional[DecoderChoice] = None) -> str:
    """The decoder used when none is named: :data:`LEARNED_METHOD` when ``decoder`` (None: the
    environment's or the shipped model, :func:`~audio_ext.decoder.model_choice.choose_decoder_model`)
    has a model that fits ``geometry``, else :data:`DEFAULT_METHOD`."""
    if geometry is not None and _or_default(decoder).available_for(geometry):
        return LEARNED_METHOD
    return DEFAULT_METHOD


def describe_method(method: str, geometry: StftGeometry, decoder: Optional[DecoderChoice] = None) -> str:
    """``method`` as the page and file tags show it: the learned one says which model, e.g.
    ``learned+pghi+fgla[shipped: frame_interp_r1024_h1024.pt]``, ``[file: m.pt]`` or
    ``[snapshot: network-snapshot-000200.pkl]`` (the label of ``decoder``; None: the default choice)."""
    if method == LEARNED_METHOD:
        decoder = _or_default(decoder)
        try:
            decoder.model_for(geometry)
            return f"{method}[{decoder.label}]"
        except ModelError:
            return f"{method}[no model]"
    return method


def reconstruct(mag: ArrayLike, geometry: StftGeometry, method: Optional[str] = None, n_iter: Optional[int] = None,
                generator: RandomSource = None, decoder: Optional[DecoderChoice] = None) -> ArrayLike:
    """Audio ``[.., (N-1) * hop]`` from magnitudes ``[.., R+1, N]`` with a named method of :data:`METHODS`.

    ``method`` None is :func:`default_method` for ``geometry``. ``n_iter`` overrides the method's
    default number of Griffin-Lim iterations ('pghi' with
    ``n_iter > 0`` continues with momentum-0 iterations). Random starts come from ``generator``
    (:data:`RandomSource`); with one entry per clip each clip's audio depends only on its own entry,
    so a clip decodes to the same audio whatever batch it is part of. ``decoder``: the model of the
    learned method (None: :func:`~audio_ext.decoder.model_choice.choose_decoder_model` without flag or snapshot).
    """
    decoder = _or_default(decoder)
    if method is None:
        method = default_method(geometry, decoder)
    if method not in METHODS:
        raise ValueError(f"unknown phase reconstruction method {method!r}; known: {', '.join(METHODS)}")
    spec = METHODS[method]
    iters = spec.default_iters if n_iter is None else n_iter
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"n_iter must be a non-negative integer, got {n_iter!r}")
    return spec.run(mag, geometry, iters, generator, decoder)


def decode_audio(image: ArrayLike, audio_block: Union[Mapping[str, Any], AudioCodec], method: Optional[str] = None,
                 n_iter: Optional[int] = None, device: Union[str, torch.device, None] = None,
                 generator: RandomSource = None, decoder: Optional[DecoderChoice] = None) -> ArrayLike:
    """Images ``[.., R, R]`` (uint8 archive images or float generator output in [-1, 1]) to float32 clips.

    ``audio_block`` is the ``audio`` block of dataset.json or of a snapshot (or an :class:`AudioCodec`).
    The result has ``clip_samples`` samples per image; numpy in gives numpy out, a tensor gives a
    tensor on ``device`` (default: the image's device). ``method`` None is :func:`default_method` of the
    geometry (the learned decoder when a model fits it). ``generator`` is passed to :func:`reconstruct`
    (one generator, or one generator or seed per image: :data:`RandomSource`), ``decoder`` too.
    """
    codec = audio_block if isinstance(audio_block, AudioCodec) else AudioCodec.from_audio_block(audio_block)
    g = codec.geometry
    was_numpy = isinstance(image, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(image)) if was_numpy else image
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}")
    if device is not None:
        t = t.to(device)
    mag = decode_magnitude(t, g, codec.mean, codec.std)
    y = reconstruct(mag, g, method=method, n_iter=n_iter, generator=generator, decoder=decoder).to(torch.float32)
    return y.cpu().numpy() if was_numpy else y
