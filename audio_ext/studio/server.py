"""The studio's web server: standard library only (:class:`http.server.ThreadingHTTPServer`), JSON API + page.

Listens on 127.0.0.1 unless told otherwise. The page's three files are read into memory at start
and served by name; everything else goes through ``/api/`` and addresses clips, jobs, uploads and
live streams by opaque ids looked up in the caller's session (a random id in the
``electrogan_studio`` cookie), so no part of a request ever becomes a file path, and one session
cannot see another's files. Uploads are refused from their Content-Length before a byte is read
when they exceed :data:`MAX_UPLOAD`. Every refused request gets a 4xx answer with
``{"error": "<one line>"}``, which the page shows; a failing job fails alone.

API (JSON bodies and answers unless noted):

- ``GET /api/info``: the network (resolution, rate, tempo, classes, layer groups).
- ``GET /api/clips``: the session's clips. ``GET /api/clips/<id>/audio`` (WAV, range requests),
  ``/image`` (PNG), ``/download?format=wav|flac`` (attachment named like gen_audio.py's file).
- ``POST /api/jobs`` ``{"kind": "seeds|loop|mix|walk|project|variations", ...}`` (:mod:`.actions`)
  -> ``{"job": id}``; ``GET /api/jobs/<id>`` (state, progress, clips, result, version;
  ``?after=V`` waits until the version passes V: long polling);
  ``POST /api/jobs/<id>/cancel``.
- ``POST /api/upload?name=FILE`` (the raw file as the body) -> ``{"upload": id, "seconds": ...}``; a
  ``.npz`` is a projected latent (checked against the network: ``{"upload": id, "latent": true}``), a
  ``.pkl`` a network snapshot that becomes the session's own (``{"network": info}``).
- ``POST /api/live`` -> ``{"live": id, "sample_rate": ...}``; ``GET /api/live/<id>/chunk/<n>``
  (little-endian float32 PCM); ``POST /api/live/<id>/steer``; ``POST /api/live/<id>/stop``.
"""
from __future__ import annotations

import http.cookies
import http.server
import io
import json
import re
import shutil
import threading
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from audio_ext.studio import actions
from audio_ext.studio.jobs import JobQueue
from audio_ext.studio.live import LiveError, LiveStream
from audio_ext.studio.sessions import DEFAULT_TTL_S, SessionStore, Upload, new_token

#: Largest upload accepted, bytes (a 5-minute WAV at 44.1 kHz stereo 16-bit is about 53 MB).
MAX_UPLOAD = 64 * 1024 * 1024
#: Largest JSON body accepted, bytes.
MAX_JSON = 64 * 1024
#: Live streams at once, over all sessions (each one keeps a thread generating).
MAX_LIVE = 4
COOKIE = "electrogan_studio"
#: Longest a ``GET /api/jobs/<id>?after=V`` waits for the job to change, seconds.
JOB_WAIT_S = 15.0
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/studio.js": ("studio.js", "text/javascript; charset=utf-8"),
          "/studio.css": ("studio.css", "text/css; charset=utf-8")}
ID = r"([0-9a-f]{%d})" % len(new_token())


