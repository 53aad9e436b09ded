"""The build pipeline of ``dataset_tool_audio.py``: audio files in, one ``stft.zip`` out.

:func:`build_archive` is the whole tool: gather the sources (a folder or a list file) and keep
this shard's, attach class labels, sample the dataset statistics (or read them from ``--stats``),
slice and encode every file in a process pool (one cached result per file in a work folder
``<dest>.partial/``, so an interrupted run resumes), then assemble the archive with
:class:`audio_ext.dataset.archive.ArchiveWriter` in sorted source order -- the bytes do not depend on the
worker count. The archive format itself (layout, ``dataset.json``, readers, merging) lives in
:mod:`audio_ext.dataset.archive`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from audio_ext.core.audio_io import AudioError, audio_file_problem
from audio_ext.core.codec import encode
from audio_ext.core.geometry import StftGeometry
from audio_ext.dataset.archive import (
    ArchiveError,
    ArchiveWriter,
    PathLike,
    check_destination,
    check_not_overlapping,
    merge_archives,
    png_bytes,
    remove_stale_temps,
)
from audio_ext.dataset.cut import SliceCounts, SliceParams, iter_track_clips
from audio_ext.dataset.pool import Progress, ordered_map
from audio_ext.dataset.sources import Source, _name_bytes, gather_sources, in_shard, read_labels
from audio_ext.dataset.statistics import check_stats_destination, load_stats, sampled_stats
from audio_ext.dataset.worklock import WorkLock
from stylegan2.misc import atomic_path, atomic_write_text

#: Layout version of the work folder's per-file results (3: the tempo-consistency rule; 4: PNGs
#: written by audio_ext.core.png -- same pixels, other bytes, so a resumed build is not a mix of both).
CACHE_VERSION = 4


def _stamp(path: Path) -> list:
    """(size, mtime in ns) of a file, so a cached result is not reused after the file changed."""
    try:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]
    except OSError:
        return [None, None]


#: errno values that mean "the disk we write to cannot take it", never "this source is bad".
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def _cache_key(name: str) -> str:
    return hashlib.sha1(_name_bytes(name)).hexdigest()[:20]


def _file_worker(task) -> dict:
    """Slice, encode and PNG-compress one file into ``<work>/<key>.png`` + ``<key>.json``; returns the meta.

    The PNGs are made here, in the worker, because compressing is a third of the work (0.25 s per
    R=1024 image): the final assembly then only copies bytes. They are streamed to disk clip by clip,
    concatenated, with their sizes in the meta (a two-hour set is ~1000 clips of ~0.7 MB); the meta
    file is written last and atomically: its presence marks the file as finished.
    """
    path, name, work, geom_dict, mean, std, params_dict = task
    geometry = StftGeometry.from_dict(geom_dict)
    params = SliceParams(**params_dict)
    key = _cache_key(name)
    work = Path(work)
    images = work / f"{key}.png"
    counts = SliceCounts()
    records: List[dict] = []
    sizes: List[int] = []
    meta: Dict[str, Any] = {"name": name, "status": "ok", "reason": "", "stamp": _stamp(Path(path))}
    t0 = time.perf_counter()
    try:
        with atomic_path(images) as tmp, open(tmp, "wb") as f:
            for clip, rec in iter_track_clips(path, geometry, params, name, counts):
                png = png_bytes(np.ascontiguousarray(encode(clip, geometry, mean, std)))
                f.write(png)
                sizes.append(len(png))
                records.append(rec)
        if not records:
            meta.update(status="skipped", reason=counts.why_no_clips(params.min_bpm, params.max_bpm))
    except AudioError as e:
        meta.update(status="failed", reason=str(e).split(": ", 1)[-1])
    except OSError as e:
        if e.errno in _DISK_ERRNOS:  # the work folder's disk, not this source: stop the build
            raise
        meta.update(status="failed", reason=f"{type(e).__name__}: {e}".splitlines()[0][:300])
    except Exception as e:  # an unexpected decoder crash on one file must not stop a 2,500-hour build
        meta.update(status="failed", reason=f"{type(e).__name__}: {e}".splitlines()[0][:300])
    if meta["status"] != "ok":
        with contextlib.suppress(FileNotFoundError):
            images.unlink()
    meta.update(records=records, png_sizes=sizes, counts=counts.to_dict(),
                seconds_wall=round(time.perf_counter() - t0, 3))
    atomic_write_text(work / f"{key}.json", json.dumps(meta))
    return meta


# ---------------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class BuildOptions:
    """Everything ``dataset_tool_audio.py`` lets a user set (see docs/dataset.md)."""

    resolution: int = 1024
    hop_length: Optional[int] = None
    sample_rate: int = 44100
    workers: int = 1
    max_clips: Optional[int] = None
    stats_sample: int = 1000
    stats_path: Optional[str] = None
    shard: Tuple[int, int] = (0, 1)
    labels: Optional[str] = None
    slicing: SliceParams = dataclasses.field(default_factory=SliceParams)
    overwrite: bool = False
    work_dir: Optional[str] = None
    keep_work: bool = False
    progress: bool = True
    stats_only: bool = False


@dataclasses.dataclass
class BuildSummary:
    """What a build did: files read/skipped/failed with reasons, hours, segments, clips."""

    dest: str = ""
    files_found: int = 0
    files_ok: int = 0
    ignored: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    failed: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    counts: SliceCounts = dataclasses.field(default_factory=SliceCounts)
    clips_written: int = 0
    files_resumed: int = 0
    mean: float = math.nan
    std: float = math.nan
    stats_source: str = ""
    seconds_wall: float = 0.0

    def lines(self) -> List[str]:
        c = self.counts
        out = [f"files: {self.files_found} found, {self.files_ok} read, {len(self.skipped)} skipped, "
               f"{len(self.failed)} failed" + (f" ({self.files_resumed} from the previous run)" if self.files_resumed else "")
               + (f", {len(self.ignored)} non-audio ignored" if self.ignored else "")]
        out += [f"  skipped  {n}: {r}" for n, r in self.skipped]
        out += [f"  failed   {n}: {r}" for n, r in self.failed]
        out.append(f"audio: {c.seconds / 3600:.3f} h read; segments: {c.segments_kept} kept, "
                   f"{c.segments_tempo} discarded by tempo, {c.segments_relative} at a small-ratio relative "
                   f"and {c.segments_off_track} off their file's tempo on weak evidence, {c.segments_no_beat} without "
                   f"beat, {c.segments_silent} silent, {c.segments_short} too short")
        out.append(f"clips: {self.clips_written} written ({c.clips_silent} near-silent skipped); "
                   f"stretcher: {c.stretcher or '-'}")
        out.append(f"statistics: mean {self.mean:.4f}, std {self.std:.4f} ({self.stats_source})")
        out.append(f"archive: {self.dest} in {self.seconds_wall:.1f} s")
        return out

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["counts"] = self.counts.to_dict()
        return d


def _file_size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def build_archive(source: PathLike, dest: PathLike, options: BuildOptions = BuildOptions(),
                  log: Callable[[str], None] = print) -> BuildSummary:
    """Build ``dest`` from the audio under ``source``; returns the summary (also written to ``<dest>.log``).

    Raises :class:`ArchiveError` when the destination is unusable or no clip at all came out.
    """
    t_start = time.perf_counter()
    opts = options
    if opts.stats_only:
        return _stats_only(source, dest, opts, log)
    dest = check_destination(dest, opts.overwrite, [source])
    geometry = StftGeometry(opts.resolution, opts.hop_length, sample_rate=opts.sample_rate)
    params = opts.slicing
    if params.segment_seconds * params.target_bpm / params.max_bpm < geometry.clip_seconds:
        raise ArchiveError(f"--segment-seconds {params.segment_seconds:g} is too short for one "
                           f"{geometry.clip_seconds:.2f} s clip at resolution {geometry.resolution}")
    summary = BuildSummary(dest=str(dest))
    sources, summary.ignored = gather_sources(source)
    if dest.exists():  # a listed file inside the archive being replaced would be deleted with it
        check_not_overlapping(dest, [s.path for s in sources])
    label_of, label_names = read_labels(opts.labels, sources)
    all_sources = sources
    sources = [s for s in sources if in_shard(s.name, opts.shard)]
    summary.files_found = len(sources)
    if not sources:
        raise ArchiveError(f"{source}: no audio files found" + (f" in shard {opts.shard[0]}/{opts.shard[1]}"
                                                                 if opts.shard[1] > 1 else ""))
    work = Path(opts.work_dir) if opts.work_dir else dest.with_name(dest.name + ".partial")
    with WorkLock(work, log), destination_errors(dest, work):
        remove_stale_temps(dest, log)
        _remove_work_temps(work)
        return _build_locked(dest, work, sources, all_sources, label_of, label_names, geometry, summary, opts,
                             log, t_start)


@contextlib.contextmanager
def destination_errors(dest: Path, work: Optional[Path] = None):
    """Turn an OSError while writing (disk full, read-only, quota) into one :class:`ArchiveError` line.

    The archive writer has already removed its temporary output by then, so the line can promise
    that nothing half-written is at ``dest``; finished per-file results stay in the work folder.
    """
    try:
        yield
    except OSError as e:
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        kept = f"; finished files are kept in {work} for the next run" if work is not None and work.is_dir() else ""
        raise ArchiveError(f"{dest}: cannot write: {e.strerror or e}{where}; nothing was written to {dest}"
                           f"{kept}") from None


def _remove_work_temps(work: Path) -> None:
    """Delete the atomic-write temporaries (``.<name>.XXXXXXXX.<ext>.tmp``) a killed worker left in ``work``."""
    for p in work.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            p.unlink()


def _build_locked(dest: Path, work: Path, sources: List[Source], all_sources: List[Source],
                  label_of: Dict[str, int], label_names: List[str], geometry: StftGeometry, summary: BuildSummary,
                  opts: BuildOptions, log: Callable[[str], None], t_start: float) -> BuildSummary:
    """The build proper, run while holding the work folder's lock (see :func:`build_archive`)."""
    params = opts.slicing
    unusable = {s.name: p for s in all_sources if (p := audio_file_problem(s.path)) is not None}
    all_sources = [s for s in all_sources if s.name not in unusable]

    # --- statistics: given, cached from an interrupted run, or sampled ---------------------
    if opts.stats_path:
        mean, std, _ = load_stats(opts.stats_path)
        summary.stats_source = f"from {opts.stats_path}"
    else:
        mean, std = sampled_stats(all_sources, geometry, params, opts.stats_sample, opts.workers, opts.progress,
                                  work, log)
        summary.stats_source = f"sampled from up to {opts.stats_sample} clips"
        with contextlib.suppress(OSError):
            atomic_write_text(dest.with_name(dest.name + ".stats.json"),
                              json.dumps({"mean": mean, "std": std, "source": summary.stats_source}, indent=1))
    summary.mean, summary.std = mean, std
    audio_block = geometry.audio_block(mean, std, params.target_bpm)

    # --- per-file results, cached in the work folder ----------------------------------------
    fingerprint = {"cache_version": CACHE_VERSION, "audio": audio_block, "slicing": params.to_dict()}
    fp_path = work / "params.json"
    if fp_path.exists():
        try:
            previous = json.loads(fp_path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != fingerprint:
            log(f"{work}: parameters changed since the interrupted run; its results are discarded")
            for p in work.glob("*.json"):
                if p.name not in ("params.json", "stats.json"):
                    p.unlink()
            for p in work.glob("*.png"):
                p.unlink()
    atomic_write_text(fp_path, json.dumps(fingerprint, sort_keys=True))

    metas: Dict[str, dict] = {}
    todo: List[Source] = []
    for s in sources:
        if _lacks_label(s, label_of, opts) or s.name in unusable:
            continue
        cached = work / f"{_cache_key(s.name)}.json"
        if cached.exists():
            try:
                meta = json.loads(cached.read_text())
                fresh = meta.get("name") == s.name and meta.get("stamp") == _stamp(s.path)
                if fresh and (meta["status"] != "ok" or (work / f"{_cache_key(s.name)}.png").exists()):
                    metas[s.name] = meta
                    summary.files_resumed += 1
                    continue
            except (OSError, json.JSONDecodeError, KeyError):
                pass
        todo.append(s)
    if summary.files_resumed:
        log(f"resuming: {summary.files_resumed} file(s) already done in {work}")

    progress = Progress(opts.progress, sum(_file_size(s.path) for s in todo), "slicing")
    tasks = [(str(s.path), s.name, str(work), geometry.to_dict(), mean, std, params.to_dict()) for s in todo]
    by_name = {s.name: s for s in todo}
    order = {s.name: i for i, s in enumerate(sources)}
    usable = [s for s in sources if s.name not in unusable]
    try:
        for meta in ordered_map(_file_worker, tasks, opts.workers):
            metas[meta["name"]] = meta
            progress.update(_file_size(by_name[meta["name"]].path), sum(len(m["records"]) for m in metas.values()))
            if opts.max_clips is not None and _prefix_clips(usable, metas, label_of, opts) >= opts.max_clips:
                break
    finally:
        progress.close()

    # --- assemble in source order ----------------------------------------------------------
    with ArchiveWriter(dest, overwrite=opts.overwrite) as writer:
        for s in sorted(sources, key=lambda s: order[s.name]):
            if _lacks_label(s, label_of, opts):
                summary.skipped.append((s.name, "no label"))
                continue
            if s.name in unusable:
                summary.skipped.append((s.name, unusable[s.name]))
                continue
            meta = metas.get(s.name)
            if meta is None:  # not reached because --max-clips was satisfied earlier
                continue
            c = SliceCounts(**meta["counts"])
            summary.counts.add(c)
            if meta["status"] == "failed":
                summary.failed.append((s.name, meta["reason"]))
                continue
            if meta["status"] == "skipped":
                summary.skipped.append((s.name, meta["reason"]))
                continue
            summary.files_ok += 1
            with open(work / f"{_cache_key(s.name)}.png", "rb") as blobs:
                for size, rec in zip(meta["png_sizes"], meta["records"]):
                    if opts.max_clips is not None and len(writer) >= opts.max_clips:
                        break
                    writer.add_png(blobs.read(size), rec, label_of.get(s.name) if opts.labels is not None else None)
            if opts.max_clips is not None and len(writer) >= opts.max_clips:
                break
        summary.clips_written = len(writer)
        summary.seconds_wall = time.perf_counter() - t_start
        if summary.clips_written == 0:
            writer.abort()
            _write_log(dest, summary, log)
            raise ArchiveError(f"{dest}: nothing usable: no clip came out of {summary.files_found} file(s) "
                               f"({len(summary.skipped)} skipped, {len(summary.failed)} failed; see {_log_path(dest)})")
        extra = {"label_names": label_names or None,
                 "slicing": {**params.to_dict(), "stretcher": summary.counts.stretcher},
                 "stats": {"mean": mean, "std": std, "source": summary.stats_source},
                 "shard": list(opts.shard)}
        writer.close(audio_block, extra)
    if not opts.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    _write_log(dest, summary, log)
    return summary


def _stats_only(source: PathLike, dest: PathLike, opts: BuildOptions, log: Callable[[str], None]) -> BuildSummary:
    """Sample the statistics of ``source`` (all shards alike) and write them to the JSON file ``dest``.

    The sample is cached in ``<dest>.partial/`` (locked like a build's), so an interrupted run resumes.
    """
    dest = check_stats_destination(dest, opts.overwrite, source)
    geometry = StftGeometry(opts.resolution, opts.hop_length, sample_rate=opts.sample_rate)
    sources, ignored = gather_sources(source)
    sources = [s for s in sources if audio_file_problem(s.path) is None]
    if not sources:
        raise ArchiveError(f"{source}: no audio files found")
    work = Path(opts.work_dir) if opts.work_dir else dest.with_name(dest.name + ".partial")
    with WorkLock(work, log), destination_errors(dest, work):
        remove_stale_temps(dest, log)
        _remove_work_temps(work)
        mean, std = sampled_stats(sources, geometry, opts.slicing, opts.stats_sample, opts.workers, opts.progress,
                                  work, log)
        summary = BuildSummary(dest=str(dest), files_found=len(sources), ignored=ignored, mean=mean, std=std,
                               stats_source=f"sampled from up to {opts.stats_sample} clips")
        atomic_write_text(dest, json.dumps({"mean": mean, "std": std, "source": summary.stats_source,
                                            "resolution": geometry.resolution, "hop_length": geometry.hop_length,
                                            "sample_rate": geometry.sample_rate},
                                           indent=1))
        if not opts.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    log(f"statistics: mean {mean:.4f}, std {std:.4f} ({summary.stats_source}) -> {dest}")
    return summary


def merge_into(paths: Sequence[PathLike], dest: PathLike, overwrite: bool = False,
               log: Callable[[str], None] = print) -> int:
    """:func:`~audio_ext.dataset.archive.merge_archives` under the destination's lock, after removing the
    temporaries of a killed run; a write failure is one line naming ``dest``. Returns the clip count."""
    dest = Path(dest)
    check_destination(dest, overwrite, list(paths), what="--merge input")
    work = dest.with_name(dest.name + ".partial")
    existed = work.exists()
    try:
        with WorkLock(work, log), destination_errors(dest):
            remove_stale_temps(dest, log)
            return merge_archives(paths, dest, overwrite=overwrite)
    finally:
        if not existed:
            with contextlib.suppress(OSError):
                work.rmdir()


def _lacks_label(source: Source, label_of: Dict[str, int], opts: BuildOptions) -> bool:
    """Whether labels were asked for and ``source`` has none (the build skips it)."""
    return opts.labels is not None and source.name not in label_of


def _prefix_clips(sources: Sequence[Source], metas: Dict[str, dict], label_of: dict, opts: BuildOptions) -> int:
    """Clips available from the leading run of finished files (in source order)."""
    total = 0
    for s in sources:
        if _lacks_label(s, label_of, opts):
            continue
        m = metas.get(s.name)
        if m is None:
            break
        total += len(m["records"])
    return total


def _log_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".log")


def _write_log(dest: Path, summary: BuildSummary, log: Callable[[str], None]) -> None:
    """Print the summary and write it (plus a JSON copy of the numbers) to ``<dest>.log``."""
    lines = summary.lines()
    for line in lines:
        log(line)
    text = "\n".join(lines) + "\n\n" + json.dumps(summary.to_dict(), indent=1, default=str) + "\n"
    with contextlib.suppress(OSError):
        atomic_write_text(_log_path(dest), text)
