"""Dispatch between CUDA kernels and the reference path is decided in one place."""
import pytest
import torch

from stylegan2.ops import backend


@pytest.fixture(autouse=True)
def _reset_mode(monkeypatch):
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    backend.set_mode(None)
    yield
    backend.set_mode(None)


def test_cpu_tensors_always_use_the_reference_path():
    for mode in backend.MODES:
        backend.set_mode(mode)
        assert backend.kernels_for("bias_act", torch.zeros(2)) is None


def test_mode_comes_from_the_environment(monkeypatch):
    assert backend.get_mode() == "auto"
    monkeypatch.setenv(backend.ENV_VAR, "Reference")
    assert backend.get_mode() == "reference"
    backend.set_mode("cuda")
    assert backend.get_mode() == "cuda"


def test_bad_mode_is_a_clear_error(monkeypatch):
    with pytest.raises(ValueError, match="one of auto, reference, cuda"):
        backend.set_mode("fast")
    monkeypatch.setenv(backend.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="ELECTROGAN_OPS"):
        backend.get_mode()
