"""``survey serve``: the survey page on a local web server that also collects the answer sheets.

For a lab with one machine and many listeners. Standard library only (:mod:`http.server`), bound to
127.0.0.1 unless told otherwise. ``GET`` serves the page, its scripts and the audio (never
``manifest.json``, ``responses/`` or hidden files, which would give the conditions away);
``GET api/ping`` answers the survey id so the page knows it may offer "Submit"; ``POST submit``
takes one answer sheet as JSON (at most :data:`MAX_BODY` bytes), checks it against the manifest
(:func:`validate_sheet`) and writes it to ``responses/`` atomically (temp file + rename), so the
scorer never reads half a file. Paths, lengths and bodies go through one parser
(:mod:`.request`): every malformed request is a 4xx with a JSON ``{"error": ...}``. A connection
that sends nothing for :data:`REQUEST_TIMEOUT_S` seconds is dropped, and up to
:data:`LISTEN_BACKLOG` connections wait to be accepted (a class pressing Submit at once).
"""
from __future__ import annotations

import datetime
import errno
import functools
import http.server
import json
import math
import os
import re
import secrets
from pathlib import Path
from typing import Callable, Dict, List

from audio_ext.survey.make import MANIFEST, load_manifest
from audio_ext.survey.request import RequestError, content_length, parse_json, path_segments
from stylegan2.misc import atomic_write_text

#: Largest answer sheet accepted, in bytes (a sheet of 500 clips with long comments fits easily).
MAX_BODY = 512 * 1024
#: Longest comment kept per clip, in characters.
MAX_COMMENT = 1000
#: A listener id: 1-64 letters, digits, ``_ . -``, starting with a letter or digit (a leading dot
#: would make the saved sheet a hidden file the scorer skips). Matched with ``fullmatch``: ``$``
#: would also accept a trailing newline, which would land in the file name.
LISTENER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Seconds a connection may stall (request line, headers or body) before the server drops it.
REQUEST_TIMEOUT_S = 30.0
#: Connections the kernel queues until the server accepts them (``listen()``'s backlog; the
#: kernel caps it at ``net.core.somaxconn``, 4096 on current Linux). http.server's default of 5
#: resets connections when a class of 50 presses Submit at once.
LISTEN_BACKLOG = 256
SHEET_FORMAT = "electrogan-survey-answers"
_HIDDEN_TOP = {MANIFEST, "responses", "report"}


class SheetError(ValueError):
    """An answer sheet that cannot be accepted; the message says which field and why."""


