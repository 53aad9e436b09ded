"""Whether an output path can be written, checked before the work that produces its contents.

A projection or a decoder training runs for minutes to hours; an ``--outdir`` that is a file or
an ``--out`` under a read-only folder should fail at once, not after the work. Nothing is
created here: the writer creates the folders when it writes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union


def check_writable(path: Union[str, Path], flag: str, folder: bool) -> Path:
    """``path`` as a Path, or ValueError (one line naming ``flag``) when it cannot be written.

    ``folder``: ``path`` is a folder to write into (``--outdir``), else a file to write (``--out``).
    Refused: a folder given for a file or a file for a folder, a path under a file, and a path whose
    nearest existing folder is not writable.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a folder")
    if not folder and path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder, not a file")
    problem = creation_problem(path if folder else path.parent)
    if problem:
        raise ValueError(f"{flag} {path}: {problem}")
    return path


def creation_problem(folder: Path) -> Optional[str]:
    """None when ``folder`` exists or could be created and written into, else why not in a few words.

    Walks up to the nearest existing parent: it must be a folder ("cannot be created (X is a file)")
    that this process may write into ("is not writable (X)").
    """
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"cannot be created ({probe} is a file)"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"is not writable ({probe})"
    return None
