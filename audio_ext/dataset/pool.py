"""Work over many files in parallel: an ordered process pool and its progress bar.

Results come back in task order whatever the worker count, and one worker runs in-process with the
same thread count as a pool worker, so what a build writes does not depend on ``--workers``.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import sys
from typing import Callable, Iterable, Optional, Sequence

import torch

from audio_ext.core.synth import techno_loop
from audio_ext.dataset.cut import slice_segment
from stylegan2.progress import progress_bar


def _init_worker() -> None:
    """Pool workers use one thread each: the parallelism is across files."""
    with contextlib.suppress(Exception):
        torch.set_num_threads(1)


_WARM = False


def _warm_up() -> None:
    """Run the slicing chain once on a short loop so that forked workers inherit librosa's loaded
    numba functions instead of each loading them again (about 10 s per process)."""
    global _WARM
    if _WARM:
        return
    _WARM = True
    with contextlib.suppress(Exception):
        slice_segment(techno_loop(128.0, 3.0, parts=("kick", "hat")), 44100, 256)


def _pool(workers: int):
    fork = "fork" in multiprocessing.get_all_start_methods()
    if fork:
        _warm_up()
    ctx = multiprocessing.get_context("fork" if fork else "spawn")
    return ctx.Pool(workers, initializer=_init_worker)


def ordered_map(fn: Callable, tasks: Sequence, workers: int) -> Iterable:
    """``map(fn, tasks)`` in task order, in-process for one worker, else across a process pool."""
    if workers <= 1 or len(tasks) <= 1:
        # Same thread count as a pool worker, so that results cannot depend on --workers.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for t in tasks:
                yield fn(t)
        finally:
            torch.set_num_threads(threads)
        return
    pool = _pool(min(workers, len(tasks)))
    try:
        yield from pool.imap(fn, tasks, chunksize=1)
    finally:
        pool.terminate()
        pool.join()


class Progress:
    """tqdm over source bytes (a fair proxy for audio duration, cheap to know up front), or nothing."""

    def __init__(self, enabled: bool, total: int, desc: str, unit: str = "B") -> None:
        self.bar = None
        if enabled:
            self.bar = progress_bar(total=total, unit=unit, unit_scale=unit == "B", desc=desc, file=sys.stderr,
                                    dynamic_ncols=True)

    def update(self, n: int, clips: Optional[int] = None) -> None:
        if self.bar is not None:
            self.bar.update(n)
            if clips is not None:
                self.bar.set_postfix(clips=clips, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
