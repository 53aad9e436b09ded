"""The image dataset reads folders and zips of PNGs exactly, passes audio metadata through, and
names the file in every error. The infinite sampler shards and reshuffles a seeded stream."""
import io
import itertools
import json
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from stylegan2.dataset import DatasetError, ImageFolderDataset
from stylegan2.sampler import InfiniteSampler


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PIL.Image.fromarray(array).save(buf, format="png")
    return buf.getvalue()


def _images(n, res=16, channels=1, seed=0):
    rnd = np.random.default_rng(seed)
    shape = (res, res) if channels == 1 else (res, res, channels)
    return [rnd.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(n)]


def _write(root, files: dict, as_zip: bool):
    """files: relative name -> bytes. Returns the dataset path (folder or zip)."""
    if as_zip:
        path = root / "data.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
            for name, data in files.items():
                z.writestr(name, data)
        return path
    path = root / "data"
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


@pytest.fixture(params=["zip", "folder"])
def as_zip(request):
    return request.param == "zip"


def test_reads_pixels_exactly_in_sorted_relative_path_order(tmp_path, as_zip):
    images = _images(5)
    # Written out of order and across sub-folders: the dataset sorts by relative path.
    names = ["00001/img00000003.png", "00000/img00000001.png", "00001/img00000004.png",
             "00000/img00000000.png", "00000/img00000002.png"]
    order = sorted(range(5), key=lambda i: names[i])
    path = _write(tmp_path, {n: _png(images[i]) for i, n in enumerate(names)}, as_zip)
    ds = ImageFolderDataset(path)
    assert len(ds) == 5 and ds.resolution == 16 and ds.num_channels == 1
    assert ds.image_shape == [1, 16, 16] and ds.label_shape == [0] and not ds.has_labels
    assert ds.filenames == sorted(names)
    for k, i in enumerate(order):
        image, label = ds[k]
        assert image.dtype == np.uint8 and image.shape == (1, 16, 16)
        np.testing.assert_array_equal(image[0], images[i])
        assert label.dtype == np.float32 and label.shape == (0,)
    assert ds.audio is None and ds.clips is None


def test_rgb_images_are_chw(tmp_path):
    images = _images(2, channels=3)
    ds = ImageFolderDataset(_write(tmp_path, {f"{i}.png": _png(a) for i, a in enumerate(images)}, True))
    assert ds.num_channels == 3
    np.testing.assert_array_equal(ds[1][0], images[1].transpose(2, 0, 1))


def test_audio_and_clips_pass_through_untouched(tmp_path):
    audio = {"sample_rate": 44100, "resolution": 16, "n_fft": 32, "hop_length": 8, "window": "hann",
             "center": True, "eps": 1e-10, "mean": -7.123456789012345, "std": 3.5, "clip_sigma": 3.0,
             "target_bpm": 130.0, "format_version": 1}
    clips = [{"source": "mix/ä set.mp3", "start": 60.0, "bpm": 128.2, "stretch": 1.014, "offset": 0.12}]
    meta = {"labels": None, "audio": audio, "clips": clips}
    files = {"00000/a.png": _png(_images(1)[0]), "dataset.json": json.dumps(meta).encode()}
    ds = ImageFolderDataset(_write(tmp_path, files, True))
    assert ds.audio == audio and ds.clips == clips
    assert ds.name == "data"


def test_integer_labels_become_one_hot(tmp_path, as_zip):
    images = _images(3)
    labels = [["b.png", 2], ["a.png", 0], ["c.png", 0]]
    files = {n: _png(images[i]) for i, n in enumerate(["a.png", "b.png", "c.png"])}
    files["dataset.json"] = json.dumps({"labels": labels}).encode()
    ds = ImageFolderDataset(_write(tmp_path, files, as_zip), use_labels=True)
    assert ds.label_shape == [3] and ds.has_labels and ds.has_onehot_labels
    np.testing.assert_array_equal(np.stack([ds[i][1] for i in range(3)]),
                                  np.eye(3, dtype=np.float32)[[0, 2, 0]])
    # Without use_labels the same archive yields empty labels.
    assert ImageFolderDataset(ds.path)[0][1].shape == (0,)


