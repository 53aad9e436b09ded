"""Training curves of one or more run folders in one PNG: losses, regularisers, metrics and a strip of fakes.

Reads what ``train.py`` writes into a run folder (docs/training.md): ``stats.jsonl`` (one JSON object
per tick, each statistic ``{"num", "mean", "std"}``, plus a Unix ``timestamp``), ``metric-<name>.jsonl``
(one line per measured snapshot: ``results``, ``key``, ``higher_is_better``, ``snapshot_pkl``,
``timestamp``), the grids ``fakes_init.png``, ``fakesNNNNNN.png`` and ``reals.png``, and
``training_options.json`` (its ``resolution`` gives the grid cell size).

A resumed run writes a new folder whose kimg continues where its snapshot stopped, and whose clock
(``Timing/total_sec``) restarts at zero. So the folders are put in order of their first tick's kimg and
concatenated: from a folder's first kimg on, the next folder's points replace the earlier folder's (a
resume from an older snapshot redoes that stretch), and the training time is the sum over folders of
``total_sec`` at each one's last kept tick. A snapshot's kimg is that of the tick it was written at:
the last tick in the whole kimg its name gives (``NNNNNN``; a 9-digit name is the image count) that
was logged before the metric line (or the grid file) was written.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

from .line_chart import Mark, Series, draw_line_chart, font
from .misc import atomic_path
from .snapshot import SnapshotError, open_regular_file

LOSSES = (("Loss/G/loss", "G loss", (31, 119, 180)), ("Loss/D/loss", "D loss", (214, 39, 40)))
REGULARISERS = (("Loss/r1_penalty", "R1 penalty", (44, 160, 44)),
                ("Loss/pl_penalty", "path-length penalty", (148, 103, 189)))
METRIC_COLOUR = (230, 120, 0)
REALS_COLOUR = (90, 90, 90)
_FAKES_RE = re.compile(r"^fakes(\d{6}|\d{9})\.png$")
_SNAPSHOT_RE = re.compile(r"^network-snapshot-(\d{6}|\d{9})\.pkl$")
#: Largest log file read (bytes): a 25,000-kimg run with 4-kimg ticks writes about 15 MB of stats.jsonl.
MAX_LOG_BYTES = 256 * 2**20
#: Largest fakes / reals grid drawn as a thumbnail (pixels); train.py's grids are at most 32 images of R x R.
MAX_GRID_PIXELS = 64 * 2**20


class CurvesError(ValueError):
    """A run folder or one of its files cannot be read; the message names the file (and line)."""


@dataclasses.dataclass
class MetricCurve:
    """One metric's headline value per measured snapshot, in kimg order.

    A curve with a ``reference`` is a statistic of the fakes beside the same statistic of the reals (a
    metric's ``<name>_gen`` / ``<name>_real`` results, e.g. sfd1k's ``onset_contrast``): nearer the reals is
    better, and ``higher_is_better`` is None.
    """
    name: str
    kimg: List[float]
    values: List[float]
    higher_is_better: Optional[bool]
    reference: Optional[List[float]] = None

    def best(self) -> Optional[Tuple[float, float]]:
        """(kimg, value) of the best finite value (with a reference: the nearest to it, relative), the first
        one on a tie; None without any."""
        refs = self.reference or [math.nan] * len(self.values)
        points = [(k, v, r) for k, v, r in zip(self.kimg, self.values, refs)
                  if math.isfinite(v) and (self.reference is None or (math.isfinite(r) and r != 0))]
        if not points:
            return None
        if self.reference is not None:
            k, v, _ = min(points, key=lambda p: abs(p[1] / p[2] - 1))
            return k, v
        pick = max if self.higher_is_better else min
        k, v, _ = pick(points, key=lambda p: p[1])
        return k, v


@dataclasses.dataclass
class Curves:
    """The concatenated record of the runs ``run_dirs`` (in timeline order).

    ``kimg[i]`` is tick i's image count in thousands and ``series[name][i]`` its mean of statistic
    ``name`` (NaN where that tick did not log it); ``fakes`` lists ``(kimg, label, path)`` of every
    kept grid, ``total_sec`` is the summed wall-clock training time in seconds.
    """
    run_dirs: List[Path]
    kimg: List[float]
    series: Dict[str, List[float]]
    metrics: Dict[str, MetricCurve]
    fakes: List[Tuple[float, str, Path]]
    reals: Optional[Path]
    total_sec: float
    resolution: Optional[int]

    @property
    def total_kimg(self) -> float:
        return self.kimg[-1] if self.kimg else 0.0


@dataclasses.dataclass
class _Run:
    path: Path
    ticks: List[Dict[str, float]]            # flattened: name -> mean, plus "timestamp" when logged
    metric_lines: List[dict]                 # name, value, higher_is_better, tag, timestamp
    fakes: List[Tuple[str, Path]]            # ("init" or the NNNNNN tag, path)
    reals: Optional[Path]
    resolution: Optional[int]


def read_jsonl(path: Path) -> List[Tuple[int, dict]]:
    """``(line number, object)`` of each non-blank line of ``path``. A line that is not a JSON object is a
    :class:`CurvesError`, except an unfinished last line (no newline yet: a live run is writing it), skipped."""
    try:
        with open_regular_file(path, "log") as f:           # a FIFO or a device is refused, never read
            size = os.fstat(f.fileno()).st_size
            if size > MAX_LOG_BYTES:
                raise CurvesError(f"{path}: {size:,} bytes, over the {MAX_LOG_BYTES:,}-byte limit for a training log")
            text = f.read(MAX_LOG_BYTES + 1).decode("utf-8")
    except SnapshotError as e:
        raise CurvesError(str(e)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise CurvesError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    lines = text.split("\n")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):           # the text did not end with a newline: a line still being written
                continue
            raise CurvesError(f"{path}, line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise CurvesError(f"{path}, line {n}: not a JSON object")
        out.append((n, obj))
    return out


def _number(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _read_ticks(path: Path) -> List[Dict[str, float]]:
    """The ticks of ``stats.jsonl``: every statistic's mean (and the timestamp) as floats."""
    ticks = []
    for n, obj in read_jsonl(path):
        tick = {}
        for name, value in obj.items():
            if isinstance(value, dict):
                mean = _number(value.get("mean"))
                if mean is None:
                    raise CurvesError(f"{path}, line {n}: {name} has no numeric mean")
                tick[name] = mean
            elif _number(value) is not None:
                tick[name] = _number(value)
        if "Progress/kimg" not in tick or not math.isfinite(tick["Progress/kimg"]):
            raise CurvesError(f"{path}, line {n}: no Progress/kimg (not a tick line of train.py)")
        ticks.append(tick)
    return ticks


