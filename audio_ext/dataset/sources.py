"""What an archive is built from: the source files, their names in the archive, shards and labels."""
from __future__ import annotations

import csv
import dataclasses
import os
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from audio_ext.core.audio_io import AUDIO_EXTENSIONS, audio_file_problem
from audio_ext.dataset.archive import ArchiveError, PathLike

# ---------------------------------------------------------------------------------------------
# Sources, shards, labels
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Source:
    """One input file: its path on disk and the name stored in the archive (relative, '/'-separated)."""

    path: Path
    name: str


def _name_bytes(name: str) -> bytes:
    """A source name as the bytes it came from (undecodable file-name bytes survive), for hashing."""
    return name.encode("utf-8", "surrogateescape")


def _printable(name: str) -> str:
    """A file name as valid UTF-8 text (undecodable bytes become U+FFFD), for JSON and logs."""
    return _name_bytes(name).decode("utf-8", "replace")


def gather_sources(source: PathLike) -> Tuple[List[Source], List[Tuple[str, str]]]:
    """Files to read, sorted by name, and ``(name, reason)`` for files passed over.

    ``source`` is a folder (searched recursively for audio extensions; hidden files and other
    files are passed over) or a ``.txt`` list (one path per line, relative to the list's folder,
    ``#`` comments). Raises :class:`ArchiveError` when ``source`` itself is unusable.
    """
    source = Path(source)
    ignored: List[Tuple[str, str]] = []
    found: List[Source] = []
    if source.is_dir():
        for root, dirs, files in os.walk(source):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in files:
                full = Path(root) / f
                rel = _printable(full.relative_to(source).as_posix())
                if f.startswith("."):
                    continue
                if full.suffix.lower() not in AUDIO_EXTENSIONS:
                    ignored.append((rel, "not an audio file extension"))
                    continue
                found.append(Source(full, rel))
    elif audio_file_problem(source) not in (None, "no such file"):  # a FIFO would block the read below
        raise ArchiveError(f"{source}: {audio_file_problem(source)}")
    elif source.is_file():
        try:
            lines = source.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ArchiveError(f"{source}: cannot read the source list ({e})") from None
        seen = set()
        for line in lines:
            entry = line.strip()
            if not entry or entry.startswith("#") or entry in seen:
                continue
            seen.add(entry)
            p = Path(entry)
            found.append(Source(p if p.is_absolute() else source.parent / p, _printable(entry)))
    else:
        raise ArchiveError(f"{source}: no such folder or list file")
    found.sort(key=lambda s: s.name)
    return found, sorted(ignored)


def parse_shard(text: Optional[str]) -> Tuple[int, int]:
    """``'I/N'`` (0 <= I < N) to ``(I, N)``; ``None`` means the whole set ``(0, 1)``."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ArchiveError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ArchiveError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def in_shard(name: str, shard: Tuple[int, int]) -> bool:
    """Whether a source belongs to shard ``(I, N)``: CRC-32 of its name modulo N.

    Hashing the name (rather than the position in a list) keeps a file in the same shard when
    other files are added or removed, so machines can be given shards independently.
    """
    i, n = shard
    return n == 1 or zlib.crc32(_name_bytes(name)) % n == i


def read_labels(spec: Optional[str], sources: Sequence[Source]) -> Tuple[Dict[str, int], List[str]]:
    """Class index per source name, and the class names (index order).

    ``spec`` is ``'folders'`` (one class per top-level folder of the source) or a CSV file with
    rows ``file,label`` (file as the name in the archive records, i.e. relative to the source;
    label an integer or a class name; a header row is allowed). Sources without a class are left out
    of the mapping (the builder skips them with a reason).
    """
    if spec is None:
        return {}, []
    if spec == "folders":
        tops = {s.name: s.name.split("/", 1)[0] for s in sources if "/" in s.name}
        names = sorted(set(tops.values()))
        return {k: names.index(v) for k, v in tops.items()}, names
    path = Path(spec)
    problem = audio_file_problem(path)
    if problem is not None:
        raise ArchiveError(f"{path}: cannot read labels ({problem})")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    except (OSError, UnicodeDecodeError) as e:
        raise ArchiveError(f"{path}: cannot read labels ({e})") from None
    if rows and rows[0][:2] and rows[0][0].strip().lower() in ("file", "filename", "path"):
        rows = rows[1:]
    raw: Dict[str, str] = {}
    for lineno, r in enumerate(rows, 1):
        if len(r) < 2 or not r[0].strip() or not r[1].strip():
            raise ArchiveError(f"{path}: row {lineno} is not 'file,label': {','.join(r)!r}")
        raw[r[0].strip().replace("\\", "/")] = r[1].strip()
    values = list(raw.values())
    if all(v.lstrip("-").isdigit() for v in values):
        ints = {k: int(v) for k, v in raw.items()}
        if any(v < 0 for v in ints.values()):
            raise ArchiveError(f"{path}: class labels must be non-negative integers")
        top = max(ints.values(), default=-1)
        return ints, [str(i) for i in range(top + 1)]
    names = sorted(set(values))
    return {k: names.index(v) for k, v in raw.items()}, names
