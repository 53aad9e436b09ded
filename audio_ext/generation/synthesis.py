"""From a snapshot to images and audio: the steps every generating tool shares.

Load G with its audio block, draw the seeded latents (the StyleGAN2-ADA convention
``z = RandomState(seed).randn(z_dim)``), run the synthesis, decode the images to audio and write
the files (16-bit PCM, peaks limited to :data:`audio_ext.core.audio_io.PEAK_LIMIT` of full scale).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from audio_ext.core.device import DeviceError, resolve_device
from audio_ext.core.geometry import validate_audio_block
from audio_ext.decoder import methods
from audio_ext.decoder.frame_model import ModelError
from audio_ext.decoder.model_choice import DecoderChoice, choose_decoder_model, is_no_model
from audio_ext.generation.pretrained import PretrainedError, resolve_network
from stylegan2.snapshot import SnapshotError, build_networks, load_snapshot

DEVICES = ("auto", "cpu", "cuda")


class GenerateError(Exception):
    """Bad input to generation (snapshot, seeds, class, output folder, options); a one-line message."""


# --------------------------------------------------------------------------------------------------
# Loading and checking.

def generation_device(name: str) -> torch.device:
    """``--device`` of the generating tools (one of :data:`DEVICES`) as a torch device
    (:func:`audio_ext.core.device.resolve_device`); GenerateError when it cannot be used."""
    if name not in DEVICES:
        raise GenerateError(f"--device {name!r} is not one of {', '.join(DEVICES)}")
    try:
        return resolve_device(name)
    except DeviceError as e:
        raise GenerateError(str(e)) from None


def load_generator(path, device: torch.device, with_decoder: bool = False):
    """(G_ema or G, audio block) from a snapshot; errors name the file and the problem in one line.

    ``with_decoder``: return (G, block, decoder model dict or None) instead, the snapshot's
    ``decoder_model`` (the archive's own model that ``train.py`` stored; plain data, not yet checked).
    """
    try:
        path = resolve_network(path)          # pretrained:NAME -> the shipped file
        snap = load_snapshot(path, keys=("G_ema", "audio", "decoder_model"))   # only what generation reads
    except (PretrainedError, SnapshotError) as e:
        raise GenerateError(str(e)) from None
    block = snap.get("audio")
    if not isinstance(block, dict):
        raise GenerateError(f"{path}: snapshot has no 'audio' block (it was not trained on an audio archive), "
                            f"so its images cannot be turned into sound")
    try:  # every field in its physical range, before anything is built (a tempo of 1e300 would hang)
        validate_audio_block(block)
    except ValueError as e:
        raise GenerateError(f"{path}: {e}") from None
    name = "G_ema" if snap.get("G_ema") is not None else "G"
    try:
        G = build_networks(snap, device=device, names=[name])[name]
    except SnapshotError as e:
        raise GenerateError(f"{path}: {e}") from None
    if int(getattr(G, "img_channels", 1)) != 1:
        raise GenerateError(f"{path}: generator makes {G.img_channels}-channel images; audio needs 1 channel")
    if int(G.img_resolution) != int(block["resolution"]):
        raise GenerateError(f"{path}: generator resolution {G.img_resolution} does not match the audio block's "
                            f"{block['resolution']}")
    if with_decoder:
        return G, block, snap.get("decoder_model")
    return G, block


def decoder_choice(network: str, geometry, payload, decoder_model: Optional[str]) -> DecoderChoice:
    """The decoder model for a snapshot's clips: ``decoder_model`` (a file; ``'none'``: no model) when
    given, else the snapshot's ``payload`` when it has one, else the environment's or the shipped one
    (:func:`audio_ext.decoder.model_choice.choose_decoder_model`).

    A file or snapshot model that cannot be used, or that was trained for another geometry than the
    snapshot's audio, is a one-line GenerateError: it was asked for, so it is never passed over.
    """
    try:
        choice = choose_decoder_model(flag=decoder_model, carried=payload, where=Path(network).name)
        if (decoder_model is not None or payload is not None) and not is_no_model(decoder_model):
            choice.model_for(geometry)          # the model that was asked for fits this snapshot
    except ModelError as e:
        flag = "--decoder-model" if decoder_model is not None else f"{network}: decoder_model"
        raise GenerateError(f"{flag}: {e}") from None
    return choice


def class_labels(G, class_idx: Optional[int], network: str, count: int, device: torch.device) -> torch.Tensor:
    """One-hot class vectors ``[count, c_dim]`` (``[count, 0]`` for an unconditional model)."""
    c_dim = int(getattr(G, "c_dim", 0))
    if c_dim == 0:
        if class_idx is not None:
            raise GenerateError(f"{network}: --class {class_idx} given, but this is an unconditional model "
                                f"(trained without labels)")
        return torch.zeros(count, 0, device=device)
    if class_idx is None:
        raise GenerateError(f"{network}: conditional model with {c_dim} classes; pass --class 0..{c_dim - 1}")
    if not 0 <= class_idx < c_dim:
        raise GenerateError(f"{network}: --class {class_idx} is out of range; this model has classes 0..{c_dim - 1}")
    c = torch.zeros(count, c_dim, device=device)
    c[:, class_idx] = 1
    return c


def seed_latents(seeds: Sequence[int], z_dim: int) -> np.ndarray:
    """``[len(seeds), z_dim]`` float32 latents, row i = ``RandomState(seeds[i]).randn(z_dim)``."""
    return np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds]).astype(np.float32)


def clip_tempo(block: dict, audio: Optional[np.ndarray] = None) -> float:
    """Tempo (BPM) of generated clips: the archive's ``target_bpm`` (every training clip was stretched
    to it); for archives built without stretching, librosa's estimate on ``audio`` to 0.01 BPM."""
    bpm = block.get("target_bpm")
    if bpm:
        return float(bpm)
    if audio is None:
        raise GenerateError("the audio block has no target_bpm and there is no audio to estimate a tempo from")
    import librosa  # lazy: heavy: ~1 s to import (numba JIT); only this path needs it
    tempo_fn = getattr(librosa.feature, "tempo", None) or librosa.beat.tempo  # feature.tempo since 0.10
    bpm = float(np.atleast_1d(tempo_fn(y=np.asarray(audio, np.float32), sr=int(block["sample_rate"])))[0])
    if not (math.isfinite(bpm) and bpm > 0):
        raise GenerateError("the audio block has no target_bpm and no tempo could be detected in the clip")
    return round(bpm, 2)  # the precision shown in file names and on the page