def _read_metric_lines(path: Path) -> List[dict]:
    """The headline value of each line of a ``metric-<name>.jsonl`` with the snapshot tag it measured."""
    default_name = path.stem[len("metric-"):]
    out = []
    for n, obj in read_jsonl(path):
        results = obj.get("results")
        if not isinstance(results, dict):
            raise CurvesError(f"{path}, line {n}: no results object")
        key = obj.get("key") or obj.get("metric") or default_name
        value = _number(results.get(key))
        if value is None:
            raise CurvesError(f"{path}, line {n}: results.{key} is not a number")
        match = _SNAPSHOT_RE.match(str(obj.get("snapshot_pkl") or ""))
        if match is None:             # measured outside training (calc_metrics.py without a snapshot name)
            continue
        when = _number(obj.get("timestamp"))
        out.append(dict(name=str(key), value=value, higher_is_better=bool(obj.get("higher_is_better", False)),
                        tag=match.group(1), timestamp=when, reference=None))
        for name in sorted(results):        # a statistic of the fakes beside the reals' (sfd1k: onset_contrast_gen)
            base = name[:-len("_gen")] if name.endswith("_gen") else None
            gen, real = _number(results.get(name)), _number(results.get(f"{base}_real")) if base else None
            if gen is not None and real is not None:
                out.append(dict(name=f"{key} {base}", value=gen, higher_is_better=None, tag=match.group(1),
                                timestamp=when, reference=real))
    return out


def read_run(folder) -> _Run:
    """Everything the curves need from one run folder; :class:`CurvesError` names what is missing or broken."""
    path = Path(folder)
    if not path.is_dir():
        raise CurvesError(f"{path}: not a folder")
    stats_path = path / "stats.jsonl"
    if not stats_path.is_file():
        raise CurvesError(f"{path}: no stats.jsonl (not a run folder written by train.py)")
    ticks = _read_ticks(stats_path)
    metric_lines = [m for f in sorted(path.glob("metric-*.jsonl")) for m in _read_metric_lines(f)]
    fakes = [("init", path / "fakes_init.png")] if (path / "fakes_init.png").is_file() else []
    fakes += sorted((m.group(1), f) for f in path.glob("fakes*.png") if (m := _FAKES_RE.match(f.name)))
    resolution = None
    options = path / "training_options.json"
    if options.is_file():
        try:
            resolution = _number(json.loads(options.read_text(encoding="utf-8")).get("resolution"))
        except (OSError, ValueError, AttributeError):
            resolution = None          # the grid cell size is only a nicety for the thumbnails
    return _Run(path, ticks, metric_lines, fakes, path / "reals.png" if (path / "reals.png").is_file() else None,
                int(resolution) if resolution else None)


