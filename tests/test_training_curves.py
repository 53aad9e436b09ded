"""`python -m audio_ext training-curves`: run folders -> one PNG (stylegan2/training_curves.py, line_chart.py)."""
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from audio_ext.__main__ import main
from audio_ext.generation.audio_projection import loss_curve_png
from stylegan2 import training_curves as tc
from stylegan2.line_chart import MARGINS, Series, draw_line_chart, linear_ticks, log_ticks

T0 = 1_800_000_000.0


def stat(v):
    return {"num": 8, "mean": v, "std": 0.0}


def write_run(folder, ticks, metrics=(), fakes=(), resolution=8, grid=(4, 2)):
    """A run folder as train.py leaves it. ``ticks``: (kimg, G loss, D loss, r1, pl, total_sec, timestamp);
    ``metrics``: (snapshot tag, sfd value, timestamp); ``fakes``: grid tags ("_init" or NNNNNN)."""
    folder.mkdir(parents=True)
    lines = [json.dumps({"Loss/G/loss": stat(g), "Loss/D/loss": stat(d), "Loss/r1_penalty": stat(r1),
                         "Loss/pl_penalty": stat(pl), "Progress/kimg": stat(k), "Timing/total_sec": stat(sec),
                         "timestamp": ts}) for k, g, d, r1, pl, sec, ts in ticks]
    (folder / "stats.jsonl").write_text("".join(line + "\n" for line in lines))
    (folder / "metric-sfd1k.jsonl").write_text("".join(
        json.dumps({"metric": "sfd1k", "key": "sfd1k", "higher_is_better": False, "results": {"sfd1k": v, "x": 1},
                    "snapshot_pkl": f"network-snapshot-{tag}.pkl", "timestamp": ts}) + "\n"
        for tag, v, ts in metrics))
    (folder / "training_options.json").write_text(json.dumps({"resolution": resolution}))
    size = (grid[0] * resolution, grid[1] * resolution)
    Image.new("L", size, 200).save(folder / "reals.png")
    for k, tag in enumerate(fakes):
        Image.new("L", size, 40 + 20 * k).save(folder / f"fakes{tag}.png")
    return folder


@pytest.fixture
def runs(tmp_path):
    """Run A (0.5..2.0 kimg) and run B resumed from A's snapshot at 1.5 kimg (1.5..2.5)."""
    a = write_run(tmp_path / "00000-a", [
        (0.5, 4.0, 0.5, 0.01, 0.4, 100.0, T0 + 100), (1.0, 3.0, 0.7, 0.02, 0.2, 200.0, T0 + 200),
        (1.5, 2.0, 0.9, 0.04, 0.1, 300.0, T0 + 300), (2.0, 1.5, 1.0, 0.08, 0.05, 400.0, T0 + 400)],
        metrics=[("000001", 20.0, T0 + 210), ("000002", 9.0, T0 + 410)], fakes=["_init", "000001", "000002"])
    b = write_run(tmp_path / "00001-b", [
        (1.5, 2.5, 0.8, 0.05, 0.12, 30.0, T0 + 1030), (2.0, 1.8, 0.95, 0.06, 0.06, 60.0, T0 + 1060),
        (2.5, 1.2, 1.1, 0.07, 0.03, 90.0, T0 + 1090)],
        metrics=[("000002", 12.0, T0 + 1065)], fakes=["000002"])
    return a, b


def test_resumed_run_replaces_the_earlier_folder_from_its_first_kimg(runs):
    a, b = runs
    for order in ((a, b), (b, a)):         # the folders are put in kimg order whatever the argument order
        curves = tc.load_curves(order)
        assert curves.run_dirs == [a, b]
        assert curves.kimg == [0.5, 1.0, 1.5, 2.0, 2.5]
        assert curves.series["Loss/G/loss"] == [4.0, 3.0, 2.5, 1.8, 1.2]
        assert curves.series["Loss/D/loss"] == [0.5, 0.7, 0.8, 0.95, 1.1]
        assert curves.series["Loss/pl_penalty"] == [0.4, 0.2, 0.12, 0.06, 0.03]
        # each folder's clock restarts: A's time up to its last kept tick (1.0 kimg) plus all of B's
        assert curves.total_sec == 200.0 + 90.0
        sfd = curves.metrics["sfd1k"]
        # A's 000001 was measured after the 1.0 tick; A's 000002 (2.0 kimg) is replaced by B's
        assert (sfd.kimg, sfd.values, sfd.higher_is_better) == ([1.0, 2.0], [20.0, 12.0], False)
        assert sfd.best() == (2.0, 12.0)
        assert [(k, label, p) for k, label, p in curves.fakes] == [
            (0.0, "init", a / "fakes_init.png"), (1.0, "1.0 kimg", a / "fakes000001.png"),
            (2.0, "2.0 kimg", b / "fakes000002.png")]
        assert curves.reals == b / "reals.png" and curves.resolution == 8