# --------------------------------------------------------------------------------------------------
# Images and audio.

def synthesize(G, ws_or_z: torch.Tensor, c: torch.Tensor, trunc: float, noise_mode: str,
               device: torch.device, from_ws: bool = False) -> torch.Tensor:
    """Generator images ``[N, R, R]`` float32 clamped to [-1, 1] (the range of the training images; an
    early or truncated generator overshoots it); full precision on the CPU."""
    force_fp32 = device.type != "cuda"
    with torch.no_grad():
        if from_ws:
            img = G.synthesis(ws_or_z, noise_mode=noise_mode, force_fp32=force_fp32)
        else:
            img = G(ws_or_z, c, truncation_psi=trunc, noise_mode=noise_mode, force_fp32=force_fp32)
    return img[:, 0].float().clamp(-1.0, 1.0)


def image_to_png_array(img: np.ndarray) -> np.ndarray:
    """Float image in [-1, 1] to uint8 with the archive's mapping ``u = round((x + 1) * 127.5)``."""
    return np.clip(np.round((np.asarray(img, np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def decode_images(images: torch.Tensor, block: dict, method: Optional[str], n_iter: Optional[int],
                  device: torch.device, seed: Union[int, Sequence[int]] = 0,
                  decoder: Optional[DecoderChoice] = None) -> np.ndarray:
    """Audio ``[N, samples]`` float32 from generator images ``[N, R, R]`` through ``methods.decode_audio``.

    ``None`` leaves the method / iterations at the audio layer's defaults. Image ``i`` draws its random
    phase initialisation from its own torch generator, seeded with ``seed[i]`` (a sequence of N seeds)
    or ``seed + i`` (an int), so a clip decodes to the same audio whatever else shares its batch.
    ``decoder``: the decoder model (:func:`decoder_choice`; None: the environment's or the shipped one).
    """
    kwargs = {}
    if method is not None:
        kwargs["method"] = method
    if n_iter is not None:
        kwargs["n_iter"] = n_iter
    n = int(images.shape[0])
    seeds = [int(seed) + i for i in range(n)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"decode_images: {len(seeds)} seeds for {n} images")
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    try:
        audio = methods.decode_audio(images.to(device), block, device=device, generator=generators, decoder=decoder,
                                     **kwargs)
    except ValueError as e:
        raise GenerateError(f"decoding failed: {e}") from None
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    return np.asarray(audio, dtype=np.float32).reshape(images.shape[0], -1)


def phase_methods() -> Sequence[str]:
    """Names of the decoder's phase-reconstruction methods."""
    return list(methods.METHODS)


def describe_phase(method: Optional[str], n_iter: Optional[int], geometry=None,
                   decoder: Optional[DecoderChoice] = None) -> tuple:
    """(method name, iterations) that decoding will use once defaults are filled in.

    With ``geometry`` the default is the learned decoder when a model fits it (``methods.default_method``);
    the learned method's name then says which model, e.g. ``learned+pghi+fgla[shipped: frame_interp_r1024_h1024.pt]``
    (:func:`audio_ext.decoder.methods.describe_method`), as ``decoder`` chose it.
    """
    name = method if method is not None else methods.default_method(geometry, decoder)
    spec = methods.METHODS.get(name)
    if name == methods.LEARNED_METHOD and geometry is not None:
        name = methods.describe_method(name, geometry, decoder)
    return name, (n_iter if n_iter is not None else getattr(spec, "default_iters", "default"))


def save_png(path: Path, image_u8: np.ndarray) -> None:
    Image.fromarray(image_u8, mode="L").save(path, format="PNG")


def fmt_bpm(bpm: float) -> str:
    return f"{bpm:.0f}" if abs(bpm - round(bpm)) < 1e-6 else f"{bpm:.2f}".rstrip("0").rstrip(".")
