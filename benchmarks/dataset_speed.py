"""How fast dataset_tool_audio.py turns audio into archive images, per worker, and where the time goes.

Times the stages of the slicing recipe one after the other on one core -- decoding (+ resampling
and mono mix), beat tracking, time stretching, STFT encoding (+ PNG) -- and then a whole
``build_archive`` run, and projects the wall time for the thesis's 2,500 hours on 16 cores.

    python benchmarks/dataset_speed.py                    # a synthetic 3-minute MP3 "set"
    python benchmarks/dataset_speed.py --source mixsets/  # real music (first files, --minutes in all)

Synthetic audio keeps it self-contained; real DJ sets decode about as fast (MP3 either way) but
beat-track on richer spectra. Writes a section of docs/benchmarks.md.

``--baseline DIR`` also times another checkout of the project (e.g. ``git worktree add /tmp/base
main``) on the same audio, in a subprocess, alternating with this one ``--repeats`` times, and
reports both ("before/after in one run"; medians). CPU seconds are reported next to wall seconds
because on a shared machine the wall clock also measures the other jobs.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audio_ext.core.audio_io import iter_segments
from audio_ext.core.codec import encode  # noqa: E402
from audio_ext.core.geometry import StftGeometry  # noqa: E402
from audio_ext.core.synth import dj_set  # noqa: E402
from audio_ext.dataset.archive import png_bytes  # noqa: E402
from audio_ext.dataset.beats import fold_tempo, track_tempo
from audio_ext.dataset.build import BuildOptions, build_archive  # noqa: E402
from audio_ext.dataset.cut import SliceParams, clip_starts, rms_dbfs
from audio_ext.dataset.sources import gather_sources
from audio_ext.dataset.stretch import time_stretch
from benchmarks.report import markdown_table, write_section  # noqa: E402

THESIS_HOURS = 2500
CORES = 16


def _synthetic_set(folder: Path, minutes: int, sr: int) -> Path:
    """A stereo 44.1 kHz MP3 of ``minutes`` one-minute segments at tempi typical of house/techno."""
    import soundfile as sf
    tempi = [124, 126, 128, 122, 130, 133, 127, 125][:max(1, minutes)]
    tempi += [128] * (minutes - len(tempi))
    s = dj_set(tempi, 60.0, sr=sr, seed=7, offset=0.21, parts=("kick", "hat", "bass", "chord", "noise"))
    path = folder / "synthetic_set.mp3"
    sf.write(path, np.stack([s.audio, s.audio], axis=1) * 0.8, sr, format="MP3")
    return path


_BASELINE_SNIPPET = """
import inspect, json, sys, time
import torch
torch.set_num_threads(1)
from audio_ext.core.geometry import StftGeometry
from audio_ext.dataset.beats import SliceParams
from benchmarks.dataset_speed import stage_times
paths, resolution, seconds, clock = json.loads(sys.argv[1])
geometry, params = StftGeometry(resolution), SliceParams()
stage_times(paths[:1], geometry, params, 1.0)
kw = {}
if clock == "cpu":
    # The clock is passed where stage_times takes one (its default was bound at definition, so
    # swapping time.perf_counter would not reach it); an older stage_times reads time.perf_counter.
    if "clock" in inspect.signature(stage_times).parameters:
        kw["clock"] = time.process_time
    else:
        time.perf_counter = time.process_time
c0 = time.process_time()
r = stage_times(paths, geometry, params, seconds, **kw)
r["cpu"] = time.process_time() - c0
print("RESULT " + json.dumps(r))
"""


def baseline_stage_times(checkout: Path, paths, resolution: int, max_seconds: float, clock: str = "cpu") -> dict:
    """:func:`stage_times` of another checkout of the project (its own code), run in a subprocess."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    proc = subprocess.run([sys.executable, "-c", _BASELINE_SNIPPET, json.dumps([[str(p) for p in paths], resolution,
                                                                                max_seconds, clock])],
                          cwd=checkout, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise click.ClickException(f"--baseline {checkout}: the baseline run failed ({tail})")
    return json.loads(lines[-1][len("RESULT "):])