def test_vector_labels_are_float32(tmp_path):
    files = {"a.png": _png(_images(1)[0]), "b.png": _png(_images(1, seed=1)[0]),
             "dataset.json": json.dumps({"labels": [["a.png", [0.5, -1]], ["b.png", [2, 3.25]]]}).encode()}
    ds = ImageFolderDataset(_write(tmp_path, files, True), use_labels=True)
    assert ds.label_dim == 2 and not ds.has_onehot_labels
    np.testing.assert_array_equal(ds[1][1], np.array([2, 3.25], dtype=np.float32))


def test_max_size_is_a_seeded_subset(tmp_path):
    images = _images(20)
    path = _write(tmp_path, {f"{i:02d}.png": _png(a) for i, a in enumerate(images)}, True)
    a = ImageFolderDataset(path, max_size=6, random_seed=1)
    b = ImageFolderDataset(path, max_size=6, random_seed=1)
    c = ImageFolderDataset(path, max_size=6, random_seed=2)
    picked = [a.get_details(i)["fname"] for i in range(len(a))]
    assert len(a) == 6 and picked == [b.get_details(i)["fname"] for i in range(6)]
    assert len(set(picked)) == 6 and picked == sorted(picked)
    assert picked != [c.get_details(i)["fname"] for i in range(6)]
    for i in range(6):
        np.testing.assert_array_equal(a[i][0][0], images[int(picked[i][:2])])
    assert len(ImageFolderDataset(path, max_size=50)) == 20


def test_xflip_is_off_by_default_and_doubles_with_mirrored_copies(tmp_path):
    images = _images(3)
    path = _write(tmp_path, {f"{i}.png": _png(a) for i, a in enumerate(images)}, True)
    plain = ImageFolderDataset(path)
    assert len(plain) == 3 and not any(plain.get_details(i)["xflip"] for i in range(3))
    flipped = ImageFolderDataset(path, xflip=True)
    assert len(flipped) == 6
    for i in range(3):
        np.testing.assert_array_equal(flipped[i][0][0], images[i])
        np.testing.assert_array_equal(flipped[i + 3][0][0], images[i][:, ::-1])


def test_pickle_and_dataloader_workers(tmp_path):
    images = _images(8)
    ds = ImageFolderDataset(_write(tmp_path, {f"{i}.png": _png(a) for i, a in enumerate(images)}, True))
    ds[0]  # opens the zip handle in this process; pickling must not carry it
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[7][0][0], images[7])
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    batches = [img for img, _ in loader]
    np.testing.assert_array_equal(torch.cat(batches)[:, 0].numpy(), np.stack(images))