class StudioApp:
    """The engine, the sessions, the job queue and the live streams of one running studio."""

    def __init__(self, engine, ttl_s: float = DEFAULT_TTL_S, max_upload: int = MAX_UPLOAD,
                 log: Callable[[str], None] = print, janitor_s: float = 60.0):
        self.engine = engine
        self.max_upload = int(max_upload)
        self.log = log
        self.jobs = JobQueue(log=log)
        self.sessions = SessionStore(ttl_s=ttl_s, on_expire=self._session_gone)
        folder = Path(__file__).parent / "assets"
        self.assets = {name: (folder / name).read_bytes() for name, _ in ASSETS.values()}
        self.info = engine.info()
        engine.warm_up()
        self.live_lock = threading.Lock()
        self._stop = threading.Event()
        self._janitor = threading.Thread(target=self._expire_loop, args=(janitor_s,), name="studio-janitor",
                                         daemon=True)
        self._janitor.start()

    def _expire_loop(self, every: float) -> None:
        while not self._stop.wait(every):
            for sid in self.sessions.expire():
                self.log(f"session {sid[:6]} expired; its files were removed")

    def _session_gone(self, session) -> None:
        self.jobs.cancel_session(session.id)
        for stream in list(session.live.values()):
            stream.stop()

    def live_count(self) -> int:
        return sum(1 for s in self.sessions._sessions.values() for x in s.live.values() if not x.stopped.is_set())

    def close(self) -> None:
        """Stop jobs and streams, remove every session's files."""
        self._stop.set()
        self.jobs.stop(timeout=10.0)
        self.sessions.close()
        self.engine.close()


