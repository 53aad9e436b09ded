"""The dataset statistics of ln power (mean, std) that the codec scales every image with.

Sampled deterministically from the sources (the same numbers for every shard and worker count), cached
in the build's work folder, or read from a file (``--stats``: a ``.stats.json``, a ``dataset.json`` or a
snapshot's audio block). ``--stats-only`` writes them for the shards of a large build to share.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from audio_ext.core.audio_io import audio_duration, audio_file_problem
from audio_ext.core.codec import audio_to_logpower
from audio_ext.core.geometry import StftGeometry
from audio_ext.core.running_stats import RunningStats
from audio_ext.dataset.archive import ArchiveError, PathLike, check_not_overlapping
from audio_ext.dataset.cut import SliceParams, iter_track_clips
from audio_ext.dataset.pool import Progress, ordered_map
from audio_ext.dataset.sources import Source, _name_bytes
from stylegan2.misc import atomic_write_text


def load_stats(path: PathLike) -> Tuple[float, float, dict]:
    """(mean, std, the JSON) from a stats file (RunningStats.to_dict(), or any object with mean and std)."""
    path = Path(path)
    problem = audio_file_problem(path)
    if problem not in (None, "no such file"):
        raise ArchiveError(f"{path}: cannot read the statistics ({problem})")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such statistics file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArchiveError(f"{path}: not a statistics JSON file ({e})") from None
    if isinstance(d, dict) and isinstance(d.get("audio"), dict):
        d = d["audio"]  # a dataset.json or a saved audio block: reuse its statistics
    try:
        mean, std = float(d["mean"]), float(d["std"])
    except (TypeError, KeyError, ValueError):
        raise ArchiveError(f"{path}: statistics need numeric 'mean' and 'std'") from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise ArchiveError(f"{path}: statistics must have a finite mean and a positive std (got {mean}, {std})")
    return mean, std, d


def _sample_segments(path: Path, segment_seconds: float, per_file: int) -> Optional[List[int]]:
    """Up to ``per_file`` segment indices spread evenly over the file (None: all of them)."""
    n = int(math.ceil(audio_duration(path) / segment_seconds)) if segment_seconds > 0 else 0
    if n <= per_file or n == 0:
        return None
    return sorted(set(np.linspace(0, n - 1, per_file).round().astype(int).tolist()))


def _stats_worker(task) -> dict:
    """Statistics of ln power over the sampled clips of one file (runs in a pool worker)."""
    path, name, geom_dict, params_dict, per_file = task
    geometry = StftGeometry.from_dict(geom_dict)
    params = SliceParams(**params_dict)
    stats = RunningStats()
    clips = 0
    try:
        segs = _sample_segments(Path(path), params.segment_seconds, per_file)
        for clip, _ in iter_track_clips(path, geometry, params, name, segments=segs):
            stats.update(audio_to_logpower(clip, geometry))
            clips += 1
            if clips >= per_file:
                break
    except Exception:  # a bad file simply contributes nothing to the sample; the main pass reports it
        pass
    return {"count": stats.count, "mean": stats.mean if stats.count else 0.0, "m2": stats.m2, "clips": clips}


# ---------------------------------------------------------------------------------------------
# Per-file work (resumable)
# ---------------------------------------------------------------------------------------------


def sampled_stats(sources: Sequence[Source], geometry: StftGeometry, params: SliceParams, stats_sample: int,
                  workers: int, progress: bool, work: Path, log: Callable[[str], None]) -> Tuple[float, float]:
    """Mean/std of ln power over a deterministic sample of about ``stats_sample`` clips (``workers``
    processes, a progress bar when ``progress``).

    Files are visited in a fixed pseudo-random order of the whole (unsharded) source list, so
    every shard computes the same numbers; each contributes clips from segments spread over its
    length, ``ceil(N / min(files, 64))`` at most. The result is cached in the work folder and
    written beside the destination as ``<dest>.stats.json`` for reuse with ``--stats``.
    """
    n = max(1, int(stats_sample))
    key = {"sample": n, "audio": geometry.to_dict(), "slicing": params.to_dict(),
           "sources": hashlib.sha1(_name_bytes("\n".join(s.name for s in sources))).hexdigest()}
    cache = work / "stats.json"
    if cache.exists():
        with contextlib.suppress(OSError, json.JSONDecodeError, KeyError, TypeError):
            d = json.loads(cache.read_text())
            if d["key"] == key:
                return float(d["mean"]), float(d["std"])
    per_file = max(1, math.ceil(n / min(len(sources), 64)))
    perm = np.random.default_rng(0).permutation(len(sources))
    total = RunningStats()
    clips = 0
    log(f"statistics: sampling up to {n} clips ({per_file} per file)")
    tasks = [(str(sources[i].path), sources[i].name, geometry.to_dict(), params.to_dict(), per_file) for i in perm]
    # Results are merged in the fixed file order and the pass stops at the same file whatever the
    # worker count, so the statistics (and the archive bytes) do not depend on --workers.
    bar = Progress(progress, n, "statistics", unit="clip")
    try:
        for r in ordered_map(_stats_worker, tasks, workers):
            if r["count"]:
                total.merge(RunningStats(r["count"], r["mean"], r["m2"]))
                clips += r["clips"]
                bar.update(min(r["clips"], max(0, n - clips + r["clips"])))
            if clips >= n:
                break
    finally:
        bar.close()
    if total.count == 0:
        raise ArchiveError("nothing usable: no clip could be cut from any source for the statistics "
                           "(all files unreadable, silent, too short or outside the tempo range)")
    mean, std = total.mean, total.std
    record = {"key": key, "mean": mean, "std": std, "clips": clips, **total.to_dict()}
    atomic_write_text(cache, json.dumps(record))
    return mean, std


def check_stats_destination(dest: PathLike, overwrite: bool, source: PathLike) -> Path:
    """Like :func:`~audio_ext.dataset.archive.check_destination` for the JSON file of ``--stats-only``:
    an existing file is replaced only with ``overwrite`` and only when it is a statistics file."""
    dest = Path(dest)
    check_not_overlapping(dest, [source])
    if dest.exists() or dest.is_symlink():
        if not overwrite:
            raise ArchiveError(f"{dest}: already exists; pass --overwrite to replace it")
        try:
            with open(dest, "rb") as f:
                d = json.loads(f.read(1 << 20))
            ours = isinstance(d, dict) and "mean" in d and "std" in d and dest.is_file() and not dest.is_symlink()
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise ArchiveError(f"{dest}: is not a statistics file written by this tool; refusing to replace it")
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ArchiveError(f"{dest}: cannot create the parent folder ({e.strerror or e})") from None
    return dest
