"""Phase reconstruction quality and speed: methods x iterations on archive-encoded clips.

Every clip goes through the real codec (encode to an 8-bit image with statistics of the clips
themselves, decode the magnitude) and is then reconstructed by each method. Quality is measured
against the ORIGINAL audio in a fixed reference STFT (Hann, n_fft 2048, hop 256):

* SC: scale-invariant spectral convergence in dB (lower is better), see audio_ext.decoder.griffin_lim;
* LSD: log-spectral distance in dB (lower is better);
* wall s/clip: wall seconds per clip on this machine (one clip at a time, ``--threads`` torch threads);
* CPU s/clip: processor seconds of this process per clip (all its threads): on a machine shared
  with other jobs this is the honest cost, since wall time then depends on everyone else's load;
* x real time: clip duration divided by wall s/clip, and by CPU s/clip (what one free core achieves
  with ``--threads 1``).

Baseline row: ``librosa.griffinlim(n_iter=10, momentum=0.99)`` on the same magnitudes (the decoder
the thesis used). A "true phase" row shows the codec's own loss: 8-bit magnitudes with the original phase.

Real music: pass ``--source DIR`` (alias ``--audio-dir``; any format librosa reads, searched
recursively); without it the ElectroGAN devset (``$ELECTROGAN_DEVSET``, or ``devset/`` beside the
checkout; docs/references.md, "Development set") is used when present. Files the decoder model was
trained or validated on (its ``training.sources``) are skipped, so the learned decoder is measured on music it
never saw. Every row reports the mean and the spread (standard deviation) over clips. A free source
is the Free Music Archive's ``fma_small`` set (8,000 30-s CC-licensed clips incl. the Electronic
genre; https://github.com/mdeff/fma) or ccMixter (https://ccmixter.org, CC-licensed full tracks);
for the thesis geometry (23.78 s clips) use full tracks, e.g. ``fma_full``/``fma_large`` or ccMixter.
Without ``--audio-dir`` the benchmark falls back to synthetic techno loops (audio_ext.core.synth: kick,
hat, bass, chords and noise) and says so in the table: synthetic loops are easier than real mixes.

    python benchmarks/phase_quality.py --resolution 1024 --clips 4
    python benchmarks/phase_quality.py --audio-dir ~/fma_full/015 --clips 8 --threads 2
    python benchmarks/phase_quality.py --source ../devset/flac --clips 9 --grid pghi+fgla:10,learned+pghi+fgla:10
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import List, Sequence, Tuple

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audio_ext.core.audio_io import AUDIO_EXTENSIONS  # noqa: E402

REF_NFFT, REF_HOP = 2048, 256


def synthetic_clips(n: int, samples: int, sr: int) -> List[np.ndarray]:
    """``n`` synthetic techno clips at tempi between 122 and 136 BPM with different seeds.

    No white-noise part: a flat noise floor makes ln power unnaturally narrow (std ~2 instead of
    ~6), so the +-3 std clip would cut the loud bins and swamp the phase error with codec error.
    Without it the codec's own loss (true-phase row) is about -37 dB, close to real music's -34 dB.
    """
    from audio_ext.core.synth import techno_loop
    tempi = [122, 126, 128, 130, 132, 136]
    out = []
    for i in range(n):
        y = techno_loop(tempi[i % len(tempi)], samples / sr + 0.1, sr=sr, seed=100 + i,
                        parts=("kick", "hat", "bass", "chord"))
        out.append(y[:samples].astype(np.float32))
    return out


def devset_folder() -> Path:
    """The devset's audio folder when one is present (``$ELECTROGAN_DEVSET`` or beside the checkout), else None."""
    root = Path(__file__).resolve().parent.parent
    env = os.environ.get("ELECTROGAN_DEVSET")
    candidates = ([Path(env)] if env else []) + [root.parent / "devset", root.parent.parent / "devset"]
    for c in candidates:
        for folder in (c / "flac", c):
            if folder.is_dir() and any(p.suffix.lower() in AUDIO_EXTENSIONS for p in folder.iterdir()):
                return folder
    return None


def model_sources(resolution: int, hop: int) -> set:
    """File names the decoder model for this geometry was trained or validated on (empty without a model)."""
    from audio_ext.core.geometry import StftGeometry
    from audio_ext.decoder import frame_model
    from audio_ext.decoder.model_choice import choose_decoder_model
    try:
        t = choose_decoder_model().model_for(StftGeometry(resolution, hop)).training
    except frame_model.ModelError:
        return set()
    return set(t.get("sources", [])) | set(t.get("validation_sources", []))


