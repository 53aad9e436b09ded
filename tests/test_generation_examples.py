"""benchmarks/generation_examples.py: real transcripts replace a doc's marked sections; a failure changes nothing.

The script runs on a tiny random snapshot (64 x 64 at 2048 Hz: 2 s clips, one bar at 130 BPM and
room for the crossfade, as the shipped network's) and a synthetic techno track, into a copy of a
small markdown file, never the real docs.
"""
import re

import pytest
import soundfile as sf
from click.testing import CliRunner
from snapshot_helpers import tiny_audio_snapshot

from audio_ext.core.synth import techno_loop
from audio_ext.generation.loops import bars_to_samples
from benchmarks import generation_examples

DOC = """# Examples

Text before, kept.

<!-- begin example-seeds -->
old seeds transcript
<!-- end example-seeds -->

Text between, kept.

<!-- begin example-loops -->
old loops
<!-- end example-loops -->
<!-- begin example-project -->
old projection
<!-- end example-project -->
<!-- begin example-from-projection -->
old walk
<!-- end example-from-projection -->
<!-- begin example-bpm -->
old bpm
<!-- end example-bpm -->
<!-- begin layer_control -->
## old table
<!-- end layer_control -->

Text after, kept.
"""

SR = 2048


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("examples")
    net = tiny_audio_snapshot(root / "tiny.pkl", 64, sample_rate=SR, target_bpm=130.0)
    track = root / "techno.wav"
    sf.write(str(track), techno_loop(130.0, 8.0, sr=22050, seed=3), 22050)
    return net, track


def section(text, name):
    return re.search(rf"<!-- begin {name} -->\n(.*?)<!-- end {name} -->", text, re.S).group(1)


def run(args):
    return CliRunner().invoke(generation_examples.main, [str(a) for a in args], catch_exceptions=False)


def test_sections_are_replaced_by_transcripts_and_pictures(inputs, tmp_path):
    net, track = inputs
    doc, img = tmp_path / "doc.md", tmp_path / "img"
    doc.write_text(DOC)
    result = run(["--network", net, "--target", track, "--start", 2, "--steps", 5, "--pairs", 2, "--doc", doc,
                  "--img-dir", img, "--img-prefix", "tiny-",
                  "--only", "seeds,loops,project,from-projection,bpm,layer_control"])
    assert result.exit_code == 0, result.output
    text = doc.read_text()
    for kept in ("Text before, kept.", "Text between, kept.", "Text after, kept."):
        assert kept in text
    assert "old " not in text

    seeds = section(text, "example-seeds")
    assert f"$ python gen_audio.py --network {net} --seeds 0-3 --outdir seeds\n" in seeds
    assert "[exit 0]" in seeds and "seed0003-130bpm.wav" in seeds and "seed0003.png" in seeds
    assert "![" in seeds and "(img/tiny-seeds.png)" in seeds

    loops = section(text, "example-loops")
    assert "--loop 8: clip holds 1 bar; looped 8x to 8 bars" in loops
    assert f"{bars_to_samples(8, SR, 130):,} samples" in loops

    project = section(text, "example-project")
    assert f"--target {track.name} --start 2 --outdir proj --steps 5 --no-progress" in project
    assert "[exit 0]" in project and "projected_w.npz" in project and '"closed_share"' in project

    walk = section(text, "example-from-projection")
    assert walk.count("[exit 0]") == 3
    assert "walk-proj_proj-5-9-124bpm.wav" in walk and "proj-proj-var02-loop2bar-130bpm.wav" in walk
    assert f"{bars_to_samples(5, SR, 124):,} samples" in walk

    bpm = section(text, "example-bpm")
    assert "seed0003-loop2bar-124bpm.wav" in bpm and "seed=3 bpm=124" in bpm

    table = section(text, "layer_control")
    assert "## What the layer groups control (measured)" in table and "| untrained (init) |" in table

    pictures = sorted(p.name for p in img.iterdir())
    assert pictures == ["tiny-loop.png", "tiny-projection-walk.png", "tiny-projection.png", "tiny-seeds.png"]
    for name in pictures:
        assert f"(img/{name})" in text


def test_a_failing_command_is_named_and_the_doc_is_left_alone(inputs, tmp_path):
    net, _ = inputs
    doc, img = tmp_path / "doc.md", tmp_path / "img"
    doc.write_text(DOC)
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio\n")
    result = CliRunner().invoke(generation_examples.main, ["--network", str(net), "--target", str(not_audio),
                                                           "--doc", str(doc), "--img-dir", str(img),
                                                           "--only", "seeds,project"])
    assert result.exit_code == 1
    assert "example project: `python project_audio.py --network" in result.output
    assert f"--target {not_audio.name}" in result.output and "exited with 1" in result.output
    assert doc.read_text() == DOC
    assert not img.exists()


def test_a_missing_section_stops_before_anything_runs(inputs, tmp_path):
    net, _ = inputs     # no --target: only the projection needs one
    doc = tmp_path / "doc.md"
    doc.write_text(DOC.replace("<!-- end example-bpm -->", ""))
    result = CliRunner().invoke(generation_examples.main, ["--network", str(net),
                                                           "--doc", str(doc), "--img-dir", str(tmp_path / "img"),
                                                           "--only", "seeds,bpm"])
    assert result.exit_code == 1
    assert "no section <!-- begin example-bpm -->" in result.output and "seeds:" not in result.output
    assert doc.read_text() == DOC.replace("<!-- end example-bpm -->", "")


def test_the_walk_from_the_projection_needs_the_projection(inputs, tmp_path):
    net, track = inputs
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    result = CliRunner().invoke(generation_examples.main, ["--network", str(net), "--target", str(track),
                                                           "--doc", str(doc), "--only", "from-projection"])
    assert result.exit_code == 2
    assert "from-projection renders the projection: add project" in result.output
    assert doc.read_text() == DOC
