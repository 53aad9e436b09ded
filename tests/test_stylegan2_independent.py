"""``stylegan2`` stands on its own: it imports nothing from the audio layer and names none of it.

The audio layer reaches in only through plug-in points (metric modules handed to
``registry.load_plugins`` or ``training_loop(metric_plugins=...)``), so the image GAN can be read,
tested and reused without it. This check reads the source (no import-linter needed).
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AUDIO = "audio" + "_ext"      # spelled in two pieces so that a grep for it does not find this file


def audio_references(package: Path) -> list:
    """``'file:line: what'`` for every import of the audio layer and every other mention of its name."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent)
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source, str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name == AUDIO or name.startswith(AUDIO + "."):
                    found.append(f"{rel}:{node.lineno}: imports {name}")
        for number, line in enumerate(source.splitlines(), 1):
            if AUDIO in line and not line.lstrip().startswith(("import ", "from ")):
                found.append(f"{rel}:{number}: names {AUDIO}: {line.strip()[:100]}")
    return found


def test_stylegan2_imports_and_names_nothing_of_the_audio_layer():
    hits = audio_references(ROOT / "stylegan2")
    assert not hits, "stylegan2/ must not depend on the audio layer; use a plug-in point:\n" + "\n".join(hits)


def test_the_check_finds_imports_and_names(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text(f"import {AUDIO}.codec\n", encoding="utf-8")
    (package / "b.py").write_text(f"from {AUDIO} import metrics\n", encoding="utf-8")
    (package / "c.py").write_text(f"PLUGINS = ['{AUDIO}.metrics']\n", encoding="utf-8")
    (package / "d.py").write_text("import torch\n", encoding="utf-8")
    hits = audio_references(package)
    assert [h.split(":")[0] for h in hits] == ["pkg/a.py", "pkg/b.py", "pkg/c.py"]


def _registered(code: str) -> list:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_audio_metrics_join_the_registry_only_through_the_plug_in_point():
    alone = _registered("import json, sys; from stylegan2.metrics import registry; "
                        "print(json.dumps([registry.list_metrics(), sorted(m for m in sys.modules "
                        f"if m.startswith('{AUDIO}'))]))")
    assert "fid50k_full" in alone[0] and "tempo_fidelity" not in alone[0]
    assert alone[1] == []           # looking metrics up imported nothing of the audio layer
    plugged = _registered(f"import json; from {AUDIO}.plugins import METRIC_MODULES; "
                          "from stylegan2.metrics import registry; "
                          "print(json.dumps(registry.load_plugins(METRIC_MODULES)))")
    assert {"fid50k_full", "tempo_fidelity"} <= set(plugged)


def test_an_unknown_plug_in_is_an_error_naming_it():
    from stylegan2.metrics import registry
    with pytest.raises(ModuleNotFoundError, match="no_such_metrics_module"):
        registry.load_plugins(["no_such_metrics_module"])
    with pytest.raises(ValueError, match="not a module name"):
        registry.load_plugins([""])
