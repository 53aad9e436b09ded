"""Re-run every example of docs/generation.md on a network and write its real output into the doc.

Each example is a few command lines exactly as a user types them (``python gen_audio.py --network
pretrained:electro128 --seeds 0-3 --outdir seeds``). They run one after another as subprocesses in a
temporary folder (the projection target is linked there under its own name, so the command line
names only the file); each one's transcript -- the command, its output (stdout and stderr as they
interleave), ``[exit N]`` and the files it wrote -- replaces the example's section
``<!-- begin example-NAME -->`` ... ``<!-- end example-NAME -->`` of the doc, with a few numbers
read back from the files (samples per loop, the projection's distances) and, where a picture says
more, a PNG copied to ``docs/img/electro128-*.png`` (the prefix is ``--img-prefix``). Last,
``benchmarks/layer_control.py`` replaces the ``layer_control`` section with its table.

Nothing is written until every command has succeeded: a command that exits non-zero stops the run
with one line naming the example, the command and the tail of its output, and the doc and the
pictures stay as they were. The doc is rewritten through a temporary file and a rename.

    python benchmarks/generation_examples.py                       # pretrained:electro128, the devset track
    python benchmarks/generation_examples.py --target mytrack.flac --start 60 --keep out/

The projection target defaults to ``dv05_warzone_artifact_beacon.flac`` of the development set
(``$ELECTROGAN_DEVSET`` or ``devset/`` beside the checkout, see docs/references.md); ``--target-dir``
names another folder holding it, ``--target`` any track.
"""
from __future__ import annotations

import datetime
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import click
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import replace_section, section_pattern  # noqa: E402

DOC = ROOT / "docs" / "generation.md"
IMG_DIR = ROOT / "docs" / "img"
#: The held-out devset track the projection examples use (not in electro128's training music).
DEFAULT_TARGET = "dv05_warzone_artifact_beacon.flac"
#: Listed files of one output folder beyond which the listing is cut (the style-mixing grid writes 40).
MAX_LISTED = 20


@dataclass
class Example:
    """One example of the doc: its section name, command lines (argv after ``python``) and what to add.

    ``notes(work)`` returns markdown lines placed under the transcript (numbers read back from the
    files); ``picture(work)`` returns ``(PIL image, file suffix, alt text)`` or None.
    """
    name: str
    commands: List[List[str]]
    notes: Optional[Callable[[Path], List[str]]] = None
    picture: Optional[Callable[[Path], tuple]] = None
    transcripts: List[str] = field(default_factory=list)


class ExampleFailed(click.ClickException):
    """A command of an example exited non-zero; the doc is left alone."""


def outdir_of(argv: List[str]) -> Optional[str]:
    return argv[argv.index("--outdir") + 1] if "--outdir" in argv else None


def listing(folder: Path) -> List[str]:
    """The files under ``folder`` (relative, sorted), cut after ``MAX_LISTED`` with a count."""
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    if len(files) > MAX_LISTED:
        return files[:MAX_LISTED - 4] + [f"... ({len(files)} files)"]
    return files


def run_command(argv: List[str], work: Path, example: str) -> str:
    """Run ``python argv`` in ``work``; the transcript, or :class:`ExampleFailed` naming the command."""
    shown = "python " + shlex.join(argv)
    script = ROOT / argv[0]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, str(script), *argv[1:]], cwd=work, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.rstrip("\n")
    if proc.returncode != 0:
        tail = " | ".join(out.splitlines()[-3:]) or "no output"
        raise ExampleFailed(f"example {example}: `{shown}` exited with {proc.returncode}: {tail}")
    lines = [f"$ {shown}", *(out.splitlines() if out else []), f"[exit {proc.returncode}]"]
    folder = outdir_of(argv)
    if folder is not None:
        lines += listing(work / folder)
    return "\n".join(lines)


def audio_samples(path: Path) -> int:
    import soundfile as sf
    return sf.info(str(path)).frames


def seconds(n: int, sr: int) -> str:
    return f"{n / sr:.2f} s"


def tile(images, gap: int = 2, scale: int = 1):
    """Greyscale images side by side with ``gap`` white columns between them, enlarged ``scale`` x."""
    from PIL import Image
    h = max(im.height for im in images)
    out = Image.new("L", (sum(im.width for im in images) + gap * (len(images) - 1), h), 255)
    x = 0
    for im in images:
        out.paste(im.convert("L"), (x, 0))
        x += im.width + gap
    return out.resize((out.width * scale, out.height * scale), Image.NEAREST) if scale > 1 else out


