"""One line, not a traceback: how the command-line scripts report a user's error.

The scripts' convention (click's): a problem with the input or the environment prints
``Error: <what, naming the file or flag>`` on stderr and exits with status 1; a malformed flag
is a usage error (status 2, click's own message). :func:`one_line_errors` wraps a command's
body so that the error classes it names, and the operating system's errors (a full disk, a
read-only folder, a missing permission), become that one line. Anything else is a bug and keeps
its traceback.
"""
from __future__ import annotations

import errno
import functools
from typing import Callable, Type

import click


def describe_os_error(e: OSError) -> str:
    """``'<file>: <reason>'`` for an OSError, e.g. ``'out/seed0001.wav: No space left on device'``."""
    reason = e.strerror or (errno.errorcode.get(e.errno, "") if e.errno else "") or str(e) or type(e).__name__
    if e.filename is not None:
        target = f"{e.filename} -> {e.filename2}" if getattr(e, "filename2", None) else str(e.filename)
        return f"{target}: {reason}"
    return reason


def one_line_errors(*errors: Type[BaseException]) -> Callable:
    """Decorator: ``errors`` (and OSError, MemoryError, CUDA out-of-memory) raised by the command become
    ``Error: ...`` (exit 1)."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except click.ClickException:
                raise
            except errors as e:
                message = str(e) or type(e).__name__
                raise click.ClickException(message.splitlines()[0] if message.strip() else message) from None
            except OSError as e:
                raise click.ClickException(describe_os_error(e)) from None
            except MemoryError:
                raise click.ClickException("out of memory (try a smaller --batch)") from None
            except RuntimeError as e:
                if type(e).__name__ != "OutOfMemoryError":      # torch.cuda.OutOfMemoryError
                    raise
                raise click.ClickException("out of GPU memory (try a smaller --batch or --device cpu)") from None
        return run
    return wrap
