"""survey make: deterministic, blind, loudness-normalised folders with the conditions asked for."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from survey_helpers import tiny_archive, tiny_snapshot

from audio_ext.__main__ import main as cli
from audio_ext.decoder import frame_model
from audio_ext.decoder.model_choice import choose_decoder_model
from audio_ext.survey import anchor, loudness, order
from audio_ext.survey.make import SurveyError, SurveyOptions, load_manifest, make_survey
from audio_ext.survey.roundtrip import original_clip

SOURCE_TEMPI = (126, 134)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A real archive (dataset tool, with clip records) of two synthetic loops, and a tiny snapshot."""
    from audio_ext.core.synth import techno_loop
    from audio_ext.dataset.build import BuildOptions, build_archive
    from audio_ext.dataset.cut import SliceParams
    root = tmp_path_factory.mktemp("survey-inputs")
    src = root / "src"
    src.mkdir()
    for i, bpm in enumerate(SOURCE_TEMPI):
        sf.write(str(src / f"loop-{bpm}bpm.wav"), techno_loop(bpm, 8.0, sr=44100, seed=i), 44100, subtype="PCM_16")
    data = root / "stft.zip"
    build_archive(src, data, BuildOptions(resolution=128, slicing=SliceParams(stride_beats=4), progress=False),
                  log=lambda m: None)
    runs = root / "run"
    runs.mkdir()
    net = tiny_snapshot(runs / "network-snapshot-000004.pkl")
    return {"src": src, "data": data, "net": net}


def _make(inputs, outdir, seed=3, n=2, **kw):
    opts = SurveyOptions(outdir=str(outdir), clips_per_condition=n, seed=seed, data=str(inputs["data"]),
                         source=str(inputs["src"]), networks=[str(inputs["net"])], **kw)
    return make_survey(opts, log=lambda m: None)