def open_png(path: Path):
    from PIL import Image
    with Image.open(path) as im:
        return im.convert("L").copy()


def reanalysed(path: Path, block: dict, starts: List[int]):
    """Windows of one clip length of a WAV, from each sample of ``starts``, through the network's own STFT
    and statistics, side by side."""
    import soundfile as sf
    from PIL import Image

    from audio_ext.core.codec import encode
    from audio_ext.core.geometry import StftGeometry
    geometry = StftGeometry.from_dict(block)
    audio, _ = sf.read(str(path), dtype="float32")
    n = geometry.clip_samples
    windows = np.stack([audio[k:k + n] for k in starts])
    images = encode(windows, geometry, float(block["mean"]), float(block["std"]))
    return tile([Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in images])


def build_examples(network: str, target_name: str, start: float, steps: int, block: dict) -> List[Example]:
    """The examples of docs/generation.md, in the order of the doc."""
    from audio_ext.generation.loops import bars_to_samples
    sr, bpm = int(block["sample_rate"]), float(block["target_bpm"])
    bar = bars_to_samples(1, sr, bpm)
    loop_alt = (f"seed0000-loop8bar-{bpm:g}bpm.wav re-analysed with the network's STFT from 0 s and from "
                f"{bar / sr:.3f} s, one bar later: the bar and its repeat")
    gen = ["gen_audio.py", "--network", network]

    def loop_notes(work):
        files = sorted((work / "loops").glob("*.wav"))
        counts = sorted({audio_samples(f) for f in files})
        want = bars_to_samples(8, sr, bpm)
        return [f"Each of the {len(files)} files has {', '.join(f'{c:,}' for c in counts)} samples "
                f"({seconds(counts[0], sr)}): 8 bars x 4 beats x 60/{bpm:g} s x {sr:,} Hz = "
                f"{8 * 4 * 60 / bpm * sr:,.1f}, rounded ({want:,})."]

    def bpm_notes(work):
        import soundfile as sf
        wav = next((work / "bpm").glob("*.wav"))
        with sf.SoundFile(str(wav)) as f:
            comment = f.copy_metadata().get("comment", "")
        n = audio_samples(wav)
        return [f"`{wav.name}` has {n:,} samples = `bars_to_samples(2, {sr}, 124)` = "
                f"{bars_to_samples(2, sr, 124):,} (2 bars at 124 BPM, {seconds(n, sr)}); its comment tag: "
                f"`{comment}`."]

    def walk_notes(work):
        wav = next((work / "walk").glob("*.wav"))
        n = audio_samples(wav)
        return [f"`{wav.name}` has {n:,} samples ({seconds(n, sr)}) = `bars_to_samples(20, {sr}, {bpm:g})` = "
                f"{bars_to_samples(20, sr, bpm):,}: five clips (seed 1, midpoint, seed 5, midpoint, seed 9) of "
                f"4 bars each on one bar grid."]

    def project_notes(work):
        import json
        info = json.loads((work / "proj" / "projection.json").read_text())
        keys = ("start_distance", "final_distance", "closed_share", "clip_start_s", "source_bpm")
        return ["`projection.json` holds the same numbers: "
                + ", ".join(f"`\"{k}\": {info[k]:.4g}`" for k in keys if k in info) + "."]

    def from_projection_notes(work):
        wav = next((work / "walkp").glob("*.wav"))
        n = audio_samples(wav)
        return [f"The walk is 5 clips (projection, midpoint, seed 5, midpoint, seed 9) of one bar at 124 BPM, "
                f"joined on one bar grid: {n:,} samples = `bars_to_samples(5, {sr}, 124)` = "
                f"{bars_to_samples(5, sr, 124):,} ({seconds(n, sr)})."]

    return [
        Example("seeds", [gen + ["--seeds", "0-3", "--outdir", "seeds"]],
                picture=lambda w: (tile([open_png(w / "seeds" / f"seed{s:04d}.png") for s in range(4)], scale=2),
                                   "seeds.png", "the spectrograms of seeds 0-3 (seed0000.png ... seed0003.png), "
                                   "high frequencies on top, time left to right")),
        Example("loops", [gen + ["--seeds", "0-7", "--loop", "8", "--outdir", "loops"]], notes=loop_notes,
                picture=lambda w: (tile([reanalysed(next((w / "loops").glob("seed0000-*.wav")), block, [0, bar])],
                                        scale=2),
                                   "loop.png", loop_alt)),
        Example("walk", [gen + ["--walk", "1,5,9", "--bars", "4", "--outdir", "walk"],
                         gen + ["--walk", "5,9", "--walk-space", "w", "--walk-steps", "1", "--bars", "1",
                                "--outdir", "walkw"]],
                notes=walk_notes,
                picture=lambda w: (tile([open_png(next((w / "walkw").glob("walk-*.png")))], scale=2), "walk.png",
                                   "walk-5-9.png of the W-space walk: seed 5, the midpoint in W and seed 9, "
                                   "one bar each")),
        Example("project", [["project_audio.py", "--network", network, "--target", target_name,
                             "--start", f"{start:g}", "--outdir", "proj", "--steps", str(steps), "--no-progress"]],
                notes=project_notes,
                picture=lambda w: (tile([open_png(w / "proj" / "compare.png")], scale=2), "projection.png",
                                   "compare.png: the target clip (left) and its projection (right)")),
        Example("from-projection",
                [gen + ["--walk", "proj:proj/projected_w.npz,5,9", "--bars", "1", "--walk-steps", "1", "--bpm", "124",
                        "--outdir", "walkp"],
                 gen + ["--projected-w", "proj/projected_w.npz", "--variations", "3", "--spread", "0.5", "--loop", "2",
                        "--outdir", "vars"],
                 gen + ["--projected-w", "proj/projected_w.npz", "--loop", "2", "--bpm", "124", "--outdir", "mine"]],
                notes=from_projection_notes,
                picture=lambda w: (open_png(next((w / "walkp").glob("walk-*.png"))), "projection-walk.png",
                                   "the walk from the projection through seeds 5 and 9 at 124 BPM")),
        Example("mix", [gen + ["--mix-rows", "1,2,3", "--mix-cols", "4,5,6,7", "--mix-styles", "0-2",
                               "--outdir", "grid"]],
                picture=lambda w: (open_png(w / "grid" / "mix-grid.png"), "mix-grid.png",
                                   "mix-grid.png: column seeds 4-7 on top, row seeds 1-3 on the left, each cell the "
                                   "row seed with layers 0-2 from the column seed")),
        Example("bpm", [gen + ["--seeds", "3", "--loop", "2", "--bpm", "124", "--outdir", "bpm"]], notes=bpm_notes),
    ]


