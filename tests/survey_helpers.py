"""Test helpers for the listening test: a small survey folder and synthetic answer sheets."""
import json
from pathlib import Path

import numpy as np
from archive_helpers import write_encoded_archive
from snapshot_helpers import tiny_audio_snapshot

from audio_ext.core.geometry import StftGeometry
from audio_ext.core.synth import techno_loop
from audio_ext.survey.make import SurveyOptions, make_survey


def tiny_archive(path: Path, resolution: int = 128, n: int = 6) -> Path:
    """An archive of ``n`` clips of synthetic techno (0.37 s each at R=128), no clip records."""
    g = StftGeometry(resolution, sample_rate=44100)
    loop = techno_loop(130.0, n * g.clip_samples / 44100 + 0.1, sr=44100, seed=3)
    clips = np.stack([loop[i * g.clip_samples:(i + 1) * g.clip_samples] for i in range(n)])
    write_encoded_archive(path, clips, g)
    return path


def tiny_survey(root: Path) -> Path:
    """A survey folder ``root/survey`` built from a 4-clip :func:`tiny_archive` (2 clips per condition, 1 anchor, seed 1)."""
    data = tiny_archive(root / "a.zip", n=4)
    out = root / "survey"
    make_survey(SurveyOptions(outdir=str(out), clips_per_condition=2, seed=1, data=str(data), anchors=1),
                log=lambda m: None)
    return out


def tiny_snapshot(path: Path, resolution: int = 32, seed: int = 0) -> Path:
    """A randomly initialised 32 x 32 generator with an audio block (1024-sample clips)."""
    return tiny_audio_snapshot(path, resolution, seed=seed, cur_nimg=0)


def sheet(manifest: dict, listener: str, ratings: dict, seed: int = 1) -> dict:
    """An answer sheet as the page exports it; ``ratings`` maps clip id -> rating."""
    return {"format": "electrogan-survey-answers", "version": 1, "survey_id": manifest["survey_id"],
            "listener": listener, "seed": seed, "started": "2026-01-01T00:00:00Z",
            "answers": [{"clip": c, "rating": int(r), "listened_s": 1.5, "plays": 1, "comment": "",
                         "answered_at": "2026-01-01T00:01:00Z"} for c, r in ratings.items()]}


def write_sheet(folder: Path, name: str, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
