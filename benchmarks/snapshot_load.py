"""How soon does music come out of a training snapshot? A full read against a G_ema-only read.

A training snapshot of the ``audio1024`` preset holds G, D, G_ema and both Adam states (each with
two moments per parameter): about 850 MB, of which generation needs G_ema (about 120 MB) and the
audio block. This script writes such a snapshot (random weights, seeded) in a temporary folder and
runs ``gen_audio.py --seeds 0`` on it in fresh processes, twice per page-cache state:

* ``full``: the whole snapshot read and checked, as before lazy loading (``load_snapshot(path)``);
* ``G_ema only``: what ``gen_audio.py`` does now, ``load_snapshot(path, keys=("G_ema", "audio",
  "decoder_model"))``, memory-mapped, so G, D and the optimizer states are never read.

"cold" evicts the snapshot from the page cache first (``posix_fadvise(DONTNEED)`` on that file only,
as after a reboot or on a network disk); "warm" reads it from memory, as right after training.
Columns: seconds until G_ema is built, until its image is generated, until the first 23.78 s clip is
written (all from the moment the CLI starts, after Python's imports), the whole process's wall time including
imports, the process's resident memory when G_ema is built and its peak (set by generating and
decoding a 1024 x 1024 image, the same for both reads).

    python benchmarks/snapshot_load.py               # writes its section of docs/benchmarks.md
    python benchmarks/snapshot_load.py --no-write --keep /tmp/snap   # keep the snapshot for other runs
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import DOC, markdown_table, write_section  # noqa: E402

GENERATION_KEYS = ("G_ema", "audio", "decoder_model")


def write_training_snapshot(path: Path, resolution: int = 1024, seed: int = 0) -> int:
    """A snapshot laid out as the training loop writes one, with the audio preset's networks; its size in bytes."""
    from audio_ext.core.geometry import StftGeometry
    from stylegan2.networks import Discriminator, Generator
    from stylegan2.presets import discriminator_kwargs, generator_kwargs, resolve_config
    from stylegan2.snapshot import network_record, save_snapshot

    opts = resolve_config("audio1024" if resolution >= 1024 else "auto", resolution, 1)
    torch.manual_seed(seed)
    data = {}
    for key, cls, kwargs in (("G", Generator, generator_kwargs(opts, 0, 1)),
                             ("D", Discriminator, discriminator_kwargs(opts, 0, 1))):
        net = cls(**kwargs)
        data[key] = network_record(net)
        if key == "G":
            data["G_ema"] = network_record(net)
        adam = torch.optim.Adam(net.parameters(), lr=0.001, betas=(0.0, 0.99))
        for p in net.parameters():      # moments of a run in progress: one entry per parameter
            adam.state[p] = {"step": torch.tensor(2200.0), "exp_avg": torch.randn_like(p) * 1e-3,
                             "exp_avg_sq": torch.rand_like(p) * 1e-6}
        state = adam.state_dict()
        for group in state["param_groups"]:
            group["betas"] = list(group["betas"])
        data["opt_" + key] = state
        del net, adam
    geometry = StftGeometry(resolution)
    data.update(cur_nimg=2_200_000, cur_tick=550, batch_idx=68_750, pl_mean=torch.tensor(0.4),
                audio=geometry.audio_block(-6.0, 4.0, 130.0), augment=None, ada_stats=None,
                training_options=dict(opts), training_set_kwargs=dict(path="stft.zip", resolution=resolution))
    save_snapshot(path, data)
    return path.stat().st_size


def evict(path: Path) -> None:
    """Drop this file's pages from the page cache (the file is fsynced, so they are clean)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


#: Run in a fresh process: gen_audio.py for one seed, with the loader as ``mode`` says, timed from the CLI's start.
CHILD = r"""
import json, os, resource, sys, time
t_imports = time.perf_counter()
import gen_audio
import stylegan2.snapshot as snapshot
from click.testing import CliRunner
mode, path, outdir = sys.argv[1:4]
marks = {}
real_load, real_build = snapshot.load_snapshot, snapshot.build_networks
def load(p, keys=None):
    return real_load(p) if mode == "full" else real_load(p, keys=keys)