def test_snapshot_kimg_is_the_tick_it_was_written_at():
    ticks = [{"Progress/kimg": k, "timestamp": T0 + k} for k in (18.656, 19.16, 19.664, 20.168)]
    assert tc.snapshot_kimg("000019", ticks, T0 + 19.2) == 19.16
    assert tc.snapshot_kimg("000019", ticks, T0 + 25) == 19.664
    assert tc.snapshot_kimg("000019", ticks, None) == 19.0          # no time: the whole kimg of the name
    assert tc.snapshot_kimg("000020", ticks, T0 + 1) == 20.0        # no tick logged before it
    assert tc.snapshot_kimg("000012345", ticks, None) == 12.345     # 9 digits: the image count


def test_metric_best_follows_the_direction():
    up = tc.MetricCurve("pr", [1.0, 2.0, 3.0], [0.2, 0.7, math.nan], higher_is_better=True)
    down = tc.MetricCurve("fid", [1.0, 2.0, 3.0], [9.0, 4.0, 6.0], higher_is_better=False)
    assert up.best() == (2.0, 0.7) and down.best() == (2.0, 4.0)
    assert tc.MetricCurve("x", [1.0], [math.nan], False).best() is None


def test_a_statistic_of_fakes_and_reals_becomes_a_curve_nearest_the_reals_is_best(tmp_path, monkeypatch):
    run = write_run(tmp_path / "00000-r", [(1.0, 3.0, 0.7, 0.02, 0.2, 100.0, T0 + 100),
                                           (2.0, 2.0, 0.8, 0.03, 0.1, 200.0, T0 + 200),
                                           (3.0, 1.0, 0.9, 0.04, 0.1, 300.0, T0 + 300)])
    lines = [(f"00000{k}", 10.0 / k, gen, real, T0 + 100 * k + 10)
             for k, gen, real in ((1, 0.4, 1.0), (2, 0.9, 1.1), (3, 1.3, 1.0))]
    (run / "metric-sfd1k.jsonl").write_text("".join(json.dumps(
        {"metric": "sfd1k", "key": "sfd1k", "higher_is_better": False,
         "results": {"sfd1k": v, "onset_contrast_gen": gen, "onset_contrast_real": real, "lonely_gen": 5.0},
         "snapshot_pkl": f"network-snapshot-{tag}.pkl", "timestamp": ts}) + "\n" for tag, v, gen, real, ts in lines))
    curves = tc.load_curves([run])
    assert set(curves.metrics) == {"sfd1k", "sfd1k onset_contrast"}          # lonely_gen has no _real: no curve
    onset = curves.metrics["sfd1k onset_contrast"]
    assert (onset.kimg, onset.values, onset.reference) == ([1.0, 2.0, 3.0], [0.4, 0.9, 1.3], [1.0, 1.1, 1.0])
    assert onset.higher_is_better is None
    assert onset.best() == (2.0, 0.9)                # 0.9 / 1.1 is nearer 1 than 1.3 / 1.0 or 0.4 / 1.0
    assert curves.metrics["sfd1k"].best() == (3.0, 10.0 / 3)
    out = tmp_path / "curves.png"
    r = CliRunner().invoke(main, ["training-curves", str(run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "sfd1k best 3.333 at 3.0 kimg" in r.output and "onset_contrast best" not in r.output
    drawn = []
    real_chart = tc.draw_line_chart

    def recording_chart(draw, box, series, **kwargs):
        drawn.append((kwargs.get("title"), [(s.label, list(s.ys)) for s in series], box))
        return real_chart(draw, box, series, **kwargs)
    monkeypatch.setattr(tc, "draw_line_chart", recording_chart)
    tc.draw_curves(curves)
    title, series, box = drawn[-1]
    assert title == "sfd1k onset_contrast: fakes and reals"
    assert series == [("fakes", [0.4, 0.9, 1.3]), ("reals", [1.0, 1.1, 1.0])]
    assert box[1] == drawn[-2][2][1] and box[0] > drawn[-2][2][0]        # beside sfd1k's chart, in its row


def test_spread_pick_keeps_ends_and_spreads():
    items = [(float(k), str(k), None) for k in range(11)]
    assert [i[0] for i in tc.spread_pick(items, 3)] == [0.0, 5.0, 10.0]
    assert [i[0] for i in tc.spread_pick(items, 6)] == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert tc.spread_pick(items[:2], 6) == items[:2]


def test_ticks_are_round_values():
    assert linear_ticks(0.0, 10.0) == [0, 2, 4, 6, 8, 10]
    assert linear_ticks(0.13, 0.61, max_ticks=6) == [0.2, 0.3, 0.4, 0.5, 0.6]
    assert log_ticks(3e-5, 0.5) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert log_ticks(0.15, 3.0) == [0.2, 0.5, 1.0, 2.0]


def near(img, xy, colour, r=1):
    """True when a pixel within ``r`` of ``xy`` has exactly ``colour``."""
    x, y = round(xy[0]), round(xy[1])
    a = np.asarray(img)[y - r:y + r + 1, x - r:x + r + 1]
    return bool((a == np.array(colour)).all(axis=-1).any())


@pytest.mark.parametrize("log_y", [False, True])
def test_line_passes_through_the_data_points(log_y):
    img = Image.new("RGB", (500, 300), "white")
    colour = (10, 200, 30)
    xs, ys = [0.0, 1.0, 2.0, 3.0], [0.01, 0.5, 0.05, 2.0]
    axes = draw_line_chart(ImageDraw.Draw(img), (0, 0, 500, 300), [Series("s", xs, ys, colour)], log_y=log_y,
                           legend=False)
    assert axes.box == (MARGINS["left"], MARGINS["top"], 500 - MARGINS["right"], 300 - MARGINS["bottom"])
    for x, y in zip(xs, ys):
        assert near(img, axes.pixel(x, y), colour)
    # the ends of x are the edges of the plot area; a larger y is higher up
    assert axes.pixel(0.0, 1.0)[0] == axes.box[0] and axes.pixel(3.0, 1.0)[0] == axes.box[2]
    assert axes.pixel(1.0, 0.5)[1] < axes.pixel(2.0, 0.05)[1]
    # a flipped y would put the point at 0.5 where the line is not
    px, py = axes.pixel(1.0, 0.5)
    assert not near(img, (px, axes.box[1] + axes.box[3] - py), colour)


def test_log_axis_breaks_the_line_at_non_positive_values():
    img = Image.new("RGB", (400, 300), "white")
    colour = (250, 0, 250)
    axes = draw_line_chart(ImageDraw.Draw(img), (0, 0, 400, 300),
                           [Series("s", [0, 1, 2, 3, 4], [1.0, 2.0, 0.0, 2.0, 1.0], colour)], log_y=True, legend=False)
    # points 1 and 3 stand at the same height with no line between them where x = 2
    mid = axes.pixel(2.0, 2.0)
    assert near(img, axes.pixel(1.0, 2.0), colour) and near(img, axes.pixel(3.0, 2.0), colour)
    column = np.asarray(img)[axes.box[1] + 1:axes.box[3], round(mid[0])]
    assert not (column == np.array(colour)).all(axis=-1).any()


def colour_pixels(img, box, colour):
    a = np.asarray(img.crop(box))
    return int((a == np.array(colour)).all(axis=-1).sum())


def test_picture_has_every_panel(runs, tmp_path):
    a, b = runs
    out = tmp_path / "out" / "curves.png"
    res = CliRunner().invoke(main, ["training-curves", str(a), str(b), "--out", str(out), "--width", "1000"])
    assert res.exit_code == 0, res.output
    assert "5 ticks, 2.500 kimg, 0.08 h; sfd1k best 12 at 2.0 kimg" in res.output
    with Image.open(out) as im:
        img = im.convert("RGB")
    assert img.width == 1000
    assert img.height > 70 + 2 * 340          # title, two rows of charts, the strip of fakes
    # inside each plot area (below the title row, where the legend sits) the colours of its lines
    title_h, chart_h, margin, half = 70, 340, 16, (1000 - 32) // 2
    row1 = (title_h + MARGINS["top"] + 1, title_h + chart_h - MARGINS["bottom"])
    left = (margin + MARGINS["left"], row1[0], margin + half - MARGINS["right"], row1[1])
    right = (margin + half + MARGINS["left"], row1[0], 1000 - margin - MARGINS["right"], row1[1])
    for key, _, colour in tc.LOSSES:
        assert colour_pixels(img, left, colour) > 50 and colour_pixels(img, right, colour) == 0
    for key, _, colour in tc.REGULARISERS:
        assert colour_pixels(img, right, colour) > 50 and colour_pixels(img, left, colour) == 0
    metric = (margin + MARGINS["left"], title_h + chart_h + MARGINS["top"] + 1, 1000 - margin - MARGINS["right"],
              title_h + 2 * chart_h - MARGINS["bottom"])
    assert colour_pixels(img, metric, tc.METRIC_COLOUR) > 50
    # the strip: A's init and 1-kimg grids (grey 40, 60), B's 2-kimg grid (40: it replaced A's), the reals (200)
    row = np.asarray(img)[title_h + 2 * chart_h + 6 + 30 + 5]
    greys = [int(p[0]) for p in row if p[0] == p[1] == p[2] and p[0] in (40, 60, 80, 200)]
    assert [g for i, g in enumerate(greys) if i == 0 or g != greys[i - 1]] == [40, 60, 40, 200]


def test_replaces_an_existing_picture_only_on_success(runs, tmp_path):
    a, b = runs
    out = tmp_path / "curves.png"
    out.write_bytes(b"old picture")
    bad = write_run(tmp_path / "00002-bad", [(3.0, 1, 1, 1, 1, 1, T0)])
    with open(bad / "stats.jsonl", "a") as f:
        f.write("{not json\n{}\n")
    res = CliRunner().invoke(main, ["training-curves", str(a), str(bad), "--out", str(out)])
    assert res.exit_code != 0
    assert res.output.strip().splitlines()[-1] == (f"Error: {bad / 'stats.jsonl'}, line 2: not valid JSON "
                                                   f"(Expecting property name enclosed in double quotes at column 2)")
    assert out.read_bytes() == b"old picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000-a", "00001-b", "00002-bad", "curves.png"]
    res = CliRunner().invoke(main, ["training-curves", str(a), str(b), "--out", str(out)])
    assert res.exit_code == 0, res.output
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width == 1400


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "stats.jsonl").unlink(), "{run}: no stats.jsonl (not a run folder written by train.py)"),
    (lambda run: (run / "stats.jsonl").write_text('{"Loss/G/loss": {"mean": 1}}\n'),
     "{run}/stats.jsonl, line 1: no Progress/kimg (not a tick line of train.py)"),
    (lambda run: (run / "stats.jsonl").write_text('{"Progress/kimg": {"mean": 1}, "Loss/G/loss": {"mean": "x"}}\n'),
     "{run}/stats.jsonl, line 1: Loss/G/loss has no numeric mean"),
    (lambda run: (run / "stats.jsonl").write_text('[1, 2]\n'), "{run}/stats.jsonl, line 1: not a JSON object"),
    (lambda run: (run / "metric-fid50k.jsonl").write_text('{"results": {"fid50k": 3}}\n\n{"key": "fid50k"}\n'),
     "{run}/metric-fid50k.jsonl, line 3: no results object"),
    (lambda run: (run / "metric-fid50k.jsonl").write_text('{"key": "fid50k", "results": {"fid50k": null}}\n'),
     "{run}/metric-fid50k.jsonl, line 1: results.fid50k is not a number"),
])
def test_bad_folders_give_one_line_errors(tmp_path, damage, message):
    run = write_run(tmp_path / "run", [(0.5, 1, 1, 1, 1, 1, T0)])
    damage(run)
    out = tmp_path / "curves.png"
    res = CliRunner().invoke(main, ["training-curves", str(run), "--out", str(out)])
    assert res.exit_code == 1
    assert res.output == f"Error: {message.format(run=run)}\n"
    assert not out.exists()


