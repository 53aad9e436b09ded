"""How fast does project_audio.py search? Optimisation steps per second, in W and in W+.

A randomly initialised generator of the preset's size (``audio1024`` at 1024, ``auto`` below, as in
``generate_speed.py``) is projected onto a random target with the full loss of ``project_audio.py``:
the multi-scale image distance, the band-energy and onset-envelope terms and the noise
regularisation, one synthesis forward and backward pass per step. The ``w_avg`` estimate before
the search and the first two steps (warm-up: kernel selection) are not timed. The time per step
does not depend on what the weights have learnt.

    python benchmarks/project_speed.py                                          # CPU: 64 and 256, 10 steps
    python benchmarks/project_speed.py --resolution 1024 --device cuda --steps 50   # the real size on a GPU
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audio_ext.generation.audio_projection import SpectralLoss  # noqa: E402
from audio_ext.generation.synthesis import generation_device  # noqa: E402
from benchmarks.generate_speed import build_generator  # noqa: E402
from benchmarks.report import markdown_table, write_section  # noqa: E402
from stylegan2.projector import project  # noqa: E402

WARMUP_STEPS = 2


def time_projection(G, resolution: int, steps: int, w_plus: bool, device):
    """(wall seconds, CPU seconds of this process) per step over ``steps`` timed steps (after the warm-up steps).

    CPU seconds count all threads; on a shared machine they measure the work where the wall clock
    also counts the waiting.
    """
    target = torch.rand(1, resolution, resolution, generator=torch.Generator().manual_seed(0)) * 2 - 1
    stamps, cpu = [], []

    def on_step(entry):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())

    project(G, target, num_steps=steps + WARMUP_STEPS, w_plus=w_plus, w_avg_samples=1000,
            extra_loss=SpectralLoss(resolution), device=device, callback=on_step)
    return (stamps[-1] - stamps[WARMUP_STEPS - 1]) / steps, (cpu[-1] - cpu[WARMUP_STEPS - 1]) / steps


@click.command()
@click.option("--resolution", "resolutions", multiple=True, type=int, help="Image size(s); default 64 and 256 on a CPU, 1024 on CUDA.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True, help="Timed steps per setting.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch CPU threads (1: a shared machine thrashes with more).")
@click.option("--no-write", is_flag=True, help="Print the table only; leave docs/benchmarks.md alone.")
def main(resolutions, device, steps, threads, no_write):
    device = generation_device(device)
    torch.set_num_threads(threads)
    resolutions = resolutions or ((1024,) if device.type == "cuda" else (64, 256))
    rows = []
    for res in resolutions:
        G = build_generator(res, device)
        for w_plus in (False, True):
            sec, cpu_sec = time_projection(G, res, steps, w_plus, device)
            rows.append([res, "W+" if w_plus else "W", steps, 1.0 / sec, sec, cpu_sec, 1000 * sec / 60])
            print(f"R={res} {'W+' if w_plus else 'W'}: {1.0 / sec:.3g} steps/s ({sec:.3g} s/step)", flush=True)
    table = markdown_table(["resolution", "latent", "timed steps", "steps/s", "s/step", "CPU s/step",
                            "min per 1000 steps"], rows)
    print(table)
    if not no_write:
        threads_note = f"{torch.get_num_threads()} torch thread(s)" if device.type == "cpu" else "CUDA"
        body = (f"`benchmarks/project_speed.py`: one projection step of `project_audio.py` (synthesis forward + "
                f"backward, multi-scale distance, band-energy and onset terms, noise regularisation) with a randomly "
                f"initialised generator of the preset's size (`audio1024` at 1024, `auto` below), after "
                f"{WARMUP_STEPS} warm-up steps; {threads_note}; load average at the end {os.getloadavg()[0]:.1f} (on a "
                f"shared machine the wall clock is an upper bound, CPU seconds count the work). The default 1000 "
                f"steps take the last column."
                + (" On a GPU at 1024 the `project` stage of `make gpu-smoke` (benchmarks/gpu_smoke.py) runs "
                   "`--resolution 1024 --device cuda --steps 50` and writes the `project_speed_cuda` section."
                   if device.type == "cpu" else "")
                + "\n\n" + table)
        write_section(f"project_speed_{device.type}", f"Projection speed ({device.type})", body)


if __name__ == "__main__":
    main()
