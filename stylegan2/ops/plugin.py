"""Build, cache and load our CUDA extensions (``stylegan2/ops/cuda``) on first use.

The kernels are compiled with ``torch.utils.cpp_extension.load`` (ninja + nvcc) the first time an op
runs on a GPU, into ``$ELECTROGAN_CACHE/kernels/<op>-<key>/`` (default ``~/.cache/electrogan``).
The key hashes the op's sources, the torch version, the CUDA version, the target GPU architectures
and the build flags, so a changed source or upgraded torch builds afresh and never loads a stale
binary. Several processes (DDP ranks) starting at once are safe: they take a file lock, one builds
into a private folder and publishes it with an atomic rename, the others wait and load the result.

Before building, :func:`diagnose` checks each requirement (a CUDA build of torch, nvcc of the same
major version, ninja, a C++ compiler, an architecture nvcc supports) and raises
:class:`~stylegan2.ops.backend.KernelUnavailable` with a one-line fix instead of a wall of
compiler output (the most common complaint in StyleGAN2-ADA's issue tracker;
docs/references.md, StyleGAN2-ADA).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from packaging.version import Version

from .backend import KernelUnavailable

CUDA_DIR = Path(__file__).resolve().parent / "cuda"
CACHE_ENV = "ELECTROGAN_CACHE"

#: The extensions we build: op name -> its own source files in ``cuda/`` (every ``*.h`` there is
#: added to each, since headers are shared).
OPS: Dict[str, Sequence[str]] = {
    "bias_act": ("bias_act.cpp", "bias_act.cu"),
    "upfirdn2d": ("upfirdn2d.cpp", "upfirdn2d.cu"),
}

#: Functions each extension must export (checked after loading, so a binding typo is caught).
EXPORTS: Dict[str, Sequence[str]] = {"bias_act": ("bias_act",), "upfirdn2d": ("upfirdn2d",)}

#: Extra nvcc flags. No ``--use_fast_math``: the kernels must reproduce the reference numbers.
NVCC_FLAGS = ("-O3", "-lineinfo")
CXX_FLAGS = ("-O3",)

_lock = threading.Lock()
_loaded: Dict[tuple, object] = {}
_failed: Dict[tuple, KernelUnavailable] = {}


# ----------------------------------------------------------------------------------------------
# Cache location and key


def cache_root() -> Path:
    """Folder holding the built kernels: ``$ELECTROGAN_CACHE/kernels`` or ``~/.cache/electrogan/kernels``."""
    base = os.environ.get(CACHE_ENV)
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "electrogan"
    return root / "kernels"


def source_files(name: str, cuda_dir: Path = CUDA_DIR) -> List[Path]:
    """The files whose content decides op ``name``'s binary: its own sources and every shared header."""
    if name not in OPS:
        raise ValueError(f"unknown CUDA op {name!r}; expected one of {', '.join(OPS)}")
    own = [cuda_dir / f for f in OPS[name]]
    headers = sorted(cuda_dir.glob("*.h"))
    return own + [h for h in headers if h not in own]