def _riff_chunks(data: bytes) -> list:
    """Chunk ids of a RIFF/WAVE file, in order."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    ids, pos = [], 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        ids.append(data[pos:pos + 4])
        pos += 8 + size + (size & 1)
    return ids


def _digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def survey(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("survey") / "s"
    _make(inputs, out)
    return out


def test_conditions_counts_lengths_and_levels(survey):
    m = load_manifest(survey)
    conds = [c["condition"] for c in m["clips"]]
    assert set(conds) == {"original", "roundtrip-pghi+fgla", "generated-network-snapshot-000004", "anchor"}
    assert all(conds.count(c) == 2 for c in set(conds))
    levels = []
    for c in m["clips"] + [m["training"]]:
        audio, sr = sf.read(str(survey / c["file"]))
        assert sr == 44100 and audio.ndim == 1
        levels.append(loudness.rms_db(audio))
        if "samples" in c:
            assert audio.size == c["samples"] == m["conditions"][c["condition"]]["samples"]
    # one RMS level for every clip, up to 16-bit rounding
    assert max(levels) - min(levels) < 0.05
    assert abs(levels[0] - m["loudness"]["level_dbfs"]) < 0.05
    # original and round trip are the same archive clips; generated clips have the network's length
    orig = sorted(c["origin"]["clip_index"] for c in m["clips"] if c["condition"] == "original")
    rt = sorted(c["origin"]["clip_index"] for c in m["clips"] if c["condition"].startswith("roundtrip"))
    assert orig == rt
    assert m["conditions"]["generated-network-snapshot-000004"]["seconds"] == pytest.approx(1024 / 44100, abs=1e-4)
    assert m["conditions"]["original"]["seconds"] == pytest.approx(128 * 128 / 44100, abs=1e-4)


def test_deterministic_for_a_seed(inputs, survey, tmp_path):
    _make(inputs, tmp_path / "again")
    assert _digest(tmp_path / "again") == _digest(survey)
    _make(inputs, tmp_path / "other", seed=4)
    a, b = load_manifest(survey), load_manifest(tmp_path / "other")
    assert {c["id"] for c in a["clips"]}.isdisjoint({c["id"] for c in b["clips"]})
    assert a["survey_id"] != b["survey_id"]


def test_blind(inputs, survey):
    m = load_manifest(survey)
    secrets = {"original", "roundtrip", "pghi", "fgla", "anchor", "generated", "network-snapshot", "loop-126",
               "loop-134", "stft.zip", "condition"}
    for path in survey.rglob("*"):
        if not path.is_file() or path.name in ("manifest.json", "README.txt"):
            continue
        if path.suffix == ".wav":
            assert path.stem in {c["id"] for c in m["clips"]} | {m["training"]["id"]}
            assert _riff_chunks(path.read_bytes()) == [b"fmt ", b"data"]  # no text chunk that could name it
            continue
        text = path.read_text(encoding="utf-8").lower()
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{path.name} names {leaked}"
    data = json.loads((survey / "survey-data.js").read_text().split("=", 1)[1].rstrip().rstrip(";"))
    assert sorted(c["id"] for c in data["clips"]) == sorted(c["id"] for c in m["clips"])
    # the file order does not group conditions: the manifest order is shuffled too
    assert [c["condition"] for c in m["clips"]] != sorted(c["condition"] for c in m["clips"])


def test_original_is_the_archive_clip(inputs):
    """The original condition reproduces the dataset tool's own cut (same start, stretch and beats)."""
    from audio_ext.core.geometry import StftGeometry
    from audio_ext.dataset.archive import read_dataset_json
    from audio_ext.dataset.cut import SliceParams, slice_track
    meta = read_dataset_json(inputs["data"])
    g = StftGeometry.from_dict(meta["audio"])
    name = "loop-134bpm.wav"
    clips, records, _ = slice_track(inputs["src"] / name, g, SliceParams(stride_beats=4), source=name)
    for clip, rec in list(zip(clips, records))[:3]:
        y = original_clip(inputs["src"] / name, rec, g.sample_rate, g.clip_samples)
        assert y.shape == clip.shape
        assert np.corrcoef(y, clip)[0, 1] > 0.95
    other = original_clip(inputs["src"] / name, dict(records[0], clip_start_s=records[0]["clip_start_s"] + 0.1),
                          g.sample_rate, g.clip_samples)
    assert np.corrcoef(other, clips[0])[0, 1] < 0.9


def test_shuffle_is_a_seeded_permutation():
    ids = [f"c{i}" for i in range(20)]
    a = order.shuffled(ids, 7)
    assert sorted(a) == sorted(ids) and a != ids
    assert order.shuffled(ids, 7) == a
    assert order.shuffled(ids, 8) != a
    draws = [v for _, v in zip(range(2000), order.mulberry32(1))]
    assert all(0 <= v < 1 for v in draws) and abs(np.mean(draws) - 0.5) < 0.03
    # the page draws the same order (tests/test_survey_browser.py compares the two)


def test_anchor_is_muffled_and_noisy():
    sr = 44100
    t = np.arange(sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 200 * t) + 0.3 * np.sin(2 * np.pi * 9000 * t)).astype(np.float32)
    y = anchor.degrade(x, sr, seed=1)
    spec_x, spec_y = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(y))
    assert spec_y[9000] < 0.05 * spec_x[9000]      # the 9 kHz tone is filtered away
    assert spec_y[200] > 0.9 * spec_x[200]         # the 200 Hz tone stays
    assert np.array_equal(anchor.degrade(x, sr, seed=1), y)
    assert not np.array_equal(anchor.degrade(x, sr, seed=2), y)


def test_normalise_set_levels_and_peak():
    quiet = np.full(1000, 0.01, np.float32)
    spiky = np.zeros(1000, np.float32)
    spiky[::100] = 0.5
    out, level = loudness.normalise_set([quiet, spiky], target_dbfs=-10.0)
    assert loudness.rms_db(out[0]) == pytest.approx(level, abs=1e-4)
    assert loudness.rms_db(out[1]) == pytest.approx(level, abs=1e-4)
    assert level < -10.0 and max(np.abs(o).max() for o in out) == pytest.approx(loudness.PEAK_LIMIT, rel=1e-5)
    with pytest.raises(ValueError, match="silent"):
        loudness.normalise_set([np.zeros(10)])