class StudioHandler(http.server.BaseHTTPRequestHandler):
    """Routes of the module docstring; ``app`` is set on a subclass by :func:`make_server`."""

    app: StudioApp
    protocol_version = "HTTP/1.1"
    server_version = "ElectroGANStudio/1"
    disable_nagle_algorithm = True   # headers and body go out in two writes: without this, 40 ms per answer

    # ------------------------------------------------------------------------------------ plumbing

    def _session(self):
        """(session, new cookie value or None): the caller's session, a fresh one when it has none."""
        cookie = http.cookies.SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie", ""))
        except http.cookies.CookieError:
            pass
        sid = cookie[COOKIE].value if COOKIE in cookie else None
        session = self.app.sessions.get(sid)
        if session is None:
            session = self.app.sessions.create()
            return session, session.id
        return session, None

    def _send(self, status: int, body: bytes, ctype: str, headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if self._cookie:
            self.send_header("Set-Cookie", f"{COOKIE}={self._cookie}; Path=/; HttpOnly; SameSite=Strict")
        if self.close_connection:   # say so, or a browser may send its next request into the closed socket
            self.send_header("Connection", "close")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _body_json(self) -> dict:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise actions.RequestError("Content-Length is required", 411)
        n = int(length)
        if n > MAX_JSON:
            self.close_connection = True
            raise actions.RequestError(f"request body larger than {MAX_JSON} bytes", 413)
        raw = self.rfile.read(n) if n else b"{}"
        self._body_read = True
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise actions.RequestError("the body is not JSON") from None
        if not isinstance(body, dict):
            raise actions.RequestError("the body must be a JSON object")
        return body

    def _dispatch(self, routes) -> None:
        self._cookie = None
        self._body_read = False
        try:
            url = urlsplit(self.path)
            self.query = parse_qs(url.query)
            session, self._cookie = self._session()
            for pattern, fn in routes:
                m = re.fullmatch(pattern, url.path)
                if m:
                    return fn(session, *m.groups())
            if url.path in ASSETS and self.command in ("GET", "HEAD"):
                name, ctype = ASSETS[url.path]
                return self._send(200, self.app.assets[name], ctype)
            if self.command == "POST" and self.headers.get("Content-Length", "0") != "0":
                self.close_connection = True  # an unread body would be taken for the next request
            return self._error(404, f"no such address: {url.path[:80]}")
        except actions.RequestError as e:
            if self.command == "POST" and not self._body_read:
                self.close_connection = True   # the unread body would be taken for the next request
            return self._error(e.status, str(e))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug answers 500 and is logged; the server goes on
            import traceback
            self.app.log(f"studio: {self.command} {self.path[:80]}:\n{traceback.format_exc()}")
            self.close_connection = True
            try:
                self._error(500, f"internal error: {type(e).__name__}: {e}".splitlines()[0])
            except OSError:
                pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch([
            (r"/api/info", self.get_info),
            (r"/api/clips", self.get_clips),
            (rf"/api/clips/{ID}/(audio|image|download)", self.get_clip_file),
            (rf"/api/jobs/{ID}", self.get_job),
            (rf"/api/live/{ID}/chunk/(\d{{1,9}})", self.get_live_chunk),
        ])

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch([
            (r"/api/jobs", self.post_job),
            (rf"/api/jobs/{ID}/cancel", self.post_cancel),
            (r"/api/upload", self.post_upload),
            (r"/api/live", self.post_live),
            (rf"/api/live/{ID}/(steer|stop)", self.post_live_control),
        ])

    def _method_not_allowed(self) -> None:
        self._cookie = None
        self.close_connection = True
        self._error(405, f"method {self.command} is not used here")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _method_not_allowed

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass  # audio range requests and polling would flood the terminal

    # ------------------------------------------------------------------------------------- routes

    def _engine(self, session):
        """The network this session plays: one it opened itself, else the app's."""
        return session.engine or self.app.engine

    def get_info(self, session) -> None:
        engine = self._engine(session)
        self._json(200, dict(engine.info(), max_upload=self.app.max_upload, session=session.id[:6],
                             max_bars=engine.max_bars(None)))

    def get_clips(self, session) -> None:
        self._json(200, {"clips": [c.public() for c in session.clip_list()]})

    def get_clip_file(self, session, cid: str, what: str) -> None:
        clip = session.clip(cid)
        if clip is None:
            return self._error(404, "no such clip in this session")
        if what == "image":
            if clip.image is None:
                return self._error(404, "this clip has no spectrogram")
            return self._send(200, clip.image.read_bytes(), "image/png")
        if what == "audio":
            return self._send_range(clip.audio.read_bytes(), "audio/wav")
        fmt = (self.query.get("format") or ["wav"])[0]
        if fmt not in ("wav", "flac"):
            return self._error(400, "format must be wav or flac")
        data, name = clip.audio.read_bytes(), clip.filename
        if fmt == "flac":
            data, name = to_flac(data), str(Path(name).with_suffix(".flac"))
        self._send(200, data, "audio/flac" if fmt == "flac" else "audio/wav",
                   {"Content-Disposition": f'attachment; filename="{name}"'})

    def _send_range(self, data: bytes, ctype: str) -> None:
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if not m or (not m.group(1) and not m.group(2)):
            return self._send(200, data, ctype, {"Accept-Ranges": "bytes"})
        n = len(data)
        if m.group(1):
            start, end = int(m.group(1)), min(int(m.group(2)) if m.group(2) else n - 1, n - 1)
        else:
            start, end = max(n - int(m.group(2)), 0), n - 1
        if start >= n or start > end:
            return self._send(416, b"", ctype, {"Content-Range": f"bytes */{n}"})
        self._send(206, data[start:end + 1], ctype, {"Accept-Ranges": "bytes",
                                                      "Content-Range": f"bytes {start}-{end}/{n}"})

    def post_job(self, session) -> None:
        body = self._body_json()
        make = actions.JOBS.get(body.get("kind"))
        if make is None:
            raise actions.RequestError(f"kind must be one of {', '.join(actions.JOBS)}")
        kind, total, fn = make(self._engine(session), session, body)
        job = self.app.jobs.submit(session.id, kind, fn, total)
        self._json(202, {"job": job.id})

    def get_job(self, session, job_id: str) -> None:
        job = self.app.jobs.get(job_id, session.id)
        if job is None:
            return self._error(404, "no such job in this session")
        after = (self.query.get("after") or [""])[0]
        if after:
            if not after.isdigit():
                return self._error(400, "after must be a job version (a non-negative integer)")
            job.wait(int(after), JOB_WAIT_S)
        self._json(200, job.public())

    def post_cancel(self, session, job_id: str) -> None:
        self._body_json()
        job = self.app.jobs.get(job_id, session.id)
        if job is None:
            return self._error(404, "no such job in this session")
        self.app.jobs.cancel(job)
        self._json(200, job.public())

    def post_upload(self, session) -> None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise actions.RequestError("Content-Length is required (send the file as the request body)", 411)
        n = int(length)
        if n > self.app.max_upload:
            self.close_connection = True   # refused before reading: a 2 GB body is never taken in
            raise actions.RequestError(f"the file is {_size(n)}; the studio takes uploads up to "
                                       f"{_size(self.app.max_upload)}", 413)
        if n == 0:
            raise actions.RequestError("the upload is empty")
        name = (self.query.get("name") or ["upload"])[0]
        name = re.sub(r"[^\w.-]", "_", Path(name.replace("\\", "/")).name)[-100:].lstrip(".") or "upload"
        uid = new_token()
        folder = session.new_folder("upload")
        path = folder / name
        left = n
        with open(path, "wb") as f:
            while left:
                block = self.rfile.read(min(left, 1 << 20))
                if not block:
                    break
                f.write(block)
                left -= len(block)
        if left:
            shutil.rmtree(folder, ignore_errors=True)
            self.close_connection = True
            raise actions.RequestError(f"the upload ended after {n - left} of {n} bytes")
        self._body_read = True
        if name.lower().endswith(".pkl"):
            return self._open_network(session, path, name)
        if name.lower().endswith(".npz"):
            return self._take_latent(session, uid, path, name)
        from audio_ext.core.audio_io import audio_duration
        seconds = audio_duration(path)
        if not seconds > 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise actions.RequestError(f"{name}: not an audio file the studio can read (WAV, FLAC, OGG, MP3, ...)",
                                       415)
        session.add_upload(Upload(id=uid, path=path, name=name, seconds=seconds))
        self._json(200, {"upload": uid, "name": name, "seconds": round(seconds, 3)})

    def _open_network(self, session, path: Path, name: str) -> None:
        """An uploaded snapshot becomes this session's network, when it loads (weights only) and makes audio."""
        from audio_ext.generation.synthesis import GenerateError
        from audio_ext.studio.engine import Engine
        try:
            engine = Engine(str(path), device=self.app.engine.device.type, shown=name)
            engine.warm_up()
        except (GenerateError, ValueError) as e:
            shutil.rmtree(path.parent, ignore_errors=True)
            raise actions.RequestError(str(e).replace(str(path), name), 415) from None
        with self.app.live_lock:
            for old in list(session.live.values()):
                old.stop()
            session.live.clear()
        session.engine = engine
        self.app.log(f"session {session.id[:6]} opened network {name}")
        self._json(200, {"network": engine.info()})

    def _take_latent(self, session, uid: str, path: Path, name: str) -> None:
        """An uploaded projected_w.npz, checked against this session's network, kept as ``proj/projected_w.npz``."""
        from audio_ext.generation.latents import load_projected_w
        engine = self._engine(session)
        try:
            load_projected_w(path, int(engine.G.num_ws), int(engine.G.w_dim))
        except ValueError as e:
            shutil.rmtree(path.parent, ignore_errors=True)
            msg = str(e).replace(str(path), name)
            raise actions.RequestError(msg if msg.startswith(name) else f"{name}: {msg}", 415) from None
        (path.parent / "proj").mkdir()
        kept = path.rename(path.parent / "proj" / "projected_w.npz")
        session.add_upload(Upload(id=uid, path=kept, name=name, seconds=0.0, kind="latent"))
        self._json(200, {"upload": uid, "name": name, "latent": True})

    def post_live(self, session) -> None:
        body = self._body_json()
        engine = self._engine(session)
        common = actions.common_fields(engine, body)
        seeds = [actions._seed_of(c, "clips") for c in actions._picked(session, body, "clips", lo=0)] \
            if body.get("clips") else []
        space = body.get("space", "z")
        if space not in ("z", "w"):
            raise actions.RequestError("space must be z or w")
        with self.app.live_lock:
            for old in list(session.live.values()):   # one stream per session: a new one replaces it
                old.stop()
            session.live.clear()
            if self.app.live_count() >= MAX_LIVE:
                raise actions.RequestError(f"{MAX_LIVE} live streams are playing already; stop one first", 429)
            try:
                stream = LiveStream(engine, seeds, bars=actions._int(body, "bars", 1, 64, 2),
                                    steps=actions._int(body, "steps", 0, actions.MAX_WALK_STEPS, 3), space=space,
                                    random_seed=actions._int(body, "seed", 0, 2 ** 31 - 1, 0), **common)
            except (LiveError, ValueError) as e:
                raise actions.RequestError(str(e)) from None
            session.live[stream.id] = stream
        self._json(200, {"live": stream.id, "sample_rate": stream.sample_rate, "bpm": engine.bpm,
                         "bars": stream.bars})

    def get_live_chunk(self, session, sid: str, n: str) -> None:
        stream = session.live.get(sid)
        if stream is None:
            return self._error(404, "no such live stream in this session")
        data = stream.chunk(int(n))
        if data is None:
            msg = stream.error or ("the stream was stopped" if stream.stopped.is_set() else f"chunk {n} is gone")
            return self._error(410 if stream.stopped.is_set() or stream.error else 404, msg)
        self._send(200, data, "application/octet-stream", {"X-Sample-Rate": str(stream.sample_rate)})

    def post_live_control(self, session, sid: str, what: str) -> None:
        body = self._body_json()
        stream = session.live.get(sid)
        if stream is None:
            return self._error(404, "no such live stream in this session")
        if what == "stop":
            stream.stop()
            session.live.pop(sid, None)
            return self._json(200, {"stopped": True})
        steer = {}
        for group in stream.engine.groups:
            v = body.get(group)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2 ** 32):
                raise actions.RequestError(f"{group} must be a seed (an integer) or null")
            steer[group] = v
        stream.set_steer(steer)
        self._json(200, {"steer": steer})


