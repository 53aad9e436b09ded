"""The layer contracts of `make lint` (pyproject.toml, import-linter) hold, and break loudly (issue 21).

A copy of the two packages with one forbidden import added must fail `lint-imports` with a message that
names the importing module and the line; the real tree must pass. ``lint-imports`` is a dev extra.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[dev]')")


def lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), str(tree / "pyproject.toml")], cwd=tree, capture_output=True,
                          text=True, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


@pytest.fixture()
def tree(tmp_path):
    for name in ("audio_ext", "stylegan2"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.pt", "cuda"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract(tree):
    res = lint(tree)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "0 broken" in res.stdout


@pytest.mark.parametrize("where, line, message", [
    ("audio_ext/core/png.py", "from audio_ext.generation import page",
     "audio_ext.core is not allowed to import audio_ext.generation"),
    ("audio_ext/decoder/pghi.py", "from audio_ext.decoder import methods", "No cycles are allowed in audio_ext.decoder"),
    ("audio_ext/dataset/cut.py", "import gen_audio", "audio_ext is not allowed to import gen_audio"),
    ("stylegan2/grid.py", "from audio_ext.core import png", "stylegan2 is not allowed to import audio_ext"),
])
def test_a_forbidden_import_breaks_the_build_naming_it(tree, where, line, message):
    path = tree / where
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    number = path.read_text().splitlines().index(f"{line}  # noqa") + 1
    res = lint(tree)
    assert res.returncode != 0
    assert message in res.stdout, res.stdout[-3000:]
    if "cycles" in message:         # the cycle is named by the dependency that would break it
        assert ".pghi -> .methods" in res.stdout, res.stdout[-3000:]
    else:                           # the import is named with its module and line
        assert f"{where[:-3].replace('/', '.')} -> " in res.stdout and f"(l.{number})" in res.stdout, res.stdout[-3000:]
