"""``survey make``: build a blind listening test as a static folder (docs/evaluation.md).

The folder works from a ``file://`` URL or any static web host; nothing is downloaded::

    index.html  survey.js  survey.css   the page (copied from assets/)
    survey-data.js                      the survey id, the clip ids and their audio files (no conditions)
    audio/<id>.wav                      16-bit mono WAV, loudness-normalised, named by an opaque id
    manifest.json                       which id is which condition and where it came from
    README.txt                          how to host it without giving the answers away

Conditions (each present only when its input is given):

* ``original``: the source audio at the archive clip's own start, stretched by the clip's own
  ratio, exactly as the dataset tool cut it (needs ``data`` and ``source``);
* ``roundtrip-<method>``: the archive image through the codec and a decoder (needs ``data``);
* ``generated-<snapshot>``: clips of each network, latent seeds drawn from ``seed``;
* ``anchor``: degraded copies of clips of the first condition (:mod:`.anchor`).

Everything is drawn from ``seed``, so the same inputs and seed give byte-identical folders. Clip
ids, file names and the page carry no condition or source name: only ``manifest.json`` does, and
the page never loads it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from audio_ext.core.audio_io import FULL_SCALE, write_audio
from audio_ext.core.device import DeviceError, resolve_device
from audio_ext.core.geometry import StftGeometry
from audio_ext.dataset.archive import ArchiveError, read_dataset_json
from audio_ext.dataset.archive_images import ArchiveImages
from audio_ext.decoder.archive_model import archive_decoder_choice
from audio_ext.decoder.frame_model import ModelError
from audio_ext.decoder.methods import decode_audio
from audio_ext.generation.synthesis import (
    GenerateError,
    decode_images,
    decoder_choice,
    load_generator,
    seed_latents,
    synthesize,
)
from audio_ext.survey import anchor as anchor_mod
from audio_ext.survey.loudness import PEAK_LIMIT, TARGET_DBFS, normalise_set
from audio_ext.survey.roundtrip import OriginalError, decoder_name, original_clip
from stylegan2.cli_errors import describe_os_error

ASSETS = Path(__file__).with_name("assets")
PAGE_FILES = ("index.html", "survey.js", "survey.css")
MANIFEST = "manifest.json"
DATA_JS = "survey-data.js"
FORMAT = "electrogan-survey"
VERSION = 1
#: Accepted ``--level`` (RMS, dBFS): below -60 the clips are near silence, above 0 they cannot fit.
LEVEL_RANGE = (-60.0, 0.0)
#: Modes of the survey folder's folders and files, set explicitly (not left to the umask): the
#: folder is meant to be copied to a web server, which must be able to read it.
DIR_MODE, FILE_MODE = 0o755, 0o644


class SurveyError(ValueError):
    """Bad input to ``survey make`` (a flag, a file, an archive, a snapshot); one line naming it."""


@dataclasses.dataclass
class SurveyOptions:
    """What :func:`make_survey` builds. ``method=None`` uses the audio layer's default decoder."""

    outdir: str
    clips_per_condition: int
    seed: int = 0
    networks: Sequence[str] = ()
    data: Optional[str] = None
    source: Optional[str] = None
    anchors: Optional[int] = None
    method: Optional[str] = None
    target_dbfs: float = TARGET_DBFS
    device: str = "cpu"
    title: str = "Listening test"
    page_seed: Optional[int] = None
    overwrite: bool = False


@dataclasses.dataclass
class Clip:
    """One clip before it is written: its audio, sample rate, condition and where it came from."""

    condition: str
    audio: np.ndarray
    sample_rate: int
    origin: dict


# --------------------------------------------------------------------------------------------------
# Reading the inputs.

def _method_kwargs(method: Optional[str]) -> dict:
    """``{'method': method}`` when one was asked for, else nothing (the library's default)."""
    return {} if method is None else {"method": method}