def test_not_a_folder_and_no_ticks(tmp_path):
    res = CliRunner().invoke(main, ["training-curves", str(tmp_path / "nope"), "--out", str(tmp_path / "c.png")])
    assert res.exit_code == 1 and res.output == f"Error: {tmp_path / 'nope'}: not a folder\n"
    run = write_run(tmp_path / "run", [])
    res = CliRunner().invoke(main, ["training-curves", str(run), "--out", str(tmp_path / "c.png")])
    assert res.exit_code == 1 and res.output == f"Error: {run}: no ticks logged yet in stats.jsonl\n"


def test_a_line_still_being_written_is_skipped(runs):
    a, _ = runs
    with open(a / "stats.jsonl", "a") as f:
        f.write('{"Progress/kimg": {"mea')            # a live run in the middle of writing its next tick
    assert tc.load_curves([a]).kimg == [0.5, 1.0, 1.5, 2.0]


def test_projection_loss_curve(tmp_path):
    loss = [math.exp(-k / 20) + 0.05 for k in range(60)]
    distance = [0.5 * math.exp(-k / 30) + 0.01 for k in range(60)]
    path = tmp_path / "loss.png"
    loss_curve_png(path, loss, distance)
    with Image.open(path) as im:
        img = im.convert("RGB")
    assert img.size == (640, 360)
    a = np.asarray(img)
    for colour in ((0, 0, 0), (0, 0, 255)):
        ys, xs = np.nonzero((a == np.array(colour)).all(axis=-1) & (np.arange(360)[:, None] > MARGINS["top"]))
        # the line falls from left to right: its pixels in the left quarter sit higher than in the right quarter
        plot_l, plot_r = MARGINS["left"], 640 - MARGINS["right"]
        quarter = (plot_r - plot_l) / 4
        lefts, rights = ys[(xs > plot_l + 2) & (xs < plot_l + quarter)], ys[xs > plot_r - quarter]
        assert lefts.size and rights.size and lefts.mean() < rights.mean() - 50