def stage_times(paths, geometry: StftGeometry, params: SliceParams, max_seconds: float,
                clock=time.perf_counter) -> dict:
    """Seconds spent per stage over the files (stopping after ``max_seconds`` of audio) on this core.

    ``clock``: ``time.perf_counter`` (wall) or ``time.process_time`` (CPU seconds of this process).
    The result also lists the files it read (``files``).
    """
    t = {"decode": 0.0, "beat tracking": 0.0, "stretching": 0.0, "encoding": 0.0}
    audio_s, clips = 0.0, 0
    sr = geometry.sample_rate
    used = []
    for path in paths:
        used.append(str(path))
        it = iter_segments(path, sr, params.segment_seconds)
        while audio_s < max_seconds:
            t0 = clock()
            try:
                _, seg = next(it)
            except StopIteration:
                break
            t["decode"] += clock() - t0
            audio_s += seg.size / sr
            t0 = clock()
            tempo = track_tempo(seg, sr, centre_bpm=params.target_bpm)
            t["beat tracking"] += clock() - t0
            if not math.isfinite(tempo.bpm):
                continue
            bpm = fold_tempo(tempo.bpm, params.min_bpm, params.max_bpm)
            if not params.min_bpm <= bpm <= params.max_bpm:
                continue
            period, ratio = 60.0 / bpm, bpm / params.target_bpm
            first = float(tempo.beats[0]) % period
            t0 = clock()
            y, _ = time_stretch(seg, sr, ratio, params.stretcher, beats=first + period * np.arange(400))
            t["stretching"] += clock() - t0
            t0 = clock()
            for s in clip_starts(y.size, first * ratio, sr, geometry.clip_samples, params.target_bpm,
                                 params.stride_beats):
                clip = y[s:s + geometry.clip_samples]
                if rms_dbfs(clip) >= params.silence_db:
                    png_bytes(encode(clip, geometry, -5.0, 5.0))
                    clips += 1
            t["encoding"] += clock() - t0
        if audio_s >= max_seconds:
            break
    return {"times": t, "audio_s": audio_s, "clips": clips, "files": used}