def build(*args, **kwargs):
    nets = real_build(*args, **kwargs)
    if "ready" not in marks:
        marks["ready"], marks["ready_cpu"] = time.perf_counter(), time.process_time()
        with open("/proc/self/statm") as f:
            marks["rss_mb"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return nets
import audio_ext.generation.synthesis as synthesis   # the names the loader calls
synthesis.load_snapshot, synthesis.build_networks = load, build
import audio_ext.generation.generate as generate
real_synthesize = generate._Run.synthesize_seeded
def synthesize(*args, **kwargs):
    images = real_synthesize(*args, **kwargs)
    marks.setdefault("generated", time.perf_counter())
    return images
generate._Run.synthesize_seeded = synthesize
start, start_cpu = time.perf_counter(), time.process_time()
result = CliRunner().invoke(gen_audio.main, ["--network", path, "--seeds", "0", "--outdir", outdir])
end, end_cpu = time.perf_counter(), time.process_time()
if result.exit_code:
    sys.exit(result.output)
print(json.dumps(dict(ready=marks["ready"] - start, clip=end - start, imports=start - t_imports,
                      generated=marks["generated"] - start,
                      ready_cpu=marks["ready_cpu"] - start_cpu, clip_cpu=end_cpu - start_cpu,
                      ready_mb=marks["rss_mb"], peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def run_once(mode: str, path: Path, outdir: Path, cold: bool) -> dict:
    if cold:
        evict(path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(outdir)], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode:
        raise click.ClickException(f"gen_audio run ({mode}) failed: {out.stderr.strip() or out.stdout.strip()}")
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record["wall"] = wall
    return record


@click.command()
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True,
              help="Runs per mode and cache state; the table shows the one with the least CPU time")
@click.option("--keep", type=click.Path(file_okay=False), help="Write the snapshot into this folder and keep it")
@click.option("--doc", type=click.Path(dir_okay=False, path_type=Path), default=DOC, show_default=True)
@click.option("--write/--no-write", default=True, show_default=True, help="Update docs/benchmarks.md")
def main(repeats, keep, doc, write):
    """Time the first clip from an audio1024 training snapshot: full read against G_ema only."""
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(keep) if keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "network-snapshot-002200.pkl"
        if not path.exists():
            t = time.perf_counter()
            size = write_training_snapshot(path)
            print(f"wrote {path} ({size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s")
        size = path.stat().st_size
        results = {}
        for _ in range(repeats):        # interleaved, so a busy spell on a shared machine hits every mode
            for cache in ("cold", "warm"):
                for mode in ("full", "G_ema only"):
                    if cache == "warm":
                        run_once(mode, path, Path(tmp) / "warmup", cold=False)   # bring the file into memory
                    record = run_once(mode, path, Path(tmp) / f"out-{len(results)}-{time.time_ns()}", cache == "cold")
                    print(f"{mode:10s} {cache}: G_ema ready {record['ready']:.2f} s, "
                          f"first clip {record['clip']:.2f} s, "
                          f"process {record['wall']:.2f} s, memory {record['ready_mb']:.0f} MB when G_ema is "
                          f"built, peak {record['peak_mb']:.0f} MB")
                    best = results.get((mode, cache))
                    if best is None or record["clip_cpu"] < best["clip_cpu"]:   # CPU time: least hurt by sharing
                        results[(mode, cache)] = record
    rows = [[mode, cache, f"{r['ready']:.2f} ({r['ready_cpu']:.2f})", f"{r['generated']:.2f}",
             f"{r['clip']:.2f} ({r['clip_cpu']:.2f})", r["wall"], round(r["ready_mb"]), round(r["peak_mb"])]
            for (mode, cache), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0] != "full"))]
    table = markdown_table(["read", "page cache", "G_ema built: wall (CPU) s", "image generated (s)",
                            "first clip written: wall (CPU) s",
                            "process incl. imports (s)", "memory at G_ema built (MB)", "peak memory (MB)"], rows)
    ratio = {(cache, what): results[("full", cache)][what] / results[("G_ema only", cache)][what]
             for cache in ("cold", "warm") for what in ("ready_cpu", "clip_cpu", "ready_mb")}
    print()
    print(table)
    body = (f"`python benchmarks/snapshot_load.py`: `gen_audio.py --seeds 0` on an audio1024 training "
            f"snapshot of {size / 1e6:.0f} MB (G, D, G_ema, both Adam states; random weights), in fresh "
            f"processes; of {repeats} runs each, the one with the least CPU time. \"full\" reads and checks the whole snapshot (the loader before "
            f"lazy loading); \"G_ema only\" is today's `load_snapshot(path, keys=(\"G_ema\", \"audio\", "
            f"\"decoder_model\"))`, memory-mapped (what `gen_audio.py` does). Cold: the file evicted from the "
            f"page cache first. Times run from the CLI's start (after imports), CPU seconds of the process (all "
            f"threads) in brackets; the first clip includes generating the 1024 x 1024 image, decoding it with "
            f"the default decoder and writing the WAV and the page (target: at most 3 s). In CPU time the G_ema-only read builds G_ema "
            f"{ratio[('cold', 'ready_cpu')]:.2f}x faster cold and {ratio[('warm', 'ready_cpu')]:.2f}x warm, and gives the "
            f"first clip {ratio[('cold', 'clip_cpu')]:.2f}x / {ratio[('warm', 'clip_cpu')]:.2f}x faster; the process "
            f"holds {ratio[('cold', 'ready_mb')]:.2f}x less memory when G_ema is built. Load average {load_start:.1f} at the start and "
            f"{os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} cores (above the core count the machine "
            f"was shared and times are pessimistic).\n\n" + table)
    if write:
        write_section("snapshot_load", "Loading a training snapshot for generation", body, doc=doc)
        print(f"\nrecorded in {doc}")


if __name__ == "__main__":
    main()
