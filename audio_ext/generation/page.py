"""The listening page: one self-contained ``index.html`` beside the generated clips.

Each clip gets its spectrogram image, an ``<audio controls>`` player and what produced it (seed,
truncation psi, class, snapshot, tempo in BPM, length in seconds). Links are relative and the
page uses no scripts, fonts or style sheets from elsewhere, so it works when opened straight from
disk (``file://``) or from a copied folder; no server is needed.
"""
from __future__ import annotations

import dataclasses
import html
import os
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote

from stylegan2.misc import atomic_write_text

PAGE_NAME = "index.html"

_MIME = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg"}

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #111; color: #eee; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
p.run { color: #aaa; margin-top: 0; }
p.links a { color: #8cf; }
div.clips { display: flex; flex-wrap: wrap; gap: 1em; }
figure.clip { margin: 0; padding: 0.6em; background: #1d1d1d; border-radius: 6px; width: 300px; }
figure.clip img { width: 100%; image-rendering: pixelated; display: block; }
figure.clip audio { width: 100%; margin-top: 0.4em; }
figcaption dl { display: grid; grid-template-columns: auto 1fr; gap: 0.1em 0.6em; margin: 0.4em 0 0; font-size: 0.85em; }
figcaption dt { color: #999; }
figcaption dd { margin: 0; overflow-wrap: anywhere; }
"""


@dataclasses.dataclass
class ClipEntry:
    """One clip on the page. ``audio`` and ``image`` are paths relative to the page's folder."""

    title: str
    audio: str
    image: Optional[str] = None
    seed: Optional[object] = None
    truncation: Optional[float] = None
    class_idx: Optional[int] = None
    snapshot: Optional[str] = None
    bpm: Optional[float] = None
    seconds: Optional[float] = None
    kind: str = "clip"

    def details(self) -> list:
        """(label, text) pairs shown under the player; absent values are left out."""
        rows = [("kind", self.kind)]
        if self.seed is not None:
            rows.append(("seed", str(self.seed)))
        if self.truncation is not None:
            rows.append(("truncation", f"{self.truncation:g}"))
        if self.class_idx is not None:
            rows.append(("class", str(self.class_idx)))
        if self.bpm is not None:
            rows.append(("tempo", f"{self.bpm:g} BPM"))
        if self.seconds is not None:
            rows.append(("length", f"{self.seconds:.2f} s"))
        if self.snapshot is not None:
            rows.append(("snapshot", self.snapshot))
        return rows


def _relative_href(path: str, root: Optional[Path]) -> str:
    """A URL-quoted relative link; refuses absolute paths and paths that leave the page's folder."""
    p = PurePosixPath(str(path).replace(os.sep, "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"listening page: {path!r} must be a path inside the output folder")
    if root is not None and not (root / Path(*p.parts)).is_file():
        raise ValueError(f"listening page: {root / Path(*p.parts)} does not exist")
    return quote(str(p))


def render_page(entries: Sequence[ClipEntry], title: str = "ElectroGAN clips",
                run_info: Optional[Mapping[str, object]] = None, root: Optional[Path] = None,
                links: Sequence[Tuple[str, str]] = ()) -> str:
    """The HTML text of the page. Every text is escaped; every link is relative (checked under ``root``).

    ``links`` are ``(text, relative path)`` pairs shown under the title (e.g. a listening test).
    """
    esc = lambda v: html.escape(str(v), quote=True)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
             f"<h1>{esc(title)}</h1>"]
    info = dict(run_info or {})  # no timestamp: the same run must give a byte-identical page
    parts.append('<p class="run">' + " &middot; ".join(f"{esc(k)}: {esc(v)}" for k, v in info.items()) + "</p>")
    if links:
        parts.append('<p class="links">' + " &middot; ".join(
            f'<a href="{esc(_relative_href(href, root))}">{esc(text)}</a>' for text, href in links) + "</p>")
    parts.append('<div class="clips">')
    for index, e in enumerate(entries):
        src = _relative_href(e.audio, root)
        mime = _MIME.get(PurePosixPath(e.audio).suffix.lower(), "audio/wav")
        parts.append(f'<figure class="clip" id="clip-{index}">')
        parts.append(f"<h2>{esc(e.title)}</h2>")
        if e.image is not None:
            parts.append(f'<img src="{esc(_relative_href(e.image, root))}" '
                         f'alt="{esc("spectrogram of " + e.title)}" loading="lazy">')
        parts.append(f'<audio controls preload="metadata"><source src="{esc(src)}" type="{mime}">'
                     f'<a href="{esc(src)}">{esc(PurePosixPath(e.audio).name)}</a></audio>')
        parts.append("<figcaption><dl>")
        parts += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in e.details()]
        parts.append(f'<dt>file</dt><dd><a href="{esc(src)}" download>{esc(PurePosixPath(e.audio).name)}</a></dd>')
        parts.append("</dl></figcaption></figure>")
    parts += ["</div>", "</body>", "</html>", ""]
    return "\n".join(parts)


def write_page(outdir, entries: Iterable[ClipEntry], title: str = "ElectroGAN clips",
               run_info: Optional[Mapping[str, object]] = None, check_files: bool = True,
               links: Sequence[Tuple[str, str]] = ()) -> Path:
    """Write ``outdir/index.html`` atomically and return its path.

    With ``check_files`` every linked audio and image file must already exist under ``outdir``, so
    the page never shows a broken player.
    """
    outdir = Path(outdir)
    text = render_page(list(entries), title=title, run_info=run_info, root=outdir if check_files else None,
                       links=links)
    path = outdir / PAGE_NAME
    atomic_write_text(path, text)
    return path


# --------------------------------------------------------------------------------------------------
# The style-mixing grid: players in a table.

_GRID_STYLE = """
table.grid { border-collapse: collapse; }
table.grid th, table.grid td { padding: 0.4em; background: #1d1d1d; border: 2px solid #111; vertical-align: top;
  font-size: 0.85em; text-align: center; }
table.grid img { width: 128px; image-rendering: pixelated; display: block; margin: 0 auto 0.3em; }
table.grid audio { width: 160px; }
"""


@dataclasses.dataclass
class GridCell:
    """One player in the grid: ``audio``/``image`` relative to the page, ``caption`` under the player."""

    audio: str
    image: Optional[str] = None
    caption: str = ""


def _cell_html(cell: Optional["GridCell"], root: Optional[Path], tag: str = "td") -> str:
    esc = lambda v: html.escape(str(v), quote=True)
    if cell is None:
        return f"<{tag}></{tag}>"
    src = _relative_href(cell.audio, root)
    mime = _MIME.get(PurePosixPath(cell.audio).suffix.lower(), "audio/wav")
    img = (f'<img src="{esc(_relative_href(cell.image, root))}" alt="{esc("spectrogram " + cell.caption)}" '
           f'loading="lazy">' if cell.image is not None else "")
    return (f'<{tag}>{img}<audio controls preload="none"><source src="{esc(src)}" type="{mime}"></audio>'
            f'<br><a href="{esc(src)}" download>{esc(cell.caption or PurePosixPath(cell.audio).name)}</a></{tag}>')


def render_grid_page(columns: Sequence[GridCell], rows: Sequence[GridCell], cells: Sequence[Sequence[GridCell]],
                     title: str, note: str = "", run_info: Optional[Mapping[str, object]] = None,
                     root: Optional[Path] = None) -> str:
    """HTML of a table: the column sources along the top, the row sources down the left, a player per cell."""
    esc = lambda v: html.escape(str(v), quote=True)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{esc(title)}</title>", f"<style>{_STYLE}{_GRID_STYLE}</style>", "</head>", "<body>",
             f"<h1>{esc(title)}</h1>"]
    info = dict(run_info or {})
    parts.append('<p class="run">' + " &middot; ".join(f"{esc(k)}: {esc(v)}" for k, v in info.items()) + "</p>")
    if note:
        parts.append(f'<p class="run">{esc(note)}</p>')
    parts.append('<table class="grid">')
    parts.append("<tr><th></th>" + "".join(_cell_html(c, root, "th") for c in columns) + "</tr>")
    for row, row_cells in zip(rows, cells):
        parts.append("<tr>" + _cell_html(row, root, "th") + "".join(_cell_html(c, root) for c in row_cells) + "</tr>")
    parts += ["</table>", "</body>", "</html>", ""]
    return "\n".join(parts)


def write_grid_page(outdir, columns, rows, cells, title: str, note: str = "",
                    run_info: Optional[Mapping[str, object]] = None, name: str = PAGE_NAME) -> Path:
    """Write the grid page atomically as ``outdir/name`` (every linked file must exist) and return its path."""
    outdir = Path(outdir)
    text = render_grid_page(columns, rows, cells, title, note, run_info, root=outdir)
    path = outdir / name
    atomic_write_text(path, text)
    return path
