"""What each request of the page asks for: its parameters checked, and the job that makes the clips.

Every ``*_job`` function checks a JSON body against the network (a :class:`RequestError`, shown as
a 400 answer, for anything wrong) and returns ``(kind, total, fn)`` for :class:`.jobs.JobQueue`.
Clips are rendered one generation run at a time into a fresh folder of the session
(:meth:`.engine.Engine.render`), so progress is per clip and a cancel takes effect between clips.
"""
from __future__ import annotations

import contextlib
import math
import re
import secrets
from pathlib import Path
from typing import List, Optional

import soundfile as sf

from audio_ext.core.audio_io import write_audio
from audio_ext.generation import generate as gen
from audio_ext.generation import synthesis as syn
from audio_ext.generation.latents import WALK_SPACES, Projected
from audio_ext.studio.engine import gen_command, group_layers, project_command
from audio_ext.studio.jobs import JobContext, JobError
from audio_ext.studio.layers import layer_spec
from audio_ext.studio.sessions import Clip, Session, new_token

MAX_SEEDS_PER_JOB = 64
MAX_PICKED = 16
MAX_PROJECTION_STEPS = 5000
MAX_VARIATIONS = 16
MAX_WALK_STEPS = 16


class RequestError(ValueError):
    """A request the studio refuses; ``status`` is the HTTP status, the message is shown in the page."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------------- fields

def _int(body: dict, key: str, lo: int, hi: int, default=None) -> int:
    v = body.get(key, default)
    if v is None and default is None:
        raise RequestError(f"{key} is required")
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise RequestError(f"{key} must be an integer in {lo}..{hi}, got {str(v)[:40]}")
    return v


def _num(body: dict, key: str, lo: float, hi: float, default=None) -> float:
    v = body.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise RequestError(f"{key} must be a number in {lo:g}..{hi:g}, got {str(v)[:40]}")
    return float(v)


def common_fields(engine, body: dict) -> dict:
    """Truncation, noise mode and class, the settings every generation shares."""
    fields = {"trunc": _num(body, "trunc", -gen.MAX_TRUNC, gen.MAX_TRUNC, 1.0)}
    noise = body.get("noise_mode", "const")
    if noise not in gen.NOISE_MODES:
        raise RequestError(f"noise_mode must be one of {', '.join(gen.NOISE_MODES)}")
    fields["noise_mode"] = noise
    if engine.c_dim:
        fields["class_idx"] = _int(body, "class_idx", 0, engine.c_dim - 1, 0)
    elif body.get("class_idx") is not None:
        raise RequestError("this network is unconditional: it has no classes")
    return fields


def _bpm(body: dict) -> Optional[float]:
    from audio_ext.generation.retempo import MAX_BPM, MIN_BPM
    return None if body.get("bpm") is None else _num(body, "bpm", MIN_BPM, MAX_BPM)


def _picked(session: Session, body: dict, key: str, lo: int = 1) -> List[Clip]:
    ids = body.get(key)
    if not isinstance(ids, list) or not lo <= len(ids) <= MAX_PICKED:
        raise RequestError(f"{key} must be a list of {lo}-{MAX_PICKED} clip ids")
    clips = []
    for cid in ids:
        clip = session.clip(cid) if isinstance(cid, str) else None
        if clip is None:
            raise RequestError(f"{key}: no clip {str(cid)[:40]!r} in this session", 404)
        clips.append(clip)
    return clips


def _seed_of(clip: Clip, what: str) -> int:
    seeds = clip.recipe.get("seeds")
    if clip.kind != "seed" or not seeds:
        raise RequestError(f"{what}: {clip.title} is not a seed's clip (pick clips from the grid)")
    return int(seeds[0])


@contextlib.contextmanager
def _job_errors():
    """GenerateError and ValueError raised while rendering: the job fails with their one-line message."""
    try:
        yield
    except (syn.GenerateError, ValueError, OSError) as e:
        raise JobError(str(e)) from None


def _check(engine, fields: dict) -> None:
    """Every check gen_audio.py makes, before the job is queued (nothing is written)."""
    try:
        with engine.decoding():
            engine.make_run(Path("unused"), **fields)
    except syn.GenerateError as e:
        raise RequestError(str(e)) from None


def _publish(engine, session: Session, ctx: JobContext, run, folder: Path, fields: dict, kind: str,
             group: Optional[str] = None, command: Optional[str] = None) -> List[Clip]:
    """Turn what a run wrote into clips of the session (and of the job's view)."""
    out = []
    for e in run.entries:
        for path in run.opts.projected_w or [i.path for i in run.opts.walk or () if isinstance(i, Projected)]:
            retag(folder / e.audio, str(path), "proj/projected_w.npz")
        info = sf.info(str(folder / e.audio))
        seed = e.seed if isinstance(e.seed, int) else None
        clip = Clip(id=new_token(), title=str(e.title), kind=kind, audio=folder / e.audio,
                    image=folder / e.image if e.image else None, filename=e.audio,
                    seconds=info.frames / info.samplerate, sample_rate=info.samplerate, bpm=e.bpm, seed=seed,
                    command=command or gen_command(engine.shown, fields), recipe=fields, group=group)
        session.add_clip(clip)
        ctx.add_clip(clip.public())
        out.append(clip)
    return out


def retag(path: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` in the file's text tags (the session's temporary path of a projected latent
    becomes the path its command uses, so no session id leaves in a download); samples are kept exactly."""
    with sf.SoundFile(str(path)) as f:
        tags, sr, fmt, subtype = f.copy_metadata(), f.samplerate, f.format, f.subtype
        pcm = f.read(dtype="int16")
    if not any(old in v for v in tags.values()):
        return
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=1, subtype=subtype, format=fmt) as f:
        order = ["software", "artist", "title", "comment"]     # the order generate.write_audio sets them in
        for k in sorted(tags, key=lambda k: order.index(k) if k in order else len(order)):
            setattr(f, k, tags[k].replace(old, new))
        f.write(pcm)


# ------------------------------------------------------------------------------------------- jobs

def seeds_job(engine, session: Session, body: dict):
    """A grid of seeds: ``seeds`` (a list) or ``count`` new random ones."""
    common = common_fields(engine, body)
    if body.get("seeds") is not None:
        seeds = body["seeds"]
        if not isinstance(seeds, list) or not 1 <= len(seeds) <= MAX_SEEDS_PER_JOB or \
                not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2 ** 32 for s in seeds):
            raise RequestError(f"seeds must be a list of 1-{MAX_SEEDS_PER_JOB} integers in 0..2^32-1")
    else:
        count = _int(body, "count", 1, MAX_SEEDS_PER_JOB, 8)
        seeds = [secrets.randbelow(100000) for _ in range(count)]
    _check(engine, dict(seeds=seeds[:1], **common))

    def fn(ctx: JobContext):
        for k, s in enumerate(seeds):
            ctx.progress(k, len(seeds), f"seed {s} ({k + 1}/{len(seeds)})")
            folder = session.new_folder("seed")
            fields = dict(seeds=[s], **common)
            with _job_errors():
                _publish(engine, session, ctx, engine.render(folder, **fields), folder, fields, "seed")
        return {"seeds": seeds}
    return "seeds", len(seeds), fn


def loop_job(engine, session: Session, body: dict):
    """Clip ``clip`` as a seamless loop of ``bars`` bars at ``bpm`` (the clip's own tempo when absent).

    A seed's clip or a projection is rendered again with ``gen_audio.py --loop --bpm`` (exactly that
    command's file); any other clip (a mixing cell, a walk, a variation, a target) is stretched and
    looped from its own audio with the same functions (:func:`_loop_from_audio`).
    """
    clip = _picked(session, {"clip": [body.get("clip")]}, "clip")[0]
    if not clip.recipe or clip.recipe.get("variations") or clip.kind not in ("seed", "projection"):
        return _loop_from_audio(session, clip, _int(body, "bars", 1, 64, 4), _bpm(body))
    bpm = _bpm(body)
    fields = dict(clip.recipe, loop_bars=_int(body, "bars", 1, 64, 4))
    if bpm is not None:
        fields["bpm"] = bpm
    _check(engine, fields)

    def fn(ctx: JobContext):
        ctx.progress(0, 1, "rendering the loop")
        folder = session.new_folder("loop")
        with _job_errors():
            clips = _publish(engine, session, ctx, engine.render(folder, **fields), folder, fields, "loop")
        return {"clip": clips[0].id}
    return "loop", 1, fn


def _loop_from_audio(session: Session, clip: Clip, bars: int, bpm: Optional[float]):
    """A loop of a clip no single gen_audio.py command loops: its WAV stretched from its tempo to ``bpm``
    (:func:`audio_ext.generation.retempo.change_tempo`) and looped by :func:`audio_ext.generation.loops.loop_to_bars`, with
    gen_audio.py's default crossfade; the name and tags say loop, bars and BPM as gen_audio.py's do."""
    from audio_ext.generation import loops
    from audio_ext.generation.retempo import change_tempo, stretched_length
    if clip.bpm is None:
        raise RequestError(f"{clip.title}: has no tempo, so it cannot be cut into bars")
    src_bpm = float(clip.bpm)
    target = src_bpm if bpm is None else bpm
    sr = clip.sample_rate
    n = int(round(clip.seconds * sr))
    if abs(target - src_bpm) > 1e-9:
        n = stretched_length(n, src_bpm, target)
    fade_s = gen.GenerateOptions.__dataclass_fields__["crossfade_s"].default
    if loops.held_bars(n, sr, target, fade_s) < 1:  # fewer bars than asked are looped (loops.loop_to_bars)
        raise RequestError(f"--loop {bars}: a {n / sr:.2f} s clip at {target:g} BPM holds less than one whole "
                           f"bar plus the {fade_s * 1000:g} ms crossfade")
    stem = re.sub(r"-[0-9.]+bpm$", "", Path(clip.filename).stem)
    name = f"{stem}-loop{bars}bar-{syn.fmt_bpm(target)}bpm.wav"

    def fn(ctx: JobContext):
        ctx.progress(0, 1, "stretching and looping")
        folder = session.new_folder("loop")
        with _job_errors():
            with sf.SoundFile(str(clip.audio)) as f:
                tags = f.copy_metadata()
                audio = f.read(dtype="float32")
            if abs(target - src_bpm) > 1e-9:
                audio = change_tempo(audio, sr, src_bpm, target)
            audio = loops.loop_to_bars(audio, sr, target, bars, fade_s).audio
            tags.update(title=f"{stem} loop {bars} bar(s) {syn.fmt_bpm(target)} BPM",
                        comment=f"{tags.get('comment', '')} loop={bars} bpm={target:g} (looped in the studio)".strip())
            write_audio(folder / name, audio, sr, "wav", tags)
        out = Clip(id=new_token(), title=f"{clip.title}, loop of {bars} bar(s)", kind="loop", audio=folder / name,
                   image=clip.image, filename=name, seconds=len(audio) / sr, sample_rate=sr, bpm=target, seed=clip.seed,
                   command=f"{clip.command}   # then its first {bars} bar(s) at {target:g} BPM as a seamless loop "
                           f"(done by the studio: gen_audio.py --loop takes seeds and projections)")
        session.add_clip(out)
        ctx.add_clip(out.public())
        return {"clip": out.id}
    return "loop", 1, fn


def mix_job(engine, session: Session, body: dict):
    """Style mixing: ``rows`` and ``cols`` (seed clips), the ``groups`` (coarse/middle/fine) or ``layers`` from the columns."""
    rows = [_seed_of(c, "rows") for c in _picked(session, body, "rows")]
    cols = [_seed_of(c, "cols") for c in _picked(session, body, "cols")]
    if body.get("layers"):
        spec = str(body["layers"])[:200]
    else:
        groups = body.get("groups")
        if not isinstance(groups, list) or not groups or any(g not in engine.groups for g in groups):
            raise RequestError(f"groups must be a non-empty list of {', '.join(engine.groups)} (or give layers)")
        spec = layer_spec(group_layers(engine.groups, groups))
    fields = dict(mix_rows=rows, mix_cols=cols, mix_styles=spec, **common_fields(engine, body))
    _check(engine, fields)
    total = len(rows) + len(cols) + len(rows) * len(cols)

    def fn(ctx: JobContext):
        ctx.progress(0, total, f"mixing {len(rows)} x {len(cols)}, layers {spec}")
        folder = session.new_folder("mix")
        with _job_errors():
            run = engine.render(folder, **fields)
            clips = _publish(engine, session, ctx, run, folder, {}, "mix", group=ctx.job.id,
                             command=gen_command(engine.shown, fields))
        n_r, n_c = len(rows), len(cols)
        ids = [c.id for c in clips]
        return {"rows": ids[:n_r], "cols": ids[n_r:n_r + n_c], "layers": spec,
                "cells": [ids[n_r + n_c + i * n_c:n_r + n_c + (i + 1) * n_c] for i in range(n_r)]}
    return "mix", total, fn


def walk_job(engine, session: Session, body: dict):
    """A beat-joined walk through the picked ``clips`` (seeds, projections), ``bars`` each, ``steps`` between."""
    items = []
    for c in _picked(session, body, "clips", lo=2):
        if c.kind == "projection" and c.recipe.get("projected_w"):
            items.append(Projected(c.recipe["projected_w"][0]))
        else:
            items.append(_seed_of(c, "clips"))
    space = body.get("space", "z")
    if space not in WALK_SPACES:
        raise RequestError(f"space must be one of {', '.join(WALK_SPACES)}")
    fields = dict(walk=items, walk_space=space, walk_bars=_int(body, "bars", 1, 64, 2),
                  walk_steps=_int(body, "steps", 0, MAX_WALK_STEPS, 1), **common_fields(engine, body))
    _check(engine, fields)

    def fn(ctx: JobContext):
        ctx.progress(0, 1, f"walking through {len(items)} clips")
        folder = session.new_folder("walk")
        with _job_errors():
            clips = _publish(engine, session, ctx, engine.render(folder, **fields), folder, {}, "walk",
                             command=gen_command(engine.shown, fields))
        return {"clip": clips[0].id}
    return "walk", 1, fn


def project_job(engine, session: Session, body: dict):
    """Project upload ``upload`` from ``start`` seconds with ``steps`` steps; clips: target, projection."""
    upload = session.upload(body.get("upload")) if isinstance(body.get("upload"), str) else None
    if upload is None or upload.kind != "audio":
        raise RequestError("upload: no such upload in this session (send the track first)", 404)
    start = _num(body, "start", 0.0, 1e6, 0.0)
    if upload.seconds and start >= upload.seconds:
        raise RequestError(f"start {start:g} s is past the end of {upload.name} ({upload.seconds:.2f} s)")
    steps = _int(body, "steps", 1, MAX_PROJECTION_STEPS, 200)
    if engine.bpm is None:
        raise RequestError("this network has no target_bpm: a track cannot be stretched to its tempo")

    def fn(ctx: JobContext):
        folder = session.new_folder("proj")
        with _job_errors():
            engine.project(upload.path, upload.name, start, steps, folder,
                           lambda d, t, m: ctx.progress(d, t, m))
        proj = folder / "proj"
        npz = str(proj / "projected_w.npz")
        cmd = project_command(engine.shown, upload.name, start, steps)
        out = {}
        for name, kind, title in (("target", "target", f"{upload.name} (through codec and decoder)"),
                                  ("projected", "projection", f"projection of {upload.name}")):
            info = sf.info(str(proj / f"{name}.wav"))
            recipe = {"projected_w": [npz], "noise_mode": "const"} if kind == "projection" else {}
            clip = Clip(id=new_token(), title=title, kind=kind, audio=proj / f"{name}.wav", image=proj / f"{name}.png",
                        filename=f"{Path(upload.name).stem}-{name}-{engine.bpm:g}bpm.wav",
                        seconds=info.frames / info.samplerate, sample_rate=info.samplerate, bpm=engine.bpm,
                        seed=None, command=cmd, recipe=recipe, group=ctx.job.id)
            session.add_clip(clip)
            ctx.add_clip(clip.public())
            out[name] = clip.id
        return out
    return "project", steps, fn


def latent_job(engine, session: Session, body: dict):
    """The clip of an uploaded ``projected_w.npz`` (upload ``upload``): a projection clip like project's."""
    upload = session.upload(body.get("upload")) if isinstance(body.get("upload"), str) else None
    if upload is None or upload.kind != "latent":
        raise RequestError("upload: no such latent in this session (send a projected_w.npz first)", 404)
    fields = dict(projected_w=[str(upload.path)], noise_mode="const")
    _check(engine, fields)

    def fn(ctx: JobContext):
        ctx.progress(0, 1, f"rendering {upload.name}")
        folder = session.new_folder("latent")
        with _job_errors():
            clips = _publish(engine, session, ctx, engine.render(folder, **fields), folder, fields, "projection")
        return {"clip": clips[0].id}
    return "latent", 1, fn


def variations_job(engine, session: Session, body: dict):
    """``n`` variations around projection clip ``clip``, ``spread`` apart (gen_audio.py --variations)."""
    clip = _picked(session, {"clip": [body.get("clip")]}, "clip")[0]
    if clip.kind != "projection":
        raise RequestError(f"{clip.title} is not a projection")
    n = _int(body, "n", 1, MAX_VARIATIONS, 4)
    fields = dict(projected_w=list(clip.recipe["projected_w"]), variations=n,
                  spread=_num(body, "spread", 0.0, 10.0, 0.5), **common_fields(engine, body))
    _check(engine, fields)

    def fn(ctx: JobContext):
        ctx.progress(0, 1, f"{n} variations")
        folder = session.new_folder("vars")
        with _job_errors():
            _publish(engine, session, ctx, engine.render(folder, **fields), folder, {}, "variation",
                     command=gen_command(engine.shown, fields))
        return {}
    return "variations", 1, fn


JOBS = {"seeds": seeds_job, "loop": loop_job, "mix": mix_job, "walk": walk_job, "project": project_job,
        "variations": variations_job, "latent": latent_job}
