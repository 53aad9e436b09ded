"""`make demo` end to end: demo.py --quick synthesises, builds an archive, trains, generates a page with
full-length original/round-trip pairs and a listening test.

Runs in a fresh process like `make demo` does. Skipped (with the reason) only while a stage's module
has not landed; once every part exists, any stage that does not run is a failure.
"""
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest
import soundfile as sf

from audio_ext.decoder.methods import DEFAULT_METHOD

ROOT = Path(__file__).resolve().parent.parent


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href")]


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_writes_a_playable_page(tmp_path):
    out = tmp_path / "demo-out"
    done = subprocess.run([sys.executable, str(ROOT / "demo.py"), "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    missing = re.findall(r"skipped: (.*not available yet.*)", log)
    if missing:
        pytest.skip(f"demo stage waiting for a module: {missing[0]}")
    from audio_ext.generation.pretrained import known_names
    shipped = "electro128" in known_names()
    skipped = [line for line in log.splitlines() if "skipped:" in line and "--quick" not in line
               and (shipped or "not shipped yet" not in line)]   # stage 0 waits for the shipped network
    assert not skipped, log[-3000:]

    match = re.search(r"Listening page: (.+)", done.stdout)
    assert match, done.stdout[-2000:]
    page = Path(match.group(1).strip())
    assert page == (out / "clips" / "index.html").resolve() and page.is_file()
    assert list((out / "source").glob("*.wav")) and (out / "stft.zip").is_file()
    assert list((out / "runs").rglob("network-snapshot-*.pkl"))

    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    audio = [page.parent / unquote(link) for link in parser.links if link.endswith((".wav", ".flac"))]
    generated = {a for a in audio if a.name.startswith("seed")}
    full = {a for a in audio if a.parent.name == "full"}
    assert len(generated) == 4  # --quick generates seeds 0-3
    # stage 6: an original and a round trip per source loop, full length at --quick's R=256
    assert sorted(a.name for a in full) == sorted(f"loop-{t}bpm-{k}.wav" for t in (126, 130, 134)
                                                  for k in ("original", "roundtrip"))
    for link in parser.links:
        assert (page.parent / unquote(link)).is_file(), link
    for path in set(audio):
        info = sf.info(str(path))
        assert info.samplerate == 44100 and info.subtype == "PCM_16" and info.frames > 0
        if path in full:
            assert info.frames == 256 * 256
    # stage 7: the listening test, linked from the page
    assert "survey/index.html" in parser.links
    manifest = json.loads((page.parent / "survey" / "manifest.json").read_text())
    assert sorted(manifest["conditions"]) == ["anchor", "original", "roundtrip-" + DEFAULT_METHOD]
    assert re.search(r"Listening test: .+survey/index.html", done.stdout)
