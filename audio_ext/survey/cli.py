"""``python -m audio_ext survey make|serve|score``: the listening test's command line (docs/evaluation.md).

Thin: each command parses its flags, calls :mod:`.make`, :mod:`.serve` or :mod:`.score` and turns
their one-line errors into click errors (exit status 1). ``audio_ext/__main__.py`` adds the group
to ``python -m audio_ext``.
"""
from __future__ import annotations

from pathlib import Path

import click

from audio_ext.survey.make import SurveyError, SurveyOptions, make_survey
from audio_ext.survey.score import score_survey
from audio_ext.survey.serve import serve


@click.group()
def survey() -> None:
    """A blind listening test: make it, serve it, score it (docs/evaluation.md)."""


@survey.command("make")
@click.option("--outdir", required=True, metavar="DIR", help="the survey folder to create")
@click.option("--network", "networks", multiple=True, metavar="PKL", help="snapshot to generate clips from (repeatable)")
@click.option("--data", default=None, metavar="PATH", help="stft.zip: round-trip clips (and originals with --source)")
@click.option("--source", default=None, metavar="DIR", help="the audio folder the archive was built from")
@click.option("--clips-per-condition", type=click.IntRange(min=1), required=True, help="rated clips per condition")
@click.option("--seed", type=int, default=0, show_default=True, help="draws clips, latent seeds, ids and anchors")
@click.option("--anchors", type=click.IntRange(min=0), default=None, help="anchor clips [clips per condition]")
@click.option("--method", default=None, help="decoder for round trip and generated clips [the library default]")
@click.option("--level", "target_dbfs", type=float, default=-23.0, show_default=True, help="RMS level, dBFS")
@click.option("--title", default="Listening test", show_default=True, help="title shown on the page")
@click.option("--page-seed", type=click.IntRange(0, 2 ** 32 - 1), default=None,
              help="the same clip order for every listener [a random order per listener]")
@click.option("--device", default="cpu", show_default=True, help="torch device for decoding and generating")
@click.option("--overwrite", is_flag=True, help="replace an existing survey folder")
def survey_make(outdir, networks, data, source, clips_per_condition, seed, anchors, method, target_dbfs, title,
                page_seed, device, overwrite) -> None:
    """Build a blind listening test as a static folder (index.html + audio + manifest.json)."""
    opts = SurveyOptions(outdir=outdir, clips_per_condition=clips_per_condition, seed=seed, networks=networks,
                         data=data, source=source, anchors=anchors, method=method, target_dbfs=target_dbfs,
                         device=device, title=title, page_seed=page_seed, overwrite=overwrite)
    try:
        manifest = make_survey(opts, log=click.echo)
    except SurveyError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"open {Path(outdir) / 'index.html'}; keep {manifest} away from listeners")


@survey.command("serve")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind (0.0.0.0 opens it to the LAN)")
def survey_serve(folder, port, host) -> None:
    """Serve the survey page and save submitted answer sheets to FOLDER/responses/."""
    try:
        serve(folder, host, port, log=click.echo)
    except SurveyError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


@survey.command("score")
@click.argument("responses", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--manifest", "manifest_path", default=None, type=click.Path(exists=True),
              help="the survey's manifest.json [beside the responses folder]")
@click.option("--outdir", default=None, help="report folder [report/ in the survey folder]")
@click.option("--exclude-failed-anchors", is_flag=True, help="drop listeners who rated an anchor above --anchor-max")
@click.option("--anchor-max", type=click.IntRange(1, 5), default=2, show_default=True,
              help="highest rating an attentive listener gives an anchor")
@click.option("--normalise", is_flag=True, help="remove each listener's mean offset before scoring")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=100), default=10000, show_default=True,
              help="bootstrap resamples")
@click.option("--seed", type=int, default=0, show_default=True, help="bootstrap seed")
def survey_score(responses, manifest_path, outdir, exclude_failed_anchors, anchor_max, normalise, n_boot, seed) -> None:
    """MOS with 95 % intervals, pairwise tests and a report from answer sheets (files or folders)."""
    try:
        result = score_survey(list(responses), manifest_path, outdir, exclude_failed_anchors, anchor_max, normalise,
                              n_boot, seed, log=click.echo)
    except SurveyError as e:
        raise click.ClickException(str(e)) from None
    click.echo(result["summary"])
    for r in result["conditions"]:
        click.echo(f"  {r['condition']:<28} MOS {r['mos']:.2f}  t-CI {r['t_low']:.2f}-{r['t_high']:.2f}  "
                   f"bootstrap {r['boot_low']:.2f}-{r['boot_high']:.2f}  n={r['n']}")
    click.echo(f"report: {Path(result['report_dir']) / 'report.html'}")
