"""Suite-wide settings: one math thread per process.

The tests use tiny tensors, where thread start-up costs more than it saves, and several tests start
subprocesses (CLIs, two-rank gloo runs) that would otherwise oversubscribe a 2-core machine.
"""
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402  (after the environment is set)

torch.set_num_threads(1)


import contextlib  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture()
def full_disk():
    """A folder on a real, full file system: a 256 kB tmpfs filled by the file ``filler``.

    Mounting needs root (or CAP_SYS_ADMIN); elsewhere the test is skipped with the reason, and the
    monkeypatched ENOSPC tests cover the same code paths.
    """
    mount = Path(tempfile.mkdtemp(prefix="full-disk-"))
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        done = None
        why = str(e)
    if done is None or done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({why if done is None else done.stderr.strip()})")
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        with contextlib.suppress(OSError):
            while os.write(fd, bytes(4096)):
                pass
        os.close(fd)
        yield mount
    finally:
        # lazy: a file a failed test still holds open must not keep the mount (or fail the teardown)
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=20)
        with contextlib.suppress(OSError):
            mount.rmdir()
