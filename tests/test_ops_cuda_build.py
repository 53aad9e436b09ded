"""The CUDA kernel sources compile and bind, checked without a GPU.

Runs ``python -m stylegan2.ops.compile_check`` in an interpreter that has a CUDA build of torch
($ELECTROGAN_CUDA_PYTHON, else ``.venv-cuda/bin/python`` made by ``make cuda-compile-check``); nvcc
must be installed. A syntax, template or pybind11 binding error fails this test on any machine
with the toolkit. Compiling takes minutes on a small CPU, hence ``slow``.
"""
import os
import subprocess
from pathlib import Path

import pytest

from stylegan2.ops import compile_check

ROOT = Path(__file__).resolve().parent.parent


def _cuda_python():
    explicit = os.environ.get("ELECTROGAN_CUDA_PYTHON")
    candidate = Path(explicit) if explicit else ROOT / ".venv-cuda" / "bin" / "python"
    if not candidate.exists():
        return None, (f"no CUDA build of torch: set ELECTROGAN_CUDA_PYTHON or run `make cuda-compile-check` "
                      f"(looked for {candidate})")
    probe = subprocess.run([str(candidate), "-c", "import torch, sys; sys.exit(torch.version.cuda is None)"],
                           capture_output=True)
    if probe.returncode != 0:
        return None, f"{candidate} has no CUDA build of torch"
    return candidate, ""


@pytest.mark.slow
def test_both_extensions_compile_for_the_target_architectures(tmp_path):
    """$ELECTROGAN_CUDA_ARCH picks the architectures (CI compiles one to save minutes)."""
    python, reason = _cuda_python()
    if python is None:
        pytest.skip(reason)
    env = dict(os.environ, PYTHONPATH=str(ROOT), ELECTROGAN_CACHE=str(tmp_path / "cache"))
    res = subprocess.run([str(python), "-m", "stylegan2.ops.compile_check", "--arch", os.environ.get("ELECTROGAN_CUDA_ARCH", "8.0;9.0")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if res.returncode != 0 and "nvcc (the CUDA toolkit compiler) was not found" in res.stderr:
        pytest.skip("nvcc is not installed")
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    assert "bias_act: ok" in res.stdout
    assert "upfirdn2d: ok" in res.stdout


def test_compile_check_rejects_an_unknown_op_with_a_clear_message(capsys):
    assert compile_check.main(["--ops", "conv9d"]) == 2
    assert "unknown op 'conv9d'; expected one of bias_act, upfirdn2d" in capsys.readouterr().err


def test_compile_check_rejects_a_malformed_architecture(capsys):
    assert compile_check.main(["--arch", "sm_90"]) == 2
    assert "bad CUDA architecture 'sm_90'" in capsys.readouterr().err


def test_compile_check_on_a_cpu_only_torch_says_why_it_cannot_build(capsys):
    """The CPU venv cannot compile; the check must say so in one line rather than crash."""
    import torch
    if torch.version.cuda is not None:
        pytest.skip("this interpreter has a CUDA build of torch")
    assert compile_check.main(["--ops", "bias_act"]) == 1
    err = capsys.readouterr().err
    assert "FAILED: CUDA kernels for bias_act unavailable: torch" in err
    assert "CPU-only build" in err
