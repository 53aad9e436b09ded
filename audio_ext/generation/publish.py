"""All-or-nothing output folders: stage files in a hidden folder, then publish them together.

``gen_audio.py`` writes every file of a run into a hidden staging folder inside ``--outdir``
(``.gen_audio-<host>-<pid>-<random>``, same file system, so moves are renames) and publishes them
only when the whole run succeeded:

1. every file of ``outdir`` that the run will replace is hard-linked (copied where the file
   system has no hard links) into the staging folder's ``.old/`` first: the old file stays in
   place, and nothing has changed yet if this fails;
2. each new file is moved over its old name with ``os.replace`` (atomic per file);
3. if a move fails (or the run is stopped) half-way, the moved files are rolled back: the old
   versions come back from ``.old/``, names that did not exist before are removed.

So after :func:`publish` returns or raises, ``outdir`` holds either every new file or exactly
what it held before. If even the roll-back fails (the disk died), :class:`PublishError` says so
and the staging folder, which then holds the old files, is kept and named in the message.

SIGINT, SIGTERM and SIGHUP are turned into an :class:`Interrupted` exception by
:func:`stop_on_signals` (installed by the command-line script), so ``finally`` blocks remove the
staging folder; during the publish step and the clean-up they are held back until that step is
complete (:func:`held_signals`). Staging folders left by
processes that died without cleaning up (``kill -9``, power loss) are removed by the next run
into the same folder on the same host (:func:`remove_stale_staging`), unless their ``.old/``
holds the only copy of a replaced file (killed while publishing): those are kept and named.
"""
from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import signal
import socket
import tempfile
import threading
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

#: Name prefix of staging folders inside an output folder.
STAGING_PREFIX = ".gen_audio-"
#: Folder inside the staging folder that holds links to the files a publish replaces.
BACKUP_NAME = ".old"
#: Signals that stop a run cleanly: Ctrl-C, kill's default, a closed terminal.
STOP_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s)


class PublishError(Exception):
    """Publishing failed; ``outdir`` was restored unless the message says otherwise (one line)."""

    def __init__(self, message: str, keep_staging: bool = False) -> None:
        super().__init__(message)
        self.keep_staging = keep_staging


class Interrupted(BaseException):
    """A stop signal arrived (SIGINT, SIGTERM, SIGHUP); a BaseException so ``except Exception`` does not
    swallow it. ``completed`` is True when it was held back until the output was published."""

    def __init__(self, signum: int, completed: bool = False) -> None:
        super().__init__(f"{signal.Signals(signum).name} received")
        self.signum = int(signum)
        self.completed = completed


_held: List[int] = []      # signals that arrived inside held_signals()
_holding = [0]             # nesting depth of held_signals()


