"""stylegan2.cli_errors: known errors become one `Error: ...` line with exit status 1; bugs keep their traceback."""
import errno
import os

import click
import pytest
from click.testing import CliRunner

from stylegan2.cli_errors import describe_os_error, one_line_errors


class Known(Exception):
    pass


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.cuda.OutOfMemoryError (matched by name, as torch's own class)."""


def command(exc):
    @click.command()
    @one_line_errors(Known)
    def cmd():
        raise exc
    return cmd


@pytest.mark.parametrize("exc, line", [
    (Known("snap.pkl: damaged\nsecond line"), "Error: snap.pkl: damaged"),
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/seed0001.wav"), "Error: out/seed0001.wav: No space left on device"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "run/metric-fid1k.jsonl"),
     "Error: run/metric-fid1k.jsonl: Permission denied"),
    (MemoryError(), "Error: out of memory (try a smaller --batch)"),
    (OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "Error: out of GPU memory (try a smaller --batch or --device cpu)"),
])
def test_known_errors_are_one_line_with_exit_status_1(exc, line):
    result = CliRunner().invoke(command(exc), [])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [line]


def test_bugs_keep_their_traceback():
    result = CliRunner().invoke(command(KeyError("bug")), [])
    assert isinstance(result.exception, KeyError)
    result = CliRunner().invoke(command(RuntimeError("another bug")), [])
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "another bug"


def test_usage_errors_stay_click_usage_errors():
    result = CliRunner().invoke(command(click.BadParameter("bad", param_hint="--seeds")), [])
    assert result.exit_code == 2 and "Invalid value for --seeds: bad" in result.output


def test_os_errors_with_two_files_name_both():
    e = OSError(errno.EXDEV, os.strerror(errno.EXDEV), "a.wav", None, "b.wav")
    assert describe_os_error(e) == "a.wav -> b.wav: Invalid cross-device link"
