"""survey score: answer sheets with known means against scipy, anchors, normalisation, CSV, the report."""
import csv
import json
import math

import numpy as np
import pytest
import scipy.stats as st
from click.testing import CliRunner
from PIL import Image
from survey_helpers import sheet, write_sheet

from audio_ext.__main__ import main as cli
from audio_ext.survey.score import score_survey

CONDS = {"original": 4, "roundtrip-gla": 4, "generated-net": 4, "anchor": 2}
MEANS = {"original": 4.2, "roundtrip-gla": 3.4, "generated-net": 2.5, "anchor": 1.2}


@pytest.fixture()
def survey(tmp_path):
    """A manifest (no audio needed to score) and a network folder with a calc_metrics log."""
    clips, k = [], 0
    for cond, n in CONDS.items():
        for _ in range(n):
            clips.append({"id": f"{k:010x}", "file": f"audio/{k:010x}.wav", "condition": cond})
            k += 1
    run = tmp_path / "run"
    run.mkdir()
    (run / "network-snapshot-000010.pkl").write_bytes(b"")
    (run / "metric-sfd1k.jsonl").write_text(
        json.dumps({"metric": "sfd1k", "results": {"sfd1k": 12.5}, "snapshot_pkl": "network-snapshot-000010.pkl"})
        + "\n" + json.dumps({"metric": "sfd1k", "results": {"sfd1k": 99.0}, "snapshot_pkl": "other.pkl"}) + "\n")
    m = {"format": "electrogan-survey", "version": 1, "survey_id": "s1", "title": "t", "clips": clips,
         "conditions": {c: {"clips": n} for c, n in CONDS.items()},
         "loudness": {"measure": "rms", "level_dbfs": -23.0},
         "networks": [{"condition": "generated-net", "path": str(run / "network-snapshot-000010.pkl")}]}
    folder = tmp_path / "survey"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(m))
    return folder, m


def _ratings_with_mean(rng, n, mean):
    """``n`` integer ratings 1..5 whose mean is exactly ``mean`` (n * mean must be an integer)."""
    total = int(round(n * mean))
    r = np.clip(np.round(rng.normal(mean, 0.8, n)), 1, 5).astype(int)
    while r.sum() != total:  # nudge single ratings until the sum is right
        i = rng.integers(n)
        if r.sum() < total and r[i] < 5:
            r[i] += 1
        elif r.sum() > total and r[i] > 1:
            r[i] -= 1
    return r


def _answer_set(m, folder, listeners=10, seed=0):
    """Every listener rates every clip; per condition the ratings over all listeners have MEANS exactly."""
    rng = np.random.default_rng(seed)
    by_cond = {}
    for cond in CONDS:
        ids = [c["id"] for c in m["clips"] if c["condition"] == cond]
        by_cond[cond] = (ids, _ratings_with_mean(rng, listeners * len(ids), MEANS[cond]).reshape(listeners, len(ids)))
    for j in range(listeners):
        ratings = {i: int(r) for cond, (ids, rs) in by_cond.items() for i, r in zip(ids, rs[j])}
        write_sheet(folder / "responses", f"L{j:02d}.json", sheet(m, f"L{j:02d}", ratings))
    return by_cond


def test_mos_intervals_and_tests_match_scipy(survey):
    folder, m = survey
    by_cond = _answer_set(m, folder)
    res = score_survey([folder / "responses"], log=lambda s: None)
    rows = {r["condition"]: r for r in res["conditions"]}
    assert [r["condition"] for r in res["conditions"]] == list(CONDS)
    for cond, (ids, rs) in by_cond.items():
        x = rs.ravel()
        assert rows[cond]["mos"] == pytest.approx(MEANS[cond])
        ci = st.ttest_1samp(x, 0).confidence_interval(0.95)
        assert (rows[cond]["t_low"], rows[cond]["t_high"]) == pytest.approx((ci.low, ci.high))
        assert rows[cond]["boot_low"] < MEANS[cond] < rows[cond]["boot_high"]
        assert rows[cond]["n"] == x.size and rows[cond]["listeners"] == 10
        assert rows[cond]["listened_s"] == pytest.approx(1.5)  # what the helper's sheets say
    pairs = {(p["a"], p["b"]): p for p in res["pairs"]}
    assert len(pairs) == 3 and not any("anchor" in k for k in pairs)  # the anchor is a check, not a contender
    raw_mw, raw_w = [], []
    for (a, b), p in pairs.items():
        xa, xb = by_cond[a][1], by_cond[b][1]
        ref = st.mannwhitneyu(xa.ravel(), xb.ravel(), method="asymptotic")
        assert p["mw_u"] == pytest.approx(ref.statistic) and p["mw_p"] == pytest.approx(ref.pvalue, rel=1e-9)
        d = xa.mean(axis=1) - xb.mean(axis=1)
        refw = st.wilcoxon(d, zero_method="wilcox", correction=False, method="approx")
        assert p["paired_listeners"] == 10
        assert p["wilcoxon_p"] == pytest.approx(refw.pvalue, rel=1e-9)
        raw_mw.append(p["mw_p"])
        raw_w.append(p["wilcoxon_p"])
    # Holm by hand: the smallest p times 3, the next times 2 (monotone), the largest times 1
    order = np.argsort(raw_mw)
    expect = np.minimum(1, np.maximum.accumulate(np.array(raw_mw)[order] * np.array([3, 2, 1])))
    got = np.array([p["mw_p_holm"] for p in pairs.values()])[order]
    np.testing.assert_allclose(got, expect)
    assert pairs[("original", "generated-net")]["mw_p_holm"] < 1e-3


