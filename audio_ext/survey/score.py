"""``survey score``: turn answer sheets into mean opinion scores, intervals, tests and a report.

Answer sheets are the JSON or CSV files the page downloads (or ``survey serve`` saved); they hold
clip ids only, and the conditions come from the survey's ``manifest.json``. The report
(``report.md``, ``report.html``, ``mos.png``, ``scores.json``) holds, per condition, the MOS with
its 95 % t-interval and bootstrap interval, and between every two rated conditions the
Mann-Whitney U test on all ratings and the Wilcoxon signed-rank test on the per-listener means of
listeners who rated both, each family Holm-corrected (formulas in :mod:`.stats`). Automatic metrics
that ``calc_metrics.py`` logged beside each network snapshot (``metric-*.jsonl``) are shown too.

Attention check: a listener *fails* the anchors when any anchor clip got a rating above
``anchor_max`` (default 2, "poor"). Failed listeners are listed, and dropped with
``exclude_failed_anchors``. With ``normalise`` each rating is shifted by the listener's own mean
offset from the grand mean (removes "harsh" and "lenient" listeners' bias, keeps the 1-5 scale).
"""
from __future__ import annotations

import csv
import dataclasses
import html
import io
import itertools
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from audio_ext.survey.chart import draw_mos_chart
from audio_ext.survey.make import SurveyError, load_manifest
from audio_ext.survey.request import parse_json
from audio_ext.survey.serve import SheetError, validate_sheet
from audio_ext.survey.significance import bootstrap_interval, holm, mann_whitney, t_interval, wilcoxon_signed_rank
from stylegan2.cli_errors import describe_os_error
from stylegan2.misc import atomic_write_text

ANCHOR = "anchor"
#: Largest answer file read, in bytes (a sheet of 500 clips with long comments is well under 1 MB).
MAX_SHEET_FILE = 16 * 2**20


@dataclasses.dataclass
class Rating:
    """One answer joined with the manifest."""

    listener: str
    clip: str
    condition: str
    rating: float
    listened_s: float


def _read_csv_sheet(text: str) -> List[dict]:
    """Sheets (one per listener) from the page's CSV export."""
    sheets: Dict[Tuple[str, str], dict] = {}
    reader = csv.DictReader(io.StringIO(text))
    need = {"survey_id", "listener", "clip", "rating"}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise SheetError(f"CSV needs the columns {', '.join(sorted(need))}")
    for row in reader:
        key = (row["survey_id"], row["listener"])
        seed = row.get("seed") or None
        s = sheets.setdefault(key, {"format": "electrogan-survey-answers", "survey_id": row["survey_id"],
                                    "listener": row["listener"],
                                    "seed": int(seed) if isinstance(seed, str) and seed.isascii() and seed.isdigit()
                                    else None,
                                    "answers": []})
        try:
            s["answers"].append({"clip": row["clip"], "rating": int(row["rating"]),
                                 "listened_s": float(row.get("listened_s") or 0), "plays": int(row.get("plays") or 0),
                                 "comment": row.get("comment") or ""})
        except (ValueError, TypeError):  # TypeError: a short row leaves the field None
            raise SheetError(f"row of clip {row.get('clip')!r}: rating, listened_s or plays is not a number") from None
    return list(sheets.values())


def sheet_files(paths: Sequence) -> List[Path]:
    """The ``.json``/``.csv`` files named, or inside the folders named (not hidden, sorted by name)."""
    out: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                          and f.suffix.lower() in (".json", ".csv"))
        elif p.is_file():
            out.append(p)
        else:
            raise SurveyError(f"{p}: no such answer file or folder")
    return out


