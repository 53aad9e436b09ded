"""``python -m audio_ext``: audio tools. ``decode`` turns archive images back into WAV files to hear
the round trip; ``survey make|serve|score`` runs a blind listening test (audio_ext/survey/).

    python -m audio_ext decode --data stft.zip --clips 0-4 --outdir roundtrip/ [--method pghi+fgla] [--iters 10]
    python -m audio_ext survey make --outdir survey/ --data stft.zip --source audio/ --clips-per-condition 8

Reads ``dataset.json`` (its ``audio`` block) and the PNGs of a ``stft.zip`` or of a folder with the
same layout (DESIGN.md); clips are numbered by the sorted archive paths of the PNGs. Each clip is
written as ``clipNNNNNN.wav`` (16-bit PCM at the archive's sample rate, scaled down if it would clip)
atomically; an unreadable or
malformed image is skipped and reported, and the command fails only when nothing could be decoded.
"""
from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import click
import numpy as np

from stylegan2.misc import atomic_path

from .archive import ArchiveError, ArchiveFiles, audio_block_of, parse_dataset_json
from .codec import AudioCodec
from .phase import DEFAULT_METHOD, METHODS


def parse_clip_range(spec: str) -> List[int]:
    """Clip indices from ``'0-4'`` (inclusive), ``'3'`` or ``'0,2,5-7'``, in the order given, without repeats."""
    out: List[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if lo > hi:
                    raise ValueError
                items = range(lo, hi + 1)
            else:
                items = [int(part)]
            if any(i < 0 for i in items):
                raise ValueError
        except ValueError:
            raise ValueError(f"bad clip range {spec!r}: use non-negative indices like '0-4', '7' or '0,2,5-7'") from None
        out.extend(i for i in items if i not in out)
    return out


class ArchiveImages:
    """Read-only view of an archive's PNGs (sorted by path) and its ``dataset.json``, zip or folder.

    Files and metadata are read with :mod:`audio_ext.archive`'s reader, so the checks (and most
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
                data = self._files.read("dataset.json")
            except (KeyError, OSError, zipfile.BadZipFile) as e:
                raise ArchiveError(f"{self.path}: dataset.json is not valid JSON ({e})") from None
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
            with Image.open(io.BytesIO(self._files.read(name))) as im:
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
    as a whole (never clipped, which would add distortion that is not in the reconstruction)."""
    import soundfile as sf
    pcm = np.asarray(audio, dtype=np.float32)
    peak = float(np.max(np.abs(pcm))) if pcm.size else 0.0
    full = 32767 / 32768
    if peak > full:
        pcm = pcm * (full / peak)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), pcm, sample_rate, subtype="PCM_16", format="WAV")


def decode_clips(data, clips: Sequence[int], outdir, method: str = DEFAULT_METHOD, n_iter: Optional[int] = None,
                 device: Optional[str] = None, batch_size: int = 8,
                 log: Callable[[str], None] = print) -> Tuple[List[Path], Dict[str, str]]:
    """Decode the given clip indices of archive ``data`` into ``outdir``; returns (written paths, skipped name -> why).

    Raises :class:`ArchiveError` for an unusable archive or an index past its last clip.
    """
    import torch
    from .phase import decode_audio
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    archive = ArchiveImages(data)
    try:
        bad = [i for i in clips if i >= len(archive)]
        if bad:
            raise ArchiveError(f"{archive.path}: clip {bad[0]} is out of range (the archive has {len(archive)} clips, "
                               f"0-{len(archive) - 1})")
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        outdir = Path(outdir)
        written: List[Path] = []
        skipped: Dict[str, str] = {}
        sr = archive.codec.geometry.sample_rate
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
            audio = decode_audio(torch.from_numpy(np.stack(images)), archive.codec, method=method, n_iter=n_iter,
                                 device=dev).cpu().numpy()
            for i, y in zip(batch_idx, audio):
                path = outdir / f"clip{i:06d}.wav"
                write_wav(path, y, sr)
                written.append(path)
                log(f"wrote {path} ({archive.images[i]})")
        return written, skipped
    finally:
        archive.close()


@click.group()
def main() -> None:
    """ElectroGAN audio tools."""


from .survey.cli import survey as _survey  # noqa: E402  (after main: `python -m audio_ext survey ...`)

main.add_command(_survey)


@main.command()
@click.option("--data", required=True, metavar="PATH", help="stft.zip or an archive folder")
@click.option("--clips", "clip_spec", default="0-4", show_default=True, help="clip indices, e.g. 0-4 or 0,3,7-9")
@click.option("--outdir", required=True, metavar="DIR", help="where the WAV files go")
@click.option("--method", type=click.Choice(list(METHODS)), default=DEFAULT_METHOD, show_default=True,
              help="phase reconstruction method")
@click.option("--iters", type=click.IntRange(min=0), default=None, help="Griffin-Lim iterations [method default]")
@click.option("--device", default=None, help="torch device [cuda if available, else cpu]")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=8, show_default=True,
              help="images decoded together")
def decode(data, clip_spec, outdir, method, iters, device, batch_size) -> None:
    """Decode archive images back to 16-bit WAV files (the training set after the round trip)."""
    try:
        clips = parse_clip_range(clip_spec)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--clips") from None
    try:
        written, skipped = decode_clips(data, clips, outdir, method=method, n_iter=iters, device=device,
                                        batch_size=batch_size, log=click.echo)
    except ArchiveError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"decoded {len(written)} clip(s) into {outdir}" + (f"; skipped {len(skipped)}" if skipped else ""))
    if not written:
        raise click.ClickException(f"{data}: none of the requested clips could be decoded")


if __name__ == "__main__":
    sys.exit(main())