def _median_run(runs: list) -> dict:
    """The run whose total stage time is the median of ``runs`` (keeps one run's consistent numbers)."""
    ordered = sorted(runs, key=lambda r: sum(r["times"].values()))
    return ordered[(len(ordered) - 1) // 2]


@click.command()
@click.option("--source", default=None, help="Folder or list of real music (default: a synthetic MP3 set).")
@click.option("--minutes", type=int, default=3, show_default=True, help="Minutes of audio to process.")
@click.option("--resolution", type=int, default=1024, show_default=True)
@click.option("--baseline", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Another checkout of the project to time on the same audio (the 'before').")
@click.option("--repeats", type=int, default=1, show_default=True, help="Interleaved runs per checkout (medians).")
@click.option("--clock", type=click.Choice(["cpu", "wall"]), default="cpu", show_default=True,
              help="Time the stages in CPU seconds of the worker (meaningful on a shared machine) or wall seconds.")
@click.option("--write/--no-write", default=True, help="Update docs/benchmarks.md.")
def main(source, minutes, resolution, baseline, repeats, clock, write):
    import torch
    torch.set_num_threads(1)  # one worker = one core
    geometry = StftGeometry(resolution)
    params = SliceParams()
    unit = "CPU seconds" if clock == "cpu" else "wall seconds"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if source:
            paths = [s.path for s in gather_sources(source)[0]]
            what = f"real music from {source}"
        else:
            paths = [_synthetic_set(tmp, minutes, geometry.sample_rate)]
            what = f"synthetic {minutes}-minute MP3 set (stereo, 44.1 kHz)"
        # Warm-up: librosa/numba compile on first use; a long build pays that once per worker.
        stage_times(paths[:1], geometry, params, 1.0)
        load_before = os.getloadavg()[0]
        runs, base_runs = [], []
        for _ in range(max(1, repeats)):
            if baseline is not None:
                base_runs.append(baseline_stage_times(baseline, paths, resolution, minutes * 60.0, clock))
            c0 = time.process_time()
            runs.append(stage_times(paths, geometry, params, minutes * 60.0,
                                    time.process_time if clock == "cpu" else time.perf_counter))
            runs[-1]["cpu"] = time.process_time() - c0
        r = _median_run(runs)
        total = sum(r["times"].values())
        rate = r["audio_s"] / total
        rows = [[name, round(sec, 2), f"{100 * sec / total:.0f} %"] for name, sec in r["times"].items()]
        rows.append(["total", round(total, 2), "100 %"])
        compare = ""
        if base_runs:
            b = _median_run(base_runs)
            b_total = sum(b["times"].values())
            crow = [[name, round(b["times"][name], 2), round(sec, 2), f"{b['times'][name] / sec:.2f}x"]
                    for name, sec in r["times"].items()]
            crow.append(["total", round(b_total, 2), round(total, 2), f"{b_total / total:.2f}x"])
            compare = (f"\n\nBefore/after in one run (`--baseline {baseline}`, {len(runs)} interleaved run(s) each, "
                       f"medians; same {r['audio_s']:.0f} s of audio, {b['clips']} / {r['clips']} clips):\n\n"
                       + markdown_table(["stage (1 worker)", f"before, {unit}", f"after, {unit}", "speed-up"], crow)
                       + f"\n\n- stages alone, s of audio per {unit[:-1]}: before **{b['audio_s'] / b_total:.1f}**, "
                       f"after **{rate:.1f}**")
        t0, c0 = time.perf_counter(), time.process_time()
        stats = tmp / "stats.json"
        stats.write_text('{"mean": -5.0, "std": 5.0}')
        src = tmp / "src"
        src.mkdir()
        for p in r["files"]:  # the same files the stages read
            os.symlink(p, src / Path(p).name)
        summary = build_archive(src, tmp / "out.zip", BuildOptions(resolution=resolution, stats_path=str(stats),
                                                                    slicing=params, progress=False),
                                log=lambda s: None)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        tool_rate = summary.counts.seconds / (cpu if clock == "cpu" else wall)
        tool_wall_rate = summary.counts.seconds / wall
    load = (load_before + os.getloadavg()[0]) / 2
    hours = THESIS_HOURS * 3600 / (tool_rate * CORES) / 3600
    table = markdown_table(["stage (1 worker)", unit, "share"], rows)
    body = (f"Input: {what}; {r['audio_s']:.0f} s of audio, {r['clips']} clips at R={resolution} "
            f"(hop {geometry.hop_length}), stretcher {summary.counts.stretcher}. System load average during "
            f"the run: {load:.1f} on {os.cpu_count()} cores (above the core count, other jobs shared the CPU "
            f"and every number here is pessimistic).\n\n{table}\n\n"
            f"Stage times are {unit} (`--clock {clock}`).\n\n"
            f"- stages alone: **{rate:.1f} s of audio per {unit[:-1]} per worker**\n"
            f"- whole `build_archive` (1 worker, given statistics, incl. PNG + zip, the same files): "
            f"**{tool_rate:.1f} s/s** in {unit} ({tool_wall_rate:.1f} s/s wall; {summary.clips_written} clips)\n"
            f"- projected for the thesis's {THESIS_HOURS} h on {CORES} cores (`--workers {CORES}`, perfect "
            f"scaling over files, plus a ~1000-clip statistics pass): **{hours:.1f} h**" + compare + "\n")
    print(body)
    if write:
        write_section("dataset_speed", "Dataset building speed (benchmarks/dataset_speed.py)", body)


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
