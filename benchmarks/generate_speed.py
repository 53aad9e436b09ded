"""How fast does gen_audio make music? Seconds per clip (generation + decoding), and clips per second.

A randomly initialised generator of the ``audio1024`` preset's size (1024 x 1024, 8 mapping layers,
channel base 32768) is timed end to end as ``gen_audio.py`` runs it: synthesis (fp32 on the CPU,
fp16 in the top blocks on CUDA), clamping, and decoding with the audio layer's default phase
reconstruction. Each clip is 1024 x 1024 samples = 23.78 s at 44.1 kHz. Reference row: the thesis
(docs/references.md, Thesis) measured 1.01 s per 23.77 s clip on an RTX 3090 with 10 Griffin-Lim iterations.

    python benchmarks/generate_speed.py                      # CPU here: batch 1, 2 clips per mode
    python benchmarks/generate_speed.py --device cuda        # GPU: sweeps the batch size, reports the best

On the CPU every batch size is timed in several modes, interleaved clip by clip so that other
jobs on a shared machine slow them alike: ``reference`` (the layer-by-layer reference path,
``ELECTROGAN_FUSED=0``, the "before" of issue 13), ``fused`` (the float32 inference fast path of
``stylegan2/ops/fused_inference.py``, the default) and, where the CPU has bf16 kernels,
``fused-bf16``. For bf16 the table also gives its spectral convergence against the float32 image
(magnitudes decoded through the codec) next to the codec's own 8-bit rounding error.

Random weights give noise-like images; the time per clip does not depend on what the image shows,
except that PGHI skips near-silent coefficients, which a trained model produces more of.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audio_ext.core.geometry import StftGeometry  # noqa: E402
from audio_ext.generation.synthesis import decode_images, describe_phase, generation_device, seed_latents, synthesize  # noqa: E402
from benchmarks.report import DOC, markdown_table, write_section  # noqa: E402

THESIS_ROW = ["RTX 3090 (thesis)", "-", 1, "-", "-", 1.01, "-", 1 / 1.01, 23.77 / 1.01, "Griffin-Lim, 10 iterations"]


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


#: CPU modes: (name, fast path on, dtype of the fp16 blocks)
MODES = {"reference": (False, None), "fused": (True, torch.float32), "fused-bf16": (True, torch.bfloat16)}


def set_mode(mode: str) -> None:
    """Select the generator's CPU execution (see the module docstring)."""
    from stylegan2.ops import fused_inference
    enabled, dtype = MODES[mode]
    fused_inference.set_enabled(enabled, dtype)


def time_one(G, block, batch: int, b: int, device, method, n_iter):
    """(synthesis s, decoding s, CPU s of both, images) for batch number ``b`` of ``batch`` clips."""
    c = torch.zeros(batch, 0, device=device)
    z = torch.from_numpy(seed_latents(range(b * batch, (b + 1) * batch), G.z_dim)).to(device)
    sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    imgs = synthesize(G, z, c, 1.0, "const", device)
    sync(device)
    t1 = time.perf_counter()
    audio = decode_images(imgs, block, method, n_iter, device, seed=b)
    sync(device)
    t2, c2 = time.perf_counter(), time.process_time()
    assert audio.shape == (batch, StftGeometry.from_dict(block).clip_samples)
    return t1 - t0, t2 - t1, c2 - c0, imgs


def time_modes(G, block, batch: int, n_batches: int, device, method, n_iter, modes):
    """Median seconds per clip (synthesis, decoding, CPU) per mode over ``n_batches`` interleaved batches."""
    runs = {m: [] for m in modes}
    for b in range(n_batches + 1):  # batch 0 warms up (kernel selection, numba compilation)
        for m in modes:
            if device.type == "cpu":
                set_mode(m)
            r = time_one(G, block, batch, b, device, method, n_iter)[:3]
            if b > 0:
                runs[m].append(r)
    if device.type == "cpu":
        set_mode("fused")
    return {m: tuple(float(np.median([r[i] for r in rs])) / batch for i in range(3)) for m, rs in runs.items()}


def bf16_error(G, block, device) -> tuple:
    """(SC dB of bf16 vs float32 magnitudes, SC dB of the 8-bit codec vs float32) for one image.

    SC = 20 log10(||M - M'|| / ||M||) over the decoded STFT magnitudes of the clip.
    """
    from audio_ext.core.codec import decode_magnitude
    from audio_ext.generation.synthesis import image_to_png_array
    geometry = StftGeometry.from_dict(block)
    z = torch.from_numpy(seed_latents([0], G.z_dim)).to(device)
    c = torch.zeros(1, 0, device=device)
    images = {}
    for m in ("fused", "fused-bf16"):
        set_mode(m)
        images[m] = synthesize(G, z, c, 1.0, "const", device)[0].cpu()
    set_mode("fused")
    ref = decode_magnitude(images["fused"], geometry, block["mean"], block["std"]).double()
    low = decode_magnitude(images["fused-bf16"], geometry, block["mean"], block["std"]).double()
    u8 = torch.from_numpy(image_to_png_array(images["fused"].numpy()))
    codec = decode_magnitude(u8, geometry, block["mean"], block["std"]).double()
    sc = lambda other: 20 * math.log10(float((ref - other).norm() / ref.norm()))
    return sc(low), sc(codec)