def _archive_clips(opts: SurveyOptions, rng: np.random.Generator, count: int, log) -> List[Clip]:
    """Original and round-trip clips of ``count`` archive clips drawn from ``rng`` (the last one of
    each condition is the training example). The round trip decodes with the archive's own model
    (``stft.decoder.pt`` beside it, audio_ext.decoder.archive_model) when it has one, as generated clips
    decode with the one their snapshot carries."""
    try:
        archive = ArchiveImages(opts.data)
        meta = read_dataset_json(opts.data)
    except ArchiveError as e:
        raise SurveyError(str(e)) from None
    try:
        try:
            decoder = archive_decoder_choice(opts.data, archive.codec.geometry)
        except ModelError as e:
            raise SurveyError(f"--data {opts.data}: {e}") from None
        records = meta.get("clips") or []
        n = len(archive)
        if n < count:
            raise SurveyError(f"--data {opts.data}: {n} clip(s), the survey needs {count} "
                              f"(--clips-per-condition plus a training example)")
        indices = [int(i) for i in rng.choice(n, size=count, replace=False)]
        g = archive.codec.geometry
        sr, samples = g.sample_rate, g.clip_samples
        method = decoder_name(opts.method, g, decoder)
        by_file = {r.get("file"): r for r in records if isinstance(r, dict)}
        out: List[Clip] = []
        for k, i in enumerate(indices):
            name = archive.images[i]
            try:
                image = archive.load(i)
            except ValueError as e:
                raise SurveyError(f"--data {opts.data}: {e}") from None
            record = by_file.get(name, {})
            log(f"archive clip {i} ({k + 1}/{count}): decoding with {method}")
            gen = torch.Generator(device=opts.device).manual_seed(int(opts.seed) * 1000003 + i)
            y = decode_audio(np.array(image), archive.codec, device=opts.device, generator=[gen], decoder=decoder,
                             **_method_kwargs(opts.method))
            origin = {"archive": Path(opts.data).name, "clip_index": i, "file": name,
                      **{k2: record[k2] for k2 in ("source", "clip_start_s", "stretch_ratio") if k2 in record}}
            roundtrip = Clip(f"roundtrip-{method}", np.asarray(y, np.float32).reshape(-1)[:samples], sr,
                             dict(origin, decoder=method))
            if opts.source is not None:
                if "source" not in record:
                    raise SurveyError(f"--data {opts.data}: clip {name} has no clip record with its source; "
                                      f"the original condition needs one")
                path = Path(opts.source) / record["source"]
                if not path.is_file():
                    raise SurveyError(f"--source {opts.source}: {record['source']} (source of clip {name}) "
                                      f"is not there")
                log(f"archive clip {i}: cutting the original from {record['source']}")
                try:
                    audio = original_clip(path, record, sr, samples)
                except OriginalError as e:
                    raise SurveyError(f"--source {opts.source}: {e}") from None
                out.append(Clip("original", audio, sr, origin))
            out.append(roundtrip)
        return out
    finally:
        archive.close()


def _snapshot_names(networks: Sequence[str]) -> List[str]:
    """A short distinct name per network: the file stem, with its folder when stems repeat."""
    stems = [Path(p).stem for p in networks]
    names = [f"{Path(p).parent.name}-{s}" if stems.count(s) > 1 else s for p, s in zip(networks, stems)]
    if len(set(names)) != len(names):
        names = [f"{i}-{n}" for i, n in enumerate(names)]
    return names


