"""Line charts drawn with Pillow (matplotlib is not a dependency): one chart in a box of an image.

A chart is a frame with round-number ticks on both axes (decades, and 2 and 5 times them when few
decades are shown, on a log y axis), any number of named series drawn as polylines, a legend, and
optional labelled marks (a ring around a point with its text). The legend sits in the title row, or
in a row of its own below the title when both do not fit. :class:`Axes` is the data -> pixel
transform of the plot area, returned by :func:`draw_line_chart` so callers (and tests) can place
things on the same scale. Used by the training curves (:mod:`stylegan2.training_curves`) and the
loss curve of ``project_audio.py``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

from PIL import ImageDraw, ImageFont

Colour = Tuple[int, int, int]

#: Pixels around the plot area for the title (top), tick labels (left, bottom) and axis labels.
MARGINS = dict(left=74, right=16, top=30, bottom=46)
GRID_COLOUR = (228, 228, 228)
FRAME_COLOUR = (120, 120, 120)
TEXT_COLOUR = (40, 40, 40)


def font(size: int):
    """Pillow's built-in font at ``size`` pixels (scalable since Pillow 10.1; the fixed bitmap font before)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


@dataclasses.dataclass(frozen=True)
class Series:
    """One line: ``ys[i]`` at ``xs[i]``; a non-finite value (or a non-positive one on a log axis) breaks the line."""
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    colour: Colour
    width: int = 2


@dataclasses.dataclass(frozen=True)
class Mark:
    """A point ringed and labelled with ``text`` (e.g. the best value of a metric)."""
    x: float
    y: float
    text: str
    colour: Colour = (200, 30, 30)


@dataclasses.dataclass(frozen=True)
class Axes:
    """The data -> pixel transform of a plot area ``box`` = (left, top, right, bottom) in image pixels.

    x is linear over ``x_range``; y linear or (``log_y``) logarithmic over ``y_range``, larger values
    higher up.
    """
    box: Tuple[float, float, float, float]
    x_range: Tuple[float, float]
    y_range: Tuple[float, float]
    log_y: bool = False

    def usable(self, y: float) -> bool:
        """True when ``y`` can be drawn on this axis (finite, and positive on a log axis)."""
        return math.isfinite(y) and (y > 0 or not self.log_y)

    def pixel(self, x: float, y: float) -> Tuple[float, float]:
        """Image pixel coordinates of the data point (x, y)."""
        left, top, right, bottom = self.box
        x0, x1 = self.x_range
        y0, y1 = self.y_range
        if self.log_y:
            y, y0, y1 = math.log10(y), math.log10(y0), math.log10(y1)
        return (left + (right - left) * (x - x0) / (x1 - x0),
                bottom - (bottom - top) * (y - y0) / (y1 - y0))


def data_range(values: Sequence[float], log: bool, pad: float = 0.05) -> Tuple[float, float]:
    """(lo, hi) covering the drawable ``values`` with ``pad`` of the span added each side (in log10 on a log
    axis); a single value gets a span of its own size (or one decade); no value gives (0, 1) or (0.1, 1)."""
    vals = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
    if not vals:
        return (0.1, 1.0) if log else (0.0, 1.0)
    lo, hi = min(vals), max(vals)
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    if hi <= lo:
        half = 0.5 if log else max(abs(lo) * 0.1, 0.5)
        lo, hi = lo - half, hi + half
    else:
        span = hi - lo
        lo, hi = lo - pad * span, hi + pad * span
    return (10 ** lo, 10 ** hi) if log else (lo, hi)


