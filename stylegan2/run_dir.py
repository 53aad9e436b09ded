"""The run folder of a training run: its numbered name and the log that copies the console into it."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path


def next_run_dir(outdir: str, name: str) -> Path:
    """``<outdir>/<NNNNN>-<name>`` with NNNNN one above the largest run number already there."""
    outdir = Path(outdir)
    ids = []
    if outdir.is_dir():
        for entry in outdir.iterdir():
            head = entry.name.split("-", 1)[0]
            if entry.is_dir() and head.isdigit():
                ids.append(int(head))
    return outdir / f"{max(ids, default=-1) + 1:05d}-{name}"



class Tee:
    """Copies everything written to a stream into a log file too (``log.txt``)."""

    def __init__(self, stream, file):
        self.stream, self.file = stream, file

    def write(self, text):
        self.stream.write(text)
        self.file.write(text)
        self.file.flush()

    def flush(self):
        self.stream.flush()
        self.file.flush()

    def isatty(self):
        return getattr(self.stream, "isatty", lambda: False)()

    def __getattr__(self, name):
        return getattr(self.stream, name)



@contextlib.contextmanager
def console_logged_to(run_dir: Path, enabled: bool = True):
    """Copy everything printed to stdout and stderr into ``run_dir/log.txt`` (appended) while inside.

    ``enabled=False`` (ranks other than 0) does nothing, so only one process writes the log. The
    streams are put back and the file closed on the way out, also after an error.
    """
    if not enabled:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = (sys.stdout, sys.stderr)
    with open(run_dir / "log.txt", "a", encoding="utf-8") as log_file:
        sys.stdout, sys.stderr = Tee(sys.stdout, log_file), Tee(sys.stderr, log_file)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved
