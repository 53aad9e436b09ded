"""Greyscale PNG bytes for the archive, written with zlib directly: 'Up' filter, run-length deflate (issue 13).

An R=1024 spectrogram hardly compresses (noise-like texture: ~730 KB of 1 MiB at best), so what
an encoder spends beyond entropy coding buys almost nothing. Measured on 24 devset images
(docs/benchmarks.md, "Dataset building speed"): Pillow at zlib level 6 with its per-row adaptive
filter choice takes ~51 ms per image for 728 KB; the 'Up' filter (PNG filter type 2: each byte
minus the byte above it) on every row, computed in one numpy pass, followed by deflate with the
``Z_RLE`` strategy (matches of distance 1 only, then Huffman coding) takes ~11 ms for 731 KB
(+0.4 %). Neighbouring frequency rows of a spectrogram are alike, which is why 'Up' is the filter
that pays; searching for string matches (levels 1-9) finds next to none.

The file is a minimal valid PNG (PNG specification, ISO/IEC 15948): signature, ``IHDR`` (8-bit
greyscale, no interlace), one ``IDAT`` holding the zlib stream, ``IEND``. The pixels decode to
exactly the input with any PNG reader; the bytes are deterministic for a given zlib build.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

#: The eight bytes every PNG file starts with.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG row filter written in front of every row: 2 = 'Up' (row 0 has no row above: it is filtered
#: against zeros, which leaves it unchanged).
FILTER_UP = 2


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type + data (big-endian)."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def filtered_rows(image: np.ndarray) -> np.ndarray:
    """The 'Up'-filtered scanlines of a uint8 ``[H, W]`` image: ``[H, W + 1]`` bytes, each row the filter
    type byte followed by ``(x[r] - x[r - 1]) mod 256`` (row 0 minus zeros, i.e. row 0 itself)."""
    h, w = image.shape
    raw = np.empty((h, w + 1), dtype=np.uint8)
    raw[:, 0] = FILTER_UP
    raw[0, 1:] = image[0]
    np.subtract(image[1:], image[:-1], out=raw[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG's does
    return raw


def grey_png(image: np.ndarray) -> bytes:
    """A uint8 ``[H, W]`` image as 8-bit greyscale PNG bytes ('Up' filter, deflate with ``Z_RLE``)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 2 or 0 in image.shape:
        raise ValueError(f"grey_png: expected a non-empty 2-D uint8 image, got {image.dtype} {image.shape}")
    h, w = image.shape
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)  # the level does not matter with Z_RLE
    idat = deflate.compress(filtered_rows(image)) + deflate.flush()
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit, greyscale, deflate, adaptive, no interlace
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