def music_clips(folder: Path, n: int, samples: int, sr: int, exclude: set = frozenset()) -> Tuple[List[np.ndarray], List[str]]:
    """Up to ``n`` clips, one from the middle of each file that is long enough and not in ``exclude``
    (file names); (clips, skipped reasons)."""
    import librosa
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    clips, skipped = [], []
    for f in files:
        if len(clips) >= n:
            break
        if f.name in exclude:
            skipped.append(f"{f}: the decoder model was trained or validated on it")
            continue
        try:
            y, _ = librosa.load(f, sr=sr, mono=True)
        except Exception as e:  # corrupt or undecodable file: report and go on
            skipped.append(f"{f}: unreadable ({type(e).__name__})")
            continue
        if y.size < samples:
            skipped.append(f"{f}: shorter than one clip ({y.size / sr:.1f} s < {samples / sr:.2f} s)")
            continue
        start = (y.size - samples) // 2
        clip = y[start:start + samples].astype(np.float32)
        if np.sqrt(np.mean(clip ** 2)) < 1e-4:
            skipped.append(f"{f}: silent")
            continue
        clips.append(clip)
    return clips, skipped


def run_benchmark(clips: Sequence[np.ndarray], resolution: int, hop: int, grid: Sequence[Tuple[str, int]],
                  threads: int, seed: int = 0):
    """Rows (label, iterations, SC dB, LSD dB, s/clip, x real time) averaged over ``clips``."""
    import librosa
    import torch

    from audio_ext.core.codec import audio_to_logpower, decode_magnitude, encode, stft
    from audio_ext.core.geometry import StftGeometry
    from audio_ext.core.running_stats import RunningStats
    from audio_ext.decoder.methods import reconstruct
    from audio_ext.decoder.quality import log_spectral_distance, spectral_convergence_db

    torch.set_num_threads(threads)
    g = StftGeometry(resolution, hop)
    stats = RunningStats()
    for y in clips:
        stats.update(audio_to_logpower(y, g))
    mags = [decode_magnitude(encode(y, g, stats.mean, stats.std), g, stats.mean, stats.std) for y in clips]
    # compile numba and warm up FFT plans outside the timing
    reconstruct(mags[0], g, "pghi+fgla", n_iter=1)
    for method in {m for m, _ in grid} - {"pghi+fgla"}:
        reconstruct(mags[0], g, method, n_iter=1)  # e.g. loads the decoder model
    librosa.griffinlim(mags[0], n_iter=1, hop_length=g.hop_length, n_fft=g.n_fft, length=g.clip_samples,
                       pad_mode="reflect")

    per_clip = {}

    def measure(label, iters, fn):
        sc, lsd, secs, cpu = [], [], [], []
        for i, (y, S) in enumerate(zip(clips, mags)):
            t0, c0 = time.perf_counter(), time.process_time()
            est = fn(S, i)
            secs.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            sc.append(spectral_convergence_db(y, est, REF_NFFT, REF_HOP)[0])
            lsd.append(log_spectral_distance(y, est, REF_NFFT, REF_HOP)[0])
        s, c = float(np.mean(secs)), float(np.mean(cpu))
        row = (label, iters, float(np.mean(sc)), float(np.std(sc)), float(np.mean(lsd)), float(np.std(lsd)), s, c,
               g.clip_seconds / s, g.clip_seconds / c)
        per_clip[(label, iters)] = np.array(sc)
        print(f"{label:44s} {str(iters):>5s} SC {row[2]:7.2f} +- {row[3]:4.2f} dB  LSD {row[4]:6.2f} +- {row[5]:4.2f} dB  "
              f"{s:7.3f} s/clip wall  {c:7.3f} s/clip CPU  {row[8]:6.1f}x / {row[9]:6.1f}x real time", flush=True)
        return row

    rows = []
    rows.append(measure("librosa.griffinlim momentum 0.99 (baseline)", "10", lambda S, i: librosa.griffinlim(
        S, n_iter=10, hop_length=g.hop_length, n_fft=g.n_fft, window="hann", center=True, momentum=0.99,
        length=g.clip_samples, pad_mode="reflect", random_state=np.random.default_rng(seed + i))))
    for method, iters in grid:
        rows.append(measure(method, str(iters), lambda S, i, m=method, n=iters: reconstruct(
            S, g, m, n_iter=n, generator=torch.Generator().manual_seed(seed + i))))

    def true_phase(S, i):
        X = stft(clips[i], g)
        return torch.istft(torch.from_numpy(S * np.exp(1j * np.angle(X))).to(torch.complex64), g.n_fft, g.hop_length,
                           window=torch.hann_window(g.n_fft), center=True, length=g.clip_samples).numpy()
    rows.append(measure("true phase, 8-bit magnitude (codec limit)", "-", true_phase))
    return rows, per_clip


DEFAULT_GRID = "thesis:10,fgla:10,fgla:32,pghi:0,pghi+fgla:5,pghi+fgla:10,pghi+fgla:32,pghi+fgla99:10"