def snapshot_kimg(tag: str, ticks: Sequence[Dict[str, float]], when: Optional[float]) -> float:
    """kimg of the snapshot (or grid) named ``tag``: a 9-digit tag is the image count itself; a 6-digit
    one the whole kimg, refined to the last tick of that kimg logged by ``when`` (Unix seconds)."""
    if len(tag) == 9:
        return int(tag) / 1000
    whole = int(tag)
    same = [t for t in ticks if round(t["Progress/kimg"] * 1000) // 1000 == whole]
    if when is not None:
        before = [t for t in same if t.get("timestamp", math.inf) <= when]
        if before:
            return before[-1]["Progress/kimg"]
    return float(whole)


def load_curves(run_dirs: Sequence) -> Curves:
    """Read and concatenate the runs ``run_dirs`` (any order; sorted by their first tick's kimg)."""
    runs = [read_run(d) for d in run_dirs]
    if not any(r.ticks for r in runs):
        raise CurvesError(f"{', '.join(str(r.path) for r in runs)}: no ticks logged yet in stats.jsonl")
    runs = sorted((r for r in runs if r.ticks), key=lambda r: r.ticks[0]["Progress/kimg"])
    reals = next((r.reals for r in reversed(runs) if r.reals), None)          # the latest run's
    resolution = next((r.resolution for r in reversed(runs) if r.resolution), None)
    kimg, ticks, metric_points, fakes, total_sec = [], [], {}, [], 0.0
    for i, run in enumerate(runs):
        cut = runs[i + 1].ticks[0]["Progress/kimg"] if i + 1 < len(runs) else math.inf
        kept = [t for t in run.ticks if t["Progress/kimg"] < cut]
        ticks += kept
        if kept:
            total_sec += kept[-1].get("Timing/total_sec", 0.0)
        metric_time = {}
        for m in run.metric_lines:
            at = snapshot_kimg(m["tag"], run.ticks, m["timestamp"])
            metric_time.setdefault(m["tag"], m["timestamp"])
            if at < cut:
                metric_points.setdefault(m["name"], []).append((at, m["value"], m["higher_is_better"],
                                                                m["reference"]))
        for tag, f in run.fakes:
            if tag == "init":
                at, label = 0.0, "init"
            else:
                when = metric_time.get(tag)
                if when is None:
                    try:
                        when = f.stat().st_mtime
                    except OSError:
                        when = None
                at = snapshot_kimg(tag, run.ticks, when)
                label = f"{at:.1f} kimg"
            if at < cut:
                fakes.append((at, label, f))
    kimg = [t["Progress/kimg"] for t in ticks]
    names = sorted({n for t in ticks for n in t})
    series = {n: [t.get(n, math.nan) for t in ticks] for n in names}
    metrics = {}
    for name, points in metric_points.items():
        points.sort(key=lambda p: p[0])
        paired = points[-1][3] is not None
        metrics[name] = MetricCurve(name, [p[0] for p in points], [p[1] for p in points], points[-1][2],
                                    [p[3] if p[3] is not None else math.nan for p in points] if paired else None)
    fakes.sort(key=lambda f: f[0])
    return Curves([r.path for r in runs], kimg, series, metrics, fakes, reals, total_sec, resolution)


def spread_pick(items: Sequence[Tuple[float, str, Path]], count: int) -> List[Tuple[float, str, Path]]:
    """At most ``count`` of the kimg-sorted ``items``, the first and the last always, the others nearest to
    evenly spaced kimg values between them."""
    if len(items) <= count:
        return list(items)
    first, last = items[0][0], items[-1][0]
    chosen = {0, len(items) - 1}
    for k in range(1, count - 1):
        target = first + (last - first) * k / (count - 1)
        free = [i for i in range(len(items)) if i not in chosen]
        chosen.add(min(free, key=lambda i: abs(items[i][0] - target)))
    return [items[i] for i in sorted(chosen)]


def _thumbnail(path: Path, cell: Optional[int], width: int) -> Optional[Image.Image]:
    """The top-left 2 x 2 images of a grid (the whole grid when ``cell`` does not divide it) at ``width`` pixels."""
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_GRID_PIXELS:       # checked from the header, before decoding
                return None
            im = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if cell and im.width % cell == 0 and im.height % cell == 0:
        im = im.crop((0, 0, min(2 * cell, im.width), min(2 * cell, im.height)))
    height = max(1, round(im.height * width / im.width))
    return im.resize((width, height), Image.LANCZOS)


def draw_curves(curves: Curves, width: int = 1400, fakes_count: int = 6) -> Image.Image:
    """The picture: a title, losses and regularisers side by side, one chart per metric, then the fakes strip."""
    margin, chart_h, title_h = 16, 340, 70
    metric_rows = (len(curves.metrics) + 1) // 2
    picked = spread_pick(curves.fakes, fakes_count)
    thumbs = picked + ([(math.nan, "reals", curves.reals)] if curves.reals else [])
    gap = 14
    thumb_w = int(min(220, (width - 2 * margin - gap * max(len(thumbs) - 1, 0)) / max(len(thumbs), 1)))
    images = [(label, _thumbnail(p, curves.resolution, thumb_w)) for _, label, p in thumbs]
    images = [(label, im) for label, im in images if im is not None]
    strip_h = (40 + max(im.height for _, im in images) + 28) if images else 0
    height = title_h + chart_h * (1 + metric_rows) + strip_h + margin
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)

    names = ", ".join(p.name for p in curves.run_dirs)
    draw.text((margin, 10), f"Training curves: {curves.total_kimg:.1f} kimg in {curves.total_sec / 3600:.2f} h "
                            f"({len(curves.run_dirs)} run folder{'s' if len(curves.run_dirs) != 1 else ''})",
              fill="black", font=font(22))
    draw.text((margin, 42), names, fill=(60, 60, 60), font=font(14))

    x_range = (min(curves.kimg + [f[0] for f in curves.fakes]), max(curves.kimg))
    if x_range[1] <= x_range[0]:
        x_range = (x_range[0] - 0.5, x_range[0] + 0.5)
    half = (width - 2 * margin) // 2
    top = title_h
    boxes = [(margin, top, margin + half, top + chart_h), (margin + half, top, width - margin, top + chart_h)]
    losses = [Series(label, curves.kimg, curves.series[key], colour) for key, label, colour in LOSSES
              if key in curves.series]
    draw_line_chart(draw, boxes[0], losses, title="Losses (mean per tick)", x_label="kimg", y_label="loss",
                    x_range=x_range)
    regs = [Series(label, curves.kimg, curves.series[key], colour) for key, label, colour in REGULARISERS
            if key in curves.series]
    finite = [v for s in regs for v in s.ys if math.isfinite(v)]
    log_y = bool(finite) and min(finite) > 0
    draw_line_chart(draw, boxes[1], regs, title="Regularisers" + (" (log scale)" if log_y else ""), x_label="kimg",
                    y_label="penalty", log_y=log_y, x_range=x_range)
    for k, metric in enumerate(curves.metrics.values()):
        row, col = divmod(k, 2)
        y0 = title_h + chart_h * (1 + row)
        alone = col == 0 and k == len(curves.metrics) - 1
        box = (margin + col * half, y0, width - margin if (alone or col == 1) else margin + half, y0 + chart_h)
        best = metric.best()
        if metric.reference is not None:
            marks = [Mark(best[0], best[1], f"nearest the reals: {best[1]:.4g} at {best[0]:.1f} kimg")] if best else []
            draw_line_chart(draw, box, [Series("fakes", metric.kimg, metric.values, METRIC_COLOUR),
                                        Series("reals", metric.kimg, metric.reference, REALS_COLOUR)],
                            title=f"{metric.name}: fakes and reals", x_label="kimg",
                            x_range=x_range, marks=marks)
            continue
        marks = [Mark(best[0], best[1], f"best {best[1]:.4g} at {best[0]:.1f} kimg")] if best else []
        direction = "higher" if metric.higher_is_better else "lower"
        draw_line_chart(draw, box, [Series(metric.name, metric.kimg, metric.values, METRIC_COLOUR)],
                        title=f"Metric {metric.name} ({direction} is better)", x_label="kimg", y_label=metric.name,
                        x_range=x_range, marks=marks, legend=False)
    if images:
        y0 = title_h + chart_h * (1 + metric_rows) + 6
        draw.text((margin, y0), "Fakes (G_ema, fixed latents; top-left 2 x 2 of each grid) and reals",
                  fill="black", font=font(16))
        x = margin
        for label, im in images:
            img.paste(im, (x, y0 + 30))
            tw = draw.textlength(label, font=font(14))
            draw.text((x + (im.width - tw) / 2, y0 + 34 + im.height), label, fill=(40, 40, 40), font=font(14))
            x += im.width + gap
    return img


def write_training_curves(run_dirs: Sequence, out, width: int = 1400) -> Curves:
    """Read ``run_dirs``, draw the picture and write it to ``out`` as PNG atomically; returns the curves."""
    curves = load_curves(run_dirs)
    img = draw_curves(curves, width=width)
    with atomic_path(Path(out), suffix=".png") as tmp:
        img.save(tmp, format="PNG")
    return curves
