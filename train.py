"""Train ElectroGAN's StyleGAN2 on a spectrogram (or any 1/3-channel PNG) archive.

    python train.py --outdir runs --data stft.zip --cfg audio1024 --gamma 10 --lr 0.001
    python train.py --outdir runs --data stft.zip --cfg audio1024 --resume latest
    torchrun --nnodes 2 --nproc-per-node 8 ... train.py --outdir runs --data stft.zip --cfg audio1024

A thin wrapper: options are resolved by stylegan2.presets, the loop is stylegan2.training_loop.
See docs/training.md.
"""
from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys

import click
import torch

from audio_ext.plugins import METRIC_MODULES
from stylegan2 import distributed
from stylegan2.presets import PRESETS, ConfigError, describe, resolve_config


def _metrics_list(value: str):
    return [] if value in (None, "", "none") else [m.strip() for m in value.split(",") if m.strip()]


@click.command(context_settings=dict(help_option_names=["-h", "--help"]))
@click.option("--outdir", required=True, type=click.Path(file_okay=False), help="Where run folders are made")
@click.option("--data", required=True, type=click.Path(exists=True), help="Training data: zip or folder of PNGs")
@click.option("--cfg", default="auto", show_default=True, type=click.Choice(list(PRESETS)), help="Base configuration")
@click.option("--gpus", default=1, show_default=True, type=click.IntRange(min=1),
              help="Processes (GPUs) on this machine; under torchrun the world size decides")
@click.option("--batch", type=click.IntRange(min=1), help="Total batch size over all GPUs")
@click.option("--batch-gpu", type=click.IntRange(min=1), help="Images per GPU per accumulation round")
@click.option("--mbstd-group", type=click.IntRange(min=1), help="Minibatch-stddev group size")
@click.option("--gamma", type=click.FloatRange(min=0), help="R1 regularisation weight")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate of G and D")
@click.option("--glr", type=click.FloatRange(min=0, min_open=True), help="Generator learning rate (beats --lr)")
@click.option("--dlr", type=click.FloatRange(min=0, min_open=True), help="Discriminator learning rate (beats --lr)")
@click.option("--kimg", type=click.FloatRange(min=0, min_open=True), help="Training length in thousands of real images (fractions allowed)")
@click.option("--tick", type=click.FloatRange(min=0, min_open=True), help="kimg between progress lines")
@click.option("--snap", type=click.IntRange(min=1), help="Ticks between snapshots (images and network)")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed")
@click.option("--map", type=click.IntRange(min=1), help="Mapping network depth")
@click.option("--cbase", type=click.IntRange(min=1), help="Channel base (fmaps x 32768)")
@click.option("--cmax", type=click.IntRange(min=1), help="Maximum channels per layer")
@click.option("--mirror/--no-mirror", default=False, show_default=True,
              help="Add time-mirrored copies (plays audio backwards: off for spectrograms)")
@click.option("--aug", type=click.Choice(["ada", "noaug", "fixed"]), help="Augmentation mode")
@click.option("--p", type=click.FloatRange(0, 1), help="Augmentation probability for --aug fixed")
@click.option("--target", type=click.FloatRange(0, 1, min_open=True), help="ADA target for E[sign(D(real))]")
@click.option("--augpipe", help="Augmentation pipeline preset (audio, audio-nomask, audio-level, audio-shift)")
@click.option("--cond/--no-cond", default=False, show_default=True, help="Condition on dataset labels")
@click.option("--subset", type=click.IntRange(min=1), help="Train on a random subset of this many images")
@click.option("--metrics", default="none", show_default=True, help="Comma-separated metrics after each snapshot, or none")
@click.option("--keep-best", help="Keep best-snapshot.pkl by this metric (one of --metrics)")
@click.option("--patience", type=click.FloatRange(min=0, min_open=True), metavar="KIMG",
              help="End training when the --keep-best metric has not improved for this many kimg")
@click.option("--resume", help="Snapshot to continue exactly, or 'latest' (newest in --outdir)")
@click.option("--fp32/--no-fp32", default=None, help="Disable mixed precision")
@click.option("--workers", type=click.IntRange(min=0),
              help="DataLoader worker processes [default: 3, at most the usable CPUs]")
@click.option("--max-nonfinite", type=click.IntRange(min=1),
              help="Stop after this many consecutive steps with NaN/inf losses or gradients [default: 50]")