@click.command()
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--resolution", type=int, default=1024, show_default=True, help="Image side R (clip = R*R samples).")
@click.option("--batches", default=None, help="Batch sizes to try, e.g. '1,4,16' (default: 1 on CPU, 1..32 on CUDA).")
@click.option("--clips", type=int, default=2, show_default=True, help="Timed clips per batch size (at least one batch).")
@click.option("--method", default=None, help="Phase method (default: the audio layer's).")
@click.option("--iters", "n_iter", type=int, default=None, help="Griffin-Lim iterations (default: the method's).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--doc", type=click.Path(path_type=Path), default=DOC, show_default=True, help="Markdown file to update.")
@click.option("--modes", default=None, help="CPU modes to compare, e.g. 'reference,fused' (default: all the CPU "
              "supports: reference, fused, fused-bf16).")
@click.option("--write/--no-write", default=True, show_default=True, help="Record the table in --doc.")
def main(device, resolution, batches, clips, method, n_iter, threads, modes, doc, write):
    """Time generation + decoding per clip and print (and record) a table."""
    if threads:
        torch.set_num_threads(threads)
    dev = generation_device(device)
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
    from stylegan2.ops.fused_inference import bf16_supported
    if dev.type == "cpu":
        mode_list = modes.split(",") if modes else ["reference", "fused"] + (["fused-bf16"] if bf16_supported() else [])
        unknown = [m for m in mode_list if m not in MODES]
        if unknown:
            raise click.BadParameter(f"unknown mode(s) {', '.join(unknown)} (choose from {', '.join(MODES)})",
                                     param_hint="--modes")
    else:
        mode_list = ["default"]
    rows = []
    for batch in sizes:
        n_batches = max(1, -(-clips // batch))
        try:
            results = time_modes(G, block, batch, n_batches, dev, method, n_iter, mode_list)
        except torch.cuda.OutOfMemoryError:
            print(f"batch {batch}: out of memory, stopping the sweep")
            torch.cuda.empty_cache()
            break
        for mode, (gen_s, dec_s, cpu_s) in results.items():
            total = gen_s + dec_s
            rows.append([where, mode, batch, gen_s, dec_s, total, cpu_s, 1.0 / total, geometry.clip_seconds / total,
                         f"{name}, {iters} iterations"])
            print(f"batch {batch:3d} {mode:10s}: {gen_s:.3f} s generate + {dec_s:.3f} s decode = {total:.3f} s/clip "
                  f"({cpu_s:.2f} CPU s; {1 / total:.2f} clips/s, {geometry.clip_seconds / total:.1f}x real time)")
    if not rows:
        raise SystemExit("no batch size fitted")
    header = ["device", "mode", "batch", "generate s/clip", "decode s/clip", "total s/clip", "CPU s/clip", "clips/s",
              "x real time", "phase"]
    table = markdown_table(header, rows + [THESIS_ROW])
    notes = []
    by_mode = {r[1]: r for r in rows if r[2] == sizes[0]}
    if "reference" in by_mode and "fused" in by_mode:
        ref, fus = by_mode["reference"], by_mode["fused"]
        notes.append(f"Fast path vs reference (batch {sizes[0]}): generation {ref[3] / fus[3]:.2f}x faster "
                     f"({ref[3]:.3g} -> {fus[3]:.3g} s/clip), whole clip {ref[5] / fus[5]:.2f}x "
                     f"({ref[5]:.3g} -> {fus[5]:.3g} s/clip).")
    sc_bf16 = sc_codec = 0.0
    if "fused-bf16" in by_mode:
        sc_bf16, sc_codec = bf16_error(G, block, dev)
        fus, low = by_mode.get("fused"), by_mode["fused-bf16"]
        verdict = "below" if sc_bf16 < sc_codec else "NOT below"
        notes.append(f"bf16 blocks: spectral convergence against float32 {sc_bf16:.1f} dB, {verdict} the codec's own "
                     f"8-bit error ({sc_codec:.1f} dB; random weights, one image)"
                     + (f"; generation {fus[3] / low[3]:.2f}x faster than float32." if fus else "."))
    for n in notes:
        print(n)
    # bf16 is a candidate for "best" only when its error is below the codec's (issue 13's bar)
    bf16_ok = "fused-bf16" in by_mode and sc_bf16 < sc_codec
    best = max((r for r in rows if r[1] != "fused-bf16" or bf16_ok), key=lambda r: r[7])
    print()
    print(table)
    body = (f"`python benchmarks/generate_speed.py --device {dev.type}`: randomly initialised "
            f"{resolution}x{resolution} generator ({n_params / 1e6:.2f} M parameters), "
            f"{geometry.clip_seconds:.2f} s clips, {clips} timed clip(s) per batch size after one warm-up batch. "
            f"Best (of the modes whose output passes): {best[1]}, batch {best[2]}, {best[5]:.3g} s per clip = {best[7]:.3g} clips/s "
            f"({geometry.clip_seconds / best[5]:.3g}x real time). Modes are interleaved clip by clip; times are "
            f"medians. Load average {load_start:.1f} at the start and "
            f"{os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} cores (above the core count the CPU was shared "
            f"and the times are pessimistic; the ratios between modes hold better). The thesis row is its published "
            f"figure.\n\n" + table + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else ""))
    if write:
        write_section(f"generate_speed_{dev.type}", f"Generation speed, {resolution}x{resolution} ({dev.type})",
                      body, doc=doc)
        print(f"\nrecorded in {doc}")


if __name__ == "__main__":
    main()
