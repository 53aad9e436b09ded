"""The recipe of the shipped network: fetch freely licensed music, build the archive, train, export.

    python recipes/pretrained.py                       # electro128, as shipped (make pretrained)
    python recipes/pretrained.py --kimg 2000           # train longer (resumes the run in --work)
    python recipes/pretrained.py --synthetic 6 --resolution 32 --sample-rate 2218 --kimg 0.02 \\
        --work /tmp/w --export-dir /tmp/w/shipped     # the tiny-scale version the test suite runs

Each stage is skipped when its output exists, so an interrupted recipe is simply rerun: the music
is fetched once (sha256-checked, recipes/fetch_electro128_music.sh; not at all when WORK holds the
archive), the archive built once, and training resumes from the run's latest snapshot (``train.py
--resume``) until ``--kimg``, one run per rate of ``--lr-schedule``, or until sfd1k has not improved for
``--patience`` kimg; a fresh ``--work`` continues the training state committed with the repository
(``recipes/checkpoints/NAME-latest.pkl``: G, D, G_ema and both Adam states) when there is one. The
export takes ``best-snapshot.pkl`` (kept by ``--keep-best sfd1k``), else the latest snapshot, and
writes G_ema only (``python -m audio_ext export-pretrained``). Every seed is fixed (``--seed``);
see docs/pretrained.md for where the result is not bit-reproducible.
"""
from __future__ import annotations

import math
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET_BPM = 130.0
#: Training of electro128: the ``cpu128`` preset (``tiny`` widened to ~1 M generator parameters at R = 128),
#: the best snapshot kept by the spectral-feature distance.
TRAIN_FLAGS = ("--cfg", "cpu128", "--metrics", "sfd1k", "--keep-best", "sfd1k", "--preview-clips", "2")
#: Learning rate of G and D by training length, ``LR@KIMG,...,LR``: electro128 trained its first 73 kimg at the
#: preset's 0.002; sfd1k then swung between 3.2 and 4.0 for 50 kimg, and the continuation halves it to 0.001,
#: the rate of the thesis's best model (its Conf A).
LR_SCHEDULE = "0.002@73,0.001"
#: "More training stops helping": no new best sfd1k for this many kimg (``train.py --patience``).
PATIENCE_KIMG = 50.0


def parse_lr_schedule(text: str):
    """``"0.002@73,0.001"`` -> ``[(0.002, 73.0), (0.001, inf)]``: each rate holds until its kimg, the last one
    to the end; a one-line ValueError names what is wrong."""
    phases, parts = [], [p.strip() for p in text.split(",")]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        lr_text, at, until_text = part.partition("@")
        try:
            lr = float(lr_text)
            until = float(until_text) if at else math.inf
        except ValueError:
            raise ValueError(f"--lr-schedule {text!r}: {part!r} is not LR@KIMG (or a last LR alone)") from None
        if not (0 < lr < math.inf):
            raise ValueError(f"--lr-schedule {text!r}: learning rate {lr_text.strip()} is not a positive number")
        if last == bool(at):
            raise ValueError(f"--lr-schedule {text!r}: every rate but the last needs @KIMG, and the last has none")
        if phases and not until > phases[-1][1] or not until > 0:
            raise ValueError(f"--lr-schedule {text!r}: the kimg must grow from one rate to the next")
        phases.append((lr, until))
    return phases


def read_best_record(run_dir) -> dict:
    """The ``--keep-best`` record of ``run_dir/best.json`` (``train.py`` writes it), or {} when there is none or it
    is not a small JSON object with a finite ``kimg`` and ``value``."""
    import json
    path = None if run_dir is None else Path(run_dir) / "best.json"
    try:
        if path is None or not path.is_file() or path.stat().st_size > 2 ** 20:
            return {}
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    ok = isinstance(record, dict) and all(isinstance(record.get(k), (int, float)) and math.isfinite(record[k])
                                          for k in ("kimg", "value"))
    return record if ok else {}


def kimg_since_best(run_dir, done_nimg: int):
    """kimg trained since the ``--keep-best`` record in ``run_dir/best.json`` last improved (None: no record)."""
    record = read_best_record(run_dir)
    return done_nimg / 1000 - record["kimg"] if record else None


class StopRequest:
    """SIGTERM or SIGINT, noted instead of ending the recipe: the signal reaches ``train.py`` too (same process
    group: ``timeout``, Ctrl-C), which writes a stop snapshot; the recipe waits for it, trains no further phase
    and exports the best snapshot so far."""

    def __init__(self):
        self.signum = None

    def install(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._note)
        return self

    def _note(self, signum, frame) -> None:
        self.signum = signum