def test_report_files_and_metrics(survey):
    folder, m = survey
    _answer_set(m, folder, listeners=5)
    res = score_survey([folder / "responses"], log=lambda s: None)
    out = folder / "report"
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.html", "mos.png", "scores.json"}
    with Image.open(out / "mos.png") as im:
        assert im.format == "PNG" and im.width >= 300 and im.height >= 300
        # the original bar (green) is drawn
        assert (74, 140, 92) in {px for _, px in im.convert("RGB").getcolors(100000)}
    md = (out / "report.md").read_text()
    assert "| original | 4.20 |" in md and "sfd1k" in md and "12.5" in md and "99" not in md.split("metrics")[-1]
    html = (out / "report.html").read_text()
    assert "<table>" in html and 'src="mos.png"' in html
    scores = json.loads((out / "scores.json").read_text())
    assert scores["metrics"] == [{"condition": "generated-net", "metric": "sfd1k", "key": "sfd1k", "value": 12.5,
                                  "snapshot": "network-snapshot-000010.pkl"}]
    assert res["failed_anchor"] == []


def test_failed_anchor_listeners_flagged_and_excluded(survey):
    folder, m = survey
    anchors = [c["id"] for c in m["clips"] if c["condition"] == "anchor"]
    orig = [c["id"] for c in m["clips"] if c["condition"] == "original"]
    write_sheet(folder / "responses", "a.json", sheet(m, "careful", {**{i: 1 for i in anchors}, **{i: 5 for i in orig}}))
    write_sheet(folder / "responses", "b.json", sheet(m, "careless", {**{i: 4 for i in anchors}, **{i: 2 for i in orig}}))
    res = score_survey([folder / "responses"], log=lambda s: None)
    assert res["failed_anchor"] == ["careless"] and "kept" in res["summary"]
    assert {r["condition"]: r["mos"] for r in res["conditions"]}["original"] == pytest.approx(3.5)
    res = score_survey([folder / "responses"], exclude_failed_anchors=True, log=lambda s: None)
    rows = {r["condition"]: r for r in res["conditions"]}
    assert rows["original"]["mos"] == 5 and rows["original"]["n"] == 4 and rows["anchor"]["mos"] == 1
    assert "excluded" in res["summary"]


def test_per_listener_normalisation(survey):
    folder, m = survey
    orig = [c["id"] for c in m["clips"] if c["condition"] == "original"]
    gen = [c["id"] for c in m["clips"] if c["condition"] == "generated-net"]
    # same judgement, one listener harsher by one point throughout
    write_sheet(folder / "responses", "a.json", sheet(m, "lenient", {**{i: 5 for i in orig}, **{i: 3 for i in gen}}))
    write_sheet(folder / "responses", "b.json", sheet(m, "harsh", {**{i: 4 for i in orig}, **{i: 2 for i in gen}}))
    raw = {r["condition"]: r for r in score_survey([folder / "responses"], log=lambda s: None)["conditions"]}
    norm = {r["condition"]: r for r in score_survey([folder / "responses"], normalise=True,
                                                    log=lambda s: None)["conditions"]}
    assert raw["original"]["mos"] == pytest.approx(norm["original"]["mos"]) == pytest.approx(4.5)
    assert raw["original"]["std"] > 0.5 and norm["original"]["std"] == pytest.approx(0.0, abs=1e-12)


def test_csv_sheets_duplicates_and_bad_files(survey):
    folder, m = survey
    resp = folder / "responses"
    resp.mkdir()
    orig = [c["id"] for c in m["clips"] if c["condition"] == "original"]
    with open(resp / "x1.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["survey_id", "listener", "seed", "clip", "rating", "listened_s", "plays", "comment"])
        for i in orig:
            w.writerow(["s1", "csv-listener", 5, i, 2, 1.0, 1, 'a "quoted", comment'])
    # a later file of the same listener overrides one answer
    write_sheet(resp, "x2.json", sheet(m, "csv-listener", {orig[0]: 5}))
    (resp / "x3.json").write_text("{broken")
    write_sheet(resp, "x4.json", dict(sheet(m, "other", {orig[0]: 1}), survey_id="another"))
    logs = []
    res = score_survey([resp], log=logs.append)
    assert {r["condition"]: r["mos"] for r in res["conditions"]}["original"] == pytest.approx((5 + 2 + 2 + 2) / 4)
    assert any("x3.json" in s for s in logs) and any("x4.json" in s and "survey_id" in s for s in logs)
    assert math.isnan({r["condition"]: r["mos"] for r in res["conditions"]}["anchor"])


def test_cli_scores_and_fails_cleanly(survey):
    folder, m = survey
    _answer_set(m, folder, listeners=5)
    r = CliRunner().invoke(cli, ["survey", "score", str(folder / "responses"), "--bootstrap", "500"])
    assert r.exit_code == 0, r.output
    assert "original" in r.output and "MOS 4.20" in r.output and "report.html" in r.output
    empty = folder / "empty"
    empty.mkdir()
    r = CliRunner().invoke(cli, ["survey", "score", str(empty), "--manifest", str(folder / "manifest.json")])
    assert r.exit_code != 0 and "no valid answers" in r.output
