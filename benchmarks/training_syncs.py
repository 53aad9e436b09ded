"""Device->host reads of the training loop per steady-state iterations (issue 13.4), before and after.

A tiny ADA run (32x32, ``tiny`` preset, batch 4, ADA interval 4) is trained for a few iterations;
during 16 iterations between ticks every call of a Tensor method that copies a value to the host
(``item``, ``cpu``, ``tolist``, ``numpy``, ``float()``, ``int()``, ``bool()``) made from a line of
``stylegan2/`` is counted by call site. On a GPU each such read of a device tensor is a host sync.
Reads of tensors that live on the host by design (the style-mixing draws from a CPU generator,
the ADA controller's CPU-side sums, reads of a tensor already copied to the host) are listed apart.
On a CUDA machine the syncs are also counted with ``torch.cuda.set_sync_debug_mode('warn')``.

    python benchmarks/training_syncs.py                      # this checkout
    python benchmarks/training_syncs.py --before ../main     # and another checkout, same run

Prints a table and writes the "training-syncs" section of docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, WINDOW, INTERVAL, BATCH, RES = 4, 16, 4, 4, 32
READS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")
# (file, function) pairs whose reads are of host tensors by design in the current code
HOST_SIDE = {("loss.py", "style_mix"), ("ada.py", "step"), ("ada.py", "<genexpr>"), ("augment.py", "set_p")}


def measure(workdir: str) -> dict:
    """Run the tiny loop in this process (the stylegan2 on sys.path) and return the counts by site."""
    import collections
    import contextlib
    import io
    import zipfile

    import numpy as np
    import PIL.Image
    import torch

    torch.set_num_threads(1)
    from stylegan2 import stats
    from stylegan2 import training_loop as tl
    from stylegan2.presets import resolve_config

    device_is_cuda = torch.cuda.is_available()
    work = Path(workdir)
    data = work / "data.zip"
    rng = np.random.RandomState(0)
    with zipfile.ZipFile(data, "w") as z:
        for i in range(8):
            img = np.clip(np.linspace(60, 200, RES)[:, None] + rng.randn(RES, RES) * 30, 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            PIL.Image.fromarray(img, "L").save(buf, format="PNG")
            z.writestr(f"00000/img{i:08d}.png", buf.getvalue())
        z.writestr("dataset.json", json.dumps({"labels": None}))

    package = str(Path(tl.__file__).parent)
    sites = collections.Counter()
    state = {"on": False, "iteration": 0, "first": 0, "last": 0}
    for name in READS:
        original = getattr(torch.Tensor, name)

        def recording(self, *args, _original=original, _name=name, **kwargs):
            if state["on"]:
                frame = sys._getframe(1)
                if frame.f_code.co_filename.startswith(package):
                    sites[(Path(frame.f_code.co_filename).name, frame.f_code.co_name, _name,
                           "host" if self.device.type == "cpu" else "device")] += 1
            return _original(self, *args, **kwargs)
        setattr(torch.Tensor, name, recording)

    records = []
    update_ema = tl.update_ema

    def watched_update_ema(*args):
        update_ema(*args)
        state["iteration"] += 1
        on = START <= state["iteration"] < START + WINDOW
        if device_is_cuda and on != state["on"]:
            torch.cuda.synchronize()
            state["first" if on else "last"] = len(records)
            torch.cuda.set_sync_debug_mode("warn" if on else 0)
        state["on"] = on
    tl.update_ema = watched_update_ema

    class Overconfident(tl.StyleGAN2Loss):      # p rises every interval, so the augmentations run
        def accumulate_gradients(self, phase, *args, **kwargs):
            super().accumulate_gradients(phase, *args, **kwargs)
            if phase == "Dmain":
                stats.report("Loss/signs/real", torch.ones(64, device=args[0].device))
    tl.StyleGAN2Loss = Overconfident

    total = (START + WINDOW + 2) * BATCH
    opts = resolve_config("tiny", RES, 1, batch=BATCH, batch_gpu=BATCH, kimg=total / 1000, tick=total / 1000,
                          snap=1000, workers=0, grid_limit=8, aug="ada", ada_interval=INTERVAL, ada_kimg=0.1,
                          ops="reference")
    import warnings
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        records = caught
        tl.training_loop(0, run_dir=str(work / "run"), data=str(data), progress=False, **opts)
    cuda_syncs = None
    if device_is_cuda:
        cuda_syncs = sum("synchroniz" in str(w.message) for w in records[state["first"]:state["last"]])
    return dict(package=package, device="cuda" if device_is_cuda else "cpu", cuda_syncs=cuda_syncs,
                sites=[[*k, v] for k, v in sorted(sites.items())])


def run_tree(tree: Path) -> dict:
    """Measure the stylegan2 of checkout ``tree`` in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
        # This file is loaded by path, so the measured tree's stylegan2 comes first on sys.path.
        code = (f"import sys, json, importlib.util; sys.path.insert(0, {str(tree)!r}); "
                f"spec = importlib.util.spec_from_file_location('training_syncs', {str(Path(__file__).resolve())!r}); "
                f"mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); "
                f"print(json.dumps(mod.measure({tmp!r})))")
        proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"training_syncs: measuring {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(result: dict) -> dict:
    """Reads of device tensors (syncs on a GPU) vs host tensors, by site."""
    device, host = {}, {}
    for file, func, method, kind, count in result["sites"]:
        # On a CPU run every tensor is a host tensor: classify by the site instead.
        is_host = (file, func) in HOST_SIDE or method == "tolist" or \
            (result["device"] == "cuda" and kind == "host") or \
            (file == "stats.py" and func in ("num", "mean", "std")) or \
            (file == "ada.py" and method == "cpu")
        (host if is_host else device)[f"{file}:{func} {method}"] = count
    return dict(device=device, host=host)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another checkout to measure in the same run (e.g. ../main)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    def named(label, tree):
        commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        return (f"{label} ({commit})" if commit else label), tree
    trees = ([named("before", args.before.resolve())] if args.before else []) + [named("this checkout", ROOT)]
    rows, details = [], []
    for label, tree in trees:
        result = run_tree(tree)
        summary = summarise(result)
        rows.append([label, sum(summary["device"].values()), result["cuda_syncs"] if result["cuda_syncs"]
                     is not None else "-", WINDOW // INTERVAL])
        details.append(f"{label}: " + (", ".join(f"`{k}` x{v}" for k, v in summary["device"].items()) or "none"))
    sys.path.insert(0, str(ROOT))          # here only: measure() must see the measured tree's stylegan2
    from benchmarks.report import markdown_table, write_section
    header = ["code", f"device->host reads in {WINDOW} iterations", "CUDA syncs (sync debug mode)",
              "ADA intervals"]
    table = markdown_table(header, rows)
    print(table)
    print("\n".join(details))
    body = (f"Tiny ADA run (32x32, `tiny`, batch {BATCH}, ADA interval {INTERVAL}); the {WINDOW} iterations "
            f"between ticks are watched. A read counts when `stylegan2/` calls `item`, `cpu`, `float()`, ... "
            f"on a tensor that would live on the GPU (reads of host-side tensors are not counted).\n\n"
            f"{table}\n\nBy call site:\n\n" + "\n".join(f"- {d}" for d in details) + "\n")
    if not args.no_write:
        write_section("training-syncs", "Training-loop host syncs (`benchmarks/training_syncs.py`)", body)


if __name__ == "__main__":
    main()
