"""Dataset feature statistics are cached by archive content: reused for a copy, recomputed after a change."""
import io
import json
import shutil
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from stylegan2.dataset import ImageFolderDataset
from stylegan2.metrics.dataset_cache import archive_content_hash, stats_cache_path
from stylegan2.metrics.features import FeatureExtractor, dataset_feature_stats
from stylegan2.metrics.options import MetricOptions


def write_zip(path, images):
    with zipfile.ZipFile(path, "w") as z:
        for i, img in enumerate(images):
            buf = io.BytesIO()
            PIL.Image.fromarray(img, mode="L").save(buf, format="PNG")
            z.writestr(f"00000/img{i:05d}.png", buf.getvalue())
        z.writestr("dataset.json", json.dumps({"labels": None}))
    return path


def random_images(n, seed, res=16):
    return [np.random.default_rng([seed, i]).integers(0, 256, (res, res), dtype=np.uint8) for i in range(n)]


class CountingExtractor(FeatureExtractor):
    """Mean and std of each image's pixels; counts how many images it saw."""
    def __init__(self):
        self.calls = 0
        super().__init__(name="pixelstats", identity="pixelstats-v1", fn=self._fn)

    def _fn(self, images):
        self.calls += images.shape[0]
        x = images.float().flatten(1)
        return torch.stack([x.mean(1), x.std(1)], dim=1)


def stats_for(path, cache_dir, extractor, **kw):
    opts = MetricOptions(dataset=ImageFolderDataset(path), cache_dir=cache_dir, batch_size=5)
    return dataset_feature_stats(opts, extractor, capture_mean_cov=True, **kw)


def test_content_hash_ignores_path_and_sees_changes(tmp_path):
    a = write_zip(tmp_path / "a.zip", random_images(6, 0))
    b = tmp_path / "elsewhere" / "b.zip"
    b.parent.mkdir()
    shutil.copy(a, b)
    assert archive_content_hash(a) == archive_content_hash(b)
    imgs = random_images(6, 0)
    imgs[3] = 255 - imgs[3]
    c = write_zip(tmp_path / "c.zip", imgs)
    assert archive_content_hash(c) != archive_content_hash(a)


def test_folder_hash_sees_changed_file_and_matches_a_zip_of_the_same_files(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(random_images(3, 1)):
        PIL.Image.fromarray(img).save(folder / f"{i}.png")
    before = archive_content_hash(folder, root=tmp_path / "cache")
    with zipfile.ZipFile(tmp_path / "same.zip", "w") as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f.name)
    assert archive_content_hash(tmp_path / "same.zip") == before  # the same content, however it is packed
    PIL.Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "1.png")
    assert archive_content_hash(folder, root=tmp_path / "cache") != before


def test_folder_crc_memo_rereads_only_touched_files(tmp_path, monkeypatch):
    from stylegan2.metrics import dataset_cache
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.bin").write_bytes(bytes([i]) * 100)
    first = archive_content_hash(folder, root=tmp_path / "cache")
    read = []
    real_crc = dataset_cache._crc32_file
    monkeypatch.setattr(dataset_cache, "_crc32_file", lambda p: read.append(p.name) or real_crc(p))
    assert archive_content_hash(folder, root=tmp_path / "cache") == first
    assert read == []
    (folder / "2.bin").write_bytes(b"changed content")
    assert archive_content_hash(folder, root=tmp_path / "cache") != first
    assert read == ["2.bin"]


def test_cache_reused_for_copy_and_invalidated_by_content(tmp_path):
    cache = tmp_path / "cache"
    a = write_zip(tmp_path / "a.zip", random_images(12, 2))
    ext = CountingExtractor()
    mean1, cov1 = stats_for(a, cache, ext).get_mean_cov()
    assert ext.calls == 12
    feats = np.array([[im.mean(), im.std(ddof=1)] for im in random_images(12, 2)])
    np.testing.assert_allclose(mean1, feats.mean(0), rtol=1e-5)

    copy = tmp_path / "copy" / "a.zip"
    copy.parent.mkdir()
    shutil.copy(a, copy)
    mean2, _ = stats_for(copy, cache, ext).get_mean_cov()
    assert ext.calls == 12  # identical content at another path: served from the cache
    np.testing.assert_array_equal(mean1, mean2)

    imgs = random_images(12, 2)
    imgs[0] = np.zeros_like(imgs[0])
    write_zip(a, imgs)  # rebuilt in place, same path
    mean3, _ = stats_for(a, cache, ext).get_mean_cov()
    assert ext.calls == 24
    assert not np.allclose(mean3, mean1)


def test_subset_and_extractor_are_part_of_the_key(tmp_path):
    cache = tmp_path / "cache"
    a = write_zip(tmp_path / "a.zip", random_images(10, 3))
    ext = CountingExtractor()
    stats_for(a, cache, ext)
    stats_for(a, cache, ext, max_items=4)
    assert ext.calls == 14
    other = CountingExtractor()
    other.identity = "pixelstats-v2"
    stats_for(a, cache, other)
    assert other.calls == 10


def test_corrupt_cache_file_is_ignored_with_warning(tmp_path):
    cache = tmp_path / "cache"
    a = write_zip(tmp_path / "a.zip", random_images(5, 4))
    ext = CountingExtractor()
    stats_for(a, cache, ext)
    (cached,) = (cache / "gan-metrics").iterdir()
    cached.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable metric cache"):
        stats_for(a, cache, ext)
    assert ext.calls == 10


def test_cache_file_name_is_safe():
    p = stats_cache_path("my set/with:odd*chars", "inception-2015-12-05", "abc", root="/tmp/x")
    assert p.name == "my_set_with_odd_chars-inception-2015-12-05-abc.npz"


def test_missing_archive_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such folder or zip archive"):
        archive_content_hash(tmp_path / "nope.zip")


def test_unwritable_cache_warns_but_still_returns_statistics(tmp_path):
    a = write_zip(tmp_path / "a.zip", random_images(4, 5))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="metric cache not written"):
        mean, _ = stats_for(a, blocked, CountingExtractor()).get_mean_cov()
    assert mean.shape == (2,)