def _size(n: int) -> str:
    for unit, k in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} bytes"


def to_flac(wav: bytes) -> bytes:
    """The same 16-bit samples and text tags as a FLAC file."""
    import soundfile as sf
    with sf.SoundFile(io.BytesIO(wav)) as f:
        tags, sr = f.copy_metadata(), f.samplerate
        pcm = f.read(dtype="int16")
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=sr, channels=1, subtype="PCM_16", format="FLAC") as out:
        for k, v in tags.items():
            setattr(out, k, v)
        out.write(pcm)
    return buf.getvalue()


class StudioServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    app: StudioApp


def make_server(app: StudioApp, host: str = "127.0.0.1", port: int = 0) -> StudioServer:
    """A server for ``app`` (not started: call ``serve_forever``); ``port=0`` picks a free port."""
    handler = type("BoundStudioHandler", (StudioHandler,), {"app": app})
    server = StudioServer((host, port), handler)
    server.app = app
    return server


def serve(engine, host: str = "127.0.0.1", port: int = 8000, log: Callable[[str], None] = print,
          ttl_s: float = DEFAULT_TTL_S, max_upload: int = MAX_UPLOAD, ready: Optional[Callable[[Tuple], None]] = None
          ) -> None:
    """Serve until Ctrl-C or SIGTERM; then stop jobs and streams and remove every session's files."""
    import signal
    app = StudioApp(engine, ttl_s=ttl_s, max_upload=max_upload, log=log)
    try:
        server = make_server(app, host, port)
    except BaseException:
        app.close()
        raise
    h, p = server.server_address[:2]

    def on_term(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() else None
    log(f"ElectroGAN Studio: http://{h}:{p}/  (network {Path(engine.network).name}; Ctrl-C stops)")
    if ready is not None:
        ready((h, p))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        log("stopping: cancelling jobs, removing session files")
    finally:
        server.server_close()
        app.close()
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        log("stopped")