def source_digest(name: str, cuda_dir: Path = CUDA_DIR) -> str:
    """SHA-256 over the names and bytes of :func:`source_files` (hex)."""
    h = hashlib.sha256()
    for path in source_files(name, cuda_dir):
        try:
            data = path.read_bytes()
        except OSError as err:
            raise KernelUnavailable(f"CUDA source {path} cannot be read ({err.strerror}); "
                                    f"fix: reinstall electrogan") from err
        h.update(path.name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return h.hexdigest()


def cache_key(name: str, arch_list: str, cuda_dir: Path = CUDA_DIR,
              torch_version: Optional[str] = None, cuda_version: Optional[str] = None) -> str:
    """Folder name ``<op>-<16 hex>`` for op ``name`` built for ``arch_list`` (e.g. ``"8.0;9.0"``).

    Anything that changes the binary is in the hash: sources, torch and CUDA versions, target
    architectures, the Python ABI and our compiler flags.
    """
    parts = {
        "sources": source_digest(name, cuda_dir),
        "torch": torch_version if torch_version is not None else torch.__version__,
        "cuda": cuda_version if cuda_version is not None else str(torch.version.cuda),
        "arch": normalize_arch_list(arch_list),
        "python": f"{sys.implementation.cache_tag}-{sys.platform}",
        "flags": [list(NVCC_FLAGS), list(CXX_FLAGS)],
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return f"{name}-{digest}"


def normalize_arch_list(arch_list: str) -> str:
    """``"9.0 8.0;8.0"`` -> ``"8.0;9.0"``: the canonical form used in the key and in TORCH_CUDA_ARCH_LIST."""
    items = [a for a in re.split(r"[;\s,]+", arch_list.strip()) if a]
    if not items:
        raise ValueError("empty CUDA architecture list")
    for a in items:
        if not re.fullmatch(r"\d+\.\d+[af]?(\+PTX)?", a):
            raise ValueError(f"bad CUDA architecture {a!r}; expected forms like 8.0, 9.0 or 9.0+PTX")
    return ";".join(sorted(set(items), key=lambda a: (Version(re.sub(r"[af]?(\+PTX)?$", "", a)), a)))


# ----------------------------------------------------------------------------------------------
# Diagnosis of the build tools


@dataclass
class Toolchain:
    """What a build needs, found on this machine."""

    cuda_home: Path      # toolkit root (has bin/nvcc and include/cuda_runtime.h)
    nvcc: Path
    nvcc_version: Version
    ninja: Path
    cxx: str
    nvcc_archs: List[int]  # compute capabilities nvcc can target, as 10*major+minor (75, 80, ...)


def _fail(name: str, problem: str, fix: str) -> KernelUnavailable:
    """The one-line error every failure becomes: what is wrong, then how to fix it."""
    return KernelUnavailable(f"CUDA kernels for {name} unavailable: {problem}; fix: {fix}")


def _is_toolkit_root(path: Optional[Path]) -> bool:
    """Whether ``path`` holds a CUDA toolkit: ``bin/nvcc`` and ``include/cuda_runtime.h``."""
    return path is not None and (path / "bin" / _exe("nvcc")).is_file() and \
        (path / "include" / "cuda_runtime.h").is_file()


def _exe(stem: str) -> str:
    """Executable file name on this platform."""
    return stem + (".exe" if os.name == "nt" else "")


def _run(cmd: Sequence[str]) -> str:
    """stdout+stderr of a short tool query ('' when it cannot run)."""
    try:
        res = subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                             text=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return res.stdout or ""


def find_cuda_home() -> Optional[Path]:
    """Root of the CUDA toolkit: $CUDA_HOME, $CUDA_PATH, the folder above ``nvcc`` on PATH, or
    /usr/local/cuda. A ``nvcc`` on PATH that is a wrapper script is followed to the real toolkit
    by asking nvcc itself (its ``--dryrun`` output names its own folder)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value and _is_toolkit_root(Path(value)):
            return Path(value)
    nvcc = shutil.which("nvcc")
    if nvcc:
        guess = Path(nvcc).resolve().parent.parent
        if _is_toolkit_root(guess):
            return guess
        out = _run([nvcc, "--dryrun", "-v", "-c", "electrogan_probe.cu"])
        m = re.search(r"_HERE_=(.+)", out)
        if m and _is_toolkit_root(Path(m.group(1).strip()).parent):
            return Path(m.group(1).strip()).parent
    default = Path("C:/Program Files/NVIDIA GPU Computing Toolkit/CUDA") if os.name == "nt" \
        else Path("/usr/local/cuda")
    return default if _is_toolkit_root(default) else None


def find_ninja() -> Optional[Path]:
    """``ninja`` on PATH, or beside the running interpreter (pip's ninja in an unactivated venv)."""
    found = shutil.which("ninja")
    if found:
        return Path(found)
    beside = Path(sys.executable).parent / _exe("ninja")
    return beside if beside.is_file() else None


def find_cxx() -> Optional[str]:
    """The host C++ compiler that torch will call (``$CXX``, else ``c++``; ``cl`` on Windows)."""
    cxx = os.environ.get("CXX") or ("cl" if os.name == "nt" else "c++")
    return shutil.which(cxx)


def nvcc_version(nvcc: Path) -> Optional[Version]:
    """The ``release X.Y`` that ``nvcc --version`` reports."""
    m = re.search(r"release (\d+\.\d+)", _run([str(nvcc), "--version"]))
    return Version(m.group(1)) if m else None


def nvcc_archs(nvcc: Path) -> List[int]:
    """Compute capabilities nvcc can compile for (``--list-gpu-arch``), e.g. ``[75, 80, 86, 90]``."""
    return sorted({int(m) for m in re.findall(r"compute_(\d+)", _run([str(nvcc), "--list-gpu-arch"]))})


def _arch_number(arch: str) -> int:
    """``"8.6+PTX"`` -> 86."""
    major, minor = re.sub(r"[af]?(\+PTX)?$", "", arch).split(".")
    return int(major) * 10 + int(minor)


def diagnose(name: str, arch_list: str) -> Toolchain:
    """Check every build requirement for op ``name`` targeting ``arch_list``; raise KernelUnavailable
    naming the first one missing and how to fix it, else return the tools found."""
    if getattr(torch.version, "hip", None):
        raise _fail(name, f"torch {torch.__version__} is a ROCm build and our kernels are CUDA-only",
                    "use ELECTROGAN_OPS=reference (the reference ops run on ROCm)")
    if torch.version.cuda is None:
        raise _fail(name, f"torch {torch.__version__} is a CPU-only build",
                    "install a CUDA build of torch (see https://pytorch.org/get-started/locally/)")
    torch_cuda = Version(torch.version.cuda)
    cuda_home = find_cuda_home()
    if cuda_home is None:
        raise _fail(name, "nvcc (the CUDA toolkit compiler) was not found in $CUDA_HOME, $CUDA_PATH, "
                          "on PATH or in /usr/local/cuda",
                    f"install the CUDA {torch_cuda.major}.x toolkit and set CUDA_HOME to it")
    nvcc = cuda_home / "bin" / _exe("nvcc")
    version = nvcc_version(nvcc)
    if version is None:
        raise _fail(name, f"{nvcc} does not run or does not report its version",
                    f"reinstall the CUDA {torch_cuda.major}.x toolkit")
    if version.major != torch_cuda.major:
        raise _fail(name, f"nvcc {version} ({nvcc}) does not match the CUDA {torch_cuda} that torch "
                          f"{torch.__version__} was built with",
                    f"install the CUDA {torch_cuda.major}.x toolkit and point CUDA_HOME at it, or install "
                    f"a torch built for CUDA {version.major}")
    ninja = find_ninja()
    if ninja is None:
        raise _fail(name, "ninja (the build tool torch uses for extensions) was not found",
                    "pip install ninja")
    cxx = find_cxx()
    if cxx is None:
        want = os.environ.get("CXX") or ("cl" if os.name == "nt" else "c++")
        raise _fail(name, f"no C++ compiler ({want!r}) was found",
                    "install Visual Studio Build Tools" if os.name == "nt"
                    else "install g++ (e.g. apt install build-essential) or set CXX")
    archs = nvcc_archs(nvcc)
    if archs:
        for arch in normalize_arch_list(arch_list).split(";"):
            number = _arch_number(arch)
            if number < archs[0]:
                raise _fail(name, f"GPU architecture sm_{number} is older than nvcc {version} supports "
                                  f"(sm_{archs[0]} and newer)",
                            "install an older CUDA toolkit (and a torch built for it) or use "
                            "ELECTROGAN_OPS=reference")
            if number > archs[-1] and not arch.endswith("+PTX"):
                raise _fail(name, f"GPU architecture sm_{number} is newer than nvcc {version} knows "
                                  f"(up to sm_{archs[-1]})",
                            "install a newer CUDA toolkit (and a torch built for it)")
    return Toolchain(cuda_home, nvcc, version, ninja, cxx, archs)


def arch_for_device(device, archs: Sequence[int] = ()) -> str:
    """TORCH_CUDA_ARCH_LIST entry for ``device`` (e.g. ``"9.0"``). A GPU newer than nvcc knows gets
    PTX for the newest known architecture, which the driver compiles for the GPU at load time."""
    major, minor = torch.cuda.get_device_capability(device)
    number = major * 10 + minor
    if archs and number > max(archs):
        newest = max(archs)
        return f"{newest // 10}.{newest % 10}+PTX"
    return f"{major}.{minor}"


def arch_list_covers(arch_list: str, capability) -> bool:
    """Whether code built for ``arch_list`` runs on a GPU of compute ``capability`` ``(major, minor)``:
    an exact (or same-major, lower-minor) binary, or PTX of an architecture not newer than it."""
    number = capability[0] * 10 + capability[1]
    for arch in normalize_arch_list(arch_list).split(";"):
        built = _arch_number(arch)
        if arch.endswith("+PTX") and built <= number:
            return True
        if built // 10 == number // 10 and built <= number and not re.search(r"[af](\+PTX)?$", arch):
            return True
        if re.search(r"[af](\+PTX)?$", arch) and built == number:
            return True
    return False


# ----------------------------------------------------------------------------------------------
# Build, publish, load


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock between processes (``flock``: released by the OS if a process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        try:
            import fcntl
        except ImportError:  # Windows: the atomic rename below still keeps the cache consistent
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def library_path(name: str, arch_list: str, root: Optional[Path] = None) -> Optional[Path]:
    """The published library of op ``name`` built for ``arch_list`` under ``root``, or None if not built."""
    root = Path(root) if root is not None else cache_root()
    return _library_in(root / cache_key(name, normalize_arch_list(arch_list)), f"electrogan_{name}")


def _library_in(folder: Path, module_name: str) -> Optional[Path]:
    """The extension library in a published cache folder (``.so`` on Linux, ``.pyd`` on Windows)."""
    for suffix in (".so", ".pyd"):
        candidate = folder / (module_name + suffix)
        if candidate.is_file():
            return candidate
    return None


def _import_library(module_name: str, library: Path):
    """Import a built extension from its file (once per process)."""
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, library)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {library}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[module_name] = module
    return module


def _check_exports(name: str, module) -> None:
    """Fail clearly when a library lacks a function we call (a stale or foreign build)."""
    missing = [fn for fn in EXPORTS[name] if not hasattr(module, fn)]
    if missing:
        raise _fail(name, f"the built extension lacks {', '.join(missing)}",
                    f"delete {cache_root()} and retry; report a bug if it persists")


@contextlib.contextmanager
def _build_environment(arch_list: str, tools: Toolchain) -> Iterator[None]:
    """TORCH_CUDA_ARCH_LIST, CUDA_HOME and PATH (for ninja) as the build needs them, restored after."""
    saved = {k: os.environ.get(k) for k in ("TORCH_CUDA_ARCH_LIST", "CUDA_HOME", "PATH")}
    from torch.utils import cpp_extension
    saved_home = cpp_extension.CUDA_HOME
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    os.environ["CUDA_HOME"] = str(tools.cuda_home)
    # torch picks its toolkit root once, at import; when that guess is not a toolkit (a wrapper
    # script named nvcc on PATH, say) point it at the one we verified.
    if not _is_toolkit_root(Path(saved_home) if saved_home else None):
        cpp_extension.CUDA_HOME = str(tools.cuda_home)
    path = os.environ.get("PATH", "")
    if str(tools.ninja.parent) not in path.split(os.pathsep):
        os.environ["PATH"] = str(tools.ninja.parent) + os.pathsep + path
    try:
        yield
    finally:
        cpp_extension.CUDA_HOME = saved_home
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _explain_build_error(name: str, err: Exception, log: Path) -> KernelUnavailable:
    """Reduce torch's build error (the whole ninja log) to its first compiler error and a fix."""
    text = str(err)
    lines = [ln.strip() for ln in text.splitlines()[1:]]
    errors = [ln for ln in lines if re.search(r"(fatal )?error( [A-Z]+\d+)?\s*:", ln, re.I)]
    first = errors[0] if errors else (text.strip().splitlines() or ["unknown error"])[0]
    if len(first) > 200:
        first = first[:200] + "..."
    if "unsupported GNU version" in text or "unsupported Microsoft Visual Studio" in text:
        fix = "install a host compiler this nvcc supports and set CXX (or NVCC_PREPEND_FLAGS='-ccbin <g++-N>')"
    else:
        fix = f"read the full log in {log}"
    return _fail(name, f"compilation failed ({first})", fix)


def build(name: str, arch_list: str, root: Optional[Path] = None, verbose: bool = False):
    """Compile op ``name`` for ``arch_list`` (or load it from the cache) and return the module.

    Needs no GPU, only the toolchain; :func:`load` calls this with the device's architecture and
    ``python -m stylegan2.ops.compile_check`` with an explicit list.
    """
    arch_list = normalize_arch_list(arch_list)
    root = Path(root) if root is not None else cache_root()
    module_name = f"electrogan_{name}"
    key = cache_key(name, arch_list)
    final = root / key
    library = _library_in(final, module_name)
    if library is not None:
        return _import_loaded(name, module_name, library)
    tools = diagnose(name, arch_list)
    with _file_lock(root / f"{key}.lock"):
        library = _library_in(final, module_name)
        if library is not None:  # another process built it while we waited for the lock
            return _import_loaded(name, module_name, library)
        staging = root / f".{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        staging.mkdir(parents=True)
        try:
            for src in source_files(name):
                shutil.copy2(src, staging / src.name)
            print(f"electrogan: compiling CUDA kernels for {name} (sm {arch_list}; first use, about a "
                  f"minute) into {final}", file=sys.stderr, flush=True)
            from torch.utils import cpp_extension
            start = time.monotonic()
            with _build_environment(arch_list, tools):
                try:
                    module = cpp_extension.load(
                        name=module_name,
                        sources=[str(staging / f) for f in OPS[name]],
                        extra_cflags=list(CXX_FLAGS),
                        extra_cuda_cflags=list(NVCC_FLAGS),
                        build_directory=str(staging),
                        verbose=verbose,
                    )
                except Exception as err:  # compiler errors arrive as RuntimeError with the log
                    log = root / f"{key}.failed.log"
                    from ..misc import atomic_write_text
                    atomic_write_text(log, str(err))
                    raise _explain_build_error(name, err, log) from err
            _check_exports(name, module)
            meta = {"op": name, "arch": arch_list, "torch": torch.__version__, "cuda": torch.version.cuda,
                    "nvcc": str(tools.nvcc_version), "seconds": round(time.monotonic() - start, 1),
                    "built": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
            (staging / "build.json").write_text(json.dumps(meta, indent=1))
            try:
                os.rename(staging, final)  # atomic publish; fails if someone else already did
            except OSError:
                pass
            return module
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _import_loaded(name: str, module_name: str, library: Path):
    """Import a cached build; a library that no longer loads (e.g. a changed driver) says how to rebuild."""
    try:
        module = _import_library(module_name, library)
    except ImportError as err:
        raise _fail(name, f"the cached kernel {library} does not load ({err})",
                    f"delete {library.parent} so that it is rebuilt") from err
    _check_exports(name, module)
    return module


def load(name: str, device=None):
    """The extension for op ``name`` on CUDA ``device``: built once per machine, loaded once per process.

    A failure is remembered too, so a missing toolkit costs one diagnosis, not one per call.
    """
    index = torch.cuda.current_device() if device is None or getattr(device, "index", None) is None \
        else device.index
    slot = (name, index)
    module = _loaded.get(slot)  # the per-call fast path: no lock, no device query
    if module is not None:
        return module
    with _lock:
        if slot in _loaded:
            return _loaded[slot]
        if slot in _failed:
            raise _failed[slot]
        try:
            override = os.environ.get("TORCH_CUDA_ARCH_LIST")
            if override:
                try:
                    arch_list = normalize_arch_list(override)
                except ValueError as err:
                    raise _fail(name, f"TORCH_CUDA_ARCH_LIST={override!r} is not understood ({err})",
                                "list numbers such as '8.6' or '9.0+PTX', or unset it to build for this GPU")
                if not arch_list_covers(arch_list, torch.cuda.get_device_capability(index)):
                    major, minor = torch.cuda.get_device_capability(index)
                    raise _fail(name, f"TORCH_CUDA_ARCH_LIST={override!r} has no code for this GPU (sm_{major}{minor})",
                                f"add {major}.{minor} to it, or unset it to build for this GPU")
            else:
                cuda_home = find_cuda_home()
                archs = nvcc_archs(cuda_home / "bin" / _exe("nvcc")) if cuda_home else []
                arch_list = arch_for_device(index, archs)
            module = build(name, arch_list)
        except KernelUnavailable as err:
            _failed[slot] = err
            raise
        except Exception as err:  # anything else (disk full, bad permissions) also means "unavailable"
            wrapped = _fail(name, f"{type(err).__name__}: {err}".splitlines()[0],
                            f"check that {cache_root()} is writable or set {CACHE_ENV}")
            _failed[slot] = wrapped
            raise wrapped from err
        _loaded[slot] = module
        return module


def reset() -> None:
    """Forget loaded modules and remembered failures (tests; after installing a toolkit)."""
    with _lock:
        _loaded.clear()
        _failed.clear()