def _generated_clips(opts: SurveyOptions, rng: np.random.Generator, count: int, log) -> List[Clip]:
    """``count`` clips of every network (latent seeds and, for conditional ones, classes from ``rng``)."""
    device = resolve_device(opts.device)
    out: List[Clip] = []
    for path, name in zip(opts.networks, _snapshot_names(opts.networks)):
        try:
            G, block, decoder_model = load_generator(path, device, with_decoder=True)
            geometry = StftGeometry.from_dict(block)
            # the snapshot's own decoder model when it carries one, as gen_audio.py decodes
            decoder = decoder_choice(path, geometry, decoder_model, None)
        except GenerateError as e:
            raise SurveyError(f"--network {e}") from None
        seeds = [int(s) for s in rng.integers(0, 2 ** 31 - 1, size=count)]
        c_dim = int(getattr(G, "c_dim", 0))
        c = torch.zeros(count, c_dim, device=device)
        classes = [int(k) for k in rng.integers(0, c_dim, size=count)] if c_dim else [None] * count
        for j, k in enumerate(classes):
            if k is not None:
                c[j, k] = 1
        decoder_label = decoder_name(opts.method, geometry, decoder)
        log(f"{name}: generating {count} clip(s), decoder {decoder_label}")
        z = torch.from_numpy(seed_latents(seeds, int(G.z_dim))).to(device)
        imgs = synthesize(G, z, c, 1.0, "const", device)
        try:
            audio = decode_images(imgs, block, opts.method, None, device, seed=seeds, decoder=decoder)
        except GenerateError as e:
            raise SurveyError(f"--network {path}: {e}") from None
        for j in range(count):
            out.append(Clip(f"generated-{name}", audio[j], int(block["sample_rate"]),
                            {"network": str(Path(path).resolve()), "seed": seeds[j], "class": classes[j],
                             "decoder": decoder_label}))
    return out


# --------------------------------------------------------------------------------------------------
# Writing the folder.

def _answer_files(outdir: Path) -> List[Path]:
    """Every file in ``outdir/responses`` (hidden ones too: a sheet being saved is a hidden temp file)."""
    folder = outdir / "responses"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _set_modes(folder: Path) -> None:
    """:data:`DIR_MODE` on ``folder`` and every folder in it, :data:`FILE_MODE` on every file."""
    os.chmod(folder, DIR_MODE)
    for parent, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(parent, d), DIR_MODE)
        for f in files:
            os.chmod(os.path.join(parent, f), FILE_MODE)


def _data_js(payload: dict) -> str:
    """``survey-data.js``: the page's data as a script, because browsers refuse fetch() on file:// pages."""
    text = json.dumps(payload, indent=1, sort_keys=True).replace("</", "<\\/")
    return f"// Written by python -m audio_ext survey make: clip ids and audio files only.\n" \
           f"window.SURVEY_DATA = {text};\n"


_README = """This folder is a listening test made by ElectroGAN (python -m audio_ext survey make).

Open index.html in a browser, or copy the folder to any static web host. Listeners download their
answers with the button at the end and send you the file.
To collect answers on one machine instead, run:  python -m audio_ext survey serve THIS_FOLDER
Score:  python -m audio_ext survey score THIS_FOLDER/responses/

manifest.json says which clip is which condition. Keep it away from listeners: do not upload it
with the page (the page never needs it; the scorer does), nor responses/ or report/ once they exist.
survey serve never serves any of the three.
"""


def _condition_facts(clips: Sequence[Clip]) -> dict:
    """Number of clips and their common length (samples, sample rate, seconds) for the manifest."""
    lengths = {(int(c.audio.size), int(c.sample_rate)) for c in clips}
    if len(lengths) != 1:
        raise SurveyError(f"clips of condition {clips[0].condition} differ in length or rate: {sorted(lengths)}")
    samples, sr = lengths.pop()
    return {"clips": len(clips), "samples": samples, "sample_rate": sr, "seconds": round(samples / sr, 6)}


def _clip_ids(count: int, seed: int) -> List[str]:
    """``count`` distinct 10-hex-digit ids drawn from ``seed`` (unrelated to conditions or order)."""
    rng = np.random.default_rng([int(seed), 0x5EED])
    ids: List[str] = []
    while len(ids) < count:
        i = f"{int(rng.integers(0, 16 ** 10)):010x}"
        if i not in ids:
            ids.append(i)
    return ids


