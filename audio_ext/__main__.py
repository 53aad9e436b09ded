"""``python -m audio_ext``: audio tools. ``decode`` turns archive images back into WAV files to hear
the round trip; ``survey make|serve|score`` runs a blind listening test (audio_ext/survey/).

    python -m audio_ext decode --data stft.zip --clips 0-4 --outdir roundtrip/ [--method pghi+fgla] [--iters 10]
                               [--decoder-model FILE|none]
    python -m audio_ext survey make --outdir survey/ --data stft.zip --source audio/ --clips-per-condition 8

Reads ``dataset.json`` (its ``audio`` block) and the PNGs of a ``stft.zip`` or of a folder with the
same layout (DESIGN.md); clips are numbered by the sorted archive paths of the PNGs. Each clip is
written as ``clipNNNNNN.wav`` (16-bit PCM at the archive's sample rate, scaled down if it would clip)
atomically; an unreadable or
malformed image is skipped and reported, and the command fails only when nothing could be decoded.
The learned decoder uses the archive's own model (``stft.decoder.pt`` beside ``stft.zip``) when there
is one, unless ``--decoder-model`` names another or ``none`` (audio_ext.decoder.archive_model).
"""
from __future__ import annotations

import io
import os
import sys
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import click
import numpy as np

from audio_ext.core.codec import AudioCodec
from audio_ext.dataset.archive import ArchiveError, ArchiveFiles, audio_block_of, parse_dataset_json, png_size_cap
from audio_ext.decoder.methods import METHODS
from stylegan2.cli_errors import describe_os_error, one_line_errors


def parse_clip_ranges(spec: str) -> List[Tuple[int, int]]:
    """Inclusive ``(first, last)`` index ranges from ``'0-4'``, ``'3'`` or ``'0,2,5-7'`` (syntax only).

    Nothing is expanded here, so ``0-100000000000`` costs no more than ``0-4``; see
    :func:`parse_clip_range` for the check against an archive's size.
    """
    out: List[Tuple[int, int]] = []
    for part in str(spec).split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
            else:
                lo = hi = int(part)
            if lo < 0 or lo > hi:
                raise ValueError
        except ValueError:
            raise ValueError(f"bad clip range {spec!r}: use non-negative indices like '0-4', '7' or '0,2,5-7'") from None
        out.append((lo, hi))
    return out


def parse_clip_range(spec: str, count: Optional[int] = None) -> List[int]:
    """Clip indices from ``'0-4'`` (inclusive), ``'3'`` or ``'0,2,5-7'``, in the order given, without repeats.

    With ``count`` (the archive's number of clips) an index at or past it is an error naming the
    valid range, raised before any list is built: the work is linear in the clips asked for and
    never more than ``count`` per range, whatever the numbers typed.
    """
    ranges = parse_clip_ranges(spec)
    if count is not None:
        for lo, hi in ranges:
            if hi >= count:
                last = f"0-{count - 1}" if count else "none"
                raise ValueError(f"clip {max(lo, count)} is out of range (the archive has {count} clips, {last})")
    out: List[int] = []
    seen = set()
    for lo, hi in ranges:
        for i in range(lo, hi + 1):
            if i not in seen:
                seen.add(i)
                out.append(i)
    return out