@click.option("--ops", type=click.Choice(["auto", "reference", "cuda"]), help="CUDA kernels or reference ops")
@click.option("--allow-tf32", is_flag=True, default=None, help="Allow TF32 matmuls/convolutions on Ampere+ GPUs (off: exact fp32)")
@click.option("--nobench", is_flag=True, default=None, help="Turn cudnn.benchmark off (avoids its start-up memory peak)")
@click.option("--freezed", type=click.IntRange(min=0), help="Freeze the first N discriminator layers (freeze-D)")
@click.option("--preview-clips", default=4, show_default=True, type=click.IntRange(min=0),
              help="Fakes decoded to fakesNNNNNN.wav (and TensorBoard audio) at every snapshot; 0 = none")
@click.option("--decoder-model", "decoder_model", metavar="FILE|none",
              help="Decoder model (learned+pghi+fgla) stored in every snapshot [default: <archive stem>.decoder.pt "
                   "beside --data when it exists; with --resume: the resumed snapshot's]; none = store no model")
@click.option("--desc", help="Extra text for the run folder name")
@click.option("--dry-run", "-n", is_flag=True, help="Print the options and exit")
@click.option("--no-progress", is_flag=True, help="No per-iteration progress bar between ticks")
def main(outdir, data, cfg, gpus, desc, dry_run, resume, no_progress, metrics, mirror, cond, preview_clips,
         decoder_model, **flags):
    """Train a StyleGAN2 on DATA and write snapshots, grids and logs under OUTDIR."""
    from stylegan2 import snapshot as snap_io
    from stylegan2.dataset import DatasetError, ImageFolderDataset
    from stylegan2.training_loop import run_training

    world = distributed.torchrun_world_size() or gpus
    try:
        probe = ImageFolderDataset(data, use_labels=cond, max_size=flags.get("subset"), xflip=mirror)
    except DatasetError as e:
        raise click.ClickException(str(e))
    _check_audio_block(data, probe.audio)
    try:
        opts = resolve_config(cfg, probe.resolution, world, mirror=mirror, cond=cond,
                              metrics=_metrics_list(metrics), **flags)
    except ConfigError as e:
        raise click.ClickException(str(e))

    if opts["metrics"]:
        from stylegan2.metrics import registry
        registry.load_plugins(METRIC_MODULES)
        unknown = [m for m in opts["metrics"] if not registry.is_valid_metric(m)]
        if unknown:
            raise click.ClickException(f"unknown metric(s) {', '.join(unknown)}; valid: "
                                       f"{', '.join(registry.list_metrics())}")
    carried = None          # (snapshot, its decoder_model or None) when resuming
    if resume == "latest":
        found = snap_io.find_latest_snapshot(outdir)
        if found is None:
            raise click.ClickException(f"{outdir}: --resume latest found no network-snapshot-*.pkl")
        resume = str(found)
    if resume is not None:
        try:
            snap = snap_io.load_snapshot(resume)   # fail now, with the file named, not inside N processes
        except snap_io.SnapshotError as e:
            raise click.ClickException(str(e))
        carried = (resume, snap.get("decoder_model"))
        del snap                                    # the loop loads it again; do not hold it here for the run
    decoder_file, decoder_payload = _decoder_model(data, probe.audio, decoder_model, carried)

    name = f"{probe.name}-{cfg}-gpus{world}-batch{opts['batch']}-gamma{opts['gamma']:g}"
    if desc:
        name += "-" + re.sub(r"[^\w.+-]", "_", desc)
    if os.environ.get("RANK", "0") == "0":                 # torchrun starts this script on every rank
        print("Training options:")
        print(describe(opts))
        print(f"  data  {probe.path} ({len(probe)} images, {probe.num_channels} x {probe.resolution}^2)")
        print(f"  run   {outdir}/<next>-{name}")
        if decoder_file:
            stored = " (stored in every snapshot)" if decoder_payload is not None else ""
            print(f"  decoder model  {decoder_file}{stored}")
        if resume:
            print(f"  resume  {resume}")
    if dry_run:
        print("Dry run; exiting.")
        return
    probe.close()
    kwargs = dict(opts, outdir=outdir, run_name=name, data=data, resume=resume, progress=not no_progress,
                  metric_plugins=METRIC_MODULES,
                  snapshot_hook=_audio_preview(probe.audio, preview_clips, decoder_payload),
                  snapshot_extra={"decoder_model": decoder_payload} if decoder_payload is not None else None)
    from stylegan2.training_loop import SnapshotWriteError, TrainingDiverged, TrainingInterrupted
    # With spawned ranks this process only waits: a terminal's Ctrl-C reaches the ranks directly (same
    # process group), a SIGTERM or SIGINT sent to this process alone is passed on to them as SIGTERM
    # (a graceful stop there, never mistaken for a second Ctrl-C).
    forward = world > 1 and not distributed.under_torchrun()
    saved = {sig: signal.signal(sig, _forward_to_ranks) for sig in (signal.SIGINT, signal.SIGTERM)} if forward else {}
    _RECEIVED.clear()
    try:
        distributed.launch(run_training, world, kwargs)
        if _RECEIVED:       # spawned ranks leave quietly (exit status 0) on a second Ctrl-C
            _stop(ABORTED, _RECEIVED[0])
    except TrainingInterrupted as e:
        _stop(str(e), e.signum)
    except KeyboardInterrupt:
        _stop(ABORTED, signal.SIGINT)
    except (TrainingDiverged, SnapshotWriteError, snap_io.SnapshotError, DatasetError, ValueError) as e:
        raise click.ClickException(str(e))
    except OSError as e:        # e.g. disk full or a read-only run folder while writing logs or grids
        raise click.ClickException(f"{e.filename or outdir}: {e.strerror or e}")
    except torch.multiprocessing.ProcessRaisedException as e:   # a spawned rank failed: show its last line
        lines = [l for l in str(e).splitlines() if l.strip()]
        last = lines[-1] if lines else repr(e)
        prefix = TrainingInterrupted.__module__ + "." + TrainingInterrupted.__name__ + ": "
        if last.startswith(prefix):
            _stop(last[len(prefix):], _RECEIVED[0] if _RECEIVED else signal.SIGINT)
        # "stylegan2.training_loop.TrainingDiverged: <message>" -> "<message>" for the errors we raise
        last = re.sub(r"^(?:[\w]+\.)*(?:TrainingDiverged|SnapshotWriteError|SnapshotError|DatasetError|"
                      r"ConfigError|ValueError|OSError): ", "", last)
        raise click.ClickException(last)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _check_audio_block(data, block) -> None:
    """Refuse an archive whose ``audio`` block is out of its physical ranges (a NaN mean, a tempo of
    1e300) now, not after hours of training when the snapshots it is copied into fail to generate."""
    if block is None:
        return      # an image archive without audio: nothing to check
    from audio_ext.core.geometry import validate_audio_block
    try:
        validate_audio_block(block)
    except ValueError as e:
        raise click.ClickException(f"{data}: dataset.json {e}") from None


