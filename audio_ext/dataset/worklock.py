"""One build at a time per destination: a lock file in the work folder naming its holder.

Two ``dataset_tool_audio.py`` runs writing the same ``--dest`` would share the work folder
``<dest>.partial/`` and the temporary names beside the destination, and each would clean up the
other's files. :class:`WorkLock` makes the second run stop with one line naming the holder
(pid, host, start time) instead.

The lock is the file ``<work>/lock``: opened (created if missing) and locked with ``flock``,
which the kernel releases when the holder dies, even by ``kill -9``; while held, the file says
who holds it (JSON: ``pid``, ``host``, ``started``). A lock file left by a dead process is taken
over with a message. A holder recorded on another host (a shared file system may not carry
``flock`` between hosts), or a live process that does not hold the kernel lock (a pid reused after
a reboot), is never taken over: the message names the file to delete once that run is known to be
gone.
"""
from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Callable, Optional

from audio_ext.dataset.archive import ArchiveError

LOCK_NAME = "lock"


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one we may not signal counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(info: dict) -> str:
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {info.get('started', '?')}"


class WorkLock:
    """Exclusive lock on a work folder; use as a context manager (``acquire`` / ``release``).

    ``log`` receives the one line said when a stale lock is taken over.
    """

    def __init__(self, work: os.PathLike, log: Optional[Callable[[str], None]] = None) -> None:
        self.work = Path(work)
        self.path = self.work / LOCK_NAME
        self.log = log or (lambda line: None)
        self._fd: Optional[int] = None

    def _read(self, fd: int) -> dict:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            data = os.read(fd, 4096)
            info = json.loads(data.decode("utf-8")) if data.strip() else {}
            return info if isinstance(info, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "WorkLock":
        for _ in range(20):
            try:
                self.work.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise ArchiveError(f"{self.work}: cannot create the work folder's lock ({e.strerror or e})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = self._read(fd)
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ArchiveError(f"{self.path}: cannot lock ({e.strerror or e})") from None
                raise ArchiveError(f"{self.work}: in use by another build ({_describe(holder)}); "
                                   "wait for it to finish or stop it") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed the file between our open and our lock: try again
                os.close(fd)
                continue
            previous = self._read(fd)
            host = socket.gethostname()
            if previous:
                pid = int(previous.get("pid", 0) or 0)
                if previous.get("host") != host:
                    os.close(fd)
                    raise ArchiveError(f"{self.work}: locked by a build on another host ({_describe(previous)}); "
                                       f"if it is no longer running, delete {self.path}")
                if pid != os.getpid() and _pid_alive(pid):
                    # The kernel lock is free, yet the recorded process lives: a file system without
                    # flock, or the pid was reused after a reboot. Do not guess; say how to decide.
                    os.close(fd)
                    raise ArchiveError(f"{self.work}: the lock names a running process ({_describe(previous)}); "
                                       f"if that is not a build of this destination, delete {self.path}")
                self.log(f"{self.work}: taking over the lock of a build that is no longer running "
                         f"({_describe(previous)})")
            info = {"pid": os.getpid(), "host": host,
                    "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
            try:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
            except OSError as e:
                os.close(fd)
                raise ArchiveError(f"{self.path}: cannot write the lock ({e.strerror or e})") from None
            self._fd = fd
            return self
        raise ArchiveError(f"{self.path}: could not take the lock (the file keeps being replaced)")

    def release(self) -> None:
        """Delete the lock file (if it is still ours) and unlock."""
        if self._fd is None:
            return
        try:
            if os.path.exists(self.path) and os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "WorkLock":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()