def _on_signal(signum, frame) -> None:
    if _holding[0]:
        _held.append(signum)
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[None]:
    """Turn ``signals`` into :class:`Interrupted` inside the block (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, _on_signal) for s in signals}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def held_signals(completed: bool = False) -> Iterator[None]:
    """Hold back the stop signals of :func:`stop_on_signals` until the block is done, then raise
    :class:`Interrupted` (with ``completed``: the block's work is done). If the block itself fails,
    its exception wins and the held signal is dropped (the run stops either way)."""
    _holding[0] += 1
    try:
        yield
    except BaseException:
        if _holding[0] == 1:
            _held.clear()
        raise
    finally:
        _holding[0] -= 1
    if not _holding[0] and _held:
        signum = _held[0]
        _held.clear()
        raise Interrupted(signum, completed=completed)


def _host() -> str:
    return "".join(c for c in socket.gethostname().split(".")[0] if c.isalnum()) or "host"


def make_staging(outdir: Path) -> Path:
    """A new hidden staging folder inside ``outdir`` named after this host and process."""
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{_host()}-{os.getpid()}-", dir=outdir))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True     # another user's process (or an odd number): not ours to judge
    return True


def _only_copies(backup: Path, outdir: Path) -> bool:
    """True when every file in ``backup`` (a staging folder's ``.old/``) is still in ``outdir`` as it was."""
    try:
        for old in backup.iterdir():
            current = outdir / old.name
            if not current.exists():
                return False
            if not (os.path.samefile(old, current) or filecmp.cmp(old, current, shallow=False)):
                return False
    except OSError:
        return False
    return True


def remove_stale_staging(outdir: Path) -> Tuple[List[Path], List[Path]]:
    """Remove staging folders in ``outdir`` left by dead processes of this host; return (removed, kept).

    A folder of a live process (a run going on in parallel), of another host, or with a name
    this module did not make is left alone. So is one whose ``.old/`` holds the only remaining
    copy of a file (a process killed with SIGKILL in the middle of publishing): it is returned in
    ``kept`` so that the caller can point the user at it.
    """
    removed: List[Path] = []
    kept: List[Path] = []
    try:
        entries = list(Path(outdir).iterdir())
    except OSError:
        return removed, kept
    host = _host()
    for entry in entries:
        if not entry.name.startswith(STAGING_PREFIX) or entry.is_symlink() or not entry.is_dir():
            continue
        parts = entry.name[len(STAGING_PREFIX):].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        if int(parts[1]) == os.getpid() or _pid_alive(int(parts[1])):
            continue
        backup = entry / BACKUP_NAME
        if backup.is_dir() and not _only_copies(backup, Path(outdir)):
            kept.append(entry)
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
    return removed, kept


def _keep_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes a second name (hard link) or a copy of ``src``; ``src`` is not touched."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def publish(staging: Path, outdir: Path) -> List[Path]:
    """Move every file of ``staging`` into ``outdir``, all or nothing (see the module docstring).

    Returns the published paths. Raises :class:`PublishError` (``outdir`` restored) when a file
    cannot be published, or with ``keep_staging`` set when even the roll-back failed.
    """
    staging, outdir = Path(staging), Path(outdir)
    items = sorted(p for p in staging.iterdir() if p.name != BACKUP_NAME)
    backup = staging / BACKUP_NAME
    with held_signals(completed=True):
        existed = set()
        try:
            backup.mkdir(exist_ok=True)
            for item in items:
                target = outdir / item.name
                if target.is_dir() and not target.is_symlink():
                    raise PublishError(f"--outdir {outdir}: {item.name} is a folder there; cannot replace it "
                                       f"with a file (nothing was changed)")
                if target.exists() or target.is_symlink():
                    _keep_copy(target, backup / item.name)
                    existed.add(item.name)
        except OSError as e:
            raise PublishError(f"--outdir {outdir}: cannot keep a copy of {e.filename or 'a file'} before "
                               f"replacing it ({e.strerror or e}); nothing was changed") from None
        moved: List[str] = []
        try:
            for item in items:
                os.replace(item, outdir / item.name)
                moved.append(item.name)
        except BaseException as e:
            failed = _roll_back(moved, existed, backup, outdir)
            why = e.strerror if isinstance(e, OSError) and e.strerror else (str(e) or type(e).__name__)
            if failed:
                raise PublishError(f"--outdir {outdir}: moving the new files failed ({why}) and {len(failed)} "
                                   f"file(s) could not be restored (first: {failed[0]}); the old versions are in "
                                   f"{backup}", keep_staging=True) from None
            if isinstance(e, Exception):
                raise PublishError(f"--outdir {outdir}: moving the new files into place failed ({why}); "
                                   f"the folder was restored as it was") from None
            raise
    return [outdir / item.name for item in items]


def _roll_back(moved: List[str], existed: set, backup: Path, outdir: Path) -> List[str]:
    """Undo the moves of ``moved``; returns the names that could not be restored."""
    failed = []
    for name in reversed(moved):
        try:
            if name in existed:
                os.replace(backup / name, outdir / name)
            else:
                os.unlink(outdir / name)
        except OSError:
            failed.append(name)
    return failed