def make_survey(opts: SurveyOptions, log: Callable[[str], None] = print) -> Path:
    """Build the survey folder ``opts.outdir`` (see the module docstring); returns the manifest path.

    Every input is checked and every clip rendered before anything appears at ``outdir``; an
    existing ``outdir`` is replaced only with ``overwrite``.
    """
    n = int(opts.clips_per_condition)
    if n < 1:
        raise SurveyError(f"--clips-per-condition must be at least 1, got {n}")
    if opts.data is None and not opts.networks:
        raise SurveyError("nothing to rate: give --data (original/round trip) and/or --network")
    if opts.source is not None and opts.data is None:
        raise SurveyError("--source needs --data: the original clips are cut where the archive's clip records say")
    if opts.source is not None and not Path(opts.source).is_dir():
        raise SurveyError(f"--source {opts.source}: not a folder")
    for p in opts.networks:
        if not Path(p).is_file():
            raise SurveyError(f"--network {p}: no such file")
    if opts.method is not None:
        try:
            decoder_name(opts.method)
        except ValueError as e:
            raise SurveyError(str(e)) from None
    try:
        resolve_device(opts.device)
    except DeviceError as e:
        raise SurveyError(str(e)) from None
    level = opts.target_dbfs
    if not (isinstance(level, (int, float)) and math.isfinite(level) and LEVEL_RANGE[0] <= level <= LEVEL_RANGE[1]):
        raise SurveyError(f"--level {level!r}: the RMS level must be a number of dBFS in "
                          f"{LEVEL_RANGE[0]:g}..{LEVEL_RANGE[1]:g} (default {TARGET_DBFS:g})")
    n_anchor = n if opts.anchors is None else int(opts.anchors)
    if not 0 <= n_anchor <= n:
        raise SurveyError(f"--anchors must lie between 0 and --clips-per-condition ({n}), got {n_anchor}")
    outdir = Path(opts.outdir)
    if outdir.exists() and not opts.overwrite:
        raise SurveyError(f"--outdir {outdir}: already exists; pass --overwrite to replace it")
    if outdir.exists() and not (outdir / MANIFEST).is_file() and any(outdir.iterdir()):
        raise SurveyError(f"--outdir {outdir}: not empty and not a survey folder; refusing to replace it")
    sheets = sorted((outdir / "responses").glob("*")) if (outdir / "responses").is_dir() else []
    if sheets:  # listeners' answers are not ours to delete; a rebuilt survey has new clip ids anyway
        raise SurveyError(f"--outdir {outdir}: holds {len(sheets)} answer sheet(s) in responses/; move them "
                          f"elsewhere (and score them against this survey's manifest) before --overwrite")

    rng = np.random.default_rng(int(opts.seed))
    clips: List[Clip] = []
    if opts.data is not None:
        clips += _archive_clips(opts, rng, n + 1, log)
    if opts.networks:
        clips += _generated_clips(opts, rng, n + (0 if opts.data is not None else 1), log)
    conditions: List[str] = list(dict.fromkeys(c.condition for c in clips))
    # The training example is each survey's last clip of its first condition; it is not rated.
    first = conditions[0]
    training = [c for c in clips if c.condition == first][-1]
    rated = [c for c in clips if c is not training]
    rated = [c for cond in conditions for c in [x for x in rated if x.condition == cond][:n]]
    base = [c for c in rated if c.condition == ("original" if "original" in conditions else first)]
    for k, c in enumerate(base[:n_anchor]):
        rated.append(Clip("anchor", anchor_mod.degrade(c.audio, c.sample_rate, seed=int(opts.seed) + k),
                          c.sample_rate, dict(c.origin, degraded_from=c.condition,
                                              lowpass_hz=anchor_mod.CUTOFF_HZ, snr_db=anchor_mod.SNR_DB)))
    if n_anchor:
        conditions.append("anchor")
    try:
        levels, level = normalise_set([c.audio for c in rated + [training]], opts.target_dbfs, PEAK_LIMIT)
    except ValueError as e:
        raise SurveyError(f"loudness normalisation: {e}") from None
    for c, a in zip(rated + [training], levels):
        c.audio = a

    ids = _clip_ids(len(rated) + 1, opts.seed)
    order = [int(i) for i in rng.permutation(len(rated))]  # file order says nothing about conditions
    entries = [(ids[k], rated[i]) for k, i in enumerate(order)]
    training_id = ids[-1]
    survey_id = hashlib.sha256(json.dumps([opts.seed, ids, conditions, opts.title]).encode()).hexdigest()[:12]

    manifest = {
        "format": FORMAT, "version": VERSION, "survey_id": survey_id, "title": opts.title, "seed": int(opts.seed),
        "clips_per_condition": n, "page_seed": opts.page_seed,
        "loudness": {"measure": "rms", "level_dbfs": round(level, 3), "target_dbfs": opts.target_dbfs,
                     "peak_limit": PEAK_LIMIT},
        "conditions": {cond: _condition_facts([c for _, c in entries if c.condition == cond]) for cond in conditions},
        "networks": [{"condition": f"generated-{name}", "path": str(Path(p).resolve())}
                     for p, name in zip(opts.networks, _snapshot_names(opts.networks))],
        "clips": [{"id": i, "file": f"audio/{i}.wav", "condition": c.condition, "sample_rate": c.sample_rate,
                   "samples": int(c.audio.size), "origin": c.origin} for i, c in entries],
        "training": {"id": training_id, "file": f"audio/{training_id}.wav", "condition": training.condition,
                     "origin": training.origin},
    }
    page_data = {"format": FORMAT, "version": VERSION, "survey_id": survey_id, "title": opts.title,
                 "page_seed": opts.page_seed, "training": {"id": training_id, "src": f"audio/{training_id}.wav"},
                 "clips": [{"id": i, "src": f"audio/{i}.wav"} for i, _ in entries]}

    try:
        outdir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".tmp", dir=outdir.parent))
    except OSError as e:
        raise SurveyError(f"--outdir {outdir}: cannot write there ({describe_os_error(e)})") from None
    try:
        (staging / "audio").mkdir()
        for i, c in entries + [(training_id, training)]:
            # no text chunk: a tag could name the condition
            write_audio(staging / "audio" / f"{i}.wav", c.audio, c.sample_rate, peak=FULL_SCALE)
        for name in PAGE_FILES:
            text = (ASSETS / name).read_text(encoding="utf-8")
            if name == "index.html":
                text = text.replace("{{TITLE}}", html.escape(opts.title))
            (staging / name).write_text(text, encoding="utf-8")
        (staging / DATA_JS).write_text(_data_js(page_data), encoding="utf-8")
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        (staging / "README.txt").write_text(_README, encoding="utf-8")
        _set_modes(staging)         # mkdtemp made it 0700: a web server could not read the survey
        if outdir.exists():
            old = outdir.with_name(f".{outdir.name}.old")
            if old.exists():
                shutil.rmtree(old)
            outdir.rename(old)
            # checked again now that the folder is out of a running server's way: a sheet saved
            # while the clips were rendered must not go with the old folder
            late = _answer_files(old)
            if late:
                old.rename(outdir)
                raise SurveyError(f"--outdir {outdir}: {len(late)} answer sheet(s) arrived in responses/ while "
                                  f"the survey was made; nothing was replaced (move them elsewhere first)")
            staging.rename(outdir)
            shutil.rmtree(old)
        else:
            staging.rename(outdir)
    except OSError as e:  # a full or read-only disk: one line, nothing changed at outdir
        shutil.rmtree(staging, ignore_errors=True)
        raise SurveyError(f"--outdir {outdir}: cannot write the survey ({describe_os_error(e)}); "
                          f"nothing was changed there") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    counts = ", ".join(f"{cond} x{manifest['conditions'][cond]['clips']}" for cond in conditions)
    log(f"survey {survey_id} in {outdir}: {len(entries)} clips ({counts}) + 1 training example, "
        f"all at {level:.1f} dBFS RMS")
    return outdir / MANIFEST


def load_manifest(path) -> Dict:
    """``manifest.json`` of a survey folder (or the file itself), checked; SurveyError names the file."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SurveyError(f"{p}: no survey manifest here") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SurveyError(f"{p}: not a readable survey manifest ({e})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("clips"), list):
        raise SurveyError(f"{p}: not an ElectroGAN survey manifest")
    return m