def validate_sheet(sheet, manifest: Dict) -> Dict:
    """A cleaned copy of one answer sheet, or :class:`SheetError`.

    Checks: the format name and survey id; a listener id of 1-64 letters, digits, ``_ . -``; an
    integer seed; answers for known clip ids only, each once, with an integer rating 1-5, a finite
    non-negative ``listened_s``, a non-negative integer ``plays`` and a comment of at most
    :data:`MAX_COMMENT` characters.
    """
    if not isinstance(sheet, dict):
        raise SheetError("the sheet must be a JSON object")
    if sheet.get("format") != SHEET_FORMAT:
        raise SheetError(f"format must be {SHEET_FORMAT!r}")
    if sheet.get("survey_id") != manifest["survey_id"]:
        raise SheetError(f"survey_id {str(sheet.get('survey_id'))[:40]!r} is not this survey's")
    listener = sheet.get("listener")
    if not isinstance(listener, str) or not LISTENER_RE.fullmatch(listener):
        raise SheetError("listener must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    seed = sheet.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 32):
        raise SheetError("seed must be an integer in 0..2^32-1")
    answers = sheet.get("answers")
    if not isinstance(answers, list) or not answers:
        raise SheetError("answers must be a non-empty list")
    known = {c["id"] for c in manifest["clips"]}
    seen = set()
    clean = []
    for k, a in enumerate(answers):
        if not isinstance(a, dict):
            raise SheetError(f"answers[{k}] must be an object")
        clip = a.get("clip")
        if not isinstance(clip, str) or clip not in known:
            raise SheetError(f"answers[{k}]: unknown clip id {str(clip)[:40]!r}")
        if clip in seen:
            raise SheetError(f"answers[{k}]: clip {clip} answered twice")
        seen.add(clip)
        rating = a.get("rating")
        if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
            raise SheetError(f"answers[{k}]: rating must be an integer 1-5")
        listened = a.get("listened_s", 0)
        if not isinstance(listened, (int, float)) or isinstance(listened, bool) or not math.isfinite(listened) \
                or listened < 0:
            raise SheetError(f"answers[{k}]: listened_s must be a non-negative number")
        plays = a.get("plays", 0)
        if not isinstance(plays, int) or isinstance(plays, bool) or plays < 0:
            raise SheetError(f"answers[{k}]: plays must be a non-negative integer")
        comment = a.get("comment", "") or ""
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
            raise SheetError(f"answers[{k}]: comment must be text of at most {MAX_COMMENT} characters")
        clean.append({"clip": clip, "rating": rating, "listened_s": float(listened), "plays": plays,
                      "comment": comment, "answered_at": str(a.get("answered_at", ""))[:40]})
    out = {"format": SHEET_FORMAT, "version": 1, "survey_id": manifest["survey_id"], "listener": listener,
           "seed": seed, "answers": clean}
    for key in ("started", "finished", "user_agent"):
        if isinstance(sheet.get(key), str):
            out[key] = sheet[key][:300]
    return out


def save_sheet(responses: Path, sheet: Dict) -> Path:
    """Write a validated sheet to ``responses/<listener>-<UTC time>-<random>.json`` atomically."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    path = responses / f"{sheet['listener']}-{stamp}-{secrets.token_hex(3)}.json"
    atomic_write_text(path, json.dumps(sheet, indent=1, sort_keys=True) + "\n")
    return path


class SurveyHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of the survey folder plus ``api/ping`` and ``submit``; see the module docstring."""

    manifest: Dict = {}
    root: Path = Path(".")
    log_fn: Callable[[str], None] = print

    timeout = REQUEST_TIMEOUT_S  # socketserver applies it to the connection (see make_server)

    def _segments(self) -> List[str]:
        """The request path's segments (:func:`.request.path_segments`); RequestError when malformed."""
        return path_segments(self.path)

    @staticmethod
    def _blocked(parts: List[str]) -> bool:
        """Whether normalised ``parts`` name the manifest, answers, report or a hidden file (any case)."""
        return bool(parts) and (parts[0].lower() in _HIDDEN_TOP or any(p.startswith(".") for p in parts))

    def translate_path(self, path: str) -> str:
        """The file a path names, from the same normalised segments the block check saw (decoded once)."""
        try:
            parts = path_segments(path)
        except RequestError:
            parts = [".missing"]
        return os.path.join(self.directory, *parts)

    def _json(self, status: int, payload: Dict) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message=None, explain=None) -> None:
        """Every error http.server itself answers (a bad request line, a missing file) as JSON too."""
        self.close_connection = True
        text = message if isinstance(message, str) and message else self.responses.get(code, ("error",))[0]
        self._json(code, {"error": text[:300]})

    def _static(self, head: bool) -> None:
        try:
            parts = self._segments()
        except RequestError as e:
            return self.send_error(e.status, str(e))
        if parts == ["api", "ping"] and not head:
            return self._json(200, {"survey_id": self.manifest["survey_id"]})
        if self._blocked(parts):
            return self._json(404, {"error": "not found"})
        return super().do_HEAD() if head else super().do_GET()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        return self._static(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        return self._static(head=True)

    def do_POST(self) -> None:  # noqa: N802
        try:
            if self._segments() != ["submit"]:
                return self._json(404, {"error": "unknown address; answers go to submit"})
            n = content_length(self.headers.get("Content-Length"), MAX_BODY)
        except RequestError as e:
            self.close_connection = True  # the body (if any) is not read
            return self._json(e.status, {"error": str(e)})
        try:
            body = self.rfile.read(n)
        except OSError:  # the socket timeout (a stalled body) or a reset: nobody is left to answer
            self.close_connection = True
            return None
        try:
            if len(body) < n:
                raise RequestError(400, "the body is shorter than its Content-Length")
            sheet = validate_sheet(parse_json(body), self.manifest)
        except (RequestError, SheetError) as e:
            return self._json(getattr(e, "status", 400), {"error": str(e)})
        try:
            path = save_sheet(self.root / "responses", sheet)
        except OSError as e:  # a full or read-only disk: say so, never "saved"
            type(self).log_fn(f"could not save a sheet of listener {sheet['listener']}: {e.strerror or e}")
            return self._json(507 if e.errno == errno.ENOSPC else 500,
                              {"error": f"the server could not save the answers ({e.strerror or e}); "
                                        f"download them with the button instead"})
        type(self).log_fn(f"saved {len(sheet['answers'])} answer(s) of listener {sheet['listener']} to {path}")
        return self._json(200, {"saved": path.name, "answers": len(sheet["answers"])})

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        pass  # one line per saved sheet is enough; audio range requests would flood the terminal


class SurveyServer(http.server.ThreadingHTTPServer):
    """http.server's threading server with a listen backlog of :data:`LISTEN_BACKLOG` (not 5)."""

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True


def make_server(folder, host: str = "127.0.0.1", port: int = 8000, log: Callable[[str], None] = print,
                timeout: float = REQUEST_TIMEOUT_S) -> http.server.ThreadingHTTPServer:
    """A server for the survey ``folder`` (not started; call ``serve_forever``). ``port=0`` picks a free port;
    ``timeout``: seconds a connection may stall before it is dropped."""
    root = Path(folder).resolve()
    manifest = load_manifest(root)
    (root / "responses").mkdir(exist_ok=True)
    handler = type("BoundSurveyHandler", (SurveyHandler,),
                   {"manifest": manifest, "root": root, "log_fn": staticmethod(log), "timeout": float(timeout)})
    return SurveyServer((host, port), functools.partial(handler, directory=os.fspath(root)))


def serve(folder, host: str = "127.0.0.1", port: int = 8000, log: Callable[[str], None] = print) -> None:
    """Serve until interrupted (Ctrl-C)."""
    server = make_server(folder, host, port, log)
    h, p = server.server_address[:2]
    log(f"survey {load_manifest(folder)['survey_id']}: http://{h}:{p}/  "
        f"(answers go to {Path(folder) / 'responses'}; Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("stopped")
    finally:
        server.server_close()
