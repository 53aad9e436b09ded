"""The archive's PNG writer (audio_ext/core/png.py): pixels exact through independent decoders, a valid file."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from audio_ext.core.codec import encode
from audio_ext.core.geometry import StftGeometry
from audio_ext.core.png import PNG_SIGNATURE, grey_png
from audio_ext.core.synth import techno_loop
from audio_ext.dataset.archive import png_bytes


def _chunks(data: bytes):
    """(type, payload) of every chunk, checking each CRC on the way."""
    assert data[:8] == PNG_SIGNATURE
    pos, out = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, payload = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + payload), kind
        out.append((kind, payload))
        pos += 12 + n
    return out


def _naive_unfilter(raw: bytes, h: int, w: int) -> np.ndarray:
    """Undo PNG filters 0 and 2 row by row in plain Python integers (an independent reference decoder)."""
    out = np.zeros((h, w), dtype=np.int64)
    for r in range(h):
        ftype = raw[r * (w + 1)]
        row = raw[r * (w + 1) + 1:(r + 1) * (w + 1)]
        assert ftype in (0, 2), ftype
        for c in range(w):
            above = out[r - 1, c] if (r > 0 and ftype == 2) else 0
            out[r, c] = (row[c] + above) % 256
    return out


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (32, 32), (17, 40)])
def test_pixels_round_trip_through_pillow_and_a_naive_decoder(shape):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    img[:, :1] = 255  # wrap-around of the 'Up' difference (0 - 255 mod 256) is exercised too
    data = grey_png(img)
    pil = Image.open(io.BytesIO(data))
    assert pil.mode == "L" and pil.size == (shape[1], shape[0])
    np.testing.assert_array_equal(np.asarray(pil), img)
    chunks = _chunks(data)
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    w, h, depth, colour, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (w, h, depth, colour, comp, filt, interlace) == (shape[1], shape[0], 8, 0, 0, 0, 0)
    raw = zlib.decompress(chunks[1][1])
    assert len(raw) == shape[0] * (shape[1] + 1)
    np.testing.assert_array_equal(_naive_unfilter(raw, *shape), img)


def test_a_spectrogram_image_is_exact_smaller_than_raw_and_deterministic():
    g = StftGeometry(64)
    img = encode(techno_loop(130.0, g.clip_samples / 44100 + 0.1)[:g.clip_samples], g, -5.0, 5.0)
    data = png_bytes(img)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), img)
    assert data == png_bytes(img.copy())
    assert len(data) < img.size  # the 'Up' filter + run-length deflate does compress
    # about as small as Pillow's best effort (level 9, adaptive filters): within 10 %
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG", compress_level=9)
    assert len(data) < 1.10 * len(buf.getvalue())


def test_non_contiguous_views_encode_their_own_pixels():
    img = np.arange(64 * 64, dtype=np.int64).reshape(64, 64).astype(np.uint8)
    view = img[::2, ::-1]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(grey_png(view)))), view)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 1), np.uint8),
                                 np.zeros((0, 4), np.uint8)])
def test_bad_images_are_refused_with_a_clear_message(bad):
    with pytest.raises(ValueError, match="grey_png: expected a non-empty 2-D uint8 image"):
        grey_png(bad)