def test_archive_only_survey_without_source(tmp_path):
    data = tiny_archive(tmp_path / "a.zip")
    make_survey(SurveyOptions(outdir=str(tmp_path / "s"), clips_per_condition=2, seed=0, data=str(data),
                              anchors=1), log=lambda m: None)
    m = load_manifest(tmp_path / "s")
    assert sorted(m["conditions"]) == ["anchor", "roundtrip-pghi+fgla"]
    assert m["conditions"]["anchor"]["clips"] == 1
    assert m["training"]["condition"] == "roundtrip-pghi+fgla"


def test_bad_input_cli(inputs, tmp_path):
    data = tiny_archive(tmp_path / "a.zip", n=3)
    r = CliRunner().invoke(cli, ["survey", "make", "--outdir", str(tmp_path / "s"), "--data", str(data),
                                 "--clips-per-condition", "5"])
    assert r.exit_code != 0 and "3 clip(s), the survey needs 6" in r.output
    assert not (tmp_path / "s").exists()
    r = CliRunner().invoke(cli, ["survey", "make", "--outdir", str(tmp_path / "s"), "--source", str(tmp_path),
                                 "--network", str(inputs["net"]), "--clips-per-condition", "1"])
    assert r.exit_code != 0 and "--source needs --data" in r.output
    r = CliRunner().invoke(cli, ["survey", "make", "--outdir", str(tmp_path / "s"), "--data", str(inputs["data"]),
                                 "--source", str(tmp_path), "--clips-per-condition", "1"])
    assert r.exit_code != 0 and "is not there" in r.output and not (tmp_path / "s").exists()
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep.txt").write_text("mine")
    r = CliRunner().invoke(cli, ["survey", "make", "--outdir", str(tmp_path / "s"), "--data", str(data),
                                 "--clips-per-condition", "1"])
    assert r.exit_code != 0 and "already exists" in r.output
    r = CliRunner().invoke(cli, ["survey", "make", "--outdir", str(tmp_path / "s"), "--data", str(data),
                                 "--clips-per-condition", "1", "--overwrite"])
    assert r.exit_code != 0 and "not a survey folder" in r.output
    assert (tmp_path / "s" / "keep.txt").read_text() == "mine"
    r = CliRunner().invoke(cli, ["survey", "make", "--outdir", str(tmp_path / "v"), "--data", str(data),
                                 "--clips-per-condition", "1"])
    assert r.exit_code == 0, r.output
    (tmp_path / "v" / "responses").mkdir()
    (tmp_path / "v" / "responses" / "L1.json").write_text("{}")
    r = CliRunner().invoke(cli, ["survey", "make", "--outdir", str(tmp_path / "v"), "--data", str(data),
                                 "--clips-per-condition", "1", "--overwrite"])
    assert r.exit_code != 0 and "holds 1 answer sheet(s) in responses/" in r.output
    assert (tmp_path / "v" / "responses" / "L1.json").read_text() == "{}"
    if not torch.cuda.is_available():
        with pytest.raises(SurveyError, match="no CUDA device"):
            make_survey(SurveyOptions(outdir=str(tmp_path / "x"), clips_per_condition=1, data=str(data),
                                      device="cuda"), log=lambda m: None)
    with pytest.raises(SurveyError, match="nothing to rate"):
        make_survey(SurveyOptions(outdir=str(tmp_path / "x"), clips_per_condition=1), log=lambda m: None)


