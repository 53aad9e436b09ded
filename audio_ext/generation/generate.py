"""From a network snapshot to music: clips per seed, whole-bar loops, latent walks and a listening page.

For every seed the generator's latent is ``z = np.random.RandomState(seed).randn(z_dim)`` (the
StyleGAN2-ADA convention, so seeds mean the same here as upstream), the image is decoded to audio
with the snapshot's own ``audio`` block (no dataset needed), and three kinds of file are written:
``seedNNNN-<bpm>bpm.<wav|flac>`` (16-bit PCM at the archive's sample rate, 44.1 kHz by default),
``seedNNNN.png`` (the generated spectrogram, row 0 = highest frequency) and ``index.html``.

Everything is written into a hidden temporary folder inside the output folder first and published
only when every file is complete, all or nothing (:mod:`audio_ext.generation.publish`): a failure, a full disk
or a stop signal leaves the output folder exactly as it was. With the same
snapshot, seeds and options the files are byte-identical: constant noise by default, and every
random choice (noise in ``random`` mode, random phase initialisations) is seeded from its own clip's seed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import re
import shutil
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

from audio_ext.core.audio_io import write_audio
from audio_ext.core.geometry import StftGeometry
from audio_ext.core.seeds import MAX_COUNT
from audio_ext.decoder.model_choice import DecoderChoice
from audio_ext.generation import latents, loops, publish
from audio_ext.generation.latents import WALK_SPACES, Projected, load_projected_w
from audio_ext.generation.mixing import check_grid_image, grid_size, render_mix
from audio_ext.generation.page import ClipEntry, write_grid_page, write_page
from audio_ext.generation.retempo import change_tempo, check_bpm, stretched_length
from audio_ext.generation.synthesis import (
    GenerateError,
    class_labels,
    clip_tempo,
    decode_images,
    decoder_choice,
    describe_phase,
    fmt_bpm,
    generation_device,
    image_to_png_array,
    load_generator,
    phase_methods,
    save_png,
    seed_latents,
    synthesize,
)
from stylegan2 import networks

FORMATS = ("wav", "flac")
#: The generator's noise modes (stylegan2.networks), the default ``const`` first as the help lists it.
NOISE_MODES = ("const",) + tuple(m for m in networks.NOISE_MODES if m != "const")
#: Largest |truncation psi| accepted: beyond it w leaves the trained region by orders of magnitude
#: and float32 overflows (StyleGAN practice uses 0.5..1, extrapolation rarely beyond 2).
MAX_TRUNC = 10.0
#: Longest crossfade accepted, in seconds (a clip is at most a few minutes long).
MAX_CROSSFADE_S = 60.0
#: Largest ``--spread``: 1 moves a variation as far as a random clip lies from the average one; far
#: beyond that the latents leave anything the network was trained on (1e30 gave near-silence).
MAX_SPREAD = 10.0
#: Largest number of clips a walk may join (points and interpolated steps): 10,000 clips of 4 bars
#: are more than 20 hours of music.
MAX_WALK_CLIPS = 10_000


@dataclasses.dataclass
class GenerateOptions:
    """Everything that decides what :func:`generate` writes; see ``gen_audio.py --help`` for each flag.

    ``trunc`` is the truncation psi (1 = off), ``loop_bars`` makes each clip a loop of that many bars
    with a seamless loop point (a clip of fewer bars repeats its whole-bar loop), ``walk`` renders one
    piece through the given seeds with ``walk_steps`` interpolated clips between consecutive seeds,
    each contributing ``walk_bars`` bars, looped the same way (``walk`` items are
    seeds or :class:`audio_ext.generation.latents.Projected` latents; ``walk_space`` 'z' = slerp between seeds, 'w' =
    linear in W); ``projected_w`` renders latents written by ``project_audio.py`` (with ``variations``
    clips around each, ``spread`` apart); ``mix_rows``/``mix_cols``/``mix_styles`` render a style-mixing
    grid; ``bpm`` stretches every clip to that tempo;
    ``crossfade_s`` (seconds) is used at loop points and walk joins. ``method``/``n_iter`` select the
    phase reconstruction (None = the audio layer's default). ``decoder_model``: a decoder model file for
    ``learned+pghi+fgla`` that beats the snapshot's own model (``decoder_model`` key, written by
    ``train.py``), ``$ELECTROGAN_DECODER_MODEL`` and the shipped model, in that order; ``'none'``: no
    learned decoder (the classic one is the default).
    """

    network: str
    outdir: str
    seeds: Optional[Sequence[int]] = None
    trunc: float = 1.0
    class_idx: Optional[int] = None
    noise_mode: str = "const"
    fmt: str = "wav"
    batch: int = 4
    device: str = "auto"
    method: Optional[str] = None
    n_iter: Optional[int] = None
    loop_bars: Optional[int] = None
    walk: Optional[Sequence[int]] = None
    walk_bars: int = 4
    walk_steps: int = 1
    crossfade_s: float = 0.02
    # issue 10: latents beyond seeds, style mixing, tempo (audio_ext.generation.latents / mixing / retempo)
    projected_w: Optional[Sequence[str]] = None
    walk_space: str = "z"
    variations: Optional[int] = None
    spread: float = 0.5
    mix_rows: Optional[Sequence[int]] = None
    mix_cols: Optional[Sequence[int]] = None
    mix_styles: str = "0-6"
    bpm: Optional[float] = None
    # issue 11: the decoder model (audio_ext.decoder.frame_model), a file beating the snapshot's own
    decoder_model: Optional[str] = None


@dataclasses.dataclass
class GenerateResult:
    """What a run wrote: the listening page and every audio and image file (final paths)."""

    page: Path
    audio: List[Path]
    images: List[Path]
    bpm: Optional[float]


# --------------------------------------------------------------------------------------------------
# The run.

def _validate(opts: GenerateOptions) -> None:
    if opts.fmt not in FORMATS:
        raise GenerateError(f"--format {opts.fmt!r} is not one of {', '.join(FORMATS)}")
    if opts.noise_mode not in NOISE_MODES:
        raise GenerateError(f"--noise-mode {opts.noise_mode!r} is not one of {', '.join(NOISE_MODES)}")
    mixing = bool(opts.mix_rows or opts.mix_cols)
    if not opts.seeds and not opts.walk and not opts.projected_w and not mixing:
        raise GenerateError("nothing to generate: give --seeds, --walk, --projected-w or --mix-rows/--mix-cols")
    if mixing and not (opts.mix_rows and opts.mix_cols):
        raise GenerateError("style mixing needs both --mix-rows and --mix-cols")
    if mixing and (opts.seeds or opts.walk or opts.projected_w):
        raise GenerateError("--mix-rows/--mix-cols make a grid of their own; run --seeds, --walk or --projected-w "
                            "separately")
    if opts.variations is not None and (opts.variations < 1 or not opts.projected_w):
        raise GenerateError("--variations N needs N >= 1 and --projected-w (variations are made around a projection)")
    if not (math.isfinite(opts.spread) and 0 <= opts.spread <= MAX_SPREAD):
        raise GenerateError(f"--spread must be a number in 0..{MAX_SPREAD:g}, got {opts.spread!r}")
    if opts.variations is not None and opts.variations * len(opts.projected_w or ()) > MAX_COUNT:
        raise GenerateError(f"--variations {opts.variations}: more than {MAX_COUNT} clips")
    if mixing:
        n_r, n_c = grid_size(opts.mix_rows, opts.mix_cols)
        if n_r + n_c + n_r * n_c > MAX_COUNT:
            raise GenerateError(f"--mix-rows x --mix-cols: {n_r} x {n_c} cells, more than {MAX_COUNT} clips")
    if opts.walk and (len(opts.walk) - 1) * (opts.walk_steps + 1) + 1 > MAX_WALK_CLIPS:
        raise GenerateError(f"--walk with --walk-steps {opts.walk_steps}: more than {MAX_WALK_CLIPS} clips in one piece")
    if opts.walk_space not in WALK_SPACES:
        raise GenerateError(f"--walk-space {opts.walk_space!r} is not one of {', '.join(WALK_SPACES)}")
    if opts.bpm is not None:
        try:
            check_bpm(opts.bpm)
        except ValueError as e:
            raise GenerateError(str(e)) from None
    if not (isinstance(opts.batch, int) and opts.batch >= 1):
        raise GenerateError(f"--batch must be a positive integer, got {opts.batch!r}")
    if not (math.isfinite(opts.trunc) and abs(opts.trunc) <= MAX_TRUNC):
        raise GenerateError(f"--trunc {opts.trunc!r}: truncation psi must be a number in -{MAX_TRUNC:g}..{MAX_TRUNC:g} "
                            f"(1 = off, 0 = the average clip)")
    if opts.loop_bars is not None and opts.loop_bars < 1:
        raise GenerateError(f"--loop must be a positive number of bars, got {opts.loop_bars}")
    if opts.walk is not None and opts.walk_bars < 1:
        raise GenerateError(f"--bars must be a positive number of bars, got {opts.walk_bars}")
    if opts.walk_steps < 0:
        raise GenerateError(f"--walk-steps must be >= 0, got {opts.walk_steps}")
    if not (math.isfinite(opts.crossfade_s) and 0 <= opts.crossfade_s <= MAX_CROSSFADE_S):
        raise GenerateError(f"--crossfade {opts.crossfade_s!r}: must be 0..{MAX_CROSSFADE_S:g} seconds")
    if opts.n_iter is not None and opts.n_iter < 0:
        raise GenerateError(f"--iters must be >= 0, got {opts.n_iter}")
    methods = phase_methods()
    if opts.method is not None and methods is not None and opts.method not in methods:
        raise GenerateError(f"--method {opts.method!r} is not one of {', '.join(methods)}")


@contextlib.contextmanager
def staging_folder(outdir: Path, log=None):
    """A hidden temporary folder inside ``outdir``; its files move into ``outdir`` only on success.

    Publishing is all or nothing (:func:`audio_ext.generation.publish.publish`): ``outdir`` ends with every
    new file or as it was. On failure (or SIGTERM, see :func:`audio_ext.generation.publish.stop_on_signals`)
    the temporary folder is removed, and so are the folders this call created. A file that cannot
    be written (disk full, read-only) stops the run with one line naming it.
    """
    created, tmp = [], None
    try:
        with publish.held_signals():        # a stop signal waits until the folders are known
            if outdir.exists() and not outdir.is_dir():
                raise GenerateError(f"--outdir {outdir}: exists and is not a folder")
            for parent in reversed([outdir, *outdir.parents]):
                if not parent.exists():
                    parent.mkdir()
                    created.append(parent)
            _removed, kept = publish.remove_stale_staging(outdir)
            for folder in kept if log else ():
                log(f"Warning: {folder} was left by a run killed while publishing; its {publish.BACKUP_NAME}/ "
                    f"holds the earlier versions of files it replaced (check, then remove it)")
            tmp = publish.make_staging(outdir)
    except OSError as e:
        _remove_empty(created)
        raise GenerateError(f"--outdir {outdir}: cannot write there ({e.strerror or e})") from None
    except publish.Interrupted:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    published = keep = False
    try:
        try:
            yield tmp
        except OSError as e:   # disk full, quota, read-only file system while writing the files
            name = Path(e.filename).name if e.filename else "a file"
            raise GenerateError(f"--outdir {outdir}: cannot write {name} ({e.strerror or e}); "
                                f"nothing was changed there") from None
        with publish.held_signals(completed=True):   # a stop signal now waits until this is done
            try:
                publish.publish(tmp, outdir)
            except publish.PublishError as e:
                keep = e.keep_staging
                raise GenerateError(str(e)) from None
            published = True
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if not published:
            with publish.held_signals():
                if not keep:
                    shutil.rmtree(tmp, ignore_errors=True)
                _remove_empty(created)


def _remove_empty(folders: List[Path]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _check_bars_fit(opts: GenerateOptions, geometry: StftGeometry, bpm: float) -> None:
    """Refuse, before anything is written, a ``--loop`` or walk whose clips hold less than one whole bar
    plus the crossfade (clips holding fewer bars than asked are looped: :func:`loops.loop_to_bars`)."""
    clip_samples, sr = int(geometry.clip_samples), int(geometry.sample_rate)
    if opts.bpm is not None:  # clips are stretched to --bpm before they are cut into bars
        clip_samples, bpm = stretched_length(clip_samples, bpm, opts.bpm), float(opts.bpm)
    fit = loops.held_bars(clip_samples, sr, bpm, opts.crossfade_s)
    for flag, bars in (("--loop", opts.loop_bars), ("--bars", opts.walk_bars if opts.walk else None)):
        if bars is not None and fit < 1:
            raise GenerateError(
                f"{flag} {bars}: a {clip_samples / sr:.3f} s clip ({geometry.resolution} frames of hop "
                f"{geometry.hop_length} at {sr} Hz) at {bpm:g} BPM holds at most 0 whole bars plus the "
                f"{opts.crossfade_s * 1000:g} ms crossfade (one bar = {loops.bars_to_samples(1, sr, bpm) / sr:.3f} s); "
                f"a shorter --crossfade or a slower --bpm may fit")


def _loop_if_asked(run: "_Run", audio: np.ndarray, bpm: float, what: str):
    """``(audio, file-name tag)``: a seamless ``--loop`` of whole bars when asked (tag ``-loopNbar``), a
    shorter clip's loop repeated to them (said once in the log), else the clip as it is (tag ``''``);
    ``what`` names the clip in the one-line error."""
    opts = run.opts
    if opts.loop_bars is None:
        return audio, ""
    try:
        looped = loops.loop_to_bars(audio, run.sr, bpm, opts.loop_bars, opts.crossfade_s)
    except ValueError as e:
        raise GenerateError(f"--loop {opts.loop_bars}: {what}: {e}") from None
    run.note(f"--loop {opts.loop_bars}: {looped.note()}" if looped.note() else "")
    return looped.audio, f"-loop{opts.loop_bars}bar"


@dataclasses.dataclass
class _Run:
    """What every file of one run shares: options, generator, codec facts and the page being built."""

    opts: GenerateOptions
    G: torch.nn.Module
    block: dict
    geometry: object
    device: torch.device
    classes: torch.Tensor
    bpm: Optional[float]  # the output tempo: --bpm, else the archive's target_bpm
    snapshot_name: str
    desc: str
    log: object
    staging: Optional[Path] = None
    entries: List[ClipEntry] = dataclasses.field(default_factory=list)
    audio: List[str] = dataclasses.field(default_factory=list)
    images: List[str] = dataclasses.field(default_factory=list)

    src_bpm: Optional[float] = None  # the tempo the network makes (the archive's target_bpm)
    projected: dict = dataclasses.field(default_factory=dict)
    decoder: Optional[DecoderChoice] = None  # the decoder model (decoder_choice: flag > snapshot > env > shipped)
    mix_grid: Optional[tuple] = None  # (columns, rows, cells, note) of audio_ext.generation.page.GridCell, set by mixing.render_mix
    noted: set = dataclasses.field(default_factory=set)  # log lines already said once (see note)
    method: Optional[str] = None  # the phase method's description and iterations, as make_run found them
    n_iter: object = None

    @property
    def sr(self) -> int:
        return int(self.block["sample_rate"])

    def note(self, line: str) -> None:
        """Log ``line`` once per run (the same note for every seed is said once); '' says nothing."""
        if line and line not in self.noted:
            self.noted.add(line)
            self.log(line)

    def write_grid_page(self, run_info: dict) -> None:
        """The style-mixing grid page as ``index.html`` (players in a table)."""
        columns, rows, cells, note = self.mix_grid
        write_grid_page(self.staging, columns, rows, cells, title=f"ElectroGAN style mixing: {self.snapshot_name}",
                        note=note, run_info=run_info)

    def retime(self, audio: np.ndarray) -> np.ndarray:
        """A decoded clip at the output tempo: stretched from the network's tempo to ``--bpm`` when given."""
        if self.opts.bpm is None or self.src_bpm is None or abs(self.opts.bpm - self.src_bpm) < 1e-9:
            return audio
        return change_tempo(audio, self.sr, self.src_bpm, self.opts.bpm)

    def decode(self, images: torch.Tensor, seeds: Sequence[int]) -> np.ndarray:
        """Audio of ``images``, image ``i``'s random phase seeded with ``seeds[i]`` (independent of --batch)."""
        return decode_images(images, self.block, self.opts.method, self.opts.n_iter, self.device, seed=list(seeds),
                             decoder=self.decoder)

    def synthesize_seeded(self, x: torch.Tensor, c, seed: int, from_ws: bool = False) -> torch.Tensor:
        """Images with torch's generator (used by ``random`` noise) seeded from ``seed``, global state kept."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            return synthesize(self.G, x, c, self.opts.trunc, self.opts.noise_mode, self.device, from_ws=from_ws)

    def write(self, stem: str, name: str, audio: np.ndarray, image: np.ndarray, title: str, comment: str,
              entry: dict) -> None:
        """Write one audio file, its PNG and its page entry into the staging folder."""
        tags = {"software": "ElectroGAN gen_audio.py", "artist": "ElectroGAN", "title": title,
                "comment": f"{comment} {self.desc}"}
        write_audio(self.staging / name, audio, self.sr, self.opts.fmt, tags)
        save_png(self.staging / f"{stem}.png", image_to_png_array(image))
        self.audio.append(name)
        self.images.append(f"{stem}.png")
        self.entries.append(ClipEntry(audio=name, image=f"{stem}.png", truncation=self.opts.trunc,
                                      class_idx=self.opts.class_idx, snapshot=self.snapshot_name,
                                      seconds=audio.shape[-1] / self.sr, **entry))


def _render_seeds(run: _Run) -> None:
    """One clip (or loop) and spectrogram per seed, in batches of ``--batch``."""
    opts = run.opts
    seeds = list(opts.seeds or [])
    # 'random' noise draws from torch's generator: one seed per forward pass keeps files independent of --batch
    batch = 1 if opts.noise_mode == "random" else opts.batch
    for start in range(0, len(seeds), batch):
        chunk = seeds[start:start + batch]
        run.log(f"generating seeds {chunk[0]}..{chunk[-1]} ({start + len(chunk)}/{len(seeds)})")
        z = torch.from_numpy(seed_latents(chunk, int(run.G.z_dim))).to(run.device)
        imgs = run.synthesize_seeded(z, run.classes[:len(chunk)], chunk[0])
        decoded = run.decode(imgs, chunk)
        for i, seed in enumerate(chunk):
            audio = run.retime(decoded[i])
            bpm = run.bpm if run.bpm is not None else clip_tempo(run.block, audio)
            audio, loop_tag = _loop_if_asked(run, audio, bpm, f"seed {seed}")
            kind = f"loop, {opts.loop_bars} bar(s)" if loop_tag else "clip"
            stem = f"seed{seed:04d}"
            run.write(stem, f"{stem}{loop_tag}-{fmt_bpm(bpm)}bpm.{opts.fmt}", audio, imgs[i].cpu().numpy(),
                      title=f"{stem} {fmt_bpm(bpm)} BPM", comment=f"seed={seed} bpm={bpm:g}",
                      entry=dict(title=f"seed {seed}", seed=seed, bpm=bpm, kind=kind))


def _render_walk(run: _Run) -> None:
    """One piece through the ``--walk`` seeds, clips joined on the bar grid, and its spectrogram strip."""
    opts, sr = run.opts, run.sr
    walk = list(opts.walk)
    try:
        ws = latents.walk_path(run.G, walk, run.classes, opts.trunc, opts.walk_steps if len(walk) > 1 else 0,
                               opts.walk_space, run.device, run.projected)
    except ValueError as e:
        raise GenerateError(str(e)) from None
    names = ",".join(f"proj:{i.path}" if isinstance(i, latents.Projected) else str(i) for i in walk)
    run.log(f"walking through {names} ({opts.walk_space} space): {len(ws)} clips of {opts.walk_bars} bar(s)")
    clips, columns = [], []
    # clip k is seeded with base + k (its noise, with 'random' noise one clip per pass, and its phase);
    # base is the first seed of the walk (0 when it starts at a projection)
    base = walk[0] if isinstance(walk[0], int) else 0
    batch = 1 if opts.noise_mode == "random" else opts.batch
    for k in range(0, len(ws), batch):
        imgs = run.synthesize_seeded(ws[k:k + batch], None, base + k, from_ws=True)
        clips.extend(run.retime(a) for a in run.decode(imgs, [base + j for j in range(k, k + imgs.shape[0])]))
        columns.extend(imgs.cpu().numpy())
    bpm = run.bpm if run.bpm is not None else clip_tempo(run.block, clips[0])
    held = loops.held_bars(clips[0].shape[-1], sr, bpm, opts.crossfade_s)
    unit_bars = opts.walk_bars
    try:
        if held < opts.walk_bars:   # clips of fewer bars: each one's seamless loop, repeated to --bars
            unit_bars = loops.unit_bars_for(held, opts.walk_bars) if held >= 1 else 1
            clips = [loops.clip_for_join(c, sr, bpm, opts.walk_bars, opts.crossfade_s) for c in clips]
            run.note(f"--bars {opts.walk_bars}: clip holds {held} bar{'s' if held != 1 else ''}; "
                     f"each clip's {unit_bars}-bar loop repeated {opts.walk_bars // unit_bars}x")
        piece = loops.join_on_beats(clips, sr, bpm, opts.walk_bars, opts.crossfade_s)
    except ValueError as e:
        raise GenerateError(f"--walk: {e}") from None
    # The walk's picture: each clip's image cut to the frames it contributes (its looped bars repeated),
    # side by side.
    grid = loops.grid_positions(len(clips), sr, bpm, beats_per_unit=4 * opts.walk_bars)
    to_source = (bpm / run.src_bpm) if (opts.bpm is not None and run.src_bpm) else 1.0  # image frames are at the source tempo
    frames = np.round(grid * to_source / run.geometry.hop_length).astype(int)
    if unit_bars < opts.walk_bars:
        unit = max(int(round(loops.bars_to_samples(unit_bars, sr, bpm) * to_source / run.geometry.hop_length)), 1)
        columns = [col[:, np.arange(frames[k + 1] - frames[k]) % min(unit, col.shape[1])]
                   for k, col in enumerate(columns)]
    strip = np.concatenate([col[:, :max(frames[k + 1] - frames[k], 1)] for k, col in enumerate(columns)], axis=1)
    stem = _safe_stem(latents.walk_label(walk))
    run.write(stem, f"{stem}-{fmt_bpm(bpm)}bpm.{opts.fmt}", piece, strip, title=f"{stem} {fmt_bpm(bpm)} BPM",
              comment=f"walk={names} space={opts.walk_space} bars={opts.walk_bars} steps={opts.walk_steps} bpm={bpm:g}",
              entry=dict(title=f"walk {names}", seed=names, bpm=bpm,
                         kind=f"walk, {len(clips)} clips x {opts.walk_bars} bar(s)"))


def make_run(opts: GenerateOptions, G, block: dict, device: torch.device, log=print,
             decoder: Optional[DecoderChoice] = None) -> _Run:
    """The checked run of ``opts`` on a loaded generator (its ``staging`` folder still unset): class
    labels, projected latents, tempo and bar checks, the phase description, decoding with ``decoder``
    (:func:`decoder_choice`). :func:`generate` makes one; the studio (audio_ext.studio) keeps G
    loaded and makes one per request."""
    _validate(opts)
    network = str(opts.network)
    geometry = StftGeometry.from_dict(block)
    n_seeds = max(len(opts.seeds or ()), len(opts.walk or ()))
    classes = class_labels(G, opts.class_idx, network, max(n_seeds, 1), device)
    projected = _load_projected(opts, G)
    if opts.mix_rows:
        try:
            check_grid_image(opts.mix_rows, opts.mix_cols, int(geometry.resolution))
        except ValueError as e:
            raise GenerateError(str(e)) from None
    bpm = float(block["target_bpm"]) if block.get("target_bpm") else None
    if opts.bpm is not None and bpm is None:
        raise GenerateError(f"{network}: --bpm needs the snapshot's target_bpm (the tempo its clips are made at), "
                            f"and its audio block has none")
    if bpm is not None:
        _check_bars_fit(opts, geometry, bpm)
    try:
        method, n_iter = describe_phase(opts.method, opts.n_iter, geometry, decoder)
    except ValueError as e:  # e.g. $ELECTROGAN_DECODER_MODEL names an unreadable file
        raise GenerateError(f"decoder: {e}") from None
    snapshot_name = Path(network).name
    desc = (f"trunc={opts.trunc:g} class={opts.class_idx} noise={opts.noise_mode} method={method} iters={n_iter} "
            f"snapshot={snapshot_name}")
    return _Run(opts=opts, G=G, block=block, geometry=geometry, device=device, classes=classes,
                bpm=opts.bpm if opts.bpm is not None else bpm, snapshot_name=snapshot_name, desc=desc, log=log,
                src_bpm=bpm, projected=projected, decoder=decoder, method=method, n_iter=n_iter)


def render(run: _Run) -> None:
    """Write every file ``run.opts`` asks for into ``run.staging`` (seeds, walk, projected latents, mixing)."""
    opts = run.opts
    if opts.seeds:
        _render_seeds(run)
    if opts.walk:
        _render_walk(run)
    if opts.projected_w:
        _render_projected(run)
    if opts.mix_rows:
        render_mix(run)


def generate(opts: GenerateOptions, log=print) -> GenerateResult:
    """Run one generation as ``opts`` says and return what was written (see the module docstring).

    Every input is checked before anything is written; files appear in ``opts.outdir`` only when
    the whole run succeeded.
    """
    _validate(opts)
    device = generation_device(opts.device)
    network = str(opts.network)
    G, block, decoder_payload = load_generator(network, device, with_decoder=True)
    geometry = StftGeometry.from_dict(block)
    decoder = decoder_choice(network, geometry, decoder_payload, opts.decoder_model)
    run = make_run(opts, G, block, device, log, decoder)
    method, n_iter, snapshot_name, bpm = run.method, run.n_iter, run.snapshot_name, run.src_bpm
    outdir = Path(opts.outdir)
    with staging_folder(outdir, log) as run.staging:
        render(run)
        run_info = {"snapshot": snapshot_name, "resolution": geometry.resolution, "hop": geometry.hop_length,
                    "sample rate": f"{geometry.sample_rate} Hz", "noise": opts.noise_mode,
                    "phase": f"{method}, {n_iter} iterations"}
        if opts.bpm is not None:
            run_info["tempo"] = f"{fmt_bpm(bpm)} BPM stretched to {fmt_bpm(opts.bpm)} BPM"
        if opts.mix_rows:
            run.write_grid_page(run_info)
        else:
            write_page(run.staging, run.entries, title=f"ElectroGAN: {snapshot_name}", run_info=run_info)
    return GenerateResult(page=outdir / "index.html", audio=[outdir / n for n in run.audio],
                          images=[outdir / n for n in run.images], bpm=run.bpm)


#: Longest file-name stem written; with its suffixes ("-var00-loop8-128.5bpm.flac", ".png") a name
#: stays far below the 255 bytes file systems allow.
MAX_STEM = 120


def _safe_stem(text: str) -> str:
    """A file-name stem: letters, digits, '-', '_' and '.' kept, anything else becomes '_'; a stem longer
    than :data:`MAX_STEM` keeps its start and ends in a hash of the whole (a walk of 25 long seeds)."""
    stem = re.sub(r"[^\w.-]", "_", text)
    if len(stem.encode("utf-8")) > MAX_STEM:
        digest = hashlib.sha1(stem.encode("utf-8")).hexdigest()[:10]
        stem = stem.encode("utf-8")[:MAX_STEM - 11].decode("utf-8", "ignore") + "-" + digest
    return stem


def _load_projected(opts: GenerateOptions, G) -> dict:
    """Every projected latent named by --projected-w or a proj: walk item, checked before anything is written."""
    wanted = [(Projected(str(p)), "--projected-w") for p in (opts.projected_w or [])]
    wanted += [(i, "--walk proj:") for i in (opts.walk or []) if isinstance(i, Projected)]
    out = {}
    for item, flag in wanted:
        if item not in out:
            try:
                out[item] = load_projected_w(item.path, int(G.num_ws), int(G.w_dim))
            except ValueError as e:
                raise GenerateError(f"{flag}{'' if flag.endswith(':') else ' '}{e}") from None
    return out


def _render_projected(run: _Run) -> None:
    """One clip per --projected-w latent, or --variations clips around it (see audio_ext.generation.latents)."""
    opts = run.opts
    for path in opts.projected_w:
        item = latents.Projected(str(path))
        w = run.projected[item].to(run.device)
        labels = [f"var{k:02d}" for k in range(opts.variations)] if opts.variations else [""]
        stem0 = _safe_stem(f"proj-{item.label}")
        run.log(f"rendering {path}: {len(labels)} clip(s)")
        for first in range(0, len(labels), opts.batch):    # --batch clips in memory at a time
            _render_projected_batch(run, path, w, stem0, labels, first, min(first + opts.batch, len(labels)))


def _render_projected_batch(run: _Run, path, w: torch.Tensor, stem0: str, labels: List[str], first: int,
                            stop: int) -> None:
    """Clips ``first`` .. ``stop - 1`` of one --projected-w latent (the latent itself, or its variations)."""
    opts = run.opts
    if opts.variations:
        ws = latents.variations(run.G, w, stop - first, opts.spread, run.device, start=first)
    else:
        ws = w[None]
    imgs = torch.cat([run.synthesize_seeded(ws[j:j + 1], None, first + j, from_ws=True) for j in range(len(ws))])
    decoded = run.decode(imgs, list(range(first, stop)))
    for j, label in enumerate(labels[first:stop]):
        audio = run.retime(decoded[j])
        bpm = run.bpm if run.bpm is not None else clip_tempo(run.block, audio)
        kind = f"variation {first + j} of a projected latent, spread {opts.spread:g}" if label else "projected latent"
        audio, loop_tag = _loop_if_asked(run, audio, bpm, str(path))
        if loop_tag:
            kind = f"{kind}, loop {opts.loop_bars} bar(s)"
        stem = f"{stem0}-{label}" if label else stem0
        run.write(stem, f"{stem}{loop_tag}-{fmt_bpm(bpm)}bpm.{opts.fmt}", audio, imgs[j].cpu().numpy(),
                  title=f"{stem} {fmt_bpm(bpm)} BPM",
                  comment=f"projected_w={path} variation={label or 'none'} spread={opts.spread:g} bpm={bpm:g}",
                  entry=dict(title=stem, seed=str(path), bpm=bpm, kind=kind))