def run(cmd, log, stop=None) -> None:
    """Run one stage's command from the repository root; a failure stops the recipe with its exit code,
    except a stage ended by a stop request (``stop``), which the caller sees in ``stop.signum``."""
    log("$ " + " ".join(shlex.quote(str(c)) for c in cmd))
    with subprocess.Popen([str(c) for c in cmd], cwd=ROOT) as child:
        rc = child.wait()           # a noted signal interrupts nothing: the child is waited for
    if rc != 0 and not (stop is not None and stop.signum is not None):
        raise click.ClickException(f"stage failed (exit {rc}): {' '.join(str(c) for c in cmd[:3])} ...")


def synthetic_music(folder: Path, count: int, seconds: float, sample_rate: int) -> None:
    """``count`` deterministic techno loops (audio_ext.core.synth) at 124..136 BPM as WAV files: the
    stand-in for the fetched music in tests and offline trials."""
    import soundfile as sf

    from audio_ext.core.synth import techno_loop
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        bpm = 124.0 + 12.0 * i / max(count - 1, 1)
        y = techno_loop(bpm, seconds, sr=sample_rate, seed=i, offset=0.01 * i)
        tmp = folder / f"synth{i:02d}.wav.tmp"
        sf.write(tmp, y, sample_rate, subtype="PCM_16", format="WAV")
        tmp.replace(folder / f"synth{i:02d}.wav")


def latest_run(outdir: Path, desc: str):
    """The newest run folder of this recipe in ``outdir`` (named ``NNNNN-...-<desc>``), or None."""
    runs = sorted(p for p in outdir.glob(f"*-{desc}") if p.is_dir()) if outdir.is_dir() else []
    return runs[-1] if runs else None


def trained_nimg(outdir: Path) -> int:
    """Images seen by the newest snapshot in ``outdir`` (what ``--resume latest`` continues), 0 if none."""
    from stylegan2.snapshot import find_latest_snapshot, load_snapshot
    latest = find_latest_snapshot(outdir)
    return int(load_snapshot(latest).get("cur_nimg") or 0) if latest is not None else 0


def export_source(run_dir: Path):
    """``(snapshot to export, "")`` for the run folder ``run_dir``: its ``best-snapshot.pkl``, else (no metric
    was kept) its newest snapshot. ``(None, "keep: ...")`` when its ``best.json`` names a best snapshot that is
    not on this machine (a committed training state resumed elsewhere, and nothing since beat it): the
    existing export is that best and must not be replaced by a worse, later snapshot. ``(None, error)``
    when there is nothing to export."""
    best = run_dir / "best-snapshot.pkl"
    if best.is_file():
        return best, ""
    record = read_best_record(run_dir)
    if record.get("snapshot"):
        return None, (f"keep: the best {record.get('metric')} so far ({record.get('value'):.4g} at kimg "
                      f"{record.get('kimg')}, {record.get('snapshot')}) is not on this machine and nothing trained "
                      f"here beat it: the existing export is kept")
    snaps = sorted(run_dir.glob("network-snapshot-*.pkl"))
    return (snaps[-1], "") if snaps else (None, f"{run_dir}: no snapshot to export")


def state_kimg_since_best(path: Path):
    """(kimg the training state at ``path`` trained since its ``--keep-best`` record last improved, the record),
    or (None, {}) when it holds none."""
    from stylegan2.snapshot import load_snapshot
    state = load_snapshot(path)
    best = state.get("best") if isinstance(state.get("best"), dict) else {}
    if not isinstance(best.get("kimg"), (int, float)):
        return None, {}
    return int(state.get("cur_nimg") or 0) / 1000 - best["kimg"], best


def train(outdir: Path, archive: Path, name: str, kimg: float, seed: int, phases, patience: float, train_flags,
          checkpoint, log, stop: StopRequest) -> bool:
    """Train (or resume) phase by phase of the learning-rate schedule until ``kimg``, or until sfd1k has not
    improved for ``patience`` kimg; each phase is one ``train.py`` run (a new run folder). False when the
    committed state to start from is already past its patience: nothing is trained and nothing to export."""
    from stylegan2.snapshot import find_latest_snapshot
    for lr, until in phases:
        if stop.signum is not None:
            return True
        goal = min(until, kimg)
        done = trained_nimg(outdir)
        stale = kimg_since_best(latest_run(outdir, name), done)
        if stale is not None and stale >= patience:
            log(f"{outdir}: no new best sfd1k for {stale:g} kimg (--patience {patience:g}): more training "
                f"stopped helping at {done / 1000:g} kimg")
            return True
        if done >= goal * 1000:
            if goal >= kimg:
                log(f"{outdir}: already trained to {done / 1000:g} kimg")
                return True
            continue
        resume = ["--resume", "latest"] if find_latest_snapshot(outdir) is not None else []
        if not resume:
            start = Path(checkpoint) if checkpoint else ROOT / "recipes" / "checkpoints" / f"{name}-latest.pkl"
            if start.is_file():
                stale, best = state_kimg_since_best(start)
                if stale is not None and stale >= patience:
                    log(f"{start}: no new best {best.get('metric')} for {stale:g} kimg (--patience {patience:g}): "
                        f"more training stopped helping; nothing to train")
                    return False
                resume = ["--resume", start.resolve()]
                log(f"continuing the committed training state {start}")
        log(f"training to {goal:g} kimg at lr {lr:g}")
        run([sys.executable, "train.py", "--outdir", outdir, "--data", archive, *TRAIN_FLAGS, "--kimg", goal,
             "--glr", lr, "--dlr", lr, "--patience", patience, "--seed", seed, "--desc", name, "--no-progress",
             *resume, *train_flags], log, stop)
        if stop.signum is not None:
            log(f"stopped by signal {stop.signum}: no further training; exporting the best snapshot so far")
            return True
        if goal >= kimg:
            return True
    return True


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--work", default="pretrained-work", show_default=True, metavar="DIR",
              help="music, archive and runs go here")
