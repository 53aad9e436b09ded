"""What ``survey serve`` accepts from a request: one parser for the path, the length and the JSON body.

Every malformed request becomes a :class:`RequestError` carrying a 4xx status and a one-line
message, which the server answers as JSON; nothing a client sends can reach a traceback.

* The path is decoded exactly once (percent escapes, UTF-8), then normalised: ``.`` and empty
  segments (``//``) dropped, ``..`` applied, a NUL or a backslash refused. The server's block
  check and its file lookup both use these segments, so ``/%2Fmanifest.json``,
  ``//manifest.json`` and ``/audio/..%2Fmanifest.json`` all name ``manifest.json`` and are
  refused alike.
* ``Content-Length`` must be ASCII digits (``'²'.isdigit()`` is true but ``int('²')`` fails).
* The body must be UTF-8 JSON nested at most :data:`MAX_DEPTH` deep (checked by a scan before
  :func:`json.loads`, whose recursion would otherwise end in a ``RecursionError``).
"""
from __future__ import annotations

import json
import re
from typing import Any, List, Optional
from urllib.parse import unquote_to_bytes

#: Deepest nesting of arrays and objects accepted in a body (an answer sheet needs 3).
MAX_DEPTH = 16
_LENGTH_RE = re.compile(r"[0-9]{1,12}")


class RequestError(ValueError):
    """A request the server refuses: ``status`` (4xx) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def path_segments(target: str) -> List[str]:
    """The segments of a request target's path after decoding and normalising (see the module doc).

    ``'/audio/../%2Fmanifest.json?x'`` -> ``['manifest.json']``; ``'/'`` -> ``[]``. A path that
    climbs above the root, holds a NUL or a backslash, or is not UTF-8 is a 400.
    """
    path = target.split("?", 1)[0].split("#", 1)[0]
    try:
        text = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(400, "the path is not UTF-8") from None
    if "\x00" in text or "\\" in text:
        raise RequestError(400, "the path holds a NUL or a backslash")
    out: List[str] = []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise RequestError(400, "the path climbs above the survey folder")
            out.pop()
            continue
        out.append(part)
    return out


def content_length(value: Optional[str], limit: int) -> int:
    """The body size a ``Content-Length`` header declares: 411 when missing, 400 unless ASCII
    digits, 413 above ``limit`` bytes."""
    if value is None:
        raise RequestError(411, "Content-Length is required")
    value = value.strip()
    if not _LENGTH_RE.fullmatch(value):
        raise RequestError(400, "Content-Length must be a number of bytes")
    n = int(value)
    if n > limit:
        raise RequestError(413, f"answer sheet larger than {limit} bytes")
    return n


def json_depth_ok(text: str, max_depth: int = MAX_DEPTH) -> bool:
    """Whether the arrays and objects of JSON ``text`` nest at most ``max_depth`` deep (brackets
    inside strings do not count); one linear scan, no recursion."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def parse_json(data: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """The value of a UTF-8 JSON body; 400 for bytes that are not UTF-8 JSON or nest too deep."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(400, "the body is not UTF-8 JSON") from None
    if not json_depth_ok(text, max_depth):
        raise RequestError(400, f"the body nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise RequestError(400, "the body is not JSON") from None
