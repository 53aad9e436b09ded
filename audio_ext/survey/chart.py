"""The bar chart of a listening test: MOS per condition with its 95 % intervals, drawn with Pillow.

Bars show the mean opinion score on the 1-5 scale; the black whisker is the t-interval, the two
short orange ticks the bootstrap interval. Conditions keep the order given.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw

from stylegan2.line_chart import font as _font
from stylegan2.misc import atomic_path

_BAR_COLOURS = {"original": (74, 140, 92), "anchor": (170, 170, 170)}
_DEFAULT_COLOUR = (62, 104, 189)


def _wrap(name: str, width: int = 16) -> list:
    """Split a condition name at '-' into lines of at most ``width`` characters (roughly)."""
    lines, line = [], ""
    for part in name.split("-"):
        piece = part if not line else "-" + part
        if line and len(line) + len(piece) > width:
            lines.append(line + "-")
            line = part
        else:
            line += piece
    return lines + [line]


def draw_mos_chart(path, rows: Sequence[dict], title: str = "Mean opinion score") -> Path:
    """Write a PNG bar chart of ``rows`` (dicts with ``condition``, ``mos``, ``t_low``, ``t_high``,
    ``boot_low``, ``boot_high``, ``n``) to ``path`` atomically; returns the path."""
    bar_w, gap, left, right, top, bottom = 70, 60, 100, 30, 60, 150
    width = left + right + max(1, len(rows)) * (bar_w + gap)
    height = 500
    plot_h = height - top - bottom
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    f_small, f_title = _font(13), _font(17)
    y_of = lambda v: top + plot_h * (5.0 - v) / 4.0  # noqa: E731 (1 at the bottom, 5 at the top)
    d.text((left, 18), title, fill="black", font=f_title)
    labels = {1: "bad", 2: "poor", 3: "fair", 4: "good", 5: "excellent"}
    for v in range(1, 6):
        y = y_of(v)
        d.line([(left, y), (width - right, y)], fill=(225, 225, 225))
        d.text((8, y - 8), f"{v} {labels[v]}", fill=(80, 80, 80), font=f_small)
    d.line([(left, top), (left, top + plot_h)], fill="black")
    for k, r in enumerate(rows):
        x0 = left + gap / 2 + k * (bar_w + gap)
        xc = x0 + bar_w / 2
        mos = r.get("mos", math.nan)
        colour = _BAR_COLOURS.get(r["condition"], _DEFAULT_COLOUR)
        if math.isfinite(mos):
            d.rectangle([x0, y_of(mos), x0 + bar_w, y_of(1.0)], fill=colour)
        lo, hi = r.get("t_low", math.nan), r.get("t_high", math.nan)
        if math.isfinite(lo) and math.isfinite(hi):
            lo, hi = max(lo, 0.9), min(hi, 5.1)
            d.line([(xc, y_of(lo)), (xc, y_of(hi))], fill="black", width=2)
            for v in (lo, hi):
                d.line([(xc - 10, y_of(v)), (xc + 10, y_of(v))], fill="black", width=2)
        blo, bhi = r.get("boot_low", math.nan), r.get("boot_high", math.nan)
        if math.isfinite(blo) and math.isfinite(bhi):
            for v in (max(blo, 0.9), min(bhi, 5.1)):
                d.line([(xc + 12, y_of(v)), (xc + 24, y_of(v))], fill=(230, 140, 0), width=3)
        mos_text = f"MOS {mos:.2f}" if math.isfinite(mos) else "no ratings"
        for j, line in enumerate(_wrap(r["condition"]) + [mos_text, f"n={r.get('n', 0)}"]):
            tw = d.textlength(line, font=f_small)
            d.text((xc - tw / 2, top + plot_h + 8 + 16 * j), line, fill="black", font=f_small)
    d.text((left, height - 22), "black whisker: t-interval   orange ticks: bootstrap interval", fill=(80, 80, 80),
           font=f_small)
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