def load_ratings(paths: Sequence, manifest: Dict, log: Callable[[str], None] = print) -> List[Rating]:
    """Every valid answer of the files under ``paths``, joined with the manifest's conditions.

    A file that is not a valid sheet of this survey (unreadable, larger than :data:`MAX_SHEET_FILE`,
    not UTF-8, malformed or too deeply nested JSON or CSV, wrong fields) is reported in one line and
    skipped. When one listener rated a clip in several files, the file that sorts last wins (saved
    sheets are named by time).
    """
    condition = {c["id"]: c["condition"] for c in manifest["clips"]}
    latest: Dict[Tuple[str, str], Rating] = {}
    files = sheet_files(paths)
    for f in files:
        try:
            if f.stat().st_size > MAX_SHEET_FILE:
                raise SheetError(f"larger than {MAX_SHEET_FILE} bytes, not an answer sheet")
            data = f.read_bytes()
            sheets = _read_csv_sheet(data.decode("utf-8")) if f.suffix.lower() == ".csv" else [parse_json(data)]
            sheets = [validate_sheet(s, manifest) for s in sheets]
        except (OSError, ValueError, TypeError, csv.Error, RecursionError) as e:  # ValueError: JSON, UTF-8, sheet
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            log(f"skipped {f}: {why}")
            continue
        for s in sheets:
            for a in s["answers"]:
                latest[(s["listener"], a["clip"])] = Rating(s["listener"], a["clip"], condition[a["clip"]],
                                                            float(a["rating"]), float(a["listened_s"]))
    return list(latest.values())


def failed_anchor_listeners(ratings: Sequence[Rating], anchor_max: float = 2) -> List[str]:
    """Listeners who rated any anchor clip above ``anchor_max``, sorted."""
    return sorted({r.listener for r in ratings if r.condition == ANCHOR and r.rating > anchor_max})


def normalise_listeners(ratings: Sequence[Rating]) -> List[Rating]:
    """Ratings shifted by each listener's offset: ``r - mean(listener) + mean(all)``."""
    grand = float(np.mean([r.rating for r in ratings])) if ratings else 0.0
    per: Dict[str, List[float]] = defaultdict(list)
    for r in ratings:
        per[r.listener].append(r.rating)
    offset = {k: float(np.mean(v)) - grand for k, v in per.items()}
    return [dataclasses.replace(r, rating=r.rating - offset[r.listener]) for r in ratings]


def condition_order(manifest: Dict) -> List[str]:
    """Conditions as the manifest lists them (original first, anchor last)."""
    names = list(manifest.get("conditions") or dict.fromkeys(c["condition"] for c in manifest["clips"]))
    return sorted(names, key=lambda n: (n != "original", n == ANCHOR, names.index(n)))


def score(ratings: Sequence[Rating], conditions: Sequence[str], confidence: float = 0.95, n_boot: int = 10000,
          seed: int = 0) -> Dict:
    """MOS rows per condition and pairwise test rows (see the module docstring) as plain dicts."""
    by_cond: Dict[str, List[float]] = {c: [] for c in conditions}
    listened: Dict[str, List[float]] = defaultdict(list)
    per_listener: Dict[str, Dict[str, List[float]]] = {c: defaultdict(list) for c in conditions}
    for r in ratings:
        by_cond.setdefault(r.condition, []).append(r.rating)
        listened[r.condition].append(r.listened_s)
        per_listener.setdefault(r.condition, defaultdict(list))[r.listener].append(r.rating)
    rows = []
    for k, c in enumerate(by_cond):
        x = by_cond[c]
        mos, lo, hi = t_interval(x, confidence)
        blo, bhi = bootstrap_interval(x, confidence, n_boot, seed + k)
        rows.append({"condition": c, "n": len(x), "listeners": len(per_listener[c]), "mos": mos,
                     "std": float(np.std(x, ddof=1)) if len(x) > 1 else math.nan,
                     "t_low": lo, "t_high": hi, "boot_low": blo, "boot_high": bhi,
                     "listened_s": float(np.mean(listened[c])) if listened[c] else math.nan})
    tested = [c for c in by_cond if c != ANCHOR and by_cond[c]]
    pairs = []
    for a, b in itertools.combinations(tested, 2):
        u, p_u = mann_whitney(by_cond[a], by_cond[b])
        both = sorted(set(per_listener[a]) & set(per_listener[b]))
        diffs = [float(np.mean(per_listener[a][k]) - np.mean(per_listener[b][k])) for k in both]
        w, p_w = wilcoxon_signed_rank(diffs) if diffs else (math.nan, math.nan)
        pairs.append({"a": a, "b": b, "mos_diff": float(np.mean(by_cond[a]) - np.mean(by_cond[b])),
                      "mw_u": u, "mw_p": p_u, "paired_listeners": len(both), "wilcoxon_w": w, "wilcoxon_p": p_w})
    for key in ("mw_p", "wilcoxon_p"):
        for row, adj in zip(pairs, holm([r[key] for r in pairs])):
            row[key + "_holm"] = adj
    return {"conditions": rows, "pairs": pairs, "confidence": confidence, "n_boot": n_boot}