class ArchiveImages:
    """Read-only view of an archive's PNGs (sorted by path) and its ``dataset.json``, zip or folder.

    Files and metadata are read with :mod:`audio_ext.dataset.archive`'s reader, so the checks (and most
    messages) are the ones every other archive reader gives.
    """

    def __init__(self, path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ArchiveError(f"{self.path}: archive not found")
        try:
            self._files = ArchiveFiles(self.path)
        except (zipfile.BadZipFile, OSError) as e:
            raise ArchiveError(f"{self.path}: not a readable zip archive or folder ({e})") from None
        try:
            names = self._files.names()
            self.images = [n for n in names if n.lower().endswith(".png")]
            if "dataset.json" not in names:
                raise ArchiveError(f"{self.path}: dataset.json is missing at the archive root")
            try:
                data = self._files.read_dataset_json()
            except (KeyError, OSError, zipfile.BadZipFile) as e:
                raise ArchiveError(f"{self.path}: cannot read dataset.json ({e})") from None
            block = audio_block_of(self.path, parse_dataset_json(self.path, data))
            try:
                self.codec = AudioCodec.from_audio_block(block)
            except (ValueError, TypeError) as e:
                raise ArchiveError(f"{self.path}: dataset.json audio block: {e}") from None
            if not self.images:
                raise ArchiveError(f"{self.path}: no PNG images in the archive")
        except BaseException:
            self._files.close()
            raise

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> np.ndarray:
        """The uint8 image of clip ``index`` ([R, R]); raises ValueError naming the file if it is unusable."""
        from PIL import Image
        name = self.images[index]
        r = self.codec.geometry.resolution
        try:
            data = self._files.read(name, png_size_cap(r))
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                if im.mode != "L":
                    raise ValueError(f"mode {im.mode}, expected greyscale 'L'")
                arr = np.asarray(im, dtype=np.uint8)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        except Exception as e:  # PIL raises several types for truncated or non-image data
            raise ValueError(f"{name}: unreadable PNG ({type(e).__name__}: {e})") from None
        if arr.shape != (r, r):
            raise ValueError(f"{name}: image is {arr.shape[1]}x{arr.shape[0]}, the archive geometry needs {r}x{r}")
        return arr

    def close(self) -> None:
        self._files.close()


def write_wav(path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV written atomically; a clip whose peak exceeds full scale is scaled down
    as a whole (never clipped, which would add distortion that is not in the reconstruction). A
    failed write (full disk, read-only) is an OSError naming ``path`` (:mod:`audio_ext.core.wavfile`)."""
    from audio_ext.core.wavfile import write_pcm16_wav
    pcm = np.asarray(audio, dtype=np.float32)
    peak = float(np.max(np.abs(pcm))) if pcm.size else 0.0
    full = 32767 / 32768
    if peak > full:
        pcm = pcm * (full / peak)
    write_pcm16_wav(path, pcm, sample_rate)


def check_device(device: str) -> str:
    """``device`` if torch can put a tensor there, else ValueError naming ``--device`` in one line."""
    import torch
    try:
        torch.empty(1, device=torch.device(device))
    except Exception as e:  # RuntimeError for a bad string, AssertionError/RuntimeError for a missing backend
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--device {device!r}: not usable here ({why[:160]})") from None
    return device


def check_outdir(outdir) -> Path:
    """``outdir`` as a Path; ValueError naming it when it is a file or could not be created or written.

    Nothing is created here (the first WAV creates the folder), so a failed command leaves nothing.
    """
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"{outdir}: --outdir is a file, not a folder")
    probe = outdir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{outdir}: --outdir cannot be created ({probe} is a file)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{outdir}: --outdir is not writable ({probe})")
    return outdir


def decode_clips(data, clips: Union[str, Sequence[int]], outdir, method: Optional[str] = None, n_iter: Optional[int] = None,
                 device: Optional[str] = None, batch_size: int = 8,
                 log: Callable[[str], None] = print,
                 decoder_model: Optional[str] = None) -> Tuple[List[Path], Dict[str, str]]:
    """Decode the given clip indices of archive ``data`` into ``outdir``; returns (written paths, skipped name -> why).

    ``clips`` is a list of indices or a range text as ``--clips`` takes it (checked against the
    archive's size before it is expanded). ``decoder_model``: the model file of ``learned+pghi+fgla``,
    ``'none'`` for no learned decoder, or None: the archive's own ``<stem>.decoder.pt`` beside it
    when there is one, else ``$ELECTROGAN_DECODER_MODEL``, else the shipped model
    (:func:`audio_ext.decoder.archive_model.archive_decoder_models`). Raises :class:`ArchiveError` for an
    unusable archive or an index past its last clip, :class:`audio_ext.decoder.frame_model.ModelError` for a named
    or side model that cannot decode this archive (before anything is written), ValueError for an
    unusable ``device`` or ``outdir``.
    """
    import torch

    from audio_ext.decoder.archive_model import archive_decoder_models
    if method is not None and method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    dev = check_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    outdir = check_outdir(outdir)
    archive = ArchiveImages(data)
    try:
        if isinstance(clips, str):
            try:
                clips = parse_clip_range(clips, len(archive))
            except ValueError as e:
                raise ArchiveError(f"{archive.path}: {e}") from None
        bad = [i for i in clips if i >= len(archive)]
        if bad:
            raise ArchiveError(f"{archive.path}: clip {bad[0]} is out of range (the archive has {len(archive)} clips, "
                               f"0-{len(archive) - 1})")
        written: List[Path] = []
        skipped: Dict[str, str] = {}
        with archive_decoder_models(data, archive.codec.geometry, decoder_model):
            _decode_batches(archive, clips, outdir, method, n_iter, dev, batch_size, log, written, skipped)
        return written, skipped
    finally:
        archive.close()


def _decode_batches(archive: "ArchiveImages", clips: Sequence[int], outdir: Path, method: Optional[str],
                    n_iter: Optional[int], dev: str, batch_size: int, log: Callable[[str], None],
                    written: List[Path], skipped: Dict[str, str]) -> None:
    """decode_clips' work once the decoder model is chosen: the clips in batches, WAVs written as they
    come (``written`` and ``skipped`` grow in place, so a failure midway keeps what was done)."""
    import torch

    from audio_ext.decoder.frame_model import model_for
    from audio_ext.decoder.methods import LEARNED_METHOD, decode_audio, default_method, describe_method
    sr = archive.codec.geometry.sample_rate
    method = method or default_method(archive.codec.geometry)
    if method == LEARNED_METHOD:
        model_for(archive.codec.geometry)   # asked for without a model that fits: one line, before anything else
    log(f"decoder: {describe_method(method, archive.codec.geometry)}")
    for start in range(0, len(clips), max(1, batch_size)):
        batch_idx, images = [], []
        for i in clips[start:start + batch_size]:
            try:
                images.append(archive.load(i))
                batch_idx.append(i)
            except ValueError as e:
                skipped[archive.images[i]] = str(e)
                log(f"skipped clip {i}: {e}")
        if not images:
            continue
        # random phases (PGHI's bins below its tolerance, random starts) seeded by the clip index: a clip
        # decodes to the same file on every run, whatever batch it shares
        audio = decode_audio(torch.from_numpy(np.stack(images)), archive.codec, method=method, n_iter=n_iter,
                             device=dev, generator=list(batch_idx)).cpu().numpy()
        for i, y in zip(batch_idx, audio):
            path = outdir / f"clip{i:06d}.wav"
            write_wav(path, y, sr)
            written.append(path)
            log(f"wrote {path} ({archive.images[i]})")


@click.group()
def main() -> None:
    """ElectroGAN audio tools."""


from audio_ext.survey.cli import survey as _survey  # noqa: E402  (after main: `python -m audio_ext survey ...`)

main.add_command(_survey)

from .studio.cli import studio as _studio  # noqa: E402  (`python -m audio_ext studio ...`)

main.add_command(_studio)


@main.command()
@click.option("--data", required=True, metavar="PATH", help="stft.zip or an archive folder")
@click.option("--clips", "clip_spec", default="0-4", show_default=True, help="clip indices, e.g. 0-4 or 0,3,7-9")
@click.option("--outdir", required=True, metavar="DIR", help="where the WAV files go")
@click.option("--method", type=click.Choice(list(METHODS)), default=None,
              help="phase reconstruction method [learned+pghi+fgla when a decoder model fits the archive, "
                   "else pghi+fgla]")
@click.option("--decoder-model", default=None, metavar="FILE|none",
              help="frame-interpolation model for learned+pghi+fgla; none = no learned decoder [<archive stem>"
                   ".decoder.pt beside --data when it exists, else $ELECTROGAN_DECODER_MODEL, else the shipped one]")
@click.option("--iters", type=click.IntRange(min=0), default=None, help="Griffin-Lim iterations [method default]")
@click.option("--device", default=None, help="torch device [cuda if available, else cpu]")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=8, show_default=True,
              help="images decoded together")
@one_line_errors(ArchiveError, ValueError)
def decode(data, clip_spec, outdir, method, decoder_model, iters, device, batch_size) -> None:
    """Decode archive images back to 16-bit WAV files (the training set after the round trip)."""
    from audio_ext.decoder.frame_model import ModelError
    try:
        parse_clip_ranges(clip_spec)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--clips") from None
    try:
        written, skipped = decode_clips(data, clip_spec, outdir, method=method, n_iter=iters, device=device,
                                        batch_size=batch_size, log=click.echo, decoder_model=decoder_model)
    except (ArchiveError, ModelError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"--outdir {outdir}: cannot write ({describe_os_error(e)})") from None
    click.echo(f"decoded {len(written)} clip(s) into {outdir}" + (f"; skipped {len(skipped)}" if skipped else ""))
    if not written:
        raise click.ClickException(f"{data}: none of the requested clips could be decoded")


@main.command("train-decoder")
@click.option("--source", required=True, metavar="DIR", help="folder of audio files (searched recursively)")
@click.option("--out", required=True, metavar="FILE", help="model file to write (resumed if it holds a checkpoint)")
@click.option("--resolution", type=int, default=1024, show_default=True, help="R of the archives to decode")
@click.option("--hop", type=int, default=None, help="hop length of those archives [resolution]")
@click.option("--sample-rate", type=int, default=44100, show_default=True, help="Hz")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--patch-frames", type=click.IntRange(min=2), default=32, show_default=True,
              help="stored frames per training crop")
@click.option("--patch-bins", type=click.IntRange(min=8), default=None, help="random band of bins per crop [all]")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--synthetic", type=click.IntRange(min=0), default=0, show_default=True,
              help="add this many 30-s synthetic techno loops to the sources")
@click.option("--holdout", default="", help="comma-separated file names (in --source) kept out of training and "
                                             "used for the final held-out error")
@click.option("--arch", type=click.Choice(["tiny", "small", "medium", "large"]), default="small", show_default=True,
              help="network size (docs/audio.md)")
@click.option("--init", "init", default=None, metavar="FILE",
              help="start from this model's weights (fine-tuning; same geometry and --arch) [fresh weights]")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=100, show_default=True,
              help="steps between checkpoints (and held-out evaluations with --holdout)")
@click.option("--loss", type=click.Choice(["sc", "wl1"]), default="sc", show_default=True,
              help="objective: squared spectral convergence of the in-between frames, or magnitude-weighted L1 "
                   "in ln power (docs/audio.md)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="torch device [cuda if available, else cpu]")
def train_decoder_cmd(source, out, resolution, hop, sample_rate, steps, batch, patch_frames, patch_bins, lr,
                      synthetic, holdout, arch, init, checkpoint_every, loss, seed, device) -> None:
    """Train the frame-interpolation model of the `learned+pghi+fgla` decoder on your own audio."""
    import torch

    from audio_ext.core.geometry import StftGeometry
    from audio_ext.decoder.frame_model import ModelError
    from audio_ext.decoder.frame_training import TrainConfig, find_audio, load_sources, synthetic_sources, train_decoder
    from audio_ext.core.writable import check_writable
    try:
        check_writable(out, "--out", folder=False)      # before hours of training, not after
        geometry = StftGeometry(resolution, hop, sample_rate=sample_rate)
        files = find_audio(source)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    held_names = {h.strip() for h in holdout.split(",") if h.strip()}
    unknown = held_names - {f.name for f in files}
    if unknown:
        raise click.ClickException(f"--holdout: {', '.join(sorted(unknown))} not found in {source}")
    config = TrainConfig(steps=steps, batch=batch, patch_frames=patch_frames, patch_bins=patch_bins, lr=lr, seed=seed,
                         arch=arch, init=init, checkpoint_every=checkpoint_every, loss=loss)
    crop = (patch_frames + 1) * geometry.hop_length
    train, names = load_sources([f for f in files if f.name not in held_names], sample_rate, crop, log=click.echo)
    held, held_used = load_sources([f for f in files if f.name in held_names], sample_rate, crop, log=click.echo)
    if synthetic:
        train += synthetic_sources(synthetic, 30.0, sample_rate, seed=seed)
        names += [f"synthetic techno loop {i}" for i in range(synthetic)]
    if not train:
        raise click.ClickException(f"--source {source}: no usable audio file of at least {crop / sample_rate:.2f} s")
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    click.echo(f"training on {len(train)} source(s), {sum(y.size for y in train) / sample_rate / 60:.1f} min of audio; "
               f"{len(held)} held out; R={resolution} hop={geometry.hop_length}; device {dev}")
    try:
        train_decoder(train, out, geometry, config, device=dev, source_names=names, validation=held, log=click.echo,
                      validation_names=held_used)
    except (ValueError, ModelError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # a checkpoint that cannot be written: full disk, read-only, --out under a file
        raise click.ClickException(f"--out {out}: cannot write the model ({describe_os_error(e)})") from None


if __name__ == "__main__":
    sys.exit(main())
