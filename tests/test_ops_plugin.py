"""Building and loading the CUDA kernels: cache key, diagnosis of missing tools, warnings, modes.

No GPU is needed: a CUDA tensor is simulated with a stand-in object, and the toolchain with
monkeypatched lookups, so each failure path can be provoked on any machine.
"""
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from stylegan2.ops import backend, plugin


class FakeCudaTensor:
    """Just enough of a CUDA tensor for ``kernels_for``: a device and a dtype."""

    def __init__(self, dtype=torch.float32):
        self.device = torch.device("cuda", 0)
        self.dtype = dtype


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch):
    monkeypatch.delenv(backend.ENV_VAR, raising=False)
    backend.set_mode(None)
    backend._warned.clear()
    plugin.reset()
    yield
    backend.set_mode(None)
    backend._warned.clear()
    plugin.reset()


def _copy_sources(tmp_path: Path) -> Path:
    folder = tmp_path / "cuda"
    shutil.copytree(plugin.CUDA_DIR, folder)
    return folder


# ---------------------------------------------------------------------------------------------
# cache key


def test_cache_key_changes_when_a_source_or_shared_header_changes(tmp_path):
    folder = _copy_sources(tmp_path)
    before = {op: plugin.cache_key(op, "8.0", cuda_dir=folder) for op in plugin.OPS}
    (folder / "bias_act.cu").write_text((folder / "bias_act.cu").read_text() + "\n// edited\n")
    after = {op: plugin.cache_key(op, "8.0", cuda_dir=folder) for op in plugin.OPS}
    assert after["bias_act"] != before["bias_act"]
    assert after["upfirdn2d"] == before["upfirdn2d"]  # its sources did not change
    (folder / "common.h").write_text((folder / "common.h").read_text() + "\n// edited\n")
    assert plugin.cache_key("upfirdn2d", "8.0", cuda_dir=folder) != before["upfirdn2d"]


def test_cache_key_depends_on_versions_and_architectures_not_on_their_spelling():
    key = plugin.cache_key("bias_act", "8.0;9.0", torch_version="2.14.1", cuda_version="13.0")
    assert key.startswith("bias_act-")
    assert key == plugin.cache_key("bias_act", "9.0 8.0", torch_version="2.14.1", cuda_version="13.0")
    assert key != plugin.cache_key("bias_act", "8.0", torch_version="2.14.1", cuda_version="13.0")
    assert key != plugin.cache_key("bias_act", "8.0;9.0", torch_version="2.15.0", cuda_version="13.0")
    assert key != plugin.cache_key("bias_act", "8.0;9.0", torch_version="2.14.1", cuda_version="12.8")


def test_bad_architecture_list_is_rejected():
    with pytest.raises(ValueError, match="bad CUDA architecture 'sm_80'"):
        plugin.normalize_arch_list("sm_80")
    assert plugin.normalize_arch_list("9.0+PTX, 8.6 7.5") == "7.5;8.6;9.0+PTX"


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(plugin.CACHE_ENV, str(tmp_path / "c"))
    assert plugin.cache_root() == tmp_path / "c" / "kernels"
    monkeypatch.delenv(plugin.CACHE_ENV)
    assert plugin.cache_root() == Path.home() / ".cache" / "electrogan" / "kernels"


# ---------------------------------------------------------------------------------------------
# diagnosis


def _fake_toolkit(tmp_path: Path, release: str = "13.0", archs=(75, 80, 90)) -> Path:
    """A folder that looks like a CUDA toolkit, with an nvcc script answering version queries."""
    root = tmp_path / "cuda-fake"
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("")
    nvcc = root / "bin" / "nvcc"
    arch_lines = "\\n".join(f"compute_{a}" for a in archs)
    nvcc.write_text("#!/bin/sh\n"
                    f'case "$1" in --version) echo "Cuda compilation tools, release {release}, V{release}.1";;\n'
                    f'  --list-gpu-arch) printf "{arch_lines}\\n";; esac\n')
    nvcc.chmod(0o755)
    return root