def _sixteen_bit_rgb_png(res=8) -> bytes:
    """A 16-bit RGB PNG built by hand (PIL cannot write one and would silently reduce it to 8 bits)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + bytes(res * 6) for _ in range(res))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", res, res, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("files, message", [
    ({"a.png": _png(np.zeros((16, 8), np.uint8))}, r"a\.png: image is 8x16; images must be square"),
    ({"a.png": _png(np.zeros((12, 12), np.uint8))}, r"a\.png: resolution 12 is not a power of two"),
    ({"a.png": _png(np.zeros((16, 16), np.uint8)), "b.png": _png(np.zeros((8, 8), np.uint8))},
     r"b\.png: image is 8x8 with 1 channel\(s\) but a\.png is 16x16"),
    ({"a.png": _png(np.zeros((16, 16), np.uint8)), "b.png": _png(np.zeros((16, 16, 3), np.uint8))},
     r"b\.png: image is 16x16 with 3 channel\(s\)"),
    ({"a.png": _png(np.zeros((16, 16, 4), np.uint8))}, r"a\.png: image has an alpha channel \(mode RGBA\)"),
    ({"a.png": _png(np.zeros((16, 16), np.uint16))}, r"a\.png: 16-bit image"),
    ({"a.png": _sixteen_bit_rgb_png()}, r"a\.png: 16-bit image"),
    # the same checks on later images, which are read from their PNG header only
    ({"a.png": _png(np.zeros((8, 8), np.uint8)), "b.png": _sixteen_bit_rgb_png()}, r"b\.png: 16-bit image"),
    ({"a.png": _png(np.zeros((16, 16), np.uint8)), "b.png": _png(np.zeros((16, 16, 4), np.uint8))},
     r"b\.png: image has an alpha channel \(mode RGBA\)"),
    ({"a.png": _png(np.zeros((16, 16), np.uint8)), "dataset.json": b"{labels: oops"},
     r"dataset\.json: bad json"),
    ({"notes.txt": b"hello"}, r"data\.zip: no images found"),
])
def test_bad_inputs_name_the_file(tmp_path, files, message):
    with pytest.raises(DatasetError, match=message):
        ImageFolderDataset(_write(tmp_path, files, True))


def test_label_errors(tmp_path):
    files = {"a.png": _png(_images(1)[0]), "b.png": _png(_images(1)[0]),
             "dataset.json": json.dumps({"labels": [["a.png", 1]]}).encode()}
    (tmp_path / "1").mkdir()
    (tmp_path / "2").mkdir()
    with pytest.raises(DatasetError, match=r"dataset\.json: no label for b\.png"):
        ImageFolderDataset(_write(tmp_path / "1", files, True), use_labels=True)
    files["dataset.json"] = json.dumps({"labels": None}).encode()
    with pytest.raises(DatasetError, match="use_labels=True but the dataset has no labels"):
        ImageFolderDataset(_write(tmp_path / "2", files, True), use_labels=True)


def test_resolution_mismatch_and_missing_path(tmp_path):
    path = _write(tmp_path, {"a.png": _png(_images(1)[0])}, True)
    with pytest.raises(DatasetError, match=r"data\.zip: images are 16x16 but resolution=32"):
        ImageFolderDataset(path, resolution=32)
    with pytest.raises(DatasetError, match=r"nope\.zip: no such folder or zip archive"):
        ImageFolderDataset(tmp_path / "nope.zip")


def test_unreadable_file_is_skipped_and_reported(tmp_path, as_zip):
    images = _images(3)
    files = {"0.png": _png(images[0]), "1.png": b"\x89PNG garbage", "2.png": _png(images[2])}
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\): .*1\.png"):
        ds = ImageFolderDataset(_write(tmp_path, files, as_zip))
    assert len(ds) == 2 and [n for n, _ in ds.skipped] == ["1.png"]
    np.testing.assert_array_equal(ds[1][0][0], images[2])


def test_image_that_fails_to_decode_is_replaced_and_reported(tmp_path):
    images = _images(3)
    broken = _png(images[1])
    broken = broken[: len(broken) // 2]  # header intact, pixel data cut off
    ds = ImageFolderDataset(_write(tmp_path, {"0.png": _png(images[0]), "1.png": broken,
                                              "2.png": _png(images[2])}, True))
    assert len(ds) == 3
    with pytest.warns(UserWarning, match=r"1\.png: corrupt image skipped"):
        image, _ = ds[1]
    np.testing.assert_array_equal(image[0], images[2])


# ------------------------------------------------------------------------------------ sampler

def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_sampler_first_pass_is_a_seeded_permutation():
    data = range(37)
    first = _take(InfiniteSampler(data, seed=3), 37)
    assert sorted(first) == list(range(37))
    assert first == _take(InfiniteSampler(data, seed=3), 37)
    assert first != _take(InfiniteSampler(data, seed=4), 37)
    assert _take(InfiniteSampler(data, shuffle=False), 80) == [i % 37 for i in range(80)]


def test_sampler_is_endless_and_every_pass_is_a_new_permutation():
    stream = _take(InfiniteSampler(range(10), seed=0), 200)
    passes = [stream[i:i + 10] for i in range(0, 200, 10)]
    assert all(sorted(p) == list(range(10)) for p in passes)
    assert len({tuple(p) for p in passes}) > 10


def test_sampler_ranks_interleave_to_the_single_process_stream():
    data = range(23)
    single = _take(InfiniteSampler(data, seed=7), 120)
    shards = [_take(InfiniteSampler(data, rank=r, num_replicas=4, seed=7), 30) for r in range(4)]
    assert [shards[i % 4][i // 4] for i in range(120)] == single


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank 2 is not in"):
        InfiniteSampler(range(3), rank=2, num_replicas=2)
    with pytest.raises(ValueError, match="empty"):
        InfiniteSampler([])