def test_write_pairs_for_the_demo_page(inputs, tmp_path):
    """roundtrip.write_pairs: per source its first clip, original and round trip, and page entries."""
    from audio_ext.generation.page import write_page
    from audio_ext.survey.roundtrip import write_pairs
    entries = write_pairs(inputs["data"], inputs["src"], tmp_path, per_source=1, log=lambda m: None)
    assert [e.audio for e in entries] == [f"full/loop-{t}bpm-{k}.wav" for t in SOURCE_TEMPI
                                          for k in ("original", "roundtrip")]
    orig, _ = sf.read(str(tmp_path / entries[0].audio))
    rt, _ = sf.read(str(tmp_path / entries[1].audio))
    assert orig.size == rt.size == 128 * 128
    assert np.sqrt(np.mean(orig ** 2)) == pytest.approx(np.sqrt(np.mean(rt ** 2)), rel=0.01)  # one level
    # the round trip keeps the original's spectral envelope: log energies in 32 bands agree closely
    def bands(x):
        p = np.abs(np.fft.rfft(x)) ** 2
        return np.log10([b.mean() + 1e-12 for b in np.array_split(p[1:], 32)])
    assert np.corrcoef(bands(orig), bands(rt))[0, 1] > 0.95
    assert entries[0].bpm == pytest.approx(130.0, abs=0.01)
    page = write_page(tmp_path, entries, links=[("the test", "full/loop-126bpm.png")])
    assert 'href="full/loop-126bpm.png">the test</a>' in page.read_text()
    with pytest.raises(ValueError, match="inside the output folder"):
        write_page(tmp_path, entries, links=[("away", "../x.html")])


def test_networks_only_survey_via_cli(tmp_path):
    """Two snapshots with the same file name get distinct conditions; anchors come from the first."""
    for run in ("runA", "runB"):
        (tmp_path / run).mkdir()
        tiny_snapshot(tmp_path / run / "network-snapshot-000000.pkl", seed=len(run))
    out = tmp_path / "s"
    r = CliRunner().invoke(cli, ["survey", "make", "--outdir", str(out), "--network",
                                 str(tmp_path / "runA" / "network-snapshot-000000.pkl"), "--network",
                                 str(tmp_path / "runB" / "network-snapshot-000000.pkl"),
                                 "--clips-per-condition", "2", "--anchors", "1", "--seed", "9", "--page-seed", "77"])
    assert r.exit_code == 0, r.output
    m = load_manifest(out)
    names = ["generated-runA-network-snapshot-000000", "generated-runB-network-snapshot-000000"]
    assert sorted(m["conditions"]) == sorted(names + ["anchor"])
    assert m["training"]["condition"] == names[0] and m["page_seed"] == 77
    anchors = [c for c in m["clips"] if c["condition"] == "anchor"]
    assert len(anchors) == 1 and anchors[0]["origin"]["degraded_from"] == names[0]
    seeds = [c["origin"]["seed"] for c in m["clips"] if c["condition"] == names[0]]
    assert len(set(seeds)) == 2 and "keep" in r.output and "manifest.json" in r.output
    data = (out / "survey-data.js").read_text()
    assert '"page_seed": 77' in data


