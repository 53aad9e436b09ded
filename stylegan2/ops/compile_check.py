"""Compile our CUDA extensions for an explicit architecture list, without needing a GPU.

    python -m stylegan2.ops.compile_check                # TORCH_CUDA_ARCH_LIST or "8.0;9.0"
    python -m stylegan2.ops.compile_check --arch "7.5;8.6" --ops bias_act --keep build/kernels

Runs with a CUDA build of torch and the CUDA toolkit (nvcc); catches syntax, template and binding
errors on a machine without a device (CI). Every op is compiled into a fresh temporary folder (or
``--keep DIR``), imported, and checked for its exported functions. Prints one line per op and exits
with status 1 naming the first failure. Uses only the standard library besides torch, so it runs in
a minimal venv (``torch``, ``ninja``, ``packaging``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

DEFAULT_ARCH = "8.0;9.0"


def compile_ops(ops: List[str], arch_list: str, root: Path, verbose: bool = False) -> List[tuple]:
    """Build each op in ``ops`` for ``arch_list`` under ``root``; returns ``(op, seconds, library size)`` rows.

    Raises :class:`stylegan2.ops.backend.KernelUnavailable` for the first op that cannot be built.
    """
    from . import plugin
    rows = []
    for op in ops:
        start = time.monotonic()
        plugin.build(op, arch_list, root=root, verbose=verbose)
        library = plugin.library_path(op, arch_list, root)
        size = library.stat().st_size if library is not None else 0
        rows.append((op, time.monotonic() - start, size))
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stylegan2.ops.compile_check",
                                     description="Compile the CUDA kernels without a GPU.")
    parser.add_argument("--arch", default=os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCH,
                        help="architectures, e.g. '8.0;9.0' (default: $TORCH_CUDA_ARCH_LIST or %(default)s)")
    parser.add_argument("--ops", default="all", help="comma-separated ops, or 'all'")
    parser.add_argument("--keep", type=Path, default=None,
                        help="build into this cache folder (reused next time) instead of a temporary one")
    parser.add_argument("--verbose", action="store_true", help="show the compiler command lines")
    args = parser.parse_args(argv)

    import torch

    from . import plugin
    from .backend import KernelUnavailable

    ops = list(plugin.OPS) if args.ops == "all" else [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in ops if o not in plugin.OPS]
    if unknown:
        print(f"compile_check: unknown op {unknown[0]!r}; expected one of {', '.join(plugin.OPS)}", file=sys.stderr)
        return 2
    try:
        arch = plugin.normalize_arch_list(args.arch)
    except ValueError as err:
        print(f"compile_check: {err}", file=sys.stderr)
        return 2
    print(f"compile_check: torch {torch.__version__} (CUDA {torch.version.cuda}), arch {arch}")
    with tempfile.TemporaryDirectory(prefix="electrogan-compile-check-") as tmp:
        root = args.keep if args.keep is not None else Path(tmp)
        try:
            rows = compile_ops(ops, arch, root, verbose=args.verbose)
        except KernelUnavailable as err:
            for log in sorted(root.glob("*.failed.log")):  # the temporary folder goes away: show it now
                print(log.read_text(errors="replace"), file=sys.stderr)
            print(f"compile_check: FAILED: {err}", file=sys.stderr)
            return 1
    for op, seconds, size in rows:
        print(f"compile_check: {op}: ok ({seconds:.0f} s, {size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