def test_legend_never_covers_the_plot_area():
    colours = [(200, 0, 0), (0, 150, 0)]

    def chart(width):
        img = Image.new("RGB", (width, 300), "white")
        series = [Series(f"a rather long label {k}", [0, 1], [k, k + 1], c) for k, c in enumerate(colours)]
        axes = draw_line_chart(ImageDraw.Draw(img), (0, 0, width, 300), series, title="A title of some length")
        return np.asarray(img), axes

    for width in (900, 420):        # beside the title when it fits, else on a row of its own below it
        a, axes = chart(width)
        above = a[:axes.box[1]]
        for c in colours:
            assert (above == np.array(c)).all(axis=-1).any()
    assert chart(900)[1].box[1] == MARGINS["top"] and chart(420)[1].box[1] > MARGINS["top"]


def test_a_fifo_or_an_oversized_log_is_refused_before_reading(tmp_path, monkeypatch):
    import os
    run = write_run(tmp_path / "run", [(0.5, 1, 1, 1, 1, 1, T0)])
    out = tmp_path / "curves.png"
    (run / "stats.jsonl").unlink()
    os.mkfifo(run / "stats.jsonl")                    # would block a plain read forever
    res = CliRunner().invoke(main, ["training-curves", str(run), "--out", str(out)])
    assert res.exit_code == 1 and res.output == f"Error: {run}: no stats.jsonl (not a run folder written by train.py)\n"
    with pytest.raises(tc.CurvesError, match="is a FIFO \\(named pipe\\), not a log file"):
        tc.read_jsonl(run / "stats.jsonl")            # the reader itself never blocks on one either
    (run / "stats.jsonl").unlink()
    write_run(tmp_path / "big", [(0.5, 1, 1, 1, 1, 1, T0)])
    size = (tmp_path / "big" / "stats.jsonl").stat().st_size
    monkeypatch.setattr(tc, "MAX_LOG_BYTES", size - 1)
    res = CliRunner().invoke(main, ["training-curves", str(tmp_path / "big"), "--out", str(out)])
    assert res.exit_code == 1
    assert res.output == (f"Error: {tmp_path / 'big' / 'stats.jsonl'}: {size:,} bytes, over the {size - 1:,}-byte "
                          f"limit for a training log\n")
    assert not out.exists()


def test_a_grid_over_the_pixel_limit_is_left_out_of_the_strip_undecoded(runs, monkeypatch):
    a, _ = runs
    grid = a / "fakes000001.png"
    assert tc._thumbnail(grid, 8, 100) is not None
    with Image.open(grid) as im:
        monkeypatch.setattr(tc, "MAX_GRID_PIXELS", im.width * im.height - 1)
    monkeypatch.setattr(Image.Image, "convert", lambda *a, **k: pytest.fail("decoded a grid over the limit"))
    assert tc._thumbnail(grid, 8, 100) is None
