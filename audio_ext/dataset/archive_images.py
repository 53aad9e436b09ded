"""Clip images of a built archive, read back one by one (zip or folder) with its codec.

The reader every tool uses that turns archive clips into audio: ``python -m audio_ext decode``, the
survey's round trips and the decoder model's training on an archive.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from audio_ext.core.codec import AudioCodec
from audio_ext.dataset.archive import ArchiveError, ArchiveFiles, audio_block_of, parse_dataset_json, png_size_cap


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
