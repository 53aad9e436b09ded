"""Small helpers shared by several layers: atomic file writes and reproducible seeding."""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or exception leaves any existing file at ``path`` untouched and no partial file behind.
    ``suffix`` is given to the temp name so writers that infer a format from it keep working.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temp_file(path.parent, f".{path.name}.", (suffix or path.suffix) + ".tmp")
    try:
        yield tmp_path
        if tmp_path.exists():
            try:    # a replaced file keeps its permissions; a new one has what open() gives (0666 less umask)
                os.chmod(tmp_path, path.stat().st_mode & 0o7777)
            except FileNotFoundError:
                pass
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _create_temp_file(folder: Path, prefix: str, suffix: str) -> Path:
    """Create a new empty file ``folder/prefix<random>suffix`` and return its path.

    Opened with ``O_CREAT | O_EXCL`` and mode 0666, which the kernel reduces by the umask, so the
    file gets the mode an ordinary ``open()`` gives without reading the umask: ``os.umask`` can only
    be read by setting it, and setting it races with every other thread creating files.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        name = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(name, flags, 0o666))
            return name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(folder))


def _naming(e: OSError, path: PathLike) -> OSError:
    """``e`` as an OSError of the same errno that names ``path`` (a failed write to a temporary file
    should name the file the user asked for)."""
    return OSError(e.errno, e.strerror or str(e), str(path))


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + rename); a failed write
    (full disk, quota) is an OSError naming ``path``."""
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise _naming(e, path) from None


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


class _RecordingWriter:
    """A binary file for ``torch.save`` that remembers the OSError of a failed write: torch's zip
    writer turns it into a RuntimeError (``unexpected pos 704 vs 598``) that names neither the
    file nor the cause."""

    def __init__(self, f) -> None:
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def atomic_torch_save(path: PathLike, obj) -> None:
    """``torch.save(obj)`` to ``path`` atomically and fsynced; a failed write (full disk, quota,
    read-only) is the ``OSError`` itself, naming ``path``, with no partial file left behind."""
    import torch
    with atomic_path(path) as tmp:
        writer = None
        try:
            with open(tmp, "wb") as f:
                writer = _RecordingWriter(f)
                torch.save(obj, writer)
                f.flush()
                os.fsync(f.fileno())
        except (RuntimeError, OSError) as e:
            cause = (writer.error if writer is not None else None) or (e if isinstance(e, OSError) else None) \
                or (e.__context__ if isinstance(e.__context__, OSError) else None)
            if cause is None:
                raise
            raise _naming(cause, path) from None