@pytest.fixture
def cuda_torch(monkeypatch):
    """Pretend torch is a CUDA 13.0 build."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.version, "hip", None, raising=False)


def _only_these_tools(monkeypatch, found: dict):
    """shutil.which that knows only ``found`` (name -> path)."""
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: found.get(name))


def test_cpu_only_torch_is_diagnosed(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(backend.KernelUnavailable, match=r"CPU-only build; fix: install a CUDA build of torch"):
        plugin.diagnose("bias_act", "8.0")


def test_missing_nvcc_is_diagnosed(monkeypatch, cuda_torch, tmp_path):
    for var in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    _only_these_tools(monkeypatch, {"ninja": "/usr/bin/ninja", "c++": "/usr/bin/c++"})
    monkeypatch.setattr(plugin, "_is_toolkit_root", lambda path: False)
    with pytest.raises(backend.KernelUnavailable) as info:
        plugin.diagnose("upfirdn2d", "8.0")
    message = str(info.value)
    assert "CUDA kernels for upfirdn2d unavailable: nvcc" in message
    assert "fix: install the CUDA 13.x toolkit and set CUDA_HOME" in message
    assert "\n" not in message


def test_nvcc_of_another_major_version_is_diagnosed(monkeypatch, cuda_torch, tmp_path):
    monkeypatch.setenv("CUDA_HOME", str(_fake_toolkit(tmp_path, release="12.4")))
    with pytest.raises(backend.KernelUnavailable, match=r"nvcc 12.4 .* does not match the CUDA 13.0"):
        plugin.diagnose("bias_act", "8.0")


def test_missing_ninja_is_diagnosed(monkeypatch, cuda_torch, tmp_path):
    monkeypatch.setenv("CUDA_HOME", str(_fake_toolkit(tmp_path)))
    _only_these_tools(monkeypatch, {"c++": "/usr/bin/c++"})
    monkeypatch.setattr(plugin.sys, "executable", str(tmp_path / "no-venv" / "python"))
    with pytest.raises(backend.KernelUnavailable, match=r"ninja .* was not found; fix: pip install ninja$"):
        plugin.diagnose("bias_act", "8.0")


def test_ninja_beside_the_interpreter_is_found_without_path(monkeypatch, tmp_path):
    _only_these_tools(monkeypatch, {})
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "ninja").write_text("")
    monkeypatch.setattr(plugin.sys, "executable", str(venv_bin / "python"))
    assert plugin.find_ninja() == venv_bin / "ninja"


def test_missing_compiler_is_diagnosed(monkeypatch, cuda_torch, tmp_path):
    monkeypatch.setenv("CUDA_HOME", str(_fake_toolkit(tmp_path)))
    monkeypatch.delenv("CXX", raising=False)
    _only_these_tools(monkeypatch, {"ninja": "/usr/bin/ninja"})
    with pytest.raises(backend.KernelUnavailable, match=r"no C\+\+ compiler \('c\+\+'\) was found; fix: install g\+\+"):
        plugin.diagnose("bias_act", "8.0")


def test_unsupported_architectures_are_diagnosed(monkeypatch, cuda_torch, tmp_path):
    monkeypatch.setenv("CUDA_HOME", str(_fake_toolkit(tmp_path, archs=(75, 80, 90))))
    _only_these_tools(monkeypatch, {"ninja": "/usr/bin/ninja", "c++": "/usr/bin/c++"})
    with pytest.raises(backend.KernelUnavailable, match=r"sm_61 is older than nvcc 13.0 supports \(sm_75 and newer\)"):
        plugin.diagnose("bias_act", "6.1")
    with pytest.raises(backend.KernelUnavailable, match=r"sm_120 is newer than nvcc 13.0 knows"):
        plugin.diagnose("bias_act", "12.0")
    tools = plugin.diagnose("bias_act", "8.0;9.0+PTX")
    assert tools.nvcc_archs == [75, 80, 90]
    assert str(tools.nvcc_version) == "13.0"


def test_a_gpu_newer_than_nvcc_gets_ptx_of_the_newest_known_arch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (12, 0))
    assert plugin.arch_for_device(0, [75, 80, 90]) == "9.0+PTX"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert plugin.arch_for_device(0, [75, 80, 90]) == "8.6"


def test_wrapper_script_named_nvcc_is_followed_to_the_real_toolkit(monkeypatch, tmp_path):
    toolkit = _fake_toolkit(tmp_path)
    wrapper_dir = tmp_path / "wrapper" / "bin"
    wrapper_dir.mkdir(parents=True)
    wrapper = wrapper_dir / "nvcc"
    wrapper.write_text(f"#!/bin/sh\necho '#$ _HERE_={toolkit / 'bin'}'\n")
    wrapper.chmod(0o755)
    for var in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    _only_these_tools(monkeypatch, {"nvcc": str(wrapper)})
    assert plugin.find_cuda_home() == toolkit


def test_compiler_errors_become_one_line_with_the_first_error_and_the_log(tmp_path):
    log = tmp_path / "x.failed.log"
    err = RuntimeError("Error building extension 'electrogan_bias_act': [1/3] nvcc -c bias_act.cu\n"
                       "bias_act.cu(12): error: identifier \"foo\" is undefined\n"
                       "1 error detected\n")
    message = str(plugin._explain_build_error("bias_act", err, log))
    assert message == (f"CUDA kernels for bias_act unavailable: compilation failed (bias_act.cu(12): error: "
                       f"identifier \"foo\" is undefined); fix: read the full log in {log}")


# ---------------------------------------------------------------------------------------------
# dispatch: warnings and modes


def _unavailable(monkeypatch, calls=None):
    def fake_load(name, device=None):
        if calls is not None:
            calls.append(name)
        raise backend.KernelUnavailable(f"CUDA kernels for {name} unavailable: ninja was not found; "
                                        f"fix: pip install ninja")
    monkeypatch.setattr(plugin, "load", fake_load)


def test_auto_mode_warns_once_per_op_and_falls_back(monkeypatch):
    _unavailable(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert backend.kernels_for("bias_act", FakeCudaTensor()) is None
        assert backend.kernels_for("upfirdn2d", FakeCudaTensor()) is None
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 2
    assert "bias_act unavailable: ninja was not found; fix: pip install ninja" in messages[0]
    assert "reference path" in messages[0] and "ELECTROGAN_OPS=reference" in messages[0]


def test_reference_mode_never_loads_and_never_warns(monkeypatch):
    calls = []
    _unavailable(monkeypatch, calls)
    monkeypatch.setenv(backend.ENV_VAR, "reference")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend.kernels_for("bias_act", FakeCudaTensor()) is None
    assert calls == []


def test_cuda_mode_raises_the_diagnosis(monkeypatch):
    _unavailable(monkeypatch)
    backend.set_mode("cuda")
    with pytest.raises(backend.KernelUnavailable, match="ninja was not found"):
        backend.kernels_for("upfirdn2d", FakeCudaTensor())


def test_dtypes_without_kernels_take_the_reference_path_silently(monkeypatch):
    calls = []
    _unavailable(monkeypatch, calls)
    backend.set_mode("cuda")
    assert backend.kernels_for("bias_act", FakeCudaTensor(torch.bfloat16)) is None
    assert calls == []


def test_a_loaded_module_is_returned_for_cuda_tensors(monkeypatch):
    sentinel = object()
    monkeypatch.setattr(plugin, "load", lambda name, device=None: sentinel)
    assert backend.kernels_for("bias_act", FakeCudaTensor()) is sentinel


def test_load_remembers_a_failure_instead_of_diagnosing_again(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    attempts = []

    def failing_build(name, arch_list, root=None, verbose=False):
        attempts.append(arch_list)
        raise backend.KernelUnavailable("CUDA kernels for bias_act unavailable: x; fix: y")

    monkeypatch.setattr(plugin, "build", failing_build)
    for _ in range(3):
        with pytest.raises(backend.KernelUnavailable):
            plugin.load("bias_act", torch.device("cuda", 0))
    assert attempts == ["9.0"]


# ---------------------------------------------------------------------------------------------
# cache hits and publishing


def test_a_published_build_is_loaded_without_the_toolchain(monkeypatch, tmp_path):
    """A finished cache folder is imported directly: no diagnosis, no compiler, no lock wait."""
    key = plugin.cache_key("bias_act", "9.0")
    folder = tmp_path / key
    folder.mkdir()
    (folder / "electrogan_bias_act.so").write_text("")
    fake_module = type("M", (), {"bias_act": staticmethod(lambda *a: None)})
    monkeypatch.setattr(plugin, "_import_library", lambda name, path: fake_module)
    monkeypatch.setattr(plugin, "diagnose", lambda *a: pytest.fail("diagnosed although cached"))
    assert plugin.build("bias_act", "9.0", root=tmp_path) is fake_module


def test_a_cached_module_missing_its_functions_is_reported(monkeypatch, tmp_path):
    key = plugin.cache_key("upfirdn2d", "9.0")
    (tmp_path / key).mkdir()
    (tmp_path / key / "electrogan_upfirdn2d.so").write_text("")
    monkeypatch.setattr(plugin, "_import_library", lambda name, path: object())
    with pytest.raises(backend.KernelUnavailable, match="the built extension lacks upfirdn2d"):
        plugin.build("upfirdn2d", "9.0", root=tmp_path)


def test_build_publishes_atomically_and_cleans_up_on_failure(monkeypatch, tmp_path):
    """A failing compile leaves no half-built cache folder, only the log it names."""
    from torch.utils import cpp_extension

    monkeypatch.setattr(plugin, "diagnose", lambda name, arch: plugin.Toolchain(
        tmp_path, tmp_path / "nvcc", plugin.Version("13.0"), Path("/usr/bin/ninja"), "c++", [90]))

    def broken_load(**kwargs):
        assert Path(kwargs["build_directory"]).name.startswith(".bias_act-")
        raise RuntimeError("Error building extension 'x':\nfoo.cu(1): error: boom\n")

    monkeypatch.setattr(cpp_extension, "load", broken_load)
    with pytest.raises(backend.KernelUnavailable, match=r"compilation failed \(foo.cu\(1\): error: boom\)"):
        plugin.build("bias_act", "9.0", root=tmp_path)
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    key = plugin.cache_key("bias_act", "9.0")
    assert leftovers == [f"{key}.failed.log", f"{key}.lock"]
    assert "error: boom" in (tmp_path / f"{key}.failed.log").read_text()


def test_successful_build_is_published_under_its_key(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    monkeypatch.setattr(plugin, "diagnose", lambda name, arch: plugin.Toolchain(
        tmp_path, tmp_path / "nvcc", plugin.Version("13.0"), Path("/usr/bin/ninja"), "c++", [90]))
    fake_module = type("M", (), {"upfirdn2d": staticmethod(lambda *a: None)})

    def fake_load(**kwargs):
        staging = Path(kwargs["build_directory"])
        assert {Path(s).name for s in kwargs["sources"]} == {"upfirdn2d.cpp", "upfirdn2d.cu"}
        assert all(Path(s).parent == staging for s in kwargs["sources"])
        (staging / "electrogan_upfirdn2d.so").write_bytes(b"\x7fELF")
        return fake_module

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    assert plugin.build("upfirdn2d", "9.0", root=tmp_path) is fake_module
    final = tmp_path / plugin.cache_key("upfirdn2d", "9.0")
    assert (final / "electrogan_upfirdn2d.so").read_bytes() == b"\x7fELF"
    assert (final / "build.json").exists() and (final / "upfirdn2d.cu").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _rank_builds(root: str, log: str, start_at: float) -> str:
    """One 'rank': wait for the common start time, then build bias_act with a fake compiler that
    records each compilation in ``log`` and takes a moment."""
    import os
    import time

    from torch.utils import cpp_extension

    def slow_compiler(**kwargs):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        (Path(kwargs["build_directory"]) / "electrogan_bias_act.so").write_bytes(b"built")
        return type("M", (), {"bias_act": staticmethod(lambda *a: None), "__file__": "x"})

    cpp_extension.load = slow_compiler
    plugin.diagnose = lambda name, arch: plugin.Toolchain(
        Path(root), Path(root) / "nvcc", plugin.Version("13.0"), Path("/usr/bin/ninja"), "c++", [90])
    plugin._import_library = lambda name, path: type("Cached", (), {"bias_act": None, "__file__": str(path)})
    while time.time() < start_at:
        time.sleep(0.01)
    module = plugin.build("bias_act", "9.0", root=Path(root))
    return getattr(module, "__file__", "")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork() to start ranks cheaply")
def test_ranks_starting_together_compile_once_and_all_load_the_result(tmp_path):
    import multiprocessing
    import time

    log = tmp_path / "compilations.txt"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        start_at = time.time() + 0.5
        results = pool.starmap(_rank_builds, [(str(tmp_path), str(log), start_at)] * 3)
    assert len(log.read_text().split()) == 1  # one rank compiled, the others waited
    final = tmp_path / plugin.cache_key("bias_act", "9.0")
    assert (final / "electrogan_bias_act.so").read_bytes() == b"built"
    assert sum(r == str(final / "electrogan_bias_act.so") for r in results) == 2  # loaded from the cache


def test_an_unreadable_arch_override_is_diagnosed(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "Hopper")
    with pytest.raises(backend.KernelUnavailable, match=r"TORCH_CUDA_ARCH_LIST='Hopper' is not understood"):
        plugin.load("bias_act", torch.device("cuda", 0))


def test_arch_list_coverage_follows_cuda_binary_compatibility():
    assert plugin.arch_list_covers("8.0", (8, 6))          # same major, older minor: runs
    assert not plugin.arch_list_covers("8.6", (8, 0))      # newer minor: does not
    assert not plugin.arch_list_covers("8.0;8.6", (9, 0))  # other major: does not
    assert plugin.arch_list_covers("8.0+PTX", (9, 0))      # PTX is compiled by the driver
    assert plugin.arch_list_covers("9.0a", (9, 0)) and not plugin.arch_list_covers("9.0a", (10, 0))


def test_an_arch_override_without_this_gpu_is_diagnosed(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "7.5;8.0")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    with pytest.raises(backend.KernelUnavailable, match=r"has no code for this GPU \(sm_90\); fix: add 9.0"):
        plugin.load("bias_act", torch.device("cuda", 0))


def test_rocm_torch_and_old_host_compilers_get_their_own_advice(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.version, "hip", "6.2", raising=False)
    with pytest.raises(backend.KernelUnavailable, match="ROCm build .* fix: use ELECTROGAN_OPS=reference"):
        plugin.diagnose("bias_act", "8.0")
    err = RuntimeError("Error building extension 'x':\n"
                       "crt/host_config.h:143:2: error: #error -- unsupported GNU version! gcc versions later "
                       "than 14 are not supported!\n")
    message = str(plugin._explain_build_error("bias_act", err, tmp_path / "log"))
    assert "unsupported GNU version" in message and "-ccbin" in message


def test_library_path_names_the_published_build_only(tmp_path):
    assert plugin.library_path("bias_act", "9.0", tmp_path) is None
    folder = tmp_path / plugin.cache_key("bias_act", "9.0")
    folder.mkdir()
    (folder / "electrogan_bias_act.so").write_bytes(b"")
    assert plugin.library_path("bias_act", "9.0", tmp_path) == folder / "electrogan_bias_act.so"
