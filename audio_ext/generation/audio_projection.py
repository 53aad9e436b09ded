"""Project your own track into a trained network: the audio half of ``project_audio.py``.

1. **The target** (:func:`prepare_target`) takes exactly the dataset tool's path, so it is the kind
   of image the network knows: decode, mix to mono, resample to the snapshot's sample rate, cut
   one-minute segments, track the beat, stretch to the snapshot's ``target_bpm`` and cut a clip of
   the snapshot's length on the first beat at or after ``--start`` seconds (``slicing.iter_track_clips``
   with a one-beat stride), then encode it with the snapshot's ``audio`` block (``codec.encode``).
2. **The search** is :func:`stylegan2.projector.project` (w or W+, noise maps, noise regularisation,
   from ``w_avg``) with two spectral terms added to its multi-scale image distance
   (:class:`SpectralLoss`): the **band energies** (mean level of 16 log-spaced frequency bands over
   the clip: the mix's tonal balance) and the **onset envelope** (spectral flux per frame: where
   the hits are). Both are computed from the image itself, so nothing is downloaded.
3. **The files** (:func:`write_projection`): ``projected_w.npz`` (``w`` ``[1, num_ws, w_dim]`` as in
   StyleGAN2-ADA, plus ``w_plus`` and the optimised noise maps ``noise/<name>``), ``target.wav``
   (the target through codec and decoder: what the network could at best give), ``projected.wav``,
   ``target.png`` and ``projected.png`` (the spectrograms), ``compare.png`` (target | projected),
   ``loss.png`` (the loss curve), ``projection.json`` (the numbers) and ``index.html``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from PIL import Image, ImageDraw

from audio_ext.core.audio_io import SEGMENT_SECONDS, AudioError, audio_duration, write_audio
from audio_ext.core.codec import encode
from audio_ext.core.geometry import StftGeometry
from audio_ext.core.writable import check_writable
from audio_ext.dataset.beats import MAX_BPM, MIN_BPM
from audio_ext.dataset.cut import SliceCounts, SliceParams, iter_track_clips
from audio_ext.decoder.model_choice import DecoderChoice
from audio_ext.generation.generate import staging_folder
from audio_ext.generation.page import ClipEntry, write_page
from audio_ext.generation.synthesis import (
    GenerateError,
    decode_images,
    decoder_choice,
    generation_device,
    image_to_png_array,
    load_generator,
    save_png,
)
from stylegan2.line_chart import Series, draw_line_chart
from stylegan2.progress import progress_bar
from stylegan2.projector import project

#: Frequency bands of the band-energy term (log-spaced over the image rows).
DEFAULT_BANDS = 16


class ProjectionError(GenerateError):
    """Bad input to projection (snapshot, target file, start time, options); a one-line message."""


@dataclasses.dataclass
class TargetClip:
    """The target as the network would see it: ``audio`` (float32, one clip at the snapshot's tempo),
    ``image`` (uint8 ``[R, R]``, the encoded clip), ``record`` (the slicing record: ``clip_start_s``
    in the file, ``source_bpm``, ``stretch_ratio``...)."""

    audio: np.ndarray
    image: np.ndarray
    record: dict


def prepare_target(path, audio_block: dict, start_s: float = 0.0, stretcher: str = "auto") -> TargetClip:
    """The first clip of ``path`` on a beat at or after ``start_s`` seconds, as the dataset tool cuts it.

    The tempo range is the dataset tool's default (120-145 BPM, widened to include the snapshot's
    ``target_bpm``); one segment after another is tracked until a clip fits.
    """
    if not (isinstance(start_s, (int, float)) and math.isfinite(start_s) and start_s >= 0):
        raise ProjectionError(f"--start must be a non-negative number of seconds, got {start_s!r}")
    bpm = audio_block.get("target_bpm")
    if not bpm:
        raise ProjectionError("the snapshot's audio block has no target_bpm: the target cannot be stretched "
                              "to the tempo the network was trained at")
    geometry = StftGeometry.from_dict(audio_block)
    params = SliceParams(target_bpm=float(bpm), min_bpm=min(MIN_BPM, float(bpm)), max_bpm=max(MAX_BPM, float(bpm)),
                         stride_beats=1.0, stretcher=stretcher)
    first_segment = int(start_s // SEGMENT_SECONDS)
    counts = SliceCounts()
    try:
        duration = audio_duration(path)
        if duration > 0 and start_s >= duration:
            raise ProjectionError(f"--target {path}: --start {start_s:g} s is past the end of the file "
                                  f"({duration:.2f} s)")
        for clip, record in iter_track_clips(path, geometry, params, counts=counts,
                                             segments=range(first_segment, 1 << 40)):
            if record["clip_start_s"] >= start_s - 1e-6:
                image = encode(clip, geometry, audio_block["mean"], audio_block["std"])
                return TargetClip(audio=clip, image=np.asarray(image, np.uint8), record=record)
    except AudioError as e:
        raise ProjectionError(f"--target {e}") from None
    why = counts.why_no_clips(params.min_bpm, params.max_bpm) if counts.clips == 0 else \
        f"no {geometry.clip_seconds:.2f} s clip starts on a beat after {start_s:g} s"
    raise ProjectionError(f"--target {path}: no clip at or after --start {start_s:g} s ({why})")


class SpectralLoss:
    """Band-energy and onset-envelope terms between generator images and the target (see the module docstring).

    Images are ``[N, 1, R, R]`` in [-1, 1] (normalised log power, row 0 = highest frequency).
    ``band_weight`` / ``onset_weight`` scale the two mean squared differences (0 turns a term off).
    """

    def __init__(self, resolution: int, bands: int = DEFAULT_BANDS, band_weight: float = 1.0,
                 onset_weight: float = 1.0):
        self.band_weight, self.onset_weight = float(band_weight), float(onset_weight)
        self.matrix = band_matrix(resolution, bands)

    def band_energies(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, bands]``: the mean level of each band over the clip (low bands first)."""
        level = images[:, 0].float().mean(dim=-1).flip(-1)          # [N, R], bin 0 (DC) first
        return level @ self.matrix.to(level.device).T

    @staticmethod
    def onset_envelope(images: torch.Tensor) -> torch.Tensor:
        """``[N, R - 1]``: spectral flux, the mean rise of level from one frame to the next."""
        x = images[:, 0].float()
        return torch.relu(x[..., 1:] - x[..., :-1]).mean(dim=-2)

    def __call__(self, images: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        target = target.expand_as(images)
        terms = {}
        if self.band_weight:
            terms["band"] = self.band_weight * (self.band_energies(images) - self.band_energies(target)).square().mean()
        if self.onset_weight:
            terms["onset"] = self.onset_weight * (self.onset_envelope(images) -
                                                  self.onset_envelope(target)).square().mean()
        return terms


def band_matrix(resolution: int, bands: int = DEFAULT_BANDS) -> torch.Tensor:
    """``[bands, R]`` averaging weights over STFT bins 0..R-1, bands log-spaced from bin 1 (DC joins band 0).

    Where log spacing would give a band less than one bin (low bins at small R) the edges are made
    distinct, so every band holds at least one bin; ``bands`` is capped at R.
    """
    r = int(resolution)
    bands = max(1, min(int(bands), r))
    edges = np.round(np.geomspace(1, r, bands + 1)).astype(int)
    edges[0], edges[-1] = 0, r
    for i in range(1, bands + 1):             # at least one bin per band, counted from the bottom ...
        edges[i] = max(edges[i], edges[i - 1] + 1)
    for i in range(bands, 0, -1):             # ... and from the top, so the last edge is R
        edges[i - 1] = min(edges[i - 1], edges[i] - 1)
    m = torch.zeros(len(edges) - 1, resolution)
    for b in range(len(edges) - 1):
        m[b, edges[b]:edges[b + 1]] = 1.0 / (edges[b + 1] - edges[b])
    return m


@dataclasses.dataclass
class ProjectOptions:
    """Everything that decides what :func:`run_projection` writes; see ``project_audio.py --help``."""

    network: str
    target: str
    outdir: str
    start_s: float = 0.0
    steps: int = 1000
    seed: int = 0
    w_plus: bool = False
    device: str = "auto"
    noise_weight: float = 1e5
    band_weight: float = 1.0
    onset_weight: float = 1.0
    stretcher: str = "auto"
    w_avg_samples: int = 10000


@dataclasses.dataclass
class ProjectionSummary:
    """What a projection wrote and measured (distances: the multi-scale image distance)."""

    outdir: Path
    start_distance: float
    final_distance: float
    closed_share: float
    steps: int
    record: dict
    files: List[str]


def run_projection(opts: ProjectOptions, log: Callable[[str], None] = print, progress: bool = True
                   ) -> ProjectionSummary:
    """Prepare the target, project it, decode both and write every file (see the module docstring).

    Inputs are checked before the search starts; files appear in ``opts.outdir`` only when all are complete.
    """
    if not (isinstance(opts.steps, int) and opts.steps >= 1):
        raise ProjectionError(f"--steps must be a positive integer, got {opts.steps!r}")
    for flag, v in (("--noise-weight", opts.noise_weight), ("--band-weight", opts.band_weight),
                    ("--onset-weight", opts.onset_weight)):
        if not (math.isfinite(v) and v >= 0):
            raise ProjectionError(f"{flag} must be a non-negative number, got {v!r}")
    if not Path(opts.target).is_file():
        raise ProjectionError(f"--target {opts.target}: no such file")
    try:    # before the search, not after it: an --outdir that is a file or read-only fails at once
        check_writable(opts.outdir, "--outdir", folder=True)
    except ValueError as e:
        raise ProjectionError(str(e)) from None
    device = generation_device(opts.device)
    G, block, decoder_model = load_generator(str(opts.network), device, with_decoder=True)
    if int(getattr(G, "c_dim", 0)):
        raise ProjectionError(f"{opts.network}: conditional models are not supported by the projector")
    # the snapshot's own decoder model when it carries one, as gen_audio.py decodes; one that does not
    # fit fails now, not after the projection
    decoder = decoder_choice(str(opts.network), StftGeometry.from_dict(block), decoder_model, None)
    log(f"target: {opts.target} from {opts.start_s:g} s, through the dataset tool's path")
    clip = prepare_target(opts.target, block, opts.start_s, opts.stretcher)
    rec = clip.record
    log(f"target clip: {rec['clip_start_s']:.3f} s into the file, {rec['source_bpm']:.2f} BPM stretched to "
        f"{float(block['target_bpm']):g} BPM")
    target = torch.from_numpy(clip.image.astype(np.float32) / 127.5 - 1.0)[None]
    spectral = SpectralLoss(int(block["resolution"]), band_weight=opts.band_weight, onset_weight=opts.onset_weight)
    bar = progress_bar(total=opts.steps, desc="projecting", unit="step", disable=not progress, dynamic_ncols=True)

    def on_step(entry):
        bar.set_postfix_str(f"loss {entry['loss']:.4f} dist {entry['distance']:.4f}", refresh=False)
        bar.update(1)

    try:
        result = project(G, target, num_steps=opts.steps, w_plus=opts.w_plus, seed=opts.seed,
                         regularize_noise_weight=opts.noise_weight, extra_loss=spectral,
                         w_avg_samples=opts.w_avg_samples, device=device, callback=on_step)
    finally:
        bar.close()
    summary = write_projection(opts, G, block, clip, result, device, decoder)
    log(f"image distance (multi-scale MSE): start {summary.start_distance:.4f} -> final {summary.final_distance:.4f}; "
        f"{100 * summary.closed_share:.1f} % of the start -> target distance closed in {opts.steps} steps")
    return summary


def write_projection(opts: ProjectOptions, G, block: dict, clip: TargetClip, result, device,
                     decoder: Optional[DecoderChoice] = None) -> ProjectionSummary:
    """Decode target and projection (with ``decoder``'s model; None: the default choice) and write the
    files of the module docstring into ``opts.outdir``."""
    sr = int(block["sample_rate"])
    target_img = torch.from_numpy(clip.image.astype(np.float32) / 127.5 - 1.0)
    projected_img = result.image[0].clamp(-1, 1)
    decoded = decode_images(torch.stack([target_img, projected_img]), block, None, None, device, seed=[0, 1],
                            decoder=decoder)
    bpm = float(block["target_bpm"])
    rec = clip.record
    numbers = {"target": str(opts.target), "start_s": opts.start_s, "clip_start_s": rec["clip_start_s"],
               "source_bpm": rec["source_bpm"], "target_bpm": bpm, "steps": opts.steps, "seed": opts.seed,
               "w_plus": bool(opts.w_plus), "start_distance": result.start_distance,
               "final_distance": result.final_distance, "closed_share": result.closed_share,
               "final_loss": result.history[-1]["loss"], "snapshot": Path(str(opts.network)).name}
    outdir = Path(opts.outdir)
    with staging_folder(outdir) as tmp:
        arrays = {"w": result.ws.numpy()[None].astype(np.float32), "w_plus": np.array(bool(result.w_plus))}
        arrays.update({f"noise/{k}": v.numpy() for k, v in result.noise.items()})
        np.savez(tmp / "projected_w.npz", **arrays)
        tags = {"software": "ElectroGAN project_audio.py", "artist": "ElectroGAN"}
        comment = f"target={Path(str(opts.target)).name} start={rec['clip_start_s']:.3f}s bpm={bpm:g}"
        write_audio(tmp / "target.wav", decoded[0], sr, "wav", dict(tags, title="target (codec + decoder)",
                                                                     comment=comment))
        write_audio(tmp / "projected.wav", decoded[1], sr, "wav", dict(tags, title="projection",
                                                                        comment=f"{comment} steps={opts.steps}"))
        t_u8, p_u8 = clip.image, image_to_png_array(projected_img.numpy())
        save_png(tmp / "target.png", t_u8)
        save_png(tmp / "projected.png", p_u8)
        save_png(tmp / "compare.png", side_by_side([t_u8, p_u8]))
        loss_curve_png(tmp / "loss.png", [h["loss"] for h in result.history], [h["distance"] for h in result.history])
        (tmp / "projection.json").write_text(json.dumps(numbers, indent=2) + "\n")
        seconds = decoded.shape[-1] / sr
        entries = [ClipEntry(title="target (through codec and decoder)", audio="target.wav", image="target.png",
                             bpm=bpm, seconds=seconds, snapshot=numbers["snapshot"], kind="target"),
                   ClipEntry(title="projection", audio="projected.wav", image="projected.png", bpm=bpm,
                             seconds=seconds, snapshot=numbers["snapshot"],
                             kind=f"projection, {opts.steps} steps, {'W+' if opts.w_plus else 'W'}")]
        write_page(tmp, entries, title=f"ElectroGAN projection: {Path(str(opts.target)).name}",
                   run_info={"snapshot": numbers["snapshot"], "clip start": f"{rec['clip_start_s']:.3f} s",
                             "distance": f"{result.start_distance:.4f} -> {result.final_distance:.4f}",
                             "closed": f"{100 * result.closed_share:.1f} %"})
        files = sorted(p.name for p in tmp.iterdir())
    return ProjectionSummary(outdir=outdir, start_distance=result.start_distance,
                             final_distance=result.final_distance, closed_share=result.closed_share,
                             steps=opts.steps, record=rec, files=files)


def side_by_side(images: List[np.ndarray], gap: int = 4) -> np.ndarray:
    """uint8 images of equal height next to each other, ``gap`` white columns between them."""
    h = images[0].shape[0]
    sep = np.full((h, gap), 255, np.uint8)
    parts = []
    for k, img in enumerate(images):
        parts += [img, sep] if k + 1 < len(images) else [img]
    return np.concatenate(parts, axis=1)


def loss_curve_png(path, loss: List[float], distance: List[float], size=(640, 360)) -> None:
    """The projection's loss curve as a PNG: total loss (black) and image distance (blue) against the step
    on a log y axis (stylegan2.line_chart)."""
    img = Image.new("RGB", size, "white")
    steps = list(range(len(loss)))
    draw_line_chart(ImageDraw.Draw(img), (0, 0, size[0], size[1]),
                    [Series("loss", steps, list(loss), (0, 0, 0)),
                     Series("image distance", steps[:len(distance)], list(distance), (0, 0, 255))],
                    title="Projection (log scale)", x_label="step", log_y=True,
                    x_range=(0, max(len(loss) - 1, 1)))
    img.save(path, format="PNG")
