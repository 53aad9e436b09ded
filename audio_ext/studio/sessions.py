"""Sessions of the studio: one per browser (a random id in a cookie), each with its own temporary folder.

A session holds the clips, uploads and projections it made, addressed by opaque random ids; the
server looks ids up in these tables and never builds a file path from a request. A session that is
idle for ``ttl_s`` seconds is removed with its folder, and so is every session when the app stops.
"""
from __future__ import annotations

import dataclasses
import re
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

#: Session ids, clip ids, job ids: url-safe random tokens of this many bytes (hex: twice as many characters).
TOKEN_BYTES = 12
TOKEN_RE = re.compile(r"^[0-9a-f]{%d}$" % (2 * TOKEN_BYTES))
#: Idle time after which a session and its files are removed, seconds.
DEFAULT_TTL_S = 2 * 3600.0


def new_token() -> str:
    """A random hex id (96 bits): not guessable, so one session cannot name another's files."""
    return secrets.token_hex(TOKEN_BYTES)


@dataclasses.dataclass
class Clip:
    """One playable result: audio file (16-bit WAV), spectrogram PNG and how to make it again.

    ``filename`` is the name gen_audio.py gives the same file (seed, loop and BPM in it); ``recipe``
    holds the generation options that make it again (empty for clips the studio cannot re-render,
    such as uploads' targets); ``command`` is the exact command line that reproduces it.
    """

    id: str
    title: str
    kind: str
    audio: Path
    image: Optional[Path]
    filename: str
    seconds: float
    sample_rate: int
    bpm: Optional[float]
    seed: Optional[int]
    command: str
    recipe: dict = dataclasses.field(default_factory=dict)
    group: Optional[str] = None   # the job that made it (a mixing grid's cells share one)

    def public(self) -> dict:
        """What the page sees: no file system paths."""
        return {"id": self.id, "title": self.title, "kind": self.kind, "filename": self.filename,
                "seconds": round(self.seconds, 4), "sample_rate": self.sample_rate, "bpm": self.bpm,
                "seed": self.seed, "command": self.command, "group": self.group,
                "loopable": self.bpm is not None, "has_image": self.image is not None,
                "projection": bool(self.recipe.get("projected_w")) and not self.recipe.get("variations")}


@dataclasses.dataclass
class Upload:
    """A file the user sent (a track, or ``kind`` 'latent': a projected_w.npz), stored under an opaque id;
    ``name`` is the sanitised original file name."""

    id: str
    path: Path
    name: str
    seconds: float
    kind: str = "audio"


class Session:
    """The clips and uploads of one browser; ``folder`` is its private temporary folder."""

    def __init__(self, sid: str, folder: Path):
        self.id = sid
        self.folder = folder
        self.clips: Dict[str, Clip] = {}
        self.uploads: Dict[str, Upload] = {}
        self.live: Dict[str, object] = {}
        self.engine = None    # a network this session opened itself (None: the app's)
        self.last_seen = time.monotonic()
        self.lock = threading.Lock()

    def new_folder(self, prefix: str) -> Path:
        """A fresh folder inside the session's folder (one per job)."""
        path = self.folder / f"{prefix}-{new_token()[:12]}"
        path.mkdir()
        return path

    def add_clip(self, clip: Clip) -> Clip:
        with self.lock:
            self.clips[clip.id] = clip
        return clip

    def clip(self, cid: str) -> Optional[Clip]:
        with self.lock:
            return self.clips.get(cid)

    def clip_list(self) -> List[Clip]:
        with self.lock:
            return list(self.clips.values())

    def add_upload(self, upload: Upload) -> Upload:
        with self.lock:
            self.uploads[upload.id] = upload
        return upload

    def upload(self, uid: str) -> Optional[Upload]:
        with self.lock:
            return self.uploads.get(uid)


class SessionStore:
    """All sessions of the app, each in a folder under one temporary root that :meth:`close` removes."""

    def __init__(self, ttl_s: float = DEFAULT_TTL_S, root: Optional[Path] = None, on_expire=None):
        self.root = Path(tempfile.mkdtemp(prefix="electrogan-studio-", dir=root))
        self.ttl_s = float(ttl_s)
        self.on_expire = on_expire       # called with each removed Session (cancel its jobs, stop its streams)
        self._sessions: Dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self) -> Session:
        sid = new_token()
        folder = self.root / sid
        folder.mkdir()
        session = Session(sid, folder)
        with self._lock:
            self._sessions[sid] = session
        return session

    def get(self, sid: Optional[str]) -> Optional[Session]:
        """The live session with this id (its idle clock restarted), or None."""
        if not sid or not TOKEN_RE.match(sid):
            return None
        with self._lock:
            session = self._sessions.get(sid)
        if session is not None:
            session.last_seen = time.monotonic()
        return session

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def expire(self, now: Optional[float] = None) -> List[str]:
        """Remove the sessions idle for longer than the ttl; returns their ids."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [s for s in self._sessions.values() if now - s.last_seen > self.ttl_s]
            for s in old:
                del self._sessions[s.id]
        for s in old:
            self._remove(s)
        return [s.id for s in old]

    def _remove(self, session: Session) -> None:
        if self.on_expire is not None:
            self.on_expire(session)
        shutil.rmtree(session.folder, ignore_errors=True)

    def close(self) -> None:
        """Remove every session and the root folder."""
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            self._remove(s)
        shutil.rmtree(self.root, ignore_errors=True)
