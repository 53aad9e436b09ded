"""The module move of issue 21 changed nothing a user can observe (the golden check).

``tests/golden.json`` was written by ``tests/golden_record.py`` running the code of commit 06d4a90,
before audio_ext was split into rooms. The same command lines run again here with the current code:
the archive built from the same synthetic sources must be byte-identical, every WAV/FLAC that
``gen_audio.py`` and ``python -m audio_ext decode`` write for fixed seeds and clips bit-identical, the
snapshot keys and every ``--help`` text unchanged. A deliberate change of output or flags updates
golden.json in the same commit (rerun the recorder) and says why.
"""
import json
from pathlib import Path

import golden_record
import pytest

GOLDEN = json.loads((Path(__file__).parent / "golden.json").read_text())


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return golden_record.record_outputs(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("key", sorted(GOLDEN["outputs"]))
def test_outputs_are_unchanged(outputs, key):
    assert outputs[key] == GOLDEN["outputs"][key], f"{key} differs from the pre-move code"


def test_help_texts_are_unchanged():
    now = golden_record.record_help()
    assert sorted(now) == sorted(GOLDEN["help"])
    for cmd, text in GOLDEN["help"].items():
        assert now[cmd] == text, f"--help of {cmd} changed"