def linear_ticks(lo: float, hi: float, max_ticks: int = 7) -> List[float]:
    """Round values (1, 2 or 5 times a power of ten apart) within [lo, hi], at most ``max_ticks`` of them."""
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return [lo]
    raw = span / max(max_ticks - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + 1e-9 * step:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


def log_ticks(lo: float, hi: float) -> List[float]:
    """Decades within [lo, hi], with 2x and 5x when fewer than three decades are shown; the ends of the
    range when no such round value falls inside."""
    d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    multiples = (1, 2, 5) if d1 - d0 <= 3 else (1,)
    ticks = [m * 10.0 ** d for d in range(d0, d1 + 1) for m in multiples if lo <= m * 10.0 ** d <= hi]
    return ticks or [lo, hi]


def format_tick(v: float) -> str:
    """A short label: plain digits for moderate magnitudes, else scientific (1e-04)."""
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e5:
        return f"{v:.4g}"
    return f"{v:.0e}"


def draw_line_chart(draw: ImageDraw.ImageDraw, box: Tuple[int, int, int, int], series: Sequence[Series], *,
                    title: str = "", x_label: str = "", y_label: str = "", log_y: bool = False,
                    x_range: Optional[Tuple[float, float]] = None, y_range: Optional[Tuple[float, float]] = None,
                    marks: Sequence[Mark] = (), legend: bool = True, text_size: int = 13) -> Axes:
    """Draw a chart of ``series`` into ``box`` = (left, top, right, bottom) of the image behind ``draw``.

    ``x_range``/``y_range`` default to the data (padded by 5 %); a log ``y_range`` must be positive.
    Returns the :class:`Axes` of the plot area.
    """
    f_text, f_title = font(text_size), font(text_size + 3)
    left, top, right, bottom = box
    plot = (left + MARGINS["left"], top + MARGINS["top"], right - MARGINS["right"], bottom - MARGINS["bottom"])
    named = [s for s in series if s.label] if legend else []
    legend_y = top + 6
    if named and plot[0] + draw.textlength(title, font=f_title) + 16 + _legend_width(draw, named, f_text) > plot[2]:
        legend_y += text_size + 8           # no room beside the title: a row of its own below it
        plot = (plot[0], plot[1] + text_size + 8, plot[2], plot[3])
    if x_range is None:
        x_range = data_range([x for s in series for x in s.xs], log=False, pad=0.0)
    if y_range is None:
        y_range = data_range([y for s in series for y in s.ys] + [m.y for m in marks], log=log_y)
    axes = Axes(plot, (float(x_range[0]), float(x_range[1])), (float(y_range[0]), float(y_range[1])), log_y)
    pl, pt, pr, pb = plot

    y_ticks = log_ticks(*axes.y_range) if log_y else linear_ticks(*axes.y_range)
    for v in y_ticks:
        _, py = axes.pixel(axes.x_range[0], v)
        draw.line([(pl, py), (pr, py)], fill=GRID_COLOUR)
        text = format_tick(v)
        draw.text((pl - 6 - draw.textlength(text, font=f_text), py - text_size / 2 - 1), text, fill=TEXT_COLOUR,
                  font=f_text)
    for v in linear_ticks(*axes.x_range, max_ticks=max(3, int((pr - pl) / 90))):
        px, _ = axes.pixel(v, axes.y_range[0])
        draw.line([(px, pt), (px, pb)], fill=GRID_COLOUR)
        draw.line([(px, pb), (px, pb + 4)], fill=FRAME_COLOUR)
        text = format_tick(v)
        draw.text((px - draw.textlength(text, font=f_text) / 2, pb + 6), text, fill=TEXT_COLOUR, font=f_text)
    draw.rectangle(plot, outline=FRAME_COLOUR)
    if title:
        draw.text((pl, top + 6), title, fill="black", font=f_title)
    if x_label:
        draw.text(((pl + pr - draw.textlength(x_label, font=f_text)) / 2, pb + 8 + text_size + 4), x_label,
                  fill=TEXT_COLOUR, font=f_text)
    if y_label:
        draw.text((left + 4, pt - text_size - 4), y_label, fill=TEXT_COLOUR, font=f_text)

    for s in series:
        for run in _drawable_runs(axes, s):
            points = [axes.pixel(x, y) for x, y in run]
            if len(points) == 1:
                (px, py), r = points[0], max(s.width, 2)
                draw.ellipse([px - r, py - r, px + r, py + r], fill=s.colour)
            else:
                draw.line(points, fill=s.colour, width=s.width, joint="curve")
    for m in marks:
        if not axes.usable(m.y):
            continue
        px, py = axes.pixel(m.x, m.y)
        draw.ellipse([px - 6, py - 6, px + 6, py + 6], outline=m.colour, width=2)
        tw = draw.textlength(m.text, font=f_text)
        tx = min(max(px - tw / 2, pl + 2), pr - tw - 2)
        ty = py - 8 - text_size - 4 if py - 8 - text_size - 4 > pt + 2 else py + 10
        draw.text((tx, ty), m.text, fill=m.colour, font=f_text)
    if named:
        _legend(draw, legend_y, plot, named, f_text, text_size)
    return axes


def _drawable_runs(axes: Axes, s: Series) -> List[List[Tuple[float, float]]]:
    """The stretches of consecutive drawable points of ``s`` (a gap wherever a value cannot be drawn)."""
    runs, run = [], []
    for x, y in zip(s.xs, s.ys):
        if math.isfinite(x) and axes.usable(y):
            run.append((x, y))
        elif run:
            runs.append(run)
            run = []
    return runs + ([run] if run else [])


def _legend_width(draw, named, f_text) -> float:
    return sum(42 + draw.textlength(s.label, font=f_text) for s in named) - 16


def _legend(draw, y_top, plot, named, f_text, text_size) -> None:
    """The legend as one row starting at height ``y_top``, right-aligned with the plot area and above it (so
    it never hides a line): a short line in each colour followed by its label."""
    x = plot[2]
    y = y_top + text_size / 2 + 2
    for s in reversed(named):
        x -= draw.textlength(s.label, font=f_text)
        draw.text((x, y - text_size / 2 - 1), s.label, fill=TEXT_COLOUR, font=f_text)
        x -= 26
        draw.line([(x, y), (x + 20, y)], fill=s.colour, width=max(s.width, 2))
        x -= 16
