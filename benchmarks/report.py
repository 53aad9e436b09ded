"""Shared by the benchmark scripts: describe the machine and update one section of docs/benchmarks.md."""
from __future__ import annotations

import datetime
import os
import platform
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def machine_description() -> str:
    """One line naming CPU, core count, memory, GPU (if any) and library versions."""
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil
        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        mem = "? RAM"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {mem}, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def markdown_table(header: list, rows: list) -> str:
    """A GitHub-flavoured markdown table from a header and rows of values."""
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, title: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section ``name`` of docs/benchmarks.md with ``body`` and the machine line."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"<!-- begin {name} -->\n## {title}\n\nMeasured {stamp} on: {machine_description()}\n\n"
             f"{body.strip()}\n<!-- end {name} -->")
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nWritten by the scripts in `benchmarks/`.\n"
    replaced = replace_section(text, name, block)
    text = replaced if replaced is not None else text.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def section_pattern(name: str) -> "re.Pattern":
    """The marked section ``<!-- begin name --> ... <!-- end name -->``, markers included."""
    return re.compile(rf"<!-- begin {re.escape(name)} -->.*?<!-- end {re.escape(name)} -->", re.S)


def replace_section(text: str, name: str, block: str):
    """``text`` with its section ``name`` (markers included) replaced by ``block``; None when it has no such section."""
    pattern = section_pattern(name)
    return pattern.sub(lambda _: block, text) if pattern.search(text) else None