@click.command()
@click.option("--source", "--audio-dir", "audio_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="folder of real music (recursive) [the devset when present, else synthetic loops]")
@click.option("--synthetic", is_flag=True, help="use synthetic loops even when the devset is present")
@click.option("--resolution", type=int, default=1024, show_default=True)
@click.option("--hop", type=int, default=None, help="hop length in samples [resolution]")
@click.option("--clips", "n_clips", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--grid", default=DEFAULT_GRID, show_default=True, help="method:iterations pairs, comma-separated")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="torch CPU threads")
@click.option("--write/--no-write", default=True, show_default=True, help="update docs/benchmarks.md")
def main(audio_dir, synthetic, resolution, hop, n_clips, grid, threads, write):
    """Measure phase reconstruction methods; print a table and record it in docs/benchmarks.md."""
    from audio_ext.core.geometry import StftGeometry
    from audio_ext.decoder.methods import DEFAULT_METHOD, LEARNED_METHOD, METHODS, default_method
    from benchmarks.report import markdown_table, write_section

    g = StftGeometry(resolution, hop)
    if grid == DEFAULT_GRID and default_method(g) == LEARNED_METHOD:
        grid += f",{LEARNED_METHOD}:{METHODS[LEARNED_METHOD].default_iters}"
    if audio_dir is None and not synthetic:
        audio_dir = devset_folder()
    pairs = []
    for item in grid.split(","):
        name, _, n = item.partition(":")
        if name not in METHODS or not n.isdigit():
            raise click.BadParameter(f"{item!r}: use method:iterations with a method from {', '.join(METHODS)}",
                                     param_hint="--grid")
        pairs.append((name, int(n)))
    if audio_dir is None:
        clips = synthetic_clips(n_clips, g.clip_samples, g.sample_rate)
        material = f"{len(clips)} SYNTHETIC techno loops (audio_ext.core.synth; no real music on this machine)"
    else:
        exclude = model_sources(resolution, g.hop_length)
        clips, skipped = music_clips(audio_dir, n_clips, g.clip_samples, g.sample_rate, exclude)
        n_excluded = sum("decoder model was trained" in s for s in skipped)
        for s in skipped:
            print(f"skipped {s}", file=sys.stderr)
        if not clips:
            raise click.ClickException(f"{audio_dir}: no usable audio file of at least {g.clip_seconds:.2f} s")
        material = f"{len(clips)} clips of real music from {audio_dir.name}/ (one from the middle of each file)"
        if n_excluded:
            material += f", leaving out the {n_excluded} files the decoder model was trained or validated on"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{material}; load average {load:.1f}; resolution {resolution}, hop {g.hop_length} ({g.clip_seconds:.2f} s clips), "
          f"reference STFT n_fft {REF_NFFT} hop {REF_HOP}, {threads} torch thread(s)")
    rows, per_clip = run_benchmark(clips, resolution, g.hop_length, pairs, threads)
    table = markdown_table(["method", "iterations", "SC dB", "SC sd", "LSD dB", "LSD sd", "wall s/clip", "CPU s/clip",
                            "x real time (wall)", "x real time (CPU)"], rows)
    base = rows[0]
    best = min(rows[1:-1], key=lambda r: r[2])
    summary = (f"Best: {best[0]} ({best[1]} it.), {base[2] - best[2]:.2f} dB better SC than the baseline at "
               f"{best[7] / base[7]:.2f}x its CPU time.")
    default = [r for r in rows if r[0] == DEFAULT_METHOD and r[1] == str(METHODS[DEFAULT_METHOD].default_iters)]
    if default:
        d = default[0]
        summary += (f" Classic default ({d[0]}, {d[1]} it.): {base[2] - d[2]:.2f} dB better SC than the baseline at "
                    f"{d[7] / base[7]:.2f}x its CPU time ({d[6] / base[6]:.2f}x its wall time).")
        learned = [r for r in rows if r[0] == LEARNED_METHOD and r[1] == str(METHODS[LEARNED_METHOD].default_iters)]
        if learned:
            lr = learned[0]
            gain = per_clip[(d[0], d[1])] - per_clip[(lr[0], lr[1])]
            summary += (f" Learned decoder ({lr[0]}, {lr[1]} it.) vs the classic default on the same clips: SC "
                        f"{gain.mean():+.2f} dB better (per clip {gain.min():+.2f} .. {gain.max():+.2f}), LSD "
                        f"{d[4] - lr[4]:+.2f} dB better, at {lr[7] / d[7]:.2f}x its CPU time "
                        f"({lr[6] / d[6]:.2f}x its wall time).")
    print(summary)
    if write:
        body = (f"Material: {material}. Resolution {resolution}, hop {g.hop_length} ({g.clip_seconds:.2f} s clips), "
                f"8-bit codec round trip, quality against the original audio in a Hann STFT with n_fft {REF_NFFT}, "
                f"hop {REF_HOP}; {threads} torch thread(s), one clip at a time, load average {load:.1f} at the start "
                f"(other jobs shared the CPU, so compare CPU seconds). Lower SC/LSD is better.\n\n"
                f"{table}\n\n{summary}\n")
        real = audio_dir is not None
        write_section(f"phase_quality_{resolution}_{g.hop_length}" + ("_music" if real else ""),
                      f"Phase reconstruction{' on real music' if real else ''}, R={resolution} "
                      f"hop={g.hop_length} (`benchmarks/phase_quality.py`)", body)


if __name__ == "__main__":
    main()