def section(example: Example, network: str, kimg: float, stamp: str, image: Optional[str], alt: str,
            notes: List[str]) -> str:
    body = [f"<!-- begin example-{example.name} -->",
            f"Run on `{network}` ({kimg:g} kimg) on {stamp} by `benchmarks/generation_examples.py`:", "",
            "```", "\n\n".join(example.transcripts), "```"]
    if notes:
        body += [""] + notes
    if image:
        body += ["", f"![{alt}](img/{image})"]
    body.append(f"<!-- end example-{example.name} -->")
    return "\n".join(body)


def find_target(target: Optional[Path], target_dir: Optional[Path]) -> Path:
    if target is not None:
        return target
    if target_dir is None:
        from benchmarks.phase_quality import devset_folder
        target_dir = devset_folder()
    if target_dir is None or not (target_dir / DEFAULT_TARGET).is_file():
        where = f"--target-dir {target_dir}" if target_dir is not None else "no devset folder found"
        raise click.ClickException(f"{where}: no {DEFAULT_TARGET}; pass --target FILE (any track), --target-dir "
                                   f"DIR, or set $ELECTROGAN_DEVSET to the development set (docs/references.md)")
    return target_dir / DEFAULT_TARGET


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@click.command()
@click.option("--network", default="pretrained:electro128", show_default=True,
              help="The network the examples run on (a snapshot path or pretrained:NAME), as the doc shows it.")
@click.option("--target", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=f"Track to project (default: {DEFAULT_TARGET} of --target-dir).")
@click.option("--target-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help=f"Folder holding {DEFAULT_TARGET} (default: the devset, $ELECTROGAN_DEVSET or devset/ beside "
                   "the checkout).")
@click.option("--start", type=float, default=30.0, show_default=True, help="Projection target's start in seconds.")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="Projection steps.")
@click.option("--pairs", type=click.IntRange(min=1), default=64, show_default=True,
              help="Seed pairs of benchmarks/layer_control.py.")
@click.option("--only", default=None, help="Comma-separated examples to run (default: all; 'layer_control' is the "
                                           "table; from-projection needs project).")
