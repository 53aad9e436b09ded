"""What the audio layer plugs into ``stylegan2``: the modules that register its metrics.

``stylegan2`` imports nothing from this package; the command lines that put the two layers together
hand it these names (``registry.load_plugins``, ``training_loop(metric_plugins=...)``), so the audio
metrics (``tempo_fidelity``, ``sfd10k_full``, ...) are known in every process that computes metrics.
"""
from __future__ import annotations

#: Modules that register metrics with ``stylegan2.metrics.registry`` when imported.
METRIC_MODULES = ("audio_ext.generation.metrics",)
