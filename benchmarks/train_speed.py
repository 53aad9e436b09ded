"""Training speed: seconds per kimg and peak memory of the real training loop, per resolution.

Each row runs :func:`stylegan2.training_loop.training_loop` on a synthetic archive of random
greyscale PNGs for a few ticks and reads ``Timing/sec_per_kimg`` (ticks after the first, which
holds start-up) and the memory columns from its ``stats.jsonl``; so the numbers include data
loading, lazy regularisation, EMA and tick bookkeeping, like upstream's published figures.

On a CPU it measures the ``tiny`` preset at 16/32/64; with a GPU it measures the audio presets
(and ``auto``) at 256/512/1024 and prints upstream's V100/A100 figures beside them
(StyleGAN3 ``docs/configs.md``, ``--cfg auto``, 1 GPU; docs/references.md).

    python benchmarks/train_speed.py                 # CPU defaults, writes docs/benchmarks.md
    python benchmarks/train_speed.py --cfg audio1024 --res 1024 --kimg 0.4
"""
from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import click
import numpy as np
import PIL.Image
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import markdown_table, write_section  # noqa: E402
from stylegan2.presets import resolve_config  # noqa: E402
from stylegan2.training_loop import training_loop  # noqa: E402

# Published 1-GPU seconds per kimg for --cfg auto (StyleGAN3 docs/configs.md; thesis for the RTX 3090).
UPSTREAM = {
    256: "V100 20.84 / A100 12.53 (auto, batch 16)",
    512: "V100 71.59 / A100 41.06 (auto, batch 8)",
    1024: "V100 141.83 / A100 90.39 (auto, batch 4); thesis RTX 3090 ~224",
}


def synthetic_archive(path: Path, resolution: int, count: int = 64) -> Path:
    """A zip of ``count`` random greyscale PNGs at ``resolution`` with a minimal dataset.json."""
    rng = np.random.RandomState(0)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for i in range(count):
            buf = io.BytesIO()
            PIL.Image.fromarray(rng.randint(0, 256, (resolution, resolution), dtype=np.uint8), "L").save(buf, "PNG")
            z.writestr(f"00000/img{i:08d}.png", buf.getvalue())
        z.writestr("dataset.json", json.dumps({"labels": None}))
    return path


def measure(cfg: str, resolution: int, kimg: float, ticks: int, **overrides) -> dict:
    """Run the loop for ``kimg`` (``ticks`` + 1 ticks) and summarise its stats.jsonl."""
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_archive(Path(tmp) / "data.zip", resolution)
        opts = resolve_config(cfg, resolution, 1, kimg=kimg, tick=kimg / (ticks + 1), snap=10 ** 6,
                              metrics=[], grid_limit=8, **overrides)
        training_loop(0, run_dir=str(Path(tmp) / "run"), data=str(data), progress=False, **opts)
        lines = [json.loads(l) for l in (Path(tmp) / "run" / "stats.jsonl").read_text().splitlines()]
    timed = lines[1:] or lines
    sec = [l["Timing/sec_per_kimg"]["mean"] for l in timed]
    cpu = [l["Timing/cpu_sec_per_kimg"]["mean"] for l in timed]
    return dict(cfg=cfg, res=resolution, batch=opts["batch"], batch_gpu=opts["batch_gpu"],
                sec_per_kimg=float(np.median(sec)), cpu_sec_per_kimg=float(np.median(cpu)),
                cpu_gb=max(l["Resources/cpu_mem_gb"]["mean"] for l in lines),
                gpu_gb=max(l["Resources/peak_gpu_mem_gb"]["mean"] for l in lines))


@click.command()
@click.option("--cfg", "cfgs", multiple=True, help="Preset(s); default tiny on CPU, audio presets + auto on GPU")
@click.option("--res", "resolutions", multiple=True, type=int, help="Resolution(s)")
@click.option("--kimg", type=float, help="Images (thousands) per measurement; default 5 ticks' worth")
@click.option("--write/--no-write", default=True, show_default=True, help="Update docs/benchmarks.md")
def main(cfgs, resolutions, kimg, write):
    """Print (and record) sec/kimg and peak memory of training per resolution on this machine."""
    gpu = torch.cuda.is_available()
    if not resolutions:
        resolutions = (256, 512, 1024) if gpu else (16, 32, 64)
    rows = []
    for res in resolutions:
        for cfg in (cfgs or ((f"audio{res}", "auto") if gpu else ("tiny",))):
            batch = resolve_config(cfg, res, 1)["batch"]
            k = kimg or batch * 5 / 1000          # 5 iterations: ticks 0..4, the first one not timed
            r = measure(cfg, res, k, ticks=4)
            r["upstream"] = UPSTREAM.get(res, "-") if gpu else "-"
            rows.append(r)
            print(f"{cfg:>10s} {res:5d}  batch {r['batch']:3d} ({r['batch_gpu']}/round)  "
                  f"{r['sec_per_kimg']:9.2f} s/kimg ({r['cpu_sec_per_kimg']:.2f} CPU-s/kimg)  cpu {r['cpu_gb']:.2f} GB  gpu {r['gpu_gb']:.2f} GB", flush=True)
    header = ["cfg", "res", "batch", "batch_gpu", "sec/kimg (wall)", "CPU-sec/kimg", "peak CPU RSS GB", "peak GPU GB",
              "upstream 1-GPU sec/kimg"]
    table = markdown_table(header, [[r["cfg"], r["res"], r["batch"], r["batch_gpu"], r["sec_per_kimg"], r["cpu_sec_per_kimg"],
                                     r["cpu_gb"], r["gpu_gb"], r["upstream"]] for r in rows])
    print(table)
    if write:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        note = (f"`benchmarks/train_speed.py`: the full training loop on a synthetic archive, median over ticks "
                f"after the first. Load average at the end: {load:.1f}; on a shared CPU the wall-clock column is "
                f"an upper bound and CPU-seconds (all threads of the process) measure the work itself. Upstream's figures use `--cfg auto` (smaller batches, 2 mapping layers) and "
                f"include fp16; the audio presets use batch 32 and 8 mapping layers (the thesis).")
        write_section("train_speed", "Training speed (sec/kimg, peak memory)", note + "\n\n" + table)


if __name__ == "__main__":
    main()
