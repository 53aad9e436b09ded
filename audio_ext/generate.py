"""From a network snapshot to music: clips per seed, whole-bar loops, latent walks and a listening page.

For every seed the generator's latent is ``z = np.random.RandomState(seed).randn(z_dim)`` (the
StyleGAN2-ADA convention, so seeds mean the same here as upstream), the image is decoded to audio
with the snapshot's own ``audio`` block (no dataset needed), and three kinds of file are written:
``seedNNNN-<bpm>bpm.<wav|flac>`` (16-bit PCM at the archive's sample rate, 44.1 kHz by default),
``seedNNNN.png`` (the generated spectrogram, row 0 = highest frequency) and ``index.html``.

Everything is written into a hidden temporary folder inside the output folder first and published
only when every file is complete, all or nothing (:mod:`audio_ext.publish`): a failure, a full disk
or a stop signal leaves the output folder exactly as it was. With the same
snapshot, seeds and options the files are byte-identical: constant noise by default, and every
random choice (noise in ``random`` mode, random phase initialisations) is seeded from its own clip's seed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from . import loops, publish
from .page import ClipEntry, write_page

FORMATS = ("wav", "flac")
NOISE_MODES = ("const", "random", "none")
DEVICES = ("auto", "cpu", "cuda")
#: Peak level (full scale = 1) that louder decoded audio is scaled down to before 16-bit conversion.
PEAK_LIMIT = 0.99
#: Largest |truncation psi| accepted: beyond it w leaves the trained region by orders of magnitude
#: and float32 overflows (StyleGAN practice uses 0.5..1, extrapolation rarely beyond 2).
MAX_TRUNC = 10.0
#: Longest crossfade accepted, in seconds (a clip is at most a few minutes long).
MAX_CROSSFADE_S = 60.0


class GenerateError(Exception):
    """Bad input to generation (snapshot, seeds, class, output folder, options); a one-line message."""


@dataclasses.dataclass
class GenerateOptions:
    """Everything that decides what :func:`generate` writes; see ``gen_audio.py --help`` for each flag.

    ``trunc`` is the truncation psi (1 = off), ``loop_bars`` cuts each clip to that many bars with a
    seamless loop point, ``walk`` renders one piece through the given seeds with ``walk_steps``
    interpolated clips between consecutive seeds, each contributing ``walk_bars`` bars (``walk`` items are
    seeds or :class:`audio_ext.latents.Projected` latents; ``walk_space`` 'z' = slerp between seeds, 'w' =
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
    # issue 10: latents beyond seeds, style mixing, tempo (audio_ext.latents / mixing / retempo)
    projected_w: Optional[Sequence[str]] = None
    walk_space: str = "z"
    variations: Optional[int] = None
    spread: float = 0.5
    mix_rows: Optional[Sequence[int]] = None
    mix_cols: Optional[Sequence[int]] = None
    mix_styles: str = "0-6"
    bpm: Optional[float] = None
    # issue 11: the decoder model (audio_ext.interp), a file beating the snapshot's own
    decoder_model: Optional[str] = None


@dataclasses.dataclass
class GenerateResult:
    """What a run wrote: the listening page and every audio and image file (final paths)."""

    page: Path
    audio: List[Path]
    images: List[Path]
    bpm: Optional[float]


# --------------------------------------------------------------------------------------------------
# Loading and checking.

def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; asking for CUDA without one is an error."""
    if name not in DEVICES:
        raise GenerateError(f"--device {name!r} is not one of {', '.join(DEVICES)}")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise GenerateError("--device cuda: no CUDA device is available (use --device cpu)")
        return torch.device("cuda")
    return torch.device("cpu")


def load_generator(path, device: torch.device, with_decoder: bool = False):
    """(G_ema or G, audio block) from a snapshot; errors name the file and the problem in one line.

    ``with_decoder``: return (G, block, decoder model dict or None) instead, the snapshot's
    ``decoder_model`` (the archive's own model that ``train.py`` stored; plain data, not yet checked).
    """
    from stylegan2.snapshot import SnapshotError, build_networks, load_snapshot
    try:
        snap = load_snapshot(path)
    except SnapshotError as e:
        raise GenerateError(str(e)) from None
    block = snap.get("audio")
    if not isinstance(block, dict):
        raise GenerateError(f"{path}: snapshot has no 'audio' block (it was not trained on an audio archive), "
                            f"so its images cannot be turned into sound")
    try:  # every field in its physical range, before anything is built (a tempo of 1e300 would hang)
        from .geometry import validate_audio_block
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


@contextlib.contextmanager
def decoder_choice(network: str, geometry, payload, decoder_model: Optional[str]):
    """Within the block, ``learned+pghi+fgla`` decodes with ``decoder_model`` (a file; ``'none'``: no model)
    when given, else the snapshot's ``payload`` when it has one, else the env/shipped model (audio_ext.interp).

    A file or snapshot model that cannot be used, or that was trained for another geometry than the
    snapshot's audio, is a one-line GenerateError: it was asked for, so it is never passed over.
    """
    from . import interp
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(interp.decoder_models(path=decoder_model, snapshot=payload, where=Path(network).name))
        if (decoder_model is not None or payload is not None) and not interp.is_no_model(decoder_model):
            interp.model_for(geometry)          # the model that was asked for fits this snapshot
    except interp.ModelError as e:
        stack.close()
        flag = "--decoder-model" if decoder_model is not None else f"{network}: decoder_model"
        raise GenerateError(f"{flag}: {e}") from None
    with stack:
        yield


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
    import librosa
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
                  device: torch.device, seed: Union[int, Sequence[int]] = 0) -> np.ndarray:
    """Audio ``[N, samples]`` float32 from generator images ``[N, R, R]`` through ``phase.decode_audio``.

    ``None`` leaves the method / iterations at the audio layer's defaults. Image ``i`` draws its random
    phase initialisation from its own torch generator, seeded with ``seed[i]`` (a sequence of N seeds)
    or ``seed + i`` (an int), so a clip decodes to the same audio whatever else shares its batch.
    """
    from . import phase
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
        audio = phase.decode_audio(images.to(device), block, device=device, generator=generators, **kwargs)
    except ValueError as e:
        raise GenerateError(f"decoding failed: {e}") from None
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    return np.asarray(audio, dtype=np.float32).reshape(images.shape[0], -1)


def phase_methods() -> Optional[Sequence[str]]:
    """Names of the audio layer's phase-reconstruction methods (None while it is not available)."""
    try:
        from . import phase
    except ImportError:
        return None
    methods = getattr(phase, "METHODS", None)
    return list(methods) if methods is not None else None


def describe_phase(method: Optional[str], n_iter: Optional[int], geometry=None) -> tuple:
    """(method name, iterations) that decoding will use once defaults are filled in.

    With ``geometry`` the default is the learned decoder when a model fits it (``phase.default_method``);
    the learned method's name then says which model, e.g. ``learned+pghi+fgla[shipped: frame_interp_r1024_h1024.pt]``
    (:func:`audio_ext.phase.describe_method`).
    """
    from . import phase
    name = method if method is not None else phase.default_method(geometry)
    spec = phase.METHODS.get(name)
    if name == phase.LEARNED_METHOD and geometry is not None:
        name = phase.describe_method(name, geometry)
    return name, (n_iter if n_iter is not None else getattr(spec, "default_iters", "default"))


def limit_peak(audio: np.ndarray, peak: float = PEAK_LIMIT) -> np.ndarray:
    """Scale down (never up) so that ``max |audio| <= peak``: 16-bit files must not clip."""
    m = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio * (peak / m) if m > peak else audio


def write_audio(path: Path, audio: np.ndarray, sr: int, fmt: str, tags: Dict[str, str]) -> None:
    """16-bit PCM WAV or FLAC with text tags (RIFF INFO / Vorbis comments via libsndfile)."""
    import soundfile as sf
    pcm = limit_peak(np.asarray(audio, np.float64)).astype(np.float32)
    buf = io.BytesIO()  # encoded in memory, written with Python I/O: a full disk is an OSError naming the file
    with sf.SoundFile(buf, "w", samplerate=int(sr), channels=1, subtype="PCM_16", format=fmt.upper()) as f:
        for key, value in tags.items():
            setattr(f, key, value)
        f.write(pcm)
    with open(path, "wb") as out:
        out.write(buf.getvalue())


def save_png(path: Path, image_u8: np.ndarray) -> None:
    from PIL import Image
    Image.fromarray(image_u8, mode="L").save(path, format="PNG")


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
    if not (math.isfinite(opts.spread) and opts.spread >= 0):
        raise GenerateError(f"--spread must be a non-negative number, got {opts.spread!r}")
    from .latents import WALK_SPACES
    if opts.walk_space not in WALK_SPACES:
        raise GenerateError(f"--walk-space {opts.walk_space!r} is not one of {', '.join(WALK_SPACES)}")
    if opts.bpm is not None:
        from .retempo import check_bpm
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

    Publishing is all or nothing (:func:`audio_ext.publish.publish`): ``outdir`` ends with every
    new file or as it was. On failure (or SIGTERM, see :func:`audio_ext.publish.stop_on_signals`)
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


def _check_bars_fit(opts: GenerateOptions, clip_samples: int, sr: int, bpm: float) -> None:
    if opts.bpm is not None:  # clips are stretched to --bpm before they are cut into bars
        from .retempo import stretched_length
        clip_samples, bpm = stretched_length(clip_samples, bpm, opts.bpm), float(opts.bpm)
    fade = int(round(opts.crossfade_s * sr))
    fit = loops.whole_bars(clip_samples - fade, sr, bpm) if clip_samples > fade else 0
    clip_s = clip_samples / sr
    for flag, bars in (("--loop", opts.loop_bars), ("--bars", opts.walk_bars if opts.walk else None)):
        if bars is not None and bars > fit:
            raise GenerateError(f"{flag} {bars}: a {clip_s:.2f} s clip at {bpm:g} BPM holds at most {fit} whole "
                                f"bar(s) plus the {opts.crossfade_s * 1000:g} ms crossfade")


def _loop_if_asked(audio: np.ndarray, sr: int, bpm: float, opts, what: str):
    """``(audio, file-name tag)``: a seamless ``--loop`` of whole bars when asked (tag ``-loopNbar``), else
    the clip as it is (tag ``''``); ``what`` names the clip in the one-line error."""
    if opts.loop_bars is None:
        return audio, ""
    try:
        audio = loops.loop_clip(audio, sr, bpm, opts.loop_bars, opts.crossfade_s)
    except ValueError as e:
        raise GenerateError(f"--loop {opts.loop_bars}: {what}: {e}") from None
    return audio, f"-loop{opts.loop_bars}bar"


def _fmt_bpm(bpm: float) -> str:
    return f"{bpm:.0f}" if abs(bpm - round(bpm)) < 1e-6 else f"{bpm:.2f}".rstrip("0").rstrip(".")


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
    mix_grid: Optional[tuple] = None  # (columns, rows, cells, note) of audio_ext.page.GridCell, set by mixing.render_mix
    method: Optional[str] = None  # the phase method's description and iterations, as make_run found them
    n_iter: object = None

    @property
    def sr(self) -> int:
        return int(self.block["sample_rate"])

    def write_grid_page(self, run_info: dict) -> None:
        """The style-mixing grid page as ``index.html`` (players in a table)."""
        from .page import write_grid_page
        columns, rows, cells, note = self.mix_grid
        write_grid_page(self.staging, columns, rows, cells, title=f"ElectroGAN style mixing: {self.snapshot_name}",
                        note=note, run_info=run_info)

    def retime(self, audio: np.ndarray) -> np.ndarray:
        """A decoded clip at the output tempo: stretched from the network's tempo to ``--bpm`` when given."""
        if self.opts.bpm is None or self.src_bpm is None or abs(self.opts.bpm - self.src_bpm) < 1e-9:
            return audio
        from .retempo import change_tempo
        return change_tempo(audio, self.sr, self.src_bpm, self.opts.bpm)

    def decode(self, images: torch.Tensor, seeds: Sequence[int]) -> np.ndarray:
        """Audio of ``images``, image ``i``'s random phase seeded with ``seeds[i]`` (independent of --batch)."""
        return decode_images(images, self.block, self.opts.method, self.opts.n_iter, self.device, seed=list(seeds))

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
    opts, sr = run.opts, run.sr
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
            audio, loop_tag = _loop_if_asked(audio, sr, bpm, opts, f"seed {seed}")
            kind = f"loop, {opts.loop_bars} bar(s)" if loop_tag else "clip"
            stem = f"seed{seed:04d}"
            run.write(stem, f"{stem}{loop_tag}-{_fmt_bpm(bpm)}bpm.{opts.fmt}", audio, imgs[i].cpu().numpy(),
                      title=f"{stem} {_fmt_bpm(bpm)} BPM", comment=f"seed={seed} bpm={bpm:g}",
                      entry=dict(title=f"seed {seed}", seed=seed, bpm=bpm, kind=kind))


def _render_walk(run: _Run) -> None:
    """One piece through the ``--walk`` seeds, clips joined on the bar grid, and its spectrogram strip."""
    opts, sr = run.opts, run.sr
    from . import latents
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
    try:
        piece = loops.join_on_beats(clips, sr, bpm, opts.walk_bars, opts.crossfade_s)
    except ValueError as e:
        raise GenerateError(f"--walk: {e}") from None
    # The walk's picture: each clip's image cut to the frames it contributes, side by side.
    grid = loops.grid_positions(len(clips), sr, bpm, beats_per_unit=4 * opts.walk_bars)
    to_source = (bpm / run.src_bpm) if (opts.bpm is not None and run.src_bpm) else 1.0  # image frames are at the source tempo
    frames = np.round(grid * to_source / run.geometry.hop_length).astype(int)
    strip = np.concatenate([col[:, :max(frames[k + 1] - frames[k], 1)] for k, col in enumerate(columns)], axis=1)
    stem = _safe_stem(latents.walk_label(walk))
    run.write(stem, f"{stem}-{_fmt_bpm(bpm)}bpm.{opts.fmt}", piece, strip, title=f"{stem} {_fmt_bpm(bpm)} BPM",
              comment=f"walk={names} space={opts.walk_space} bars={opts.walk_bars} steps={opts.walk_steps} bpm={bpm:g}",
              entry=dict(title=f"walk {names}", seed=names, bpm=bpm,
                         kind=f"walk, {len(clips)} clips x {opts.walk_bars} bar(s)"))


def make_run(opts: GenerateOptions, G, block: dict, device: torch.device, log=print) -> _Run:
    """The checked run of ``opts`` on a loaded generator (its ``staging`` folder still unset): class
    labels, projected latents, tempo and bar checks, the phase description. Call it inside
    :func:`decoder_choice`, as :func:`generate` does; the studio (audio_ext.studio) keeps G loaded
    and makes one run per request."""
    from .geometry import StftGeometry
    _validate(opts)
    network = str(opts.network)
    geometry = StftGeometry.from_dict(block)
    n_seeds = max(len(opts.seeds or ()), len(opts.walk or ()))
    classes = class_labels(G, opts.class_idx, network, max(n_seeds, 1), device)
    projected = _load_projected(opts, G)
    bpm = float(block["target_bpm"]) if block.get("target_bpm") else None
    if opts.bpm is not None and bpm is None:
        raise GenerateError(f"{network}: --bpm needs the snapshot's target_bpm (the tempo its clips are made at), "
                            f"and its audio block has none")
    if bpm is not None:
        _check_bars_fit(opts, geometry.clip_samples, geometry.sample_rate, bpm)
    try:
        method, n_iter = describe_phase(opts.method, opts.n_iter, geometry)
    except ValueError as e:  # e.g. $ELECTROGAN_DECODER_MODEL names an unreadable file
        raise GenerateError(f"decoder: {e}") from None
    snapshot_name = Path(network).name
    desc = (f"trunc={opts.trunc:g} class={opts.class_idx} noise={opts.noise_mode} method={method} iters={n_iter} "
            f"snapshot={snapshot_name}")
    return _Run(opts=opts, G=G, block=block, geometry=geometry, device=device, classes=classes,
                bpm=opts.bpm if opts.bpm is not None else bpm, snapshot_name=snapshot_name, desc=desc, log=log,
                src_bpm=bpm, projected=projected, method=method, n_iter=n_iter)


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
        from .mixing import render_mix
        render_mix(run)


def generate(opts: GenerateOptions, log=print) -> GenerateResult:
    """Run one generation as ``opts`` says and return what was written (see the module docstring).

    Every input is checked before anything is written; files appear in ``opts.outdir`` only when
    the whole run succeeded.
    """
    from .geometry import StftGeometry
    _validate(opts)
    device = resolve_device(opts.device)
    network = str(opts.network)
    G, block, decoder_payload = load_generator(network, device, with_decoder=True)
    geometry = StftGeometry.from_dict(block)
    with decoder_choice(network, geometry, decoder_payload, opts.decoder_model):
        run = make_run(opts, G, block, device, log)
        method, n_iter, snapshot_name, bpm = run.method, run.n_iter, run.snapshot_name, run.src_bpm
        outdir = Path(opts.outdir)
        with staging_folder(outdir, log) as run.staging:
            render(run)
            run_info = {"snapshot": snapshot_name, "resolution": geometry.resolution, "hop": geometry.hop_length,
                        "sample rate": f"{geometry.sample_rate} Hz", "noise": opts.noise_mode,
                        "phase": f"{method}, {n_iter} iterations"}
            if opts.bpm is not None:
                run_info["tempo"] = f"{_fmt_bpm(bpm)} BPM stretched to {_fmt_bpm(opts.bpm)} BPM"
            if opts.mix_rows:
                run.write_grid_page(run_info)
            else:
                write_page(run.staging, run.entries, title=f"ElectroGAN: {snapshot_name}", run_info=run_info)
        return GenerateResult(page=outdir / "index.html", audio=[outdir / n for n in run.audio],
                              images=[outdir / n for n in run.images], bpm=run.bpm)


def _safe_stem(text: str) -> str:
    """A file-name stem: letters, digits, '-', '_' and '.' kept, anything else becomes '_'."""
    import re
    return re.sub(r"[^\w.-]", "_", text)


def _load_projected(opts: GenerateOptions, G) -> dict:
    """Every projected latent named by --projected-w or a proj: walk item, checked before anything is written."""
    from .latents import Projected, load_projected_w
    wanted = [Projected(str(p)) for p in (opts.projected_w or [])]
    wanted += [i for i in (opts.walk or []) if isinstance(i, Projected)]
    out = {}
    for item in wanted:
        if item not in out:
            try:
                out[item] = load_projected_w(item.path, int(G.num_ws), int(G.w_dim))
            except ValueError as e:
                raise GenerateError(f"--projected-w {e}") from None
    return out


def _render_projected(run: _Run) -> None:
    """One clip per --projected-w latent, or --variations clips around it (see audio_ext.latents)."""
    from . import latents
    opts, sr = run.opts, run.sr
    for path in opts.projected_w:
        item = latents.Projected(str(path))
        w = run.projected[item].to(run.device)
        if opts.variations:
            ws = latents.variations(run.G, w, opts.variations, opts.spread, run.device)
            labels = [f"var{k:02d}" for k in range(opts.variations)]
        else:
            ws, labels = w[None], [""]
        stem0 = _safe_stem(f"proj-{item.label}")
        run.log(f"rendering {path}: {len(labels)} clip(s)")
        imgs = torch.cat([run.synthesize_seeded(ws[k:k + 1], None, k, from_ws=True) for k in range(len(ws))])
        decoded = run.decode(imgs, list(range(len(ws))))
        for k, label in enumerate(labels):
            audio = run.retime(decoded[k])
            bpm = run.bpm if run.bpm is not None else clip_tempo(run.block, audio)
            kind = f"variation {k} of a projected latent, spread {opts.spread:g}" if label else "projected latent"
            audio, loop_tag = _loop_if_asked(audio, sr, bpm, opts, str(path))
            if loop_tag:
                kind = f"{kind}, loop {opts.loop_bars} bar(s)"
            stem = f"{stem0}-{label}" if label else stem0
            run.write(stem, f"{stem}{loop_tag}-{_fmt_bpm(bpm)}bpm.{opts.fmt}", audio, imgs[k].cpu().numpy(),
                      title=f"{stem} {_fmt_bpm(bpm)} BPM",
                      comment=f"projected_w={path} variation={label or 'none'} spread={opts.spread:g} bpm={bpm:g}",
                      entry=dict(title=stem, seed=str(path), bpm=bpm, kind=kind))


__all__ = ["GenerateError", "GenerateOptions", "GenerateResult", "generate", "make_run", "render", "seed_latents", "load_generator",
           "class_labels", "decode_images", "image_to_png_array", "limit_peak"]
