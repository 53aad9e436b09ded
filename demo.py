"""`make demo`: the whole ElectroGAN pipeline on a tiny built-in example, on a CPU, without downloads.

0. the shipped network, when installed (pretrained:electro128): eight 8-bar loops and a 16-bar walk
   at its tempo and at 120 BPM, within the first seconds              -> demo-out/clips/shipped/index.html
1. synthesise techno loops at several tempos (audio_ext/core/synth.py)      -> demo-out/source/*.wav
2. build a spectrogram archive from them (dataset_tool_audio.py)         -> demo-out/stft.zip
3. train a tiny StyleGAN2 for a few minutes (train.py --cfg tiny)        -> demo-out/runs/.../network-snapshot-*.pkl
4. generate clips, spectrograms and a listening page (gen_audio.py)       -> demo-out/clips/index.html
5. compute an audio metric that needs no download (sfd1k)
6. full-length clips (R=1024, 23.78 s) of the source loops through the codec and the default
   decoder, next to the originals, on the same page                     -> demo-out/clips/full/
7. a small blind listening test made from them (audio_ext/survey)       -> demo-out/clips/survey/index.html

The parameters below are the demo's; each is also a flag (``python demo.py --help``), so the same
script scales up: a larger ``--resolution`` (clip = R x R samples: 64 -> 0.09 s, 512 -> 5.9 s), more
``--seconds`` of source per tempo, more ``--kimg``. ``--quick`` is a short version (3 tempi x 20 s, a few training steps) that tests run.
"""
from __future__ import annotations

import functools
import shutil
import time
from pathlib import Path

import click

# ---------------------------------------------------------------------------------------------- parameters
OUT = "demo-out"
TEMPI = (122, 126, 130, 134, 138)   # BPM of the synthetic source loops; all inside the 120..145 window
SECONDS = 60.0                      # seconds of audio per tempo
RESOLUTION = 64                     # image side R; hop R; a clip is R*R samples (0.093 s at 44.1 kHz)
STRIDE_BEATS = 1.0                  # beats between clip starts (the thesis: 8); 1 gives ~2 clips per second
KIMG = 1.0                          # training length, thousands of real images shown to D
SEEDS = "0-7"                       # clips to generate
METRIC = "sfd1k"                    # spectral-feature Frechet distance, no downloaded model
FULL_RESOLUTION = 1024              # stage 6: the thesis's clip, 1024 x 1024 samples = 23.78 s at 44.1 kHz
FULL_STRIDE_BEATS = 32.0            # beats between full-length clips (about 3 per 60 s loop)
SURVEY_CLIPS = 3                    # stage 7: rated clips per condition (original, round trip, anchor)
SHIPPED = "electro128"              # stage 0: the shipped network (docs/pretrained.md), played first
SHIPPED_OTHER_BPM = 120.0           # ... at its own tempo and at this one
QUICK = dict(tempi=(126, 130, 134), seconds=20.0, kimg=0.02, seeds="0-3", metric=None, full_resolution=256,
             survey_clips=1)
# ----------------------------------------------------------------------------------------------------------


class Skip(Exception):
    """A stage cannot run (a part of the pipeline is missing or an earlier stage was skipped)."""