@click.option("--doc", type=click.Path(dir_okay=False, path_type=Path), default=DOC, show_default=True,
              help="Markdown file whose sections are replaced.")
@click.option("--img-dir", type=click.Path(file_okay=False, path_type=Path), default=IMG_DIR, show_default=True,
              help="Folder the pictures are copied to (the doc links them as img/NAME).")
@click.option("--img-prefix", default="electro128-", show_default=True, help="Prefix of the pictures' file names.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run in this folder and keep the outputs (default: a temporary folder, removed).")
def main(network, target, target_dir, start, steps, pairs, only, doc, img_dir, img_prefix, keep):
    from audio_ext.generation.pretrained import resolve_network
    from stylegan2.snapshot import load_snapshot
    snap = load_snapshot(resolve_network(network))
    block, kimg = snap["audio"], snap.get("cur_nimg", 0) / 1000
    names = ["seeds", "loops", "walk", "project", "from-projection", "mix", "bpm", "layer_control"]
    chosen = names if only is None else [n.strip() for n in only.split(",") if n.strip()]
    # Only the projection reads the target track.
    target_path = find_target(target, target_dir).resolve() if "project" in chosen else None
    examples = build_examples(network, target_path.name if target_path else DEFAULT_TARGET, start, steps, block)
    assert [e.name for e in examples] + ["layer_control"] == names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise click.BadParameter(f"unknown example(s) {', '.join(unknown)} (choose from {', '.join(names)})",
                                 param_hint="--only")
    if "from-projection" in chosen and "project" not in chosen and not (
            keep is not None and (Path(keep) / "proj" / "projected_w.npz").is_file()):
        raise click.BadParameter("from-projection renders the projection: add project (or --keep a folder holding "
                                 "proj/projected_w.npz)", param_hint="--only")
    text = doc.read_text(encoding="utf-8")
    for name in chosen:
        marker = name if name == "layer_control" else f"example-{name}"
        if not section_pattern(marker).search(text):
            raise click.ClickException(f"{doc}: no section <!-- begin {marker} --> ... <!-- end {marker} -->")

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    with tempfile.TemporaryDirectory(prefix="generation-examples-") as tmp:
        work = Path(keep) if keep is not None else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if target_path is not None and not (work / target_path.name).exists():
            (work / target_path.name).symlink_to(target_path)
        pictures = {}
        for example in examples:
            if example.name not in chosen:
                continue
            t0 = time.perf_counter()
            example.transcripts = [run_command(argv, work, example.name) for argv in example.commands]
            notes = example.notes(work) if example.notes else []
            image, alt = None, ""
            if example.picture is not None:
                picture, suffix, alt = example.picture(work)
                image = img_prefix + suffix
                pictures[image] = picture
            text = replace_section(text, f"example-{example.name}",
                                   section(example, network, kimg, stamp, image, alt, notes))
            print(f"{example.name}: {len(example.commands)} command(s) in {time.perf_counter() - t0:.1f} s")
        if "layer_control" in chosen:
            t0 = time.perf_counter()
            draft = work / "layer_control.md"
            draft.write_text(text, encoding="utf-8")
            from audio_ext.core.geometry import StftGeometry
            g = StftGeometry.from_dict(block)
            note = (f"{g.resolution} x {g.resolution}, hop {g.hop_length}, {g.sample_rate} Hz: {g.clip_seconds:.3f} s "
                    f"clips at {float(block['target_bpm']):g} BPM")
            run_command(["benchmarks/layer_control.py", "--network", network, "--pairs", str(pairs),
                         "--note", note, "--doc", str(draft.resolve())], work, "layer_control")
            text = draft.read_text(encoding="utf-8")
            print(f"layer_control: {pairs} pairs in {time.perf_counter() - t0:.1f} s")
        # Every command succeeded: now the pictures, then the doc.
        img_dir.mkdir(parents=True, exist_ok=True)
        for image, picture in pictures.items():
            picture.save(img_dir / f".{image}.tmp-{os.getpid()}", format="PNG", optimize=True)
            os.replace(img_dir / f".{image}.tmp-{os.getpid()}", img_dir / image)
        write_atomically(doc, text.encode("utf-8"))
    total = sum((img_dir / i).stat().st_size for i in pictures)
    print(f"wrote {len(chosen)} section(s) of {doc} and {len(pictures)} picture(s) ({total / 1024:.0f} KiB) to {img_dir}")


if __name__ == "__main__":
    main()