def test_method_names_the_roundtrip_condition(tmp_path):
    data = tiny_archive(tmp_path / "a.zip", n=3)
    make_survey(SurveyOptions(outdir=str(tmp_path / "s"), clips_per_condition=1, data=str(data), anchors=0,
                              method="gla"), log=lambda m: None)
    m = load_manifest(tmp_path / "s")
    assert list(m["conditions"]) == ["roundtrip-gla"] and m["clips"][0]["origin"]["decoder"] == "gla"
    with pytest.raises(SurveyError, match="'nope' is not a decoder"):
        make_survey(SurveyOptions(outdir=str(tmp_path / "t"), clips_per_condition=1, data=str(data), method="nope"),
                    log=lambda m: None)
    assert not (tmp_path / "t").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_survey_decodes_on_cuda_like_on_cpu(tmp_path):
    """--device cuda: same conditions, lengths and level; the round trip sounds like the CPU one."""
    data = tiny_archive(tmp_path / "a.zip", n=3)
    for dev in ("cpu", "cuda"):
        make_survey(SurveyOptions(outdir=str(tmp_path / dev), clips_per_condition=2, seed=2, data=str(data),
                                  anchors=1, device=dev), log=lambda m: None)
    a, b = load_manifest(tmp_path / "cpu"), load_manifest(tmp_path / "cuda")
    assert a["conditions"] == b["conditions"] and a["loudness"]["level_dbfs"] == b["loudness"]["level_dbfs"]

    def bands(x):
        p = np.abs(np.fft.rfft(x)) ** 2
        return np.log10([v.mean() + 1e-12 for v in np.array_split(p[1:], 32)])
    # same seed -> same clip ids and the same archive clips in the same files
    for ca, cb in zip(a["clips"], b["clips"]):
        assert (ca["id"], ca["condition"], ca["origin"]["clip_index"]) == \
               (cb["id"], cb["condition"], cb["origin"]["clip_index"])
        ya, _ = sf.read(str(tmp_path / "cpu" / ca["file"]))
        yb, _ = sf.read(str(tmp_path / "cuda" / cb["file"]))
        assert ya.size == yb.size
        assert np.corrcoef(bands(ya), bands(yb))[0, 1] > 0.99


def _side_model(path, seed=1, resolution=128):
    """A tiny decoder model file for the inputs' geometry (R = 128, hop 128) with a random head."""
    from audio_ext.core.geometry import StftGeometry
    from audio_ext.decoder import frame_model
    torch.manual_seed(seed)
    net = frame_model.FrameInterpNet(width=4, body_width=8, n_blocks=1, dilations=(1,), down=4)
    for p in net.head.parameters():
        torch.nn.init.normal_(p, std=0.5)
    frame_model.save_model(path, frame_model.model_payload(net, StftGeometry(resolution), {"mean": -6.0, "std": 3.0}))
    return path


def test_round_trips_decode_with_the_archives_own_model(inputs, tmp_path, monkeypatch):
    """The survey's round-trip condition and the demo's pairs use stft.decoder.pt beside the archive, as
    `python -m audio_ext decode` does; a side file of another geometry is an error naming it."""
    import shutil

    from audio_ext.survey.make import _archive_clips
    from audio_ext.survey.roundtrip import write_pairs
    own = tmp_path / "own"
    own.mkdir()
    data = Path(shutil.copy(inputs["data"], own / "stft.zip"))
    side = _side_model(own / "stft.decoder.pt")

    def roundtrips(path):
        opts = SurveyOptions(outdir=str(tmp_path / "x"), clips_per_condition=2, data=str(path))
        clips = _archive_clips(opts, np.random.default_rng(0), 2, lambda m: None)
        return [c.condition for c in clips], np.stack([c.audio for c in clips])

    conds, a = roundtrips(data)
    assert conds == ["roundtrip-learned+pghi+fgla"] * 2
    plain_conds, plain = roundtrips(inputs["data"])                   # no model fits R = 128: the classic one
    assert plain_conds == ["roundtrip-pghi+fgla"] * 2 and np.abs(a - plain).max() > 1e-3
    monkeypatch.setenv(frame_model.MODEL_ENV, str(side))
    np.testing.assert_array_equal(roundtrips(inputs["data"])[1], a)   # the same model: the same clips
    monkeypatch.delenv(frame_model.MODEL_ENV)

    entries = write_pairs(data, inputs["src"], tmp_path / "pairs", log=lambda m: None)
    assert entries[1].kind.endswith("decoded with learned+pghi+fgla[archive: stft.decoder.pt]"), entries[1].kind
    assert not str(choose_decoder_model().label).startswith("archive")       # nothing left behind

    _side_model(side, resolution=64)
    with pytest.raises(SurveyError, match=r"stft\.decoder\.pt: decoder model was trained for another geometry"):
        roundtrips(data)
    with pytest.raises(frame_model.ModelError, match=r"stft\.decoder\.pt: decoder model was trained for another"):
        write_pairs(data, inputs["src"], tmp_path / "pairs2", log=lambda m: None)
