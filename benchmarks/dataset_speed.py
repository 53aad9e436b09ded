"""How fast dataset_tool_audio.py turns audio into archive images, per worker, and where the time goes.

Times the stages of the slicing recipe one after the other on one core -- decoding (+ resampling
and mono mix), beat tracking, time stretching, STFT encoding (+ PNG) -- and then a whole
``build_archive`` run, and projects the wall time for the thesis's 2,500 hours on 16 cores.

    python benchmarks/dataset_speed.py                    # a synthetic 3-minute MP3 "set"
    python benchmarks/dataset_speed.py --source mixsets/  # real music (first files, --minutes in all)

Synthetic audio keeps it self-contained; real DJ sets decode about as fast (MP3 either way) but
beat-track on richer spectra. Writes a section of docs/benchmarks.md.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audio_ext.archive import png_bytes  # noqa: E402
from audio_ext.build import BuildOptions, build_archive, gather_sources  # noqa: E402
from audio_ext.codec import encode  # noqa: E402
from audio_ext.geometry import StftGeometry  # noqa: E402
from audio_ext.slicing import (SliceParams, clip_starts, fold_tempo, iter_segments, rms_dbfs,  # noqa: E402
                               time_stretch, track_tempo)
from audio_ext.synth import dj_set  # noqa: E402
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


def stage_times(paths, geometry: StftGeometry, params: SliceParams, max_seconds: float) -> dict:
    """Seconds spent per stage over the files (stopping after ``max_seconds`` of audio) on this core."""
    t = {"decode": 0.0, "beat tracking": 0.0, "stretching": 0.0, "encoding": 0.0}
    audio_s, clips = 0.0, 0
    sr = geometry.sample_rate
    for path in paths:
        it = iter_segments(path, sr, params.segment_seconds)
        while audio_s < max_seconds:
            t0 = time.perf_counter()
            try:
                _, seg = next(it)
            except StopIteration:
                break
            t["decode"] += time.perf_counter() - t0
            audio_s += seg.size / sr
            t0 = time.perf_counter()
            tempo = track_tempo(seg, sr, centre_bpm=params.target_bpm)
            t["beat tracking"] += time.perf_counter() - t0
            if not math.isfinite(tempo.bpm):
                continue
            bpm = fold_tempo(tempo.bpm, params.min_bpm, params.max_bpm)
            if not params.min_bpm <= bpm <= params.max_bpm:
                continue
            period, ratio = 60.0 / bpm, bpm / params.target_bpm
            first = float(tempo.beats[0]) % period
            t0 = time.perf_counter()
            y, _ = time_stretch(seg, sr, ratio, params.stretcher, beats=first + period * np.arange(400))
            t["stretching"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            for s in clip_starts(y.size, first * ratio, sr, geometry.clip_samples, params.target_bpm,
                                 params.stride_beats):
                clip = y[s:s + geometry.clip_samples]
                if rms_dbfs(clip) >= params.silence_db:
                    png_bytes(encode(clip, geometry, -5.0, 5.0))
                    clips += 1
            t["encoding"] += time.perf_counter() - t0
        if audio_s >= max_seconds:
            break
    return {"times": t, "audio_s": audio_s, "clips": clips}


@click.command()
@click.option("--source", default=None, help="Folder or list of real music (default: a synthetic MP3 set).")
@click.option("--minutes", type=int, default=3, show_default=True, help="Minutes of audio to process.")
@click.option("--resolution", type=int, default=1024, show_default=True)
@click.option("--write/--no-write", default=True, help="Update docs/benchmarks.md.")
def main(source, minutes, resolution, write):
    import torch
    torch.set_num_threads(1)  # one worker = one core
    geometry = StftGeometry(resolution)
    params = SliceParams()
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
        r = stage_times(paths, geometry, params, minutes * 60.0)
        total = sum(r["times"].values())
        rate = r["audio_s"] / total
        rows = [[name, round(sec, 2), f"{100 * sec / total:.0f} %"] for name, sec in r["times"].items()]
        rows.append(["total", round(total, 2), "100 %"])
        t0 = time.perf_counter()
        stats = tmp / "stats.json"
        stats.write_text('{"mean": -5.0, "std": 5.0}')
        src = tmp / "src"
        src.mkdir()
        for p in paths:
            os.symlink(p, src / Path(p).name)
        summary = build_archive(src, tmp / "out.zip", BuildOptions(resolution=resolution, stats_path=str(stats),
                                                                    slicing=params, progress=False),
                                log=lambda s: None)
        wall = time.perf_counter() - t0
        tool_rate = summary.counts.seconds / wall
    load = (load_before + os.getloadavg()[0]) / 2
    hours = THESIS_HOURS * 3600 / (tool_rate * CORES) / 3600
    table = markdown_table(["stage (1 worker)", "seconds", "share"], rows)
    body = (f"Input: {what}; {r['audio_s']:.0f} s of audio, {r['clips']} clips at R={resolution} "
            f"(hop {geometry.hop_length}), stretcher {summary.counts.stretcher}. System load average during "
            f"the run: {load:.1f} on {os.cpu_count()} cores (above the core count, other jobs shared the CPU "
            f"and every number here is pessimistic).\n\n{table}\n\n"
            f"- stages alone: **{rate:.1f} s of audio per second per worker**\n"
            f"- whole `build_archive` (1 worker, given statistics, incl. PNG + zip): **{tool_rate:.1f} s/s** "
            f"({summary.clips_written} clips)\n"
            f"- projected for the thesis's {THESIS_HOURS} h on {CORES} cores (`--workers {CORES}`, perfect "
            f"scaling over files, plus a ~1000-clip statistics pass): **{hours:.1f} h**\n")
    print(body)
    if write:
        write_section("dataset_speed", "Dataset building speed (benchmarks/dataset_speed.py)", body)


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