def _decoder_model(data, block, choice, carried=None):
    """(description, plain-data dict) of the decoder model the snapshots will carry
    (:func:`audio_ext.decoder.archive_model.run_decoder_model`); a one-line error when it cannot be used."""
    from audio_ext.decoder.archive_model import run_decoder_model
    from audio_ext.decoder.frame_model import ModelError
    try:
        return run_decoder_model(data, block, choice, carried)
    except (ModelError, ValueError) as e:
        raise click.ClickException(str(e)) from None


def _audio_preview(audio_block, clips: int, decoder_payload=None):
    """The snapshot hook that decodes a few fakes to audio (None for archives without an audio block),
    with the decoder model the snapshots carry when there is one."""
    if not audio_block or clips == 0:
        return None
    from audio_ext.generation.preview import AudioPreview
    try:
        return AudioPreview(audio_block, clips=clips, decoder_model=decoder_payload)
    except (ValueError, TypeError, KeyError) as e:
        raise click.ClickException(f"--data: unusable audio block for the snapshot previews: {e}")


ABORTED = ("training aborted without a final snapshot; --resume latest continues from the last regular "
           "snapshot, if one was written")
_RECEIVED: list = []        # signals this launcher process got while its spawned ranks ran


def _forward_to_ranks(signum, frame):
    _RECEIVED.append(signum)
    for child in multiprocessing.active_children():
        if child.pid is not None:
            os.kill(child.pid, signal.SIGTERM)


def _stop(message: str, signum) -> None:
    """One line on stderr and the shell's exit status for a signal: 130 (SIGINT) or 143 (SIGTERM)."""
    click.echo(f"Stopped: {message}", err=True)
    sys.exit(128 + int(signum or signal.SIGINT))


if __name__ == "__main__":
    main()
