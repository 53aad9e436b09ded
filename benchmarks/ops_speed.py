"""Speed of our CUDA kernels against the reference PyTorch ops (bias_act, upfirdn2d) on a GPU.

    python benchmarks/ops_speed.py [--resolution 256] [--batch 8] [--repeats 50] [--no-write]

For each op and shape (StyleGAN2-like layers: batch x channels x R x R for R up to --resolution)
it times forward and forward+backward with CUDA events and writes the table into
docs/benchmarks.md (section ``ops-speed``). Without a GPU it says so and exits 0.
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


@click.command()
@click.option("--resolution", default=256, show_default=True, help="largest image side (pixels)")
@click.option("--batch", default=8, show_default=True)
@click.option("--repeats", default=50, show_default=True, help="timed runs per case (median reported)")
@click.option("--write/--no-write", default=True, show_default=True, help="update docs/benchmarks.md")
def main(resolution: int, batch: int, repeats: int, write: bool) -> None:
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


if __name__ == "__main__":
    main()