@click.option("--name", default="electro128", show_default=True, help="shipped name (pretrained:NAME)")
@click.option("--synthetic", type=click.IntRange(min=1), default=None,
              help="use this many synthetic loops instead of fetching the music (tests, offline trials)")
@click.option("--synthetic-seconds", type=float, default=30.0, show_default=True)
@click.option("--resolution", type=int, default=128, show_default=True, help="R (pixels); n_fft = 2R")
@click.option("--hop", type=int, default=None, help="STFT hop [R]")
@click.option("--sample-rate", type=int, default=8775, show_default=True,
              help="Hz; at 8775 one R = 128, hop 128 clip is one bar at 130 BPM plus 21 ms")
@click.option("--kimg", type=float, default=1000.0, show_default=True, help="training length")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lr-schedule", default=LR_SCHEDULE, show_default=True, metavar="LR@KIMG,...,LR",
              help="learning rate of G and D by training length")
@click.option("--patience", type=click.FloatRange(min=0, min_open=True), default=PATIENCE_KIMG, show_default=True,
              metavar="KIMG", help="stop when sfd1k has not improved for this many kimg")
@click.option("--train-flag", "train_flags", multiple=True, metavar="FLAG",
              help="extra train.py flag (repeatable), e.g. --train-flag=--workers=0")
@click.option("--export-dir", default=None, metavar="DIR", help="where NAME.pt goes [audio_ext/generation/models]")
@click.option("--notes", default="", help="extra text for the exported file's provenance")
@click.option("--checkpoint", default=None, metavar="PKL",
              help="training snapshot to continue from while WORK holds no run yet "
                   "[recipes/checkpoints/NAME-latest.pkl when it exists]")
def main(work, name, synthetic, synthetic_seconds, resolution, hop, sample_rate, kimg, seed, lr_schedule, patience,
         train_flags, export_dir, notes, checkpoint):
    """Fetch, build, train and export the shipped network (each stage skipped when already done)."""
    log = lambda msg: click.echo(f"[recipe] {msg}", err=True)   # noqa: E731
    if checkpoint and not Path(checkpoint).is_file():
        raise click.ClickException(f"{checkpoint}: --checkpoint is not a file")
    try:
        phases = parse_lr_schedule(lr_schedule)
    except ValueError as e:
        raise click.ClickException(str(e))
    work = Path(work).resolve()
    music, archive, outdir = work / "music", work / f"{name}.zip", work / "runs"
    py = sys.executable

    if archive.exists():
        pass            # the music is only read to build the archive (a machine may be given the archive alone)
    elif synthetic:
        if not any(music.glob("synth*.wav")):
            synthetic_music(music, synthetic, synthetic_seconds, sample_rate=22050)
    else:
        run(["bash", ROOT / "recipes" / "fetch_electro128_music.sh", music], log)

    if not archive.exists():
        run([py, "dataset_tool_audio.py", "--source", music, "--dest", archive, "--resolution", resolution,
             "--hop", hop or resolution, "--sample-rate", sample_rate, "--target-bpm", TARGET_BPM,
             "--stride-beats", 1, "--min-bpm", 100, "--max-bpm", 165, "--no-progress"], log)
    else:
        log(f"{archive} exists: not rebuilt")

    if not train(outdir, archive, name, kimg, seed, phases, patience, train_flags, checkpoint, log,
                 StopRequest().install()):
        log(f"the shipped export ({export_dir or 'audio_ext/generation/models'}/{name}.pt) is the best "
            f"snapshot of that training: kept")
        return
    run_dir = latest_run(outdir, name)
    if run_dir is None:
        raise click.ClickException(f"{outdir}: training left no run folder")
    source, why = export_source(run_dir)
    if source is None:
        if why.startswith("keep:"):
            log(why[len("keep:"):].strip())
            return
        raise click.ClickException(why)
    provenance = f"recipes/pretrained.py, {'synthetic' if synthetic else 'fetched'} music, seed {seed}. {notes}"
    cmd = [py, "-m", "audio_ext", "export-pretrained", "--network", source, "--name", name, "--overwrite",
           "--notes", provenance.strip()]
    if export_dir:
        cmd += ["--outdir", export_dir]
    run(cmd, log)


if __name__ == "__main__":
    main()
