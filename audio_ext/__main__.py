"""``python -m audio_ext``: audio tools. ``decode`` turns archive images back into WAV files to hear
the round trip; ``survey make|serve|score`` runs a blind listening test (audio_ext/survey/);
``training-curves`` draws the losses, metrics and fakes of training run folders in one PNG
(stylegan2/training_curves.py).

    python -m audio_ext decode --data stft.zip --clips 0-4 --outdir roundtrip/ [--method pghi+fgla] [--iters 10]
                               [--decoder-model FILE|none]
    python -m audio_ext survey make --outdir survey/ --data stft.zip --source audio/ --clips-per-condition 8
    python -m audio_ext training-curves runs/00000-... runs/00001-... --out curves.png

Reads ``dataset.json`` (its ``audio`` block) and the PNGs of a ``stft.zip`` or of a folder with the
same layout (docs/contract.md); clips are numbered by the sorted archive paths of the PNGs. Each clip is
written as ``clipNNNNNN.wav`` (16-bit PCM at the archive's sample rate, scaled down if it would clip)
atomically; an unreadable or
malformed image is skipped and reported, and the command fails only when nothing could be decoded.
The learned decoder uses the archive's own model (``stft.decoder.pt`` beside ``stft.zip``) when there
is one, unless ``--decoder-model`` names another or ``none`` (audio_ext.decoder.archive_model).
"""
from __future__ import annotations

import sys

import click

from audio_ext.core.device import resolve_device
from audio_ext.core.geometry import StftGeometry
from audio_ext.core.seeds import parse_clip_ranges
from audio_ext.core.writable import check_writable
from audio_ext.dataset.archive import ArchiveError
from audio_ext.decoder.decode_archive import decode_clips
from audio_ext.decoder.frame_model import ModelError
from audio_ext.decoder.frame_training import TrainConfig, find_audio, load_sources, synthetic_sources, train_decoder
from audio_ext.decoder.methods import METHODS
from audio_ext.survey.cli import survey
from stylegan2.cli_errors import describe_os_error, one_line_errors
from stylegan2.training_curves import CurvesError, write_training_curves


@click.group()
def main() -> None:
    """ElectroGAN audio tools."""



main.add_command(survey)

from audio_ext.generation.pretrained_cli import export_pretrained_cmd as _export_pretrained  # noqa: E402

main.add_command(_export_pretrained)

from .studio.cli import studio as _studio  # noqa: E402  (`python -m audio_ext studio ...`)

main.add_command(_studio)


@main.command()
@click.option("--data", required=True, metavar="PATH", help="stft.zip or an archive folder")
@click.option("--clips", "clip_spec", default="0-4", show_default=True, help="clip indices, e.g. 0-4 or 0,3,7-9")
@click.option("--outdir", required=True, metavar="DIR", help="where the WAV files go")
@click.option("--method", type=click.Choice(list(METHODS)), default=None,
              help="phase reconstruction method [learned+pghi+fgla when a decoder model fits the archive, "
                   "else pghi+fgla]")
@click.option("--decoder-model", default=None, metavar="FILE|none",
              help="frame-interpolation model for learned+pghi+fgla; none = no learned decoder [<archive stem>"
                   ".decoder.pt beside --data when it exists, else $ELECTROGAN_DECODER_MODEL, else the shipped one]")
@click.option("--iters", type=click.IntRange(min=0), default=None, help="Griffin-Lim iterations [method default]")
@click.option("--device", default=None, help="torch device [cuda if available, else cpu]")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=8, show_default=True,
              help="images decoded together")
@one_line_errors(ArchiveError, ValueError)
def decode(data, clip_spec, outdir, method, decoder_model, iters, device, batch_size) -> None:
    """Decode archive images back to 16-bit WAV files (the training set after the round trip)."""
    try:
        parse_clip_ranges(clip_spec)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--clips") from None
    try:
        written, skipped = decode_clips(data, clip_spec, outdir, method=method, n_iter=iters, device=device,
                                        batch_size=batch_size, log=click.echo, decoder_model=decoder_model)
    except (ArchiveError, ModelError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"--outdir {outdir}: cannot write ({describe_os_error(e)})") from None
    click.echo(f"decoded {len(written)} clip(s) into {outdir}" + (f"; skipped {len(skipped)}" if skipped else ""))
    if not written:
        raise click.ClickException(f"{data}: none of the requested clips could be decoded")