def snapshot_metrics(manifest: Dict) -> List[dict]:
    """The latest ``calc_metrics.py`` record of each metric logged beside each network of the survey."""
    out = []
    for net in manifest.get("networks") or []:
        path = Path(net["path"])
        for log_file in sorted(path.parent.glob("metric-*.jsonl")):
            latest = None
            for line in log_file.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and rec.get("snapshot_pkl") in (None, path.name):
                    latest = rec
            if latest is not None and isinstance(latest.get("results"), dict):
                for key, value in latest["results"].items():
                    out.append({"condition": net["condition"], "metric": latest.get("metric", log_file.stem[7:]),
                                "key": key, "value": value, "snapshot": latest.get("snapshot_pkl")})
    return out


def _no_nan(v):
    """``v`` with NaN floats replaced by None (JSON has no NaN)."""
    if isinstance(v, dict):
        return {k: _no_nan(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_no_nan(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fmt(v, digits: int = 2) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.{digits}f}" if abs(v) >= 10 ** -digits or v == 0 else f"{v:.2g}"
    return str(v)


def _tables(result: Dict) -> List[Tuple[str, List[str], List[list]]]:
    conf = int(round(result["confidence"] * 100))
    mos = ("Mean opinion score", ["condition", "MOS", f"{conf}% CI (t)", f"{conf}% CI (bootstrap)", "ratings",
                                  "listeners", "std", "listened (s, mean)"],
           [[r["condition"], _fmt(r["mos"]), f"{_fmt(r['t_low'])} - {_fmt(r['t_high'])}",
             f"{_fmt(r['boot_low'])} - {_fmt(r['boot_high'])}", r["n"], r["listeners"], _fmt(r["std"]),
             _fmt(r["listened_s"], 1)]
            for r in result["conditions"]])
    pairs = ("Pairwise tests (two-sided; p adjusted by Holm within each test)",
             ["A", "B", "MOS A - B", "Mann-Whitney U", "p (Holm)", "paired listeners", "Wilcoxon W", "p (Holm)"],
             [[p["a"], p["b"], _fmt(p["mos_diff"]), _fmt(p["mw_u"], 1), _fmt(p["mw_p_holm"], 3),
               p["paired_listeners"], _fmt(p["wilcoxon_w"], 1), _fmt(p["wilcoxon_p_holm"], 3)]
              for p in result["pairs"]])
    tables = [mos, pairs]
    if result.get("metrics"):
        tables.append(("Automatic metrics (calc_metrics.py, beside the snapshots)",
                       ["condition", "metric", "result", "value"],
                       [[m["condition"], m["metric"], m["key"], _fmt(m["value"], 4) if isinstance(m["value"], float)
                         else m["value"]] for m in result["metrics"]]))
    return tables


def _markdown(result: Dict, chart: str) -> str:
    lines = [f"# Listening test {result['survey_id']}: {result['title']}", "", result["summary"], "",
             f"![MOS per condition]({chart})", ""]
    for title, head, rows in _tables(result):
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""]
    return "\n".join(lines)


def _html(result: Dict, chart: str) -> str:
    e = lambda v: html.escape(str(v), quote=True)  # noqa: E731
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>Listening test {e(result['survey_id'])}</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:60em;margin:1.5em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:0.25em 0.6em;"
             "text-align:left}img{max-width:100%}</style></head><body>",
             f"<h1>Listening test {e(result['survey_id'])}: {e(result['title'])}</h1>", f"<p>{e(result['summary'])}</p>",
             f'<img src="{e(chart)}" alt="Bar chart of the mean opinion score per condition with 95% intervals">']
    for title, head, rows in _tables(result):
        parts.append(f"<h2>{e(title)}</h2><table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head)
                     + "</tr></thead><tbody>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        parts.append("</tbody></table>")
    parts += ["</body></html>", ""]
    return "\n".join(parts)


def score_survey(responses: Sequence, manifest_path=None, outdir=None, exclude_failed_anchors: bool = False,
                 anchor_max: float = 2, normalise: bool = False, n_boot: int = 10000, seed: int = 0,
                 log: Callable[[str], None] = print) -> Dict:
    """Score the answer files under ``responses`` and write the report; returns the result dict.

    ``manifest_path`` defaults to ``manifest.json`` in the first responses folder's parent (the
    survey folder); ``outdir`` defaults to ``report/`` in the manifest's folder.
    """
    first = Path(responses[0])
    if manifest_path is None:
        candidates = [first.parent / "manifest.json", first / "manifest.json", first.parent.parent / "manifest.json"]
        manifest_path = next((c for c in candidates if c.is_file()), candidates[0])
    manifest = load_manifest(manifest_path)
    mdir = Path(manifest_path) if Path(manifest_path).is_dir() else Path(manifest_path).parent
    ratings = load_ratings(responses, manifest, log)
    if not ratings:
        raise SurveyError(f"{', '.join(map(str, responses))}: no valid answers of survey {manifest['survey_id']}")
    listeners = sorted({r.listener for r in ratings})
    failed = failed_anchor_listeners(ratings, anchor_max)
    if exclude_failed_anchors:
        ratings = [r for r in ratings if r.listener not in failed]
        if not ratings:
            raise SurveyError("every listener failed the anchor check; nothing left to score")
    if normalise:
        ratings = normalise_listeners(ratings)
    result = score(ratings, condition_order(manifest), n_boot=n_boot, seed=seed)
    kept = len({r.listener for r in ratings})
    result.update(survey_id=manifest["survey_id"], title=manifest.get("title", ""), listeners=listeners,
                  failed_anchor=failed, excluded=failed if exclude_failed_anchors else [], normalised=normalise,
                  metrics=snapshot_metrics(manifest), ratings=len(ratings))
    result["summary"] = (f"{len(ratings)} ratings from {kept} listener(s)"
                         + (f"; {len(failed)} listener(s) rated an anchor above {anchor_max:g} "
                            f"({', '.join(failed)})" + (" and were excluded" if exclude_failed_anchors else
                                                        " (kept; --exclude-failed-anchors drops them)")
                            if failed else "; every listener rated the anchors as expected")
                         + ("; ratings normalised per listener" if normalise else "")
                         + f"; loudness: {manifest.get('loudness', {}).get('measure', '?')} at "
                           f"{manifest.get('loudness', {}).get('level_dbfs', '?')} dBFS.")
    out = Path(outdir) if outdir is not None else mdir / "report"
    try:  # a full, read-only or misplaced report folder is one line naming it
        out.mkdir(parents=True, exist_ok=True)
        draw_mos_chart(out / "mos.png", result["conditions"],
                       title=f"Mean opinion score, {int(result['confidence'] * 100)}% intervals ({kept} listeners)")
        atomic_write_text(out / "scores.json", json.dumps(_no_nan(result), indent=1, sort_keys=True) + "\n")
        atomic_write_text(out / "report.md", _markdown(result, "mos.png"))
        atomic_write_text(out / "report.html", _html(result, "mos.png"))
    except OSError as e:
        raise SurveyError(f"--outdir {out}: cannot write the report ({describe_os_error(e)})") from None
    result["report_dir"] = str(out)
    return result