def stage(title: str):
    """Decorator: print the stage's title and time, turn Skip into a clear message."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            click.echo(f"\n== {title}")
            t0 = time.time()
            try:
                result = fn(*args, **kwargs)
            except Skip as e:
                click.echo(f"   skipped: {e}")
                return None
            click.echo(f"   done in {time.time() - t0:.1f} s")
            return result
        return run
    return wrap


@stage("0. a network that has learned music: eight 8-bar loops and a 16-bar walk")
def shipped(out: Path, name: str, other_bpm: float):
    from audio_ext.generation.pretrained import PretrainedError, resolve_network
    try:
        resolve_network(f"pretrained:{name}")
    except PretrainedError as e:
        raise Skip(f"{e} (not shipped yet: `make pretrained` builds it)") from None
    from audio_ext.generation.page import write_page
    from audio_ext.generation.showcase import render_showcase
    folder = out / "clips" / "shipped"
    entries = render_showcase(f"pretrained:{name}", folder, other_bpm=other_bpm, log=lambda m: click.echo(f"   {m}"))
    page = write_page(folder, entries, title=f"ElectroGAN: pretrained:{name}",
                      run_info={"network": f"pretrained:{name} (docs/pretrained.md)"})
    click.echo(f"   {page}")
    return page


@stage("1. synthesise source loops")
def synthesise(source: Path, tempi, seconds: float) -> Path:
    import soundfile as sf

    from audio_ext.core.synth import techno_loop
    source.mkdir(parents=True, exist_ok=True)
    for i, bpm in enumerate(tempi):
        audio = techno_loop(float(bpm), seconds, sr=44100, seed=i, offset=0.05 * i)
        path = source / f"loop-{bpm:g}bpm.wav"
        sf.write(str(path), audio, 44100, subtype="PCM_16")
        click.echo(f"   {path} ({seconds:g} s at {bpm:g} BPM)")
    return source


def _run_cli(module_name: str, args) -> None:
    """Run a project command line in this process (click, no sys.exit); missing module -> Skip."""
    try:
        module = __import__(module_name)
    except ImportError as e:
        raise Skip(f"{module_name}.py is not available yet ({e})") from None
    try:
        module.main.main(args=[str(a) for a in args], standalone_mode=False)
    except click.ClickException as e:
        raise SystemExit(f"demo: {module_name}.py failed: {e.format_message()}") from None


@stage("2. build the spectrogram archive")
def build_archive(source, dest: Path, resolution: int, stride_beats: float) -> Path:
    if source is None:
        raise Skip("no source audio")
    if dest.exists():
        dest.unlink() if dest.is_file() else shutil.rmtree(dest)
    _run_cli("dataset_tool_audio", ["--source", source, "--dest", dest, "--resolution", resolution,
                                    "--stride-beats", stride_beats, "--no-progress"])
    if not dest.exists():
        raise SystemExit(f"demo: dataset_tool_audio.py wrote no archive at {dest}")
    return dest


@stage("3. train a tiny StyleGAN2 on the CPU")
def train(archive, runs: Path, kimg: float) -> Path:
    if archive is None:
        raise Skip("no archive")
    _run_cli("train", ["--outdir", runs, "--data", archive, "--cfg", "tiny", "--kimg", kimg, "--metrics", "none",
                       "--snap", 1000000, "--no-progress"])
    from stylegan2.snapshot import find_latest_snapshot
    snap = find_latest_snapshot(runs)
    if snap is None:
        raise SystemExit(f"demo: training wrote no snapshot under {runs}")
    click.echo(f"   snapshot: {snap}")
    return snap


@stage("4. generate clips and the listening page")
def generate(snapshot, outdir: Path, seeds: str):
    if snapshot is None:
        raise Skip("no snapshot")
    from audio_ext.core.seeds import parse_seeds
    from audio_ext.generation.generate import GenerateOptions
    from audio_ext.generation.generate import generate as run
    result = run(GenerateOptions(network=str(snapshot), outdir=str(outdir), seeds=parse_seeds(seeds), device="cpu"),
                 log=lambda msg: click.echo(f"   {msg}"))
    click.echo(f"   {len(result.audio)} clips in {outdir}")
    return result


@stage("5. an audio metric (no download)")
def metric(snapshot, archive, name):
    if name is None:
        raise Skip("not in --quick mode")
    if snapshot is None or archive is None:
        raise Skip("no snapshot or archive")
    try:
        from audio_ext.plugins import METRIC_MODULES
        from stylegan2.metrics.registry import calc_metric, is_valid_metric, load_plugins
        from stylegan2.snapshot import build_networks, load_snapshot
    except ImportError as e:
        raise Skip(f"the metric registry is not available yet ({e})") from None
    load_plugins(METRIC_MODULES)
    if not is_valid_metric(name):
        raise Skip(f"metric {name} is not registered")
    snap = load_snapshot(snapshot)
    G = build_networks(snap, names=["G_ema"])["G_ema"]
    result = calc_metric(name, G=G, dataset_kwargs=dict(path=str(archive)), audio=snap.get("audio"), device="cpu")
    for key, value in result["results"].items():
        click.echo(f"   {key} = {value:.4g}" if isinstance(value, float) else f"   {key} = {value}")
    return result


@stage("6. full-length clips through the codec and the default decoder")
def full_length(source, out: Path, resolution: int, stride_beats: float):
    if source is None:
        raise Skip("no source audio")
    from audio_ext.survey.roundtrip import write_pairs
    archive = out / "stft-full.zip"
    build_archive.__wrapped__(source, archive, resolution, stride_beats)
    entries = write_pairs(archive, source, out / "clips", per_source=1, log=lambda msg: click.echo(f"   {msg}"))
    click.echo(f"   {len(entries) // 2} original/round-trip pairs in {out / 'clips' / 'full'}")
    return archive, entries


@stage("7. a blind listening test made from them")
def listening_test(full, source, out: Path, clips: int):
    if full is None:
        raise Skip("no full-length archive")
    from audio_ext.survey.make import SurveyOptions, make_survey
    folder = out / "clips" / "survey"
    make_survey(SurveyOptions(outdir=str(folder), clips_per_condition=clips, seed=0, data=str(full[0]),
                              source=str(source), title="ElectroGAN demo: a blind listening test", overwrite=True),
                log=lambda msg: click.echo(f"   {msg}"))
    return folder


def write_demo_page(out: Path, result, snapshot, full, survey, shipped_page=None) -> Path:
    """The demo's page, ``clips/index.html``: the full-length pairs, then the generated clips, and a
    link to the listening test."""
    import re

    import soundfile as sf

    from audio_ext.generation.page import ClipEntry, write_page
    entries = list(full[1]) if full is not None else []
    if result is not None:
        for audio, image in zip(result.audio, result.images):
            m = re.match(r"seed(\d+)", audio.stem)
            seed = int(m.group(1)) if m else None
            entries.append(ClipEntry(title=f"generated, seed {seed}", audio=audio.name, image=image.name, seed=seed,
                                     truncation=1.0, snapshot=Path(snapshot).name, bpm=result.bpm,
                                     seconds=sf.info(str(audio)).duration, kind="generated clip (tiny network)"))
    links = [("Take the blind listening test", "survey/index.html")] if survey is not None else []
    if shipped_page is not None:
        links.insert(0, (f"Hear the shipped network pretrained:{SHIPPED}", "shipped/index.html"))
    info = {"full-length clips": "source loops and their round trip through the codec and the default decoder"}
    if snapshot is not None:
        info["generated"] = f"{Path(snapshot).name} (a tiny network trained for minutes: plumbing, not music)"
    return write_page(out / "clips", entries, title="ElectroGAN demo", run_info=info, links=links)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(path_type=Path), default=OUT, show_default=True, help="Working folder.")
@click.option("--tempi", default=",".join(f"{t:g}" for t in TEMPI), show_default=True, help="Source tempi, BPM.")
@click.option("--seconds", type=float, default=SECONDS, show_default=True, help="Seconds of source per tempo.")
@click.option("--resolution", type=int, default=RESOLUTION, show_default=True, help="Image side R (power of two).")
@click.option("--stride-beats", type=float, default=STRIDE_BEATS, show_default=True,
              help="Beats between consecutive clips in the archive.")
@click.option("--kimg", type=float, default=KIMG, show_default=True, help="Training length (kimg).")
@click.option("--seeds", default=SEEDS, show_default=True, help="Seeds to generate.")
@click.option("--metric", "metric_name", default=METRIC, show_default=True, help="Metric to compute ('none' to skip).")
@click.option("--full-resolution", type=int, default=FULL_RESOLUTION, show_default=True,
              help="Image side R of the full-length clips (stage 6).")
@click.option("--survey-clips", type=int, default=SURVEY_CLIPS, show_default=True,
              help="Rated clips per condition in the listening test (stage 7).")
@click.option("--quick", is_flag=True, help="A few minutes at most: 3 tempi x 20 s, 0.02 kimg, no metric, R=256 "
                                            "full-length clips, 1 clip per condition.")
def main(out, tempi, seconds, resolution, stride_beats, kimg, seeds, metric_name, full_resolution, survey_clips,
         quick):
    """Run the ElectroGAN pipeline end to end on synthetic techno (see the module docstring)."""
    tempi = tuple(float(t) for t in tempi.split(","))
    if quick:
        tempi, seconds, kimg, seeds, metric_name = (QUICK["tempi"], QUICK["seconds"], QUICK["kimg"], QUICK["seeds"],
                                                    QUICK["metric"])
        full_resolution, survey_clips = QUICK["full_resolution"], QUICK["survey_clips"]
    if metric_name in ("none", ""):
        metric_name = None
    t0 = time.time()
    click.echo(f"ElectroGAN demo in {out}: tempi {', '.join(f'{t:g}' for t in tempi)} BPM, {seconds:g} s each, "
               f"{resolution}x{resolution}, {kimg:g} kimg, seeds {seeds}")
    for sub in ("source", "stft.zip", "stft-full.zip", "runs", "clips"):  # start clean, but only inside our own folder
        p = out / sub
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    shipped_page = shipped(out, SHIPPED, SHIPPED_OTHER_BPM)
    source = synthesise(out / "source", tempi, seconds)
    archive = build_archive(source, out / "stft.zip", resolution, stride_beats)
    snapshot = train(archive, out / "runs", kimg)
    result = generate(snapshot, out / "clips", seeds)
    metric(snapshot, archive, metric_name)
    full = full_length(source, out, full_resolution, FULL_STRIDE_BEATS)
    survey = listening_test(full, source, out, survey_clips)
    page = write_demo_page(out, result, snapshot, full, survey, shipped_page) if (result or full) else None
    click.echo(f"\nDemo finished in {time.time() - t0:.0f} s.")
    if page is not None:
        click.echo(f"Listening page: {page.resolve()}")
        if survey is not None:
            click.echo(f"Listening test: {(survey / 'index.html').resolve()} "
                       f"(score answers with: python -m audio_ext survey score {survey / 'responses'})")
    else:
        click.echo("No listening page yet: a stage above was skipped.")
    return 0


if __name__ == "__main__":
    main()
