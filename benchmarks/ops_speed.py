"""Speed of our CUDA kernels against the reference PyTorch ops (bias_act, upfirdn2d) on a GPU.

    python benchmarks/ops_speed.py [--resolution 256] [--batch 8] [--repeats 50] [--no-write]
                                   [--training 256,512,1024 | --training none]

For each op and shape (StyleGAN2-like layers: batch x channels x R x R for R up to --resolution)
it times forward and forward+backward with CUDA events. With ``--training`` it also measures the
training speed of the ``audio<R>`` presets in sec/kimg (seconds per thousand images on one GPU:
G and D main phases every step, their lazy regularisation weighted by 1/4 and 1/16) with the
reference ops and with the kernels. Both tables go into docs/benchmarks.md (sections
``ops-speed`` and ``ops-training-speed``). Without a GPU it says so and exits 0.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _time_ms(fn, repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` runs, timed with CUDA events after warm-up."""
    import torch
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def _cases(resolution: int, batch: int):
    """(op label, shape, callable factory(impl)) for the layers of a StyleGAN2 generator/discriminator."""
    import torch

    from stylegan2.ops.bias_act import bias_act
    from stylegan2.ops.upfirdn2d import downsample2d, setup_filter, upsample2d

    device = torch.device("cuda")
    f = setup_filter([1, 3, 3, 1], device=device)
    res = 16
    while res <= resolution:
        channels = min(512, 16384 // res)
        for dtype in (torch.float32, torch.float16):
            x = torch.randn(batch, channels, res, res, device=device, dtype=dtype, requires_grad=True)
            b = torch.randn(channels, device=device, dtype=dtype, requires_grad=True)
            label = f"{batch}x{channels}x{res}x{res} {str(dtype).replace('torch.', '')}"
            yield "bias_act lrelu+clamp", label, x, lambda impl, x=x, b=b: bias_act(x, b, act="lrelu", clamp=256,
                                                                                   impl=impl)
            yield "upsample2d x2", label, x, lambda impl, x=x: upsample2d(x, f, impl=impl)
            yield "downsample2d x2", label, x, lambda impl, x=x: downsample2d(x, f, impl=impl)
        res *= 4


def training_sec_per_kimg(cfg: str, resolution: int, device, mode: str, steps: int = 5) -> float:
    """Seconds per 1000 training images of preset ``cfg`` at ``resolution`` with ops ``mode``.

    One chunk of ``batch_gpu`` images per phase; Gmain and Dmain run every step, Greg and Dreg every
    4th and 16th (upstream lazy regularisation), so their times are weighted accordingly. Optimizer
    steps and data loading are left out: they do not depend on the ops.
    """
    import time

    import torch

    from stylegan2 import networks
    from stylegan2.loss import StyleGAN2Loss
    from stylegan2.ops import backend
    from stylegan2.presets import discriminator_kwargs, generator_kwargs, resolve_config

    opts = resolve_config(cfg, resolution, 1)
    batch = int(opts["batch_gpu"])
    backend.set_mode(mode)
    try:
        G = networks.Generator(**generator_kwargs(opts, 0, 1)).train().to(device)
        D = networks.Discriminator(**discriminator_kwargs(opts, 0, 1)).train().to(device)
        loss = StyleGAN2Loss(G, D, r1_gamma=opts["gamma"], pl_batch_shrink=opts["pl_batch_shrink"])
        real = torch.rand(batch, 1, resolution, resolution, device=device) * 2 - 1
        c = torch.zeros(batch, 0, device=device)
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def run(phase: str) -> float:
            z = torch.randn(batch, G.z_dim, device=device)
            sync()
            start = time.perf_counter()
            loss.accumulate_gradients(phase, real, c, z, c, gain=1.0, cur_nimg=0)
            sync()
            return time.perf_counter() - start

        weights = {"Gmain": 1.0, "Dmain": 1.0, "Greg": 1 / opts["G_reg_interval"], "Dreg": 1 / opts["D_reg_interval"]}
        for phase in weights:  # warm-up (kernel builds, cuDNN autotuning)
            run(phase)
        per_step = sum(w * sorted(run(p) for _ in range(steps))[steps // 2] for p, w in weights.items())
        return per_step / batch * 1000
    finally:
        backend.set_mode(None)


@click.command()
@click.option("--resolution", default=256, show_default=True, help="largest image side (pixels)")
@click.option("--batch", default=8, show_default=True)
@click.option("--repeats", default=50, show_default=True, help="timed runs per case (median reported)")
@click.option("--training", default="256,512,1024", show_default=True,
              help="resolutions whose audio<R> training speed to measure ('none' to skip)")
@click.option("--write/--no-write", default=True, show_default=True, help="update docs/benchmarks.md")
def main(resolution: int, batch: int, repeats: int, training: str, write: bool) -> None:
    import torch
    if not torch.cuda.is_available():
        click.echo("ops_speed: no CUDA GPU present; nothing to measure (the kernels only run on GPUs).")
        return
    from benchmarks.report import markdown_table, write_section
    from stylegan2.ops import backend

    backend.set_mode("cuda")  # measure the kernels, never a silent fallback
    header = ["op", "shape", "ref fwd ms", "cuda fwd ms", "fwd speed-up", "ref fwd+bwd ms", "cuda fwd+bwd ms",
              "fwd+bwd speed-up"]
    rows = []
    for op, label, x, make in _cases(resolution, batch):
        timings = {}
        for impl in ("ref", "cuda"):
            fwd = lambda: make(impl)
            def fwd_bwd():
                y = make(impl)
                y.backward(torch.ones_like(y))
            timings[impl] = (_time_ms(fwd, repeats), _time_ms(fwd_bwd, repeats))
        (rf, rb), (cf, cb) = timings["ref"], timings["cuda"]
        rows.append([op, label, rf, cf, f"{rf / cf:.2f}x", rb, cb, f"{rb / cb:.2f}x"])
        click.echo(f"{op:22s} {label:28s} fwd {rf:7.3f} -> {cf:7.3f} ms   fwd+bwd {rb:7.3f} -> {cb:7.3f} ms")
    table = markdown_table(header, rows)
    click.echo(table)
    if write:
        write_section("ops-speed", "CUDA kernels vs reference ops",
                      f"`python benchmarks/ops_speed.py --resolution {resolution} --batch {batch}`; median of "
                      f"{repeats} runs, CUDA events.\n\n{table}")
    resolutions = [] if training.strip().lower() == "none" else [int(r) for r in training.split(",") if r.strip()]
    rows = []
    for res in resolutions:  # the section is rewritten after every resolution, so a cut run keeps what it measured
        ref = training_sec_per_kimg(f"audio{res}", res, torch.device("cuda"), "reference")
        ker = training_sec_per_kimg(f"audio{res}", res, torch.device("cuda"), "cuda")
        rows.append([f"audio{res}", res, ref, ker, f"{ref / ker:.2f}x"])
        click.echo(f"audio{res}: {ref:.1f} sec/kimg reference, {ker:.1f} sec/kimg kernels")
        torch.cuda.empty_cache()
        table = markdown_table(["cfg", "resolution", "reference sec/kimg", "kernels sec/kimg", "speed-up"], rows)
        click.echo(table)
        if write:
            write_section("ops-training-speed", "Training speed with and without the CUDA kernels",
                          "`python benchmarks/ops_speed.py --training " + ",".join(map(str, resolutions)) +
                          "`; one GPU, one batch_gpu chunk per phase, lazy regularisation weighted, "
                          "optimizer steps and data loading excluded. Rows: "
                          + ", ".join(r[0] for r in rows) + ".\n\n" + table)

if __name__ == "__main__":
    main()
