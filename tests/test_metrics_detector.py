"""Detector: download once (streamed, atomic, checked), cache, load TorchScript, repeat 1 channel to 3."""
import functools
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from stylegan2.metrics import detector as det
from stylegan2.metrics.toy_detector import ToyDetector, write_toy_detector


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ELECTROGAN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www; yields (base_url, folder, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    log = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            log.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root, log
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def test_cache_dir_follows_environment(cache):
    assert det.cache_dir() == cache


def test_http_download_is_cached_and_checked(cache, server):
    base, root, log = server
    payload = np.random.default_rng(0).bytes(300_000)
    (root / "inception.pt").write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    path = det.download(f"{base}/inception.pt", md5=md5)
    assert path == cache / "downloads" / "inception.pt"
    assert path.read_bytes() == payload
    n_requests = len(log)
    assert det.download(f"{base}/inception.pt", md5=md5) == path
    assert len(log) == n_requests  # second call served from the cache, no request


def test_bad_md5_leaves_no_file(cache, server):
    base, root, _ = server
    (root / "x.pt").write_bytes(b"not what we expected")
    with pytest.raises(det.DetectorError, match="md5"):
        det.download(f"{base}/x.pt", md5="0" * 32)
    assert not (cache / "downloads").exists() or not any((cache / "downloads").iterdir())


def test_http_error_and_missing_file_are_one_line_errors(cache, server, tmp_path):
    base, _, _ = server
    with pytest.raises(det.DetectorError, match=r"missing\.pt: download failed \(HTTP 404\)"):
        det.download(f"{base}/missing.pt")
    with pytest.raises(det.DetectorError, match="detector file not found"):
        det.resolve_detector(tmp_path / "nope.pt")


def test_file_url_download(cache, tmp_path):
    src = tmp_path / "vgg16.pt"
    src.write_bytes(b"abc" * 1000)
    path = det.download(src.as_uri())
    assert path.read_bytes() == src.read_bytes()


def test_local_detector_loads_and_repeats_grey_to_rgb(tmp_path):
    path = write_toy_detector(tmp_path / "toy.pt", num_features=12)
    d = det.load_detector(path)
    grey = torch.randint(0, 256, (4, 1, 20, 20), dtype=torch.uint8)
    feats = d.features(grey)
    assert feats.shape == (4, 12) and feats.dtype == torch.float32
    reference = ToyDetector(12)(grey.repeat(1, 3, 1, 1), return_features=True)
    torch.testing.assert_close(feats, reference)
    assert d.identity == hashlib.md5(Path(path).read_bytes()).hexdigest()
    assert det.load_detector(path) is d  # loaded once per process


def test_default_url_downloads_through_same_loader(cache, server):
    base, root, _ = server
    write_toy_detector(root / "toy-inception.pt")
    d = det.load_detector(None, default_url=f"{base}/toy-inception.pt")
    assert d.path == cache / "downloads" / "toy-inception.pt"
    assert d.features(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)).shape == (2, 16)


def test_corrupt_detector_file_is_reported(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"this is not a torchscript archive")
    with pytest.raises(det.DetectorError, match=r"broken\.pt: not a loadable TorchScript detector"):
        det.load_detector(bad)
