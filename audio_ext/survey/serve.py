"""``survey serve``: the survey page on a local web server that also collects the answer sheets.

For a lab with one machine and many listeners. Standard library only (:mod:`http.server`), bound to
127.0.0.1 unless told otherwise. ``GET`` serves the page, its scripts and the audio (never
``manifest.json``, ``responses/`` or hidden files, which would give the conditions away);
``GET api/ping`` answers the survey id so the page knows it may offer "Submit"; ``POST submit``
takes one answer sheet as JSON (at most :data:`MAX_BODY` bytes), checks it against the manifest
(:func:`validate_sheet`) and writes it to ``responses/`` atomically (temp file + rename), so the
scorer never reads half a file.
"""
from __future__ import annotations

import datetime
import functools
import http.server
import json
import math
import os
import re
import secrets
from pathlib import Path, PurePosixPath
from typing import Callable, Dict
from urllib.parse import unquote

from audio_ext.survey.make import MANIFEST, load_manifest
from stylegan2.misc import atomic_write_text

#: Largest answer sheet accepted, in bytes (a sheet of 500 clips with long comments fits easily).
MAX_BODY = 512 * 1024
#: Longest comment kept per clip, in characters.
MAX_COMMENT = 1000
LISTENER_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
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
    if not isinstance(listener, str) or not LISTENER_RE.match(listener):
        raise SheetError("listener must be 1-64 letters, digits, '_', '.' or '-'")
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
        if clip not in known:
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

    def _blocked(self) -> bool:
        path = PurePosixPath(unquote(self.path.split("?", 1)[0].split("#", 1)[0]))  # as translate_path sees it
        parts = [p for p in path.parts if p not in ("/", "")]
        return bool(parts) and (parts[0] in _HIDDEN_TOP or any(p.startswith(".") for p in parts))

    def _json(self, status: int, payload: Dict) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.split("?", 1)[0] == "/api/ping":
            return self._json(200, {"survey_id": self.manifest["survey_id"]})
        if self._blocked():
            return self.send_error(404, "Not found")
        return super().do_GET()

    def do_HEAD(self) -> None:  # noqa: N802
        if self._blocked():
            return self.send_error(404, "Not found")
        return super().do_HEAD()

    def do_POST(self) -> None:  # noqa: N802
        if self.path.split("?", 1)[0] != "/submit":
            return self._json(404, {"error": "unknown address; answers go to submit"})
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._json(411, {"error": "Content-Length is required"})
        n = int(length)
        if n > MAX_BODY:
            self.close_connection = True  # do not read a body that large
            return self._json(413, {"error": f"answer sheet larger than {MAX_BODY} bytes"})
        body = self.rfile.read(n)
        try:
            sheet = validate_sheet(json.loads(body.decode("utf-8")), self.manifest)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._json(400, {"error": "the body is not JSON"})
        except SheetError as e:
            return self._json(400, {"error": str(e)})
        path = save_sheet(self.root / "responses", sheet)
        type(self).log_fn(f"saved {len(sheet['answers'])} answer(s) of listener {sheet['listener']} to {path}")
        return self._json(200, {"saved": path.name, "answers": len(sheet["answers"])})

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        pass  # one line per saved sheet is enough; audio range requests would flood the terminal


def make_server(folder, host: str = "127.0.0.1", port: int = 8000,
                log: Callable[[str], None] = print) -> http.server.ThreadingHTTPServer:
    """A server for the survey ``folder`` (not started; call ``serve_forever``). ``port=0`` picks a free port."""
    root = Path(folder).resolve()
    manifest = load_manifest(root)
    (root / "responses").mkdir(exist_ok=True)
    handler = type("BoundSurveyHandler", (SurveyHandler,),
                   {"manifest": manifest, "root": root, "log_fn": staticmethod(log)})
    return http.server.ThreadingHTTPServer((host, port), functools.partial(handler, directory=os.fspath(root)))


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
