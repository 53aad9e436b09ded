"""Build an ElectroGAN training archive (stft.zip) from a folder of DJ sets or tracks.

    python dataset_tool_audio.py --source mixsets/ --dest stft.zip

Every flag is described in docs/dataset.md; the work is done by audio_ext.dataset.build.build_archive
(and audio_ext.dataset.build.merge_into for --merge).
"""
from __future__ import annotations

import sys

import click

from audio_ext.core.audio_io import SEGMENT_SECONDS
from audio_ext.core.geometry import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from audio_ext.dataset.archive import ArchiveError
from audio_ext.dataset.beats import MAX_BPM, MIN_BPM, TARGET_BPM
from audio_ext.dataset.build import BuildOptions, build_archive, merge_into
from audio_ext.dataset.cut import SILENCE_DB, STRIDE_BEATS, SliceParams
from audio_ext.dataset.sources import parse_shard
from audio_ext.dataset.stretch import STRETCH_CHOICES


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--source", metavar="PATH", help="Folder of audio (searched recursively) or a .txt list of files.")
@click.option("--dest", required=True, metavar="PATH", help="Output archive: a .zip file or a folder.")
@click.option("--resolution", type=int, default=1024, show_default=True, help="Image size R (power of two); n_fft = 2R.")
@click.option("--hop", "hop_length", type=int, default=None, help="STFT hop in samples: R (default, the thesis) or R/2.")
@click.option("--sample-rate", type=click.IntRange(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE), default=44100, show_default=True,
              help="Hz the audio is resampled to before slicing (lower: more seconds per image, less bandwidth).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes, parallel over files.")
@click.option("--max-clips", type=click.IntRange(min=1), default=None, help="Stop after this many clips (in source order).")
@click.option("--stats-sample", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Clips sampled to compute the dataset mean/std of ln power.")
@click.option("--stats", "stats_path", metavar="JSON", default=None,
              help="Reuse statistics (mean, std) from this file instead of sampling (e.g. another shard's .stats.json).")
@click.option("--stats-only", is_flag=True,
              help="Only sample the statistics and write them as JSON to --dest (for --stats on every shard).")
@click.option("--shard", default=None, metavar="I/N", help="Build only shard I of N (files split by a hash of their name).")
@click.option("--labels", default=None, metavar="CSV|folders",
              help="Class labels: a CSV of file,label rows, or 'folders' for one class per top-level folder.")
@click.option("--target-bpm", type=float, default=TARGET_BPM, show_default=True, help="Tempo every clip is stretched to.")
@click.option("--min-bpm", type=float, default=MIN_BPM, show_default=True, help="Segments slower than this are discarded.")
@click.option("--max-bpm", type=float, default=MAX_BPM, show_default=True, help="Segments faster than this are discarded.")
@click.option("--stride-beats", type=float, default=STRIDE_BEATS, show_default=True, help="Beats between consecutive clip starts.")
@click.option("--segment-seconds", type=float, default=SEGMENT_SECONDS, show_default=True,
              help="Length of the segments that are beat-tracked and stretched independently.")
@click.option("--silence-db", type=float, default=SILENCE_DB, show_default=True, help="Clips below this RMS level (dBFS) are skipped.")
@click.option("--stretcher", type=click.Choice(STRETCH_CHOICES), default="auto", show_default=True,
              help="Time-stretcher: Rubber Band where installed, else the beat-locked phase vocoder.")
@click.option("--merge", multiple=True, metavar="ARCHIVE",
              help="Instead of building: concatenate these archives (shards built with the same --stats) into --dest.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --dest.")
@click.option("--keep-work", is_flag=True, help="Keep the <dest>.partial work folder after success.")
@click.option("--no-progress", is_flag=True, help="No progress bar (e.g. in logs).")
@click.option("--train-decoder", "decoder_steps", type=click.IntRange(min=0), default=0, metavar="STEPS",
              help="After building, train a decoder model (learned+pghi+fgla) for STEPS steps on the sources and "
                   "store it beside the archive as <dest stem>.decoder.pt (docs/audio.md). [0: no]")
def main(source, dest, resolution, hop_length, sample_rate, workers, max_clips, stats_sample, stats_path, stats_only, shard, labels,
         target_bpm, min_bpm, max_bpm, stride_beats, segment_seconds, silence_db, stretcher, merge, overwrite,
         keep_work, no_progress, decoder_steps):
    """Slice audio into beat-aligned 130 BPM clips and write their STFT images to an archive."""
    try:
        if merge:
            if source:
                raise ArchiveError("--merge and --source do not go together: merge first, or build first")
            n = merge_into(merge, dest, overwrite=overwrite, log=lambda line: click.echo(line, err=True))
            click.echo(f"merged {len(merge)} archive(s), {n} clips -> {dest}", err=True)
            return
        if not source:
            raise ArchiveError("--source is required (a folder of audio or a .txt list of files)")
        slicing = SliceParams(target_bpm=target_bpm, min_bpm=min_bpm, max_bpm=max_bpm, stride_beats=stride_beats,
                              segment_seconds=segment_seconds, silence_db=silence_db, stretcher=stretcher)
        options = BuildOptions(resolution=resolution, hop_length=hop_length, sample_rate=sample_rate, workers=workers,
                               max_clips=max_clips, stats_sample=stats_sample, stats_path=stats_path,
                               shard=parse_shard(shard), labels=labels, slicing=slicing, overwrite=overwrite,
                               keep_work=keep_work, progress=not no_progress, stats_only=stats_only)
        build_archive(source, dest, options, log=lambda line: click.echo(line, err=True))
        if decoder_steps and not stats_only:
            from audio_ext.decoder.frame_training import train_for_archive
            train_for_archive(source, dest, steps=decoder_steps, log=lambda line: click.echo(line, err=True),
                              progress=not no_progress)
    except (ArchiveError, ValueError) as e:
        raise click.ClickException(str(e)) from None  # "Error: ..." and exit status 1
    except KeyboardInterrupt:
        click.echo(f"interrupted: finished files are kept in {dest}.partial; run the same command again to resume",
                   err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()  # pylint: disable=no-value-for-parameter
