"""Progress bars that read well in a terminal and in a log file.

In a terminal a tqdm bar redraws itself up to ten times a second in place. Redirected to a file
(``python train.py ... > train.log 2>&1``, any cluster job) every redraw is appended instead: a
tick of several minutes at 1024 would add thousands of carriage-return lines, gigabytes over a
long run. There the bars redraw once every :data:`LOG_INTERVAL` seconds, which still shows that a
long tick is alive (a silent first tick looks hung: StyleGAN3 issue #70) without flooding the log.
"""
from __future__ import annotations

import sys
from typing import Any, Optional, TextIO

LOG_INTERVAL = 60.0  # seconds between redraws when the stream is not a terminal


def is_terminal(stream: Optional[TextIO]) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes and closed streams)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def progress_bar(iterable: Any = None, *, file: Optional[TextIO] = None, **kwargs: Any):
    """A ``tqdm`` bar on ``file`` (default: standard error) that redraws at most every
    :data:`LOG_INTERVAL` seconds unless ``file`` is a terminal; other keyword arguments go to tqdm
    (an explicit ``mininterval`` or ``maxinterval`` wins)."""
    from tqdm import tqdm

    file = sys.stderr if file is None else file
    if not is_terminal(file):
        kwargs.setdefault("mininterval", LOG_INTERVAL)
        # tqdm's monitor thread forces a redraw after maxinterval (10 s) without one; not more often here
        kwargs.setdefault("maxinterval", max(LOG_INTERVAL, kwargs["mininterval"]))
    return tqdm(iterable, file=file, **kwargs)
