"""Everything that needs a GPU, in one command that stops by itself: ``make gpu-smoke``.

    python benchmarks/gpu_smoke.py [--limit 480] [--out gpu-smoke-out] [--only tests,generate]

A lent GPU is often available for minutes, so this runs the GPU work in order of value, each stage a
subprocess with its own time budget cut to what is left of ``--limit`` (seconds, whole run):

1. ``env``      GPU name, torch/CUDA/nvcc versions, the kernel toolchain diagnosis;
2. ``build``    compile both CUDA extensions for this GPU (timed; later stages reuse the cache);
3. ``tests``    the GPU test suite (``pytest -m gpu``): kernels vs reference, fp16 networks, codec/phase;
4. ``generate`` ``benchmarks/generate_speed.py`` on CUDA over batch sizes (best batch reported);
5. ``train``    ``benchmarks/train_speed.py`` for audio1024 (the whole loop with kernels, data loading included);
6. optional stages whose scripts exist (projection, decoder speed);
7. ``ops``      ``benchmarks/ops_speed.py``: kernel speed-ups, then audio1024/512/256 training with reference
   ops vs kernels (the reference path is slow on a GPU, so this comes last and takes what time is left).

The benchmark scripts write their own sections of ``docs/benchmarks.md`` (with the GPU's name); this
script adds a ``gpu-smoke`` section with every stage's status and time, and copies the logs, the JUnit
file and ``docs/benchmarks.md`` to ``--out`` (at most 8 files, so a lent machine can send them back).
Exit status: 0 when every stage that ran passed, 1 otherwise (a stage cut by the limit counts as not run).
"""
from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENV_SNIPPET = r"""
import os, shutil, subprocess, torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("GPU", p.name, f"sm_{p.major}{p.minor}", f"{p.total_memory / 2**30:.0f} GiB", p.multi_processor_count, "SMs")
nvcc = shutil.which("nvcc")
print("nvcc", nvcc, subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
      if nvcc else "")
from stylegan2.ops import plugin
for op in plugin.OPS:
    try:
        tools = plugin.diagnose(op, plugin.arch_for_device(0, []))
        print("toolchain", op, "ok", tools)
    except Exception as err:
        print("toolchain", op, "UNAVAILABLE:", err)
import numpy, scipy, librosa, soundfile
print("numpy", numpy.__version__, "scipy", scipy.__version__, "librosa", librosa.__version__,
      "soundfile", soundfile.__version__)
"""

BUILD_SNIPPET = r"""
import time, torch
from stylegan2.ops import plugin
for op in plugin.OPS:
    t = time.monotonic()
    plugin.load(op, torch.device("cuda", 0))
    print(f"built+loaded {op} in {time.monotonic() - t:.1f} s")
"""


@dataclass
class Stage:
    """One unit of GPU work: a command, its share of the time and what came of it."""
    name: str
    argv: List[str]
    budget_s: float
    needs: Optional[str] = None          # a file that must exist for the stage to run
    status: str = "not run"
    seconds: float = 0.0
    summary: str = ""
    log: List[str] = field(default_factory=list)


def stages(python: str, out: Path) -> List[Stage]:
    """The stages in order of value (the most important first, so a short lease still gets them)."""
    bench = lambda name: str(ROOT / "benchmarks" / name)
    return [
        Stage("env", [python, "-c", ENV_SNIPPET], 60),
        Stage("build", [python, "-c", BUILD_SNIPPET], 300),
        Stage("tests", [python, "-m", "pytest", "-q", "-m", "gpu", "-rs", "-p", "no:cacheprovider",
                        f"--junitxml={out / 'gpu-tests.xml'}"], 300),
        Stage("generate", [python, bench("generate_speed.py"), "--device", "cuda", "--batches", "1,4,8,16,32",
                           "--clips", "32"], 150),
        Stage("train", [python, bench("train_speed.py"), "--cfg", "audio1024", "--res", "1024"], 180),
        Stage("project", [python, bench("project_speed.py"), "--resolution", "1024", "--device", "cuda",
                          "--steps", "50"], 120, needs=bench("project_speed.py")),
        Stage("decoder", [python, bench("decoder_speed.py"), "--device", "cuda"], 120,
              needs=bench("decoder_speed.py")),
        Stage("ops", [python, bench("ops_speed.py"), "--resolution", "256", "--repeats", "20",
                      "--training", "1024,512,256"], 300),
    ]


