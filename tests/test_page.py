"""The listening page index.html (audio_ext/generation/page.py): self-contained, escaped, playable in a browser."""
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from audio_ext.generation.page import ClipEntry, render_page, write_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class LinkCollector(HTMLParser):
    """Collects tags, their link attributes and the visible text of a page."""

    def __init__(self):
        super().__init__()
        self.tags, self.links, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        for key in ("src", "href"):
            if key in attrs:
                self.links.append(attrs[key])

    def handle_data(self, data):
        self.text.append(data)


def make_clip_files(folder: Path, name: str, seconds: float, fmt: str = "wav") -> ClipEntry:
    sr = 44100
    t = np.arange(int(seconds * sr)) / sr
    sf.write(folder / f"{name}.{fmt}", (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr, subtype="PCM_16")
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (32, 32), dtype=np.uint8), "L").save(folder / f"{name}.png")
    return ClipEntry(title=name, audio=f"{name}.{fmt}", image=f"{name}.png", seed=7, truncation=0.7,
                     snapshot="network-snapshot-000100.pkl", bpm=130.0, seconds=seconds)


@pytest.fixture
def page_dir(tmp_path):
    entries = [make_clip_files(tmp_path, "seed0007", 0.5),
               make_clip_files(tmp_path, "seed 12 & more", 0.25, fmt="flac")]
    entries[1].seed, entries[1].class_idx = 12, 3
    path = write_page(tmp_path, entries, title="run <b>", run_info={"snapshot": "a&b.pkl"})
    return tmp_path, path, entries


def test_every_link_is_relative_and_points_to_an_existing_file(page_dir):
    folder, path, entries = page_dir
    assert path == folder / "index.html"
    parser = LinkCollector()
    parser.feed(path.read_text(encoding="utf-8"))
    assert parser.links, "the page links to nothing"
    from urllib.parse import unquote, urlparse
    for link in parser.links:
        parsed = urlparse(link)
        assert parsed.scheme == "" and parsed.netloc == "" and not link.startswith("/"), link
        assert (folder / unquote(parsed.path)).is_file(), link
    audio_sources = [a["src"] for tag, a in parser.tags if tag == "source"]
    assert sorted(unquote(s) for s in audio_sources) == sorted(e.audio for e in entries)
    types = {unquote(a["src"]): a["type"] for tag, a in parser.tags if tag == "source"}
    assert types == {"seed0007.wav": "audio/wav", "seed 12 & more.flac": "audio/flac"}
    assert sum(1 for tag, a in parser.tags if tag == "audio" and "controls" in a) == 2
    assert sum(1 for tag, _ in parser.tags if tag == "img") == 2


def test_page_shows_seed_truncation_class_snapshot_and_tempo(page_dir):
    _, path, _ = page_dir
    parser = LinkCollector()
    parser.feed(path.read_text(encoding="utf-8"))
    text = " ".join(parser.text)
    for fragment in ("seed", "7", "12", "truncation", "0.7", "class", "3", "130 BPM",
                     "network-snapshot-000100.pkl", "0.50 s"):
        assert fragment in text


def test_text_is_html_escaped_and_page_uses_no_external_assets(page_dir):
    _, path, _ = page_dir
    source = path.read_text(encoding="utf-8")
    parser = LinkCollector()
    parser.feed(source)
    assert "run <b>" in " ".join(parser.text)          # shown literally ...
    assert not any(tag == "b" for tag, _ in parser.tags)  # ... not interpreted as markup
    assert "a&b.pkl" in " ".join(parser.text)
    assert not any(tag in ("script", "link", "iframe") for tag, _ in parser.tags)
    assert not re.search(r"(?:https?:)?//", source)


def test_hostile_titles_cannot_inject_markup(tmp_path):
    entry = make_clip_files(tmp_path, "x", 0.1)
    entry.title = '"><script>alert(1)</script>'
    parser = LinkCollector()
    parser.feed(render_page([entry], root=tmp_path))
    assert not any(tag == "script" for tag, _ in parser.tags)


def test_missing_or_escaping_files_are_refused_and_no_page_is_written(tmp_path):
    entry = make_clip_files(tmp_path, "x", 0.1)
    entry.audio = "missing.wav"
    with pytest.raises(ValueError, match="missing.wav does not exist"):
        write_page(tmp_path, [entry])
    assert not (tmp_path / "index.html").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    for bad in ("../x.wav", "/etc/passwd"):
        entry.audio = bad
        with pytest.raises(ValueError, match="inside the output folder"):
            render_page([entry])


def run_chromium(url: str, profile: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--virtual-time-budget=10000", "--dump-dom", url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium)")
def test_page_renders_in_headless_chromium_and_its_audio_decodes(page_dir, tmp_path_factory):
    folder, path, entries = page_dir
    profile = tmp_path_factory.mktemp("chromium-profile")
    dom = run_chromium(path.as_uri(), profile)
    parser = LinkCollector()
    parser.feed(dom)
    assert sum(1 for tag, _ in parser.tags if tag == "audio") == len(entries)
    assert sum(1 for tag, _ in parser.tags if tag == "img") == len(entries)

    # A probe page in the same folder asks the browser to load every source the listening page names
    # and reports the decoded durations, so the files really play in a browser, not just exist.
    sources = [a["src"] for tag, a in parser.tags if tag == "source"]
    probe = folder / "probe.html"
    probe.write_text("""<!DOCTYPE html><html><body><pre id="out">pending</pre><script>
const srcs = %s, res = {}; let left = srcs.length;
function done(s, v) { res[s] = v; if (--left === 0) document.getElementById("out").textContent = JSON.stringify(res); }
for (const s of srcs) { const a = new Audio(); a.preload = "auto";
  a.addEventListener("loadedmetadata", () => done(s, a.duration));
  a.addEventListener("error", () => done(s, "error")); a.src = s; }
</script></body></html>""" % json.dumps(sources))
    out = run_chromium(probe.as_uri(), profile)
    match = re.search(r'<pre id="out">(.*?)</pre>', out, re.S)
    assert match, out[:500]
    import html as html_lib
    durations = json.loads(html_lib.unescape(match.group(1)))
    expected = {s: e.seconds for s, e in zip(sources, entries)}
    assert set(durations) == set(expected)
    for src, seconds in expected.items():
        assert durations[src] == pytest.approx(seconds, abs=0.01), src


def test_page_is_reproducible_and_readable_by_others(tmp_path):
    entry = make_clip_files(tmp_path, "x", 0.1)
    first = write_page(tmp_path, [entry]).read_bytes()
    second = write_page(tmp_path, [entry])
    assert second.read_bytes() == first  # no timestamps: same clips, same page
    umask = os.umask(0)
    os.umask(umask)
    assert second.stat().st_mode & 0o777 == 0o666 & ~umask
