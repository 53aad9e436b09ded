"""The shipped network's model card, re-measured: against its training archive, rhythm, and speed.

For ``--network`` (default ``pretrained:electro128``) and its training archive ``--data``:

- **spectra** (``benchmarks/fakes_vs_reals.py``'s measures): the archive's reals are split into two
  seeded halves A and B of ``--num`` images; B, the trained ``G_ema``'s fakes and the fakes of an
  untrained generator of the same architecture (the control) are each compared with A: row-profile
  correlation, onset contrast (as a ratio to A's) and the spectral-feature distance SFD. B against A
  is the floor of halves drawn clip by clip. Those halves share audio (an archive cut with a stride shorter
  than a clip holds overlapping clips, and a track repeats its bars), so a second floor deals the tracks
  (the ``source`` of each clip in ``dataset.json``) into two halves ``--heldout-splits`` times: B is then
  music A does not contain, and the target compares the trained SFD with that floor (median over the splits);
- **FID and KID** on Inception pool3 features (``--detector``, default the offline Inception of
  ``stylegan2/metrics/offline_inception.py``), for the same four sets with ``--fid-num`` images each:
  the halves' floor, the trained network, the control. Small samples bias FID upward, so these
  numbers compare the three rows with each other, not with 50k-sample FIDs;
- **rhythm**: ``--seeds`` seeds (0, 1, ...) as in ``gen_audio.py`` (``RandomState(seed)`` latents,
  constant noise), each decoded and made an ``--bars``-bar loop at the archive's tempo; the share whose
  tracked tempo (``audio_ext.generation.metrics.detect_tempo``, folded by octaves) is within 2 % of the tempo. A
  clip of less than ``--bars`` whole bars becomes a seamless loop that is repeated, as ``gen_audio.py
  --loop`` and the demo do (``audio_ext.generation.loops.loop_to_bars``: a one-bar network's bar, eight times). Beside it, on the spectrogram images, the onset energy on the 16th-note grid: the share of
  the multi-band onset flux (``benchmarks/layer_control.py``'s onset pattern) that falls in the three
  frames nearest a 16th-note step boundary (chance: 3 / frames per step; compare with the reals'), and the correlation of the mean
  16-step pattern with the reals';
- **speed**: seconds per ``--bars``-bar loop (generator, decoding, looping; one seed at a time) on
  ``--threads`` CPU threads, the median over the seeds.

    python benchmarks/pretrained_card.py --data electro128.zip
    python benchmarks/pretrained_card.py --network runs/.../best-snapshot.pkl --data stft.zip --no-write

The table replaces the ``pretrained_card`` section of docs/benchmarks.md and of the model card,
docs/pretrained.md (``--doc`` other files).
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fakes_vs_reals import compare, generate  # noqa: E402
from benchmarks.layer_control import frames_per_step, onset_pattern, step_pattern  # noqa: E402
from benchmarks.report import DOC, markdown_table, write_section  # noqa: E402

#: The issue's targets, shown beside the measurements.
TARGETS = dict(profile_corr=0.99, onset_ratio=0.9, sfd_floor_ratio=2.0, tempo_share=0.8, seconds_per_loop=0.5)
TEMPO_TOLERANCE = 0.02


def split_reals(dataset, num: int, seed: int):
    """Two disjoint seeded halves of the archive, ``min(num, len // 2)`` uint8 images [N, R, R] each."""
    n = min(num, len(dataset) // 2)
    if n < 2:
        raise click.ClickException(f"the archive has {len(dataset)} images; the halves need at least 4")
    order = np.random.default_rng(seed).permutation(len(dataset))
    pick = lambda idx: np.stack([dataset[int(i)][0][0] for i in sorted(idx)])   # noqa: E731
    return pick(order[:n]), pick(order[n:2 * n])


def clip_sources(dataset):
    """The source track of every image of ``dataset`` from its ``dataset.json`` clip records, or None when the
    archive does not record them for every image."""
    records = dataset.clips
    if not isinstance(records, list):
        return None
    by_file = {r.get("file"): r.get("source") for r in records if isinstance(r, dict)}
    sources = [by_file.get(dataset.get_details(i)["fname"]) for i in range(len(dataset))]
    return sources if all(isinstance(src, str) and src for src in sources) else None


def track_splits(sources, num: int, seed: int, splits: int):
    """``splits`` seeded pairs of index arrays (A, B) that share no track: the tracks are shuffled and dealt to
    whichever half holds fewer clips, then ``min(num, smaller half)`` clips are drawn from each. Empty when
    there are fewer than two tracks."""
    by_track: Dict[str, list] = {}
    for i, src in enumerate(sources):
        by_track.setdefault(src, []).append(i)
    tracks = sorted(by_track)
    if len(tracks) < 2:
        return []
    out = []
    for k in range(splits):
        rng = np.random.default_rng([seed, k])
        half_a, half_b = [], []
        for t in rng.permutation(len(tracks)):
            (half_a if len(half_a) <= len(half_b) else half_b).extend(by_track[tracks[t]])
        n = min(num, len(half_a), len(half_b))
        out.append((np.sort(rng.permutation(half_a)[:n]), np.sort(rng.permutation(half_b)[:n])))
    return out


def heldout_floor(real_feats: np.ndarray, splits, fake_feats: Dict[str, np.ndarray], onset_col: int):
    """Per split: SFD of half B and of each fake set against half A (the floor when the halves share no track),
    and onset contrast as a ratio to A's. Rows ``[split, n, floor SFD, {name: SFD}, B onset ratio,
    {name: onset ratio}]``."""
    from audio_ext.generation.metrics import standardized_frechet_distance
    rows = []
    for k, (ia, ib) in enumerate(splits):
        fa, fb = real_feats[ia], real_feats[ib]
        mu_a, sig_a = fa.mean(0), np.cov(fa, rowvar=False)
        sfd = lambda f: float(standardized_frechet_distance(mu_a, sig_a, f.mean(0), np.cov(f, rowvar=False)))  # noqa: E731
        onset_a = float(fa[:, onset_col].mean())
        rows.append([k, len(ia), sfd(fb), {name: sfd(f) for name, f in fake_feats.items()},
                     float(fb[:, onset_col].mean()) / onset_a,
                     {name: float(f[:, onset_col].mean()) / onset_a for name, f in fake_feats.items()}])
    return rows


def grid_share(images: np.ndarray, per_step: float) -> float:
    """Share of the onset flux of uint8 images [N, R, R] in the three frames nearest each 16th-note boundary
    (within 1.5 frames: the step length is rarely a whole number of frames, e.g. 7.91 for electro128)."""
    env = onset_pattern(torch.from_numpy(images[:, None]).float()).double()   # [N, R - 1], rise into frame t + 1
    frames = torch.arange(1, env.shape[-1] + 1, dtype=torch.float64)
    dist = torch.remainder(frames, per_step)
    on = torch.minimum(dist, per_step - dist) < 1.5      # the boundary's nearest three frames (steps of ~7.91)
    total = float(env.sum())
    return float(env[:, on].sum()) / total if total > 0 else float("nan")


def mean_steps(images: np.ndarray, per_step: float) -> np.ndarray:
    """The mean 16th-note step pattern of uint8 images [N, R, R], normalised to sum 1."""
    env = onset_pattern(torch.from_numpy(images[:, None]).float()).double()
    steps = step_pattern(env, per_step).mean(0).numpy()
    return steps / steps.sum() if steps.sum() > 0 else steps


def bar_loop(audio: np.ndarray, sr: int, bpm: float, bars: int) -> np.ndarray:
    """A ``bars``-bar loop as ``gen_audio.py --loop`` and the demo make it (``loops.loop_to_bars``, 20 ms
    crossfade): cut from the clip when it holds that many bars, else its whole-bar loop repeated."""
    from audio_ext.generation import loops
    return loops.loop_to_bars(audio, sr, bpm, bars, crossfade_s=0.02).audio


def rhythm(G, block: dict, seeds: int, bars: int, threads: int) -> Dict[str, object]:
    """Tempo share, median tempo and seconds per loop over ``seeds`` seeds, one at a time."""
    from audio_ext.generation.metrics import detect_tempo, fold_tempo
    from audio_ext.generation.synthesis import decode_images, seed_latents, synthesize
    bpm, sr = float(block["target_bpm"]), int(block["sample_rate"])
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    tempi, seconds = [], []
    try:
        for s in range(seeds):
            t0 = time.perf_counter()
            z = torch.from_numpy(seed_latents([s], G.z_dim))
            img = synthesize(G, z, torch.zeros([1, G.c_dim]), 1.0, "const", torch.device("cpu"))  # as gen_audio.py
            audio = decode_images(img, block, None, None, torch.device("cpu"), seed=s)[0]
            loop = bar_loop(audio, sr, bpm, bars)
            seconds.append(time.perf_counter() - t0)
            tempi.append(fold_tempo(detect_tempo(loop, sr), bpm))
    finally:
        torch.set_num_threads(old)
    tempi = np.asarray(tempi)
    hits = np.abs(tempi - bpm) <= TEMPO_TOLERANCE * bpm
    finite = tempi[np.isfinite(tempi)]
    return dict(share=float(hits.mean()), median_bpm=float(np.median(finite)) if finite.size else float("nan"),
                seconds=float(statistics.median(seconds)), loop_seconds=len(loop) / sr)


def inception_features(det, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """Pool features [N, D] (float64) of uint8 images [N, R, R] from the detector ``det``."""
    x = torch.from_numpy(images[:, None])
    return np.concatenate([det.features(x[i:i + batch]).double().numpy() for i in range(0, len(x), batch)])


def fid_between(f: np.ndarray, ref: np.ndarray) -> float:
    """FID of features ``f`` against ``ref`` (population covariances, as StyleGAN2-ADA's metric)."""
    from stylegan2.metrics.frechet import frechet_distance
    return float(frechet_distance(f.mean(0), np.cov(f, rowvar=False, bias=True), ref.mean(0),
                                  np.cov(ref, rowvar=False, bias=True)))


def inception_rows(sets: Dict[str, np.ndarray], det):
    """FID and KID of every set against the first on the detector's features, and the features themselves."""
    from stylegan2.metrics.kernel_distance import kernel_inception_distance
    feats = {name: inception_features(det, images) for name, images in sets.items()}
    ref = feats[next(iter(sets))]
    out = {name: (fid_between(f, ref), float(kernel_inception_distance(ref, f, num_subsets=100, max_subset_size=1000,
                                                                        seed=0)))
           for name, f in list(feats.items())[1:]}
    return out, feats


NO_HELDOUT = ("No held-out-track floor: the archive's dataset.json does not name a source track for every clip "
              "(or names only one).")


def heldout_table(ds, sets: Dict[str, np.ndarray], trained: str, control: str, num: int, seed: int, splits: int,
                  det=None, fid_feats: Optional[Dict[str, np.ndarray]] = None):
    """The floor set by halves that share no track, against the trained and control fakes: ``{"ratio": median
    over the splits of trained SFD / floor, "text": markdown}``, or None when the archive does not name its
    clips' tracks. With a detector ``det`` and the fakes' Inception features ``fid_feats`` ({name: [k, D]}), FID
    of B and of the trained fakes against A's first k clips as well."""
    from audio_ext.generation.metrics import feature_names, spectral_features
    sources = clip_sources(ds) if splits else None
    pairs = track_splits(sources, num, seed, splits) if sources else []
    if not pairs:
        return None
    needed = np.unique(np.concatenate([np.concatenate(p) for p in pairs]))
    row_of = {int(i): r for r, i in enumerate(needed)}
    real = np.concatenate([spectral_features(np.stack([ds[int(i)][0][0] for i in needed[b:b + 256]])[:, None],
                                             ds.audio) for b in range(0, len(needed), 256)])
    fakes = {name: spectral_features(sets[name][:, None], ds.audio) for name in (trained, control)}
    onset_col = feature_names(ds.audio).index("onset_contrast")
    rows = heldout_floor(real, [(np.array([row_of[int(i)] for i in a]), np.array([row_of[int(i)] for i in b]))
                                for a, b in pairs], fakes, onset_col)
    fids = []
    if det is not None and fid_feats:
        k = min([len(fid_feats[trained])] + [len(a) for a, _ in pairs])
        for a, b in pairs:
            fa, fb = (inception_features(det, np.stack([ds[int(i)][0][0] for i in idx[:k]])) for idx in (a, b))
            fids.append((fid_between(fb, fa), fid_between(fid_feats[trained][:k], fa)))
    mean = lambda values: float(np.mean(values))   # noqa: E731
    floor, ours, ctrl = mean([r[2] for r in rows]), mean([r[3][trained] for r in rows]), mean([r[3][control] for r in rows])
    ratio = float(np.median([r[3][trained] / r[2] for r in rows]))
    header = ["split", "clips per half", "SFD B vs A (floor)", "SFD trained vs A", "trained / floor",
              "SFD control vs A", "onset contrast B / A", "trained / A"]
    body = [[f"{r[0]}", r[1], r[2], r[3][trained], r[3][trained] / r[2], r[3][control], r[4], r[5][trained]]
            for r in rows]
    body.append(["mean", "", floor, ours, ours / floor, ctrl, mean([r[4] for r in rows]),
                  mean([r[5][trained] for r in rows])])
    if fids:
        header += [f"FID B vs A ({k} vs {k})", "FID trained vs A"]
        for line, (fid_b, fid_t) in zip(body, fids):
            line += [fid_b, fid_t]
        body[-1] += [mean([f[0] for f in fids]), mean([f[1] for f in fids])]
    table = markdown_table(header, body)
    text = (f"Floor by held-out tracks: the clip-random halves above share audio (a clip overlaps its neighbours "
            f"when the archive's stride is shorter than a clip, and a track repeats its bars), so B is close to a "
            f"copy of A. Here the {len(set(sources))} tracks are dealt at random into two halves of about equal "
            f"clips ({len(pairs)} seeded splits); B is music the reference A does not contain, the distance a "
            f"generator of new music in the same style would be measured against. Median over the splits of "
            f"trained SFD / floor (the median, since one split can deal very unlike tracks to the two halves): "
            f"{ratio:.2f}." + (f" FID: the first {k} clips of each half, and the first {k} of the fakes above."
                                if fids else "") + f"\n\n{table}")
    return dict(ratio=ratio, text=text)


@click.command()
@click.option("--network", default="pretrained:electro128", show_default=True,
              help="Shipped network (pretrained:NAME) or snapshot with an audio block.")
@click.option("--data", required=True, help="The archive it was trained on.")
@click.option("--num", type=click.IntRange(min=4), default=1000, show_default=True,
              help="Images per set for the spectral measures (each half of the reals).")
@click.option("--fid-num", type=click.IntRange(min=2), default=200, show_default=True,
              help="Images per set for FID/KID (0 < n <= --num).")
@click.option("--detector", default="offline", show_default=True, help="Inception source (calc_metrics.py --detector).")
@click.option("--seeds", type=click.IntRange(min=1), default=64, show_default=True, help="Seeds for rhythm and speed.")
@click.option("--bars", type=click.IntRange(min=1), default=8, show_default=True, help="Bars per loop.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True, help="CPU threads for speed.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the halves, the fakes and the control.")
@click.option("--heldout-splits", type=click.IntRange(min=0), default=5, show_default=True,
              help="Seeded splits of the tracks into two halves for the held-out-track floor (0: none).")
@click.option("--doc", multiple=True, default=(str(DOC), str(DOC.parent / "pretrained.md")), show_default=True,
              help="Markdown file whose pretrained_card section is replaced (repeatable): the benchmarks page "
                   "and the model card.")
@click.option("--no-write", is_flag=True, help="Print only.")
def main(network, data, num, fid_num, detector, seeds, bars, threads, seed, heldout_splits, doc, no_write):
    from audio_ext.generation.pretrained import resolve_network
    from stylegan2.dataset import ImageFolderDataset
    from stylegan2.networks import Generator
    from stylegan2.snapshot import build_networks, load_snapshot
    snap = load_snapshot(resolve_network(network))
    block = snap.get("audio")
    if not isinstance(block, dict) or not block.get("target_bpm"):
        raise click.ClickException(f"{network}: no audio block with a target_bpm")
    G = build_networks(snap, names=["G_ema"])["G_ema"].eval()
    torch.manual_seed(seed)
    G0 = Generator(**G.init_kwargs).eval().requires_grad_(False)
    ds = ImageFolderDataset(data)
    if ds.audio is None or list(ds.image_shape) != [1, G.img_resolution, G.img_resolution]:
        raise click.ClickException(f"--data {data}: not an archive of {G.img_resolution} x {G.img_resolution} "
                                   f"spectrograms with an audio block")
    t0 = time.time()
    log = lambda what: click.echo(f"[card] {what} ({time.time() - t0:.0f} s)", err=True)   # noqa: E731
    reals_a, reals_b = split_reals(ds, num, seed)
    n = len(reals_a)
    kimg = (snap.get("pretrained") or {}).get("kimg", snap.get("cur_nimg", 0) / 1000)
    trained, control = f"trained ({kimg:g} kimg)", "untrained control"
    sets = {"reals A": reals_a, "reals B (floor)": reals_b, trained: generate(G, n, seed),
            control: generate(G0, n, seed)}
    log("images ready")
    summary, _, _ = compare(sets, ds.audio)
    log("spectral features")
    by = {row[0]: row for row in summary}
    onset_a = by["reals A"][6]
    floor_sfd = by["reals B (floor)"][8]

    from stylegan2.metrics.detector import load_detector
    det = load_detector(detector)
    det_name = f"{det.name} ({det.identity[:19]})"
    k = min(fid_num, n)
    fid, fid_feats = inception_rows({name: images[:k] for name, images in sets.items()}, det)
    log("FID/KID")
    heldout = heldout_table(ds, sets, trained, control, num, seed, heldout_splits, det, fid_feats)
    log("held-out-track floor")
    per_step = frames_per_step(block, int(G.img_resolution))
    steps_a = mean_steps(reals_a, per_step)
    rhythm_g = rhythm(G, block, seeds, bars, threads)
    rhythm_0 = rhythm(G0, block, min(seeds, 16), bars, threads)
    log("rhythm")

    rows = []
    for name in list(sets)[1:]:
        row = by[name]
        steps = mean_steps(sets[name], per_step)
        corr = float(np.corrcoef(steps, steps_a)[0, 1]) if len(steps) > 1 and steps.std() > 0 else float("nan")
        r = rhythm_g if name == trained else rhythm_0 if name == control else None
        rows.append([name, row[3], row[6] / onset_a, row[8], row[8] / floor_sfd if floor_sfd > 0 else float("nan"),
                     fid[name][0], fid[name][1] * 1e3, grid_share(sets[name], per_step), corr,
                     r["share"] if r else "–", r["median_bpm"] if r else "–", r["seconds"] if r else "–"])
    header = ["images", "row-profile corr.", "onset contrast / reals'", "SFD vs reals A", "SFD / floor",
              f"FID ({k} vs {k})", "KID ×10³", "onset on 16th grid", "16-step pattern corr.",
              f"tempo within 2 % ({bars}-bar loops)", "median tempo", f"s per {bars}-bar loop"]
    rows.insert(0, ["reals A (reference)", 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, grid_share(reals_a, per_step), 1.0,
                    "–", "–", "–"])
    table = markdown_table(header, rows)
    g = by[trained]
    checks = markdown_table(["target", "wanted", "measured", "met"], [
        ["row-profile correlation", f"≥ {TARGETS['profile_corr']}", g[3], g[3] >= TARGETS["profile_corr"]],
        ["onset contrast vs reals'", f"≥ {TARGETS['onset_ratio']}", g[6] / onset_a,
         g[6] / onset_a >= TARGETS["onset_ratio"]],
        *([["SFD vs floor of halves from different tracks (median of splits)", f"≤ {TARGETS['sfd_floor_ratio']}×",
            heldout["ratio"], heldout["ratio"] <= TARGETS["sfd_floor_ratio"]]] if heldout else []),
        ["SFD vs floor of clip-random halves (they share audio)", "reported" if heldout else
         f"≤ {TARGETS['sfd_floor_ratio']}×", g[8] / floor_sfd if floor_sfd else float("nan"),
         "–" if heldout else bool(floor_sfd) and g[8] / floor_sfd <= TARGETS["sfd_floor_ratio"]],
        [f"tempo within 2 % of {block['target_bpm']:g} BPM", f"≥ {TARGETS['tempo_share']:.0%}", rhythm_g["share"],
         rhythm_g["share"] >= TARGETS["tempo_share"]],
        [f"seconds per {bars}-bar loop ({threads} threads)", f"≤ {TARGETS['seconds_per_loop']}", rhythm_g["seconds"],
         rhythm_g["seconds"] <= TARGETS["seconds_per_loop"]],
    ])
    print(table + "\n\n" + (heldout["text"] if heldout else NO_HELDOUT) + "\n\n" + checks)
    if not no_write:
        body = (f"`benchmarks/pretrained_card.py --num {num} --fid-num {fid_num} --seeds {seeds} --bars {bars} "
                f"--threads {threads}` on `{network}` against `{Path(data).name}` ({len(ds)} clips; resolution "
                f"{block['resolution']}, hop {block['hop_length']}, {block['sample_rate']} Hz, "
                f"{block['target_bpm']:g} BPM). Reals A and B: two disjoint seeded halves of {n} clips; every row "
                f"is measured against A, and B against A is the floor. FID/KID: {det_name}, {k} images per set "
                f"(small samples: compare the rows, not with 50k FIDs). Rhythm: {seeds} seeds (the control: "
                f"{min(seeds, 16)}) decoded and looped to {bars} bars ({rhythm_g['loop_seconds']:.1f} s); onset on "
                f"the 16th grid: share of onset flux in the three frames nearest a step boundary ({per_step:.2f} frames "
                f"per step; chance {min(1.0, 3 / per_step):.2f}).\n\n{table}\n\n"
                f"{heldout['text'] if heldout else NO_HELDOUT}\n\nTargets (issue 19):\n\n{checks}")
        for path in doc:
            write_section("pretrained_card", f"Shipped network card: {network}", body, doc=Path(path))


if __name__ == "__main__":
    main()