def run_stage(stage: Stage, timeout_s: float, log_path: Path) -> None:
    """Run ``stage`` with ``timeout_s`` seconds, its output streamed to the terminal and ``log_path``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1")
    start = time.monotonic()
    with open(log_path, "a") as log:
        log.write(f"\n===== stage {stage.name}: {' '.join(stage.argv)[:300]} (timeout {timeout_s:.0f} s)\n")
        log.flush()
        proc = subprocess.Popen(stage.argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                bufsize=0, start_new_session=True)
        deadline = start + timeout_s
        timed_out = False
        pending = b""
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        try:
            while True:  # raw chunks, never a blocking readline: a hung stage cannot outlive its deadline
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                if not sel.select(timeout=min(left, 1.0)):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
                log.write(chunk.decode(errors="replace"))
                pending += chunk
                *lines, pending = pending.replace(b"\r", b"\n").split(b"\n")
                stage.log.extend(l.decode(errors="replace") for l in lines)
        finally:
            if timed_out or proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            proc.wait()
            sel.close()
        if pending:
            stage.log.append(pending.decode(errors="replace"))
        stage.seconds = time.monotonic() - start
        if timed_out:
            stage.status = f"cut at {timeout_s:.0f} s"
        else:
            stage.status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
        tail = [l for l in stage.log if l.strip()][-1:] or [""]
        stage.summary = tail[0][:160]
        log.write(f"===== stage {stage.name}: {stage.status} after {stage.seconds:.1f} s\n")


def gpu_name() -> str:
    """The GPU's name as torch sees it, or 'no GPU'."""
    try:
        import torch
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except Exception as err:  # a broken torch install is itself a finding
        return f"torch unusable ({type(err).__name__})"


@click.command()
@click.option("--limit", type=float, default=float(os.environ.get("GPU_SMOKE_LIMIT", 480)), show_default=True,
              help="Seconds for the whole run; stages are cut to what is left.")
@click.option("--out", type=click.Path(path_type=Path), default=os.environ.get("OUT") or "gpu-smoke-out",
              show_default=True, help="Folder for logs, JUnit XML and a copy of docs/benchmarks.md.")
@click.option("--only", default=None, help="Comma-separated stage names to run (default: all).")
@click.option("--python", "python", default=sys.executable, show_default=True, help="Interpreter for the stages.")
@click.option("--write/--no-write", default=True, show_default=True, help="Record the stage table in docs/benchmarks.md.")
def main(limit: float, out: Path, only: Optional[str], python: str, write: bool) -> None:
    """Run the GPU checks and benchmarks within LIMIT seconds and report each stage."""
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "gpu-smoke.log"
    chosen = stages(python, out)
    if only:
        names = {s.strip() for s in only.split(",") if s.strip()}
        unknown = names - {s.name for s in chosen}
        if unknown:
            raise click.BadParameter(f"unknown stage(s) {', '.join(sorted(unknown))}; "
                                     f"expected {', '.join(s.name for s in chosen)}", param_hint="--only")
        chosen = [s for s in chosen if s.name in names]
    reserve = 10.0  # seconds kept for the report and copies
    for stage in chosen:
        if stage.needs and not Path(stage.needs).exists():
            stage.status = "skipped (script not present)"
            continue
        left = limit - (time.monotonic() - t0) - reserve
        if left < 15:
            stage.status = "not run (time limit)"
            continue
        print(f"== {stage.name} (budget {min(stage.budget_s, left):.0f} s, {left:.0f} s left)", flush=True)
        run_stage(stage, min(stage.budget_s, left), log_path)
    total = time.monotonic() - t0
    from benchmarks.report import markdown_table, write_section
    table = markdown_table(["stage", "status", "seconds", "last line"],
                           [[s.name, s.status, f"{s.seconds:.1f}", s.summary.replace("|", "/")] for s in chosen])
    print(f"\nGPU smoke on {gpu_name()}: {total:.0f} s of {limit:.0f} s\n{table}")
    if write:
        write_section("gpu-smoke", "GPU smoke run (`make gpu-smoke`)",
                      f"`make gpu-smoke` on one {gpu_name()}: every stage, its status and wall time "
                      f"({total:.0f} s of a {limit:.0f} s limit). Numbers are in the sections each stage writes.\n\n"
                      + table)
    doc = ROOT / "docs" / "benchmarks.md"
    if doc.exists() and out.resolve() != doc.parent.resolve():
        shutil.copy(doc, out / "benchmarks.md")
    ran = [s for s in chosen if s.status not in ("not run", "skipped (script not present)", "not run (time limit)")]
    sys.exit(0 if ran and all(s.status == "ok" for s in ran) else 1)


if __name__ == "__main__":
    main()