@main.command("train-decoder")
@click.option("--source", required=True, metavar="DIR", help="folder of audio files (searched recursively)")
@click.option("--out", required=True, metavar="FILE", help="model file to write (resumed if it holds a checkpoint)")
@click.option("--resolution", type=int, default=1024, show_default=True, help="R of the archives to decode")
@click.option("--hop", type=int, default=None, help="hop length of those archives [resolution]")
@click.option("--sample-rate", type=int, default=44100, show_default=True, help="Hz")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--patch-frames", type=click.IntRange(min=2), default=32, show_default=True,
              help="stored frames per training crop")
@click.option("--patch-bins", type=click.IntRange(min=8), default=None, help="random band of bins per crop [all]")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--synthetic", type=click.IntRange(min=0), default=0, show_default=True,
              help="add this many 30-s synthetic techno loops to the sources")
@click.option("--holdout", default="", help="comma-separated file names (in --source) kept out of training and "
                                             "used for the final held-out error")
@click.option("--arch", type=click.Choice(["tiny", "small", "medium", "large"]), default="small", show_default=True,
              help="network size (docs/audio.md)")
@click.option("--init", "init", default=None, metavar="FILE",
              help="start from this model's weights (fine-tuning; same geometry and --arch) [fresh weights]")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=100, show_default=True,
              help="steps between checkpoints (and held-out evaluations with --holdout)")
@click.option("--loss", type=click.Choice(["sc", "wl1"]), default="sc", show_default=True,
              help="objective: squared spectral convergence of the in-between frames, or magnitude-weighted L1 "
                   "in ln power (docs/audio.md)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default=None, help="torch device [cuda if available, else cpu]")
def train_decoder_cmd(source, out, resolution, hop, sample_rate, steps, batch, patch_frames, patch_bins, lr,
                      synthetic, holdout, arch, init, checkpoint_every, loss, seed, device) -> None:
    """Train the frame-interpolation model of the `learned+pghi+fgla` decoder on your own audio."""
    try:
        check_writable(out, "--out", folder=False)      # before hours of training, not after
        geometry = StftGeometry(resolution, hop, sample_rate=sample_rate)
        files = find_audio(source)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    held_names = {h.strip() for h in holdout.split(",") if h.strip()}
    unknown = held_names - {f.name for f in files}
    if unknown:
        raise click.ClickException(f"--holdout: {', '.join(sorted(unknown))} not found in {source}")
    config = TrainConfig(steps=steps, batch=batch, patch_frames=patch_frames, patch_bins=patch_bins, lr=lr, seed=seed,
                         arch=arch, init=init, checkpoint_every=checkpoint_every, loss=loss)
    crop = (patch_frames + 1) * geometry.hop_length
    train, names = load_sources([f for f in files if f.name not in held_names], sample_rate, crop, log=click.echo)
    held, held_used = load_sources([f for f in files if f.name in held_names], sample_rate, crop, log=click.echo)
    if synthetic:
        train += synthetic_sources(synthetic, 30.0, sample_rate, seed=seed)
        names += [f"synthetic techno loop {i}" for i in range(synthetic)]
    if not train:
        raise click.ClickException(f"--source {source}: no usable audio file of at least {crop / sample_rate:.2f} s")
    try:
        dev = str(resolve_device(device))
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"training on {len(train)} source(s), {sum(y.size for y in train) / sample_rate / 60:.1f} min of audio; "
               f"{len(held)} held out; R={resolution} hop={geometry.hop_length}; device {dev}")
    try:
        train_decoder(train, out, geometry, config, device=dev, source_names=names, validation=held, log=click.echo,
                      validation_names=held_used)
    except (ValueError, ModelError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # a checkpoint that cannot be written: full disk, read-only, --out under a file
        raise click.ClickException(f"--out {out}: cannot write the model ({describe_os_error(e)})") from None


@main.command("training-curves")
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option("--out", required=True, metavar="PNG", help="picture to write (replaced only when drawing succeeded)")
@click.option("--width", type=click.IntRange(min=800), default=1400, show_default=True, help="pixels")
@one_line_errors(CurvesError)
def training_curves_cmd(run_dirs, out, width) -> None:
    """Draw the losses, regularisers, metrics and fakes of training run folders (a run and its resumes) as a PNG."""
    curves = write_training_curves(run_dirs, out, width=width)
    metrics = ", ".join(f"{m.name} best {b[1]:.4g} at {b[0]:.1f} kimg" for m in curves.metrics.values()
                        if m.reference is None and (b := m.best()))
    click.echo(f"wrote {out}: {len(curves.kimg)} ticks, {curves.total_kimg:.3f} kimg, "
               f"{curves.total_sec / 3600:.2f} h" + (f"; {metrics}" if metrics else ""))


if __name__ == "__main__":
    sys.exit(main())
