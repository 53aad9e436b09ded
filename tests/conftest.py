"""Suite-wide settings: one math thread per process.

The tests use tiny tensors, where thread start-up costs more than it saves, and several tests start
subprocesses (CLIs, two-rank gloo runs) that would otherwise oversubscribe a 2-core machine.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402  (after the environment is set)

torch.set_num_threads(1)
