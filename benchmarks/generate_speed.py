"""How fast does gen_audio make music? Seconds per clip (generation + decoding), and clips per second.

A randomly initialised generator of the ``audio1024`` preset's size (1024 x 1024, 8 mapping layers,
channel base 32768) is timed end to end as ``gen_audio.py`` runs it: synthesis (fp32 on the CPU,
fp16 in the top blocks on CUDA), clamping, and decoding with the audio layer's default phase
reconstruction. Each clip is 1024 x 1024 samples = 23.78 s at 44.1 kHz. Reference row: the thesis
(paper-notes.md) measured 1.01 s per 23.77 s clip on an RTX 3090 with 10 Griffin-Lim iterations.

    python benchmarks/generate_speed.py                      # CPU here: batch 1, 2 clips
    python benchmarks/generate_speed.py --device cuda        # GPU: sweeps the batch size, reports the best

Random weights give noise-like images; the time per clip does not depend on what the image shows,
except that PGHI skips near-silent coefficients, which a trained model produces more of.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audio_ext.generate import decode_images, describe_phase, resolve_device, seed_latents, synthesize  # noqa: E402
from audio_ext.geometry import StftGeometry  # noqa: E402
from benchmarks.report import DOC, markdown_table, write_section  # noqa: E402

THESIS_ROW = ["RTX 3090 (thesis)", 1, "-", "-", 1.01, 1 / 1.01, 23.77 / 1.01, "Griffin-Lim, 10 iterations"]


def build_generator(resolution: int, device: torch.device):
    """A randomly initialised generator with the audio preset's architecture at ``resolution``."""
    from stylegan2.networks import Generator
    from stylegan2.presets import generator_kwargs, resolve_config
    cfg = "audio1024" if resolution >= 1024 else "auto"
    opts = resolve_config(cfg, resolution, 1)
    torch.manual_seed(0)
    return Generator(**generator_kwargs(opts, c_dim=0, img_channels=1)).to(device).eval().requires_grad_(False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batch(G, block, batch: int, n_batches: int, device, method, n_iter):
    """Seconds per clip for synthesis and for decoding, averaged over ``n_batches`` batches of ``batch``."""
    c = torch.zeros(batch, 0, device=device)
    t_gen = t_dec = 0.0
    for b in range(n_batches + 1):  # batch 0 warms up (kernel selection, numba compilation)
        z = torch.from_numpy(seed_latents(range(b * batch, (b + 1) * batch), G.z_dim)).to(device)
        sync(device)
        t0 = time.perf_counter()
        imgs = synthesize(G, z, c, 1.0, "const", device)
        sync(device)
        t1 = time.perf_counter()
        audio = decode_images(imgs, block, method, n_iter, device, seed=b)
        sync(device)
        t2 = time.perf_counter()
        assert audio.shape == (batch, StftGeometry.from_dict(block).clip_samples)
        if b > 0:
            t_gen += t1 - t0
            t_dec += t2 - t1
    clips = batch * n_batches
    return t_gen / clips, t_dec / clips


@click.command()
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--resolution", type=int, default=1024, show_default=True, help="Image side R (clip = R*R samples).")
@click.option("--batches", default=None, help="Batch sizes to try, e.g. '1,4,16' (default: 1 on CPU, 1..32 on CUDA).")
@click.option("--clips", type=int, default=2, show_default=True, help="Timed clips per batch size (at least one batch).")
@click.option("--method", default=None, help="Phase method (default: the audio layer's).")
@click.option("--iters", "n_iter", type=int, default=None, help="Griffin-Lim iterations (default: the method's).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--doc", type=click.Path(path_type=Path), default=DOC, show_default=True, help="Markdown file to update.")
@click.option("--write/--no-write", default=True, show_default=True, help="Record the table in --doc.")
def main(device, resolution, batches, clips, method, n_iter, threads, doc, write):
    """Time generation + decoding per clip and print (and record) a table."""
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    sizes = [int(s) for s in batches.split(",")] if batches else ([1] if dev.type == "cpu" else [1, 2, 4, 8, 16, 32])
    geometry = StftGeometry(resolution)
    block = geometry.audio_block(mean=-6.0, std=3.0, target_bpm=130.0)
    G = build_generator(resolution, dev)
    n_params = sum(p.numel() for p in G.parameters())
    name, iters = describe_phase(method, n_iter, geometry)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"G: {n_params / 1e6:.2f} M parameters, {resolution}x{resolution}, clip {geometry.clip_seconds:.2f} s; "
          f"phase {name} ({iters} iterations); {where}")
    load_start = os.getloadavg()[0]
    rows = []
    for batch in sizes:
        n_batches = max(1, -(-clips // batch))
        try:
            gen_s, dec_s = time_batch(G, block, batch, n_batches, dev, method, n_iter)
        except torch.cuda.OutOfMemoryError:
            print(f"batch {batch}: out of memory, stopping the sweep")
            torch.cuda.empty_cache()
            break
        total = gen_s + dec_s
        rows.append([where, batch, gen_s, dec_s, total, 1.0 / total, geometry.clip_seconds / total,
                     f"{name}, {iters} iterations"])
        print(f"batch {batch:3d}: {gen_s:.3f} s generate + {dec_s:.3f} s decode = {total:.3f} s/clip "
              f"({1 / total:.2f} clips/s, {geometry.clip_seconds / total:.1f}x real time)")
    if not rows:
        raise SystemExit("no batch size fitted")
    best = max(rows, key=lambda r: r[5])
    header = ["device", "batch", "generate s/clip", "decode s/clip", "total s/clip", "clips/s", "x real time", "phase"]
    table = markdown_table(header, rows + [THESIS_ROW])
    print()
    print(table)
    body = (f"`python benchmarks/generate_speed.py --device {dev.type}`: randomly initialised "
            f"{resolution}x{resolution} generator ({n_params / 1e6:.2f} M parameters), "
            f"{geometry.clip_seconds:.2f} s clips, {clips} timed clip(s) per batch size after one warm-up batch. "
            f"Best: batch {best[1]}, {best[4]:.3g} s per clip = {best[5]:.3g} clips/s "
            f"({geometry.clip_seconds / best[4]:.3g}x real time). Load average {load_start:.1f} at the start and "
            f"{os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} cores (above the core count the CPU was shared "
            f"and the times are pessimistic). The thesis row is its published figure.\n\n"
            + table)
    if write:
        write_section(f"generate_speed_{dev.type}", f"Generation speed, {resolution}x{resolution} ({dev.type})",
                      body, doc=doc)
        print(f"\nrecorded in {doc}")


if __name__ == "__main__":
    main()
