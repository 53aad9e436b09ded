"""Coarse, middle and fine styles: the StyleGAN paper's three groups of w layers, for mixing and steering.

Karras et al. (2019, section 3.1) call the styles of the 4²-8² resolutions coarse, 16²-32² middle
and 64² up fine. Layer ``i`` of ``ws`` drives resolution ``4 * 2 ** (i // 2)`` (two layers per
resolution from 4x4 up, the convention of audio_ext.generation.mixing), so for an 18-layer network (R = 1024)
coarse is 0-3, middle 4-7 and fine 8-17. A small network may have no fine layers; that group is left out.
On a spectrogram the coarse styles carry the overall layout of the clip (where the energy sits in
time and frequency), the fine ones texture and timbre detail.
"""
from __future__ import annotations

from typing import Dict, List

GROUPS = ("coarse", "middle", "fine")


def layer_resolution(i: int) -> int:
    """The resolution (pixels per side) whose styles layer ``i`` carries."""
    return 4 * 2 ** (int(i) // 2)


def layer_groups(num_ws: int) -> Dict[str, List[int]]:
    """``{'coarse': [...], 'middle': [...], 'fine': [...]}`` for a network with ``num_ws`` layers (empty groups left out)."""
    groups: Dict[str, List[int]] = {g: [] for g in GROUPS}
    for i in range(int(num_ws)):
        r = layer_resolution(i)
        groups["coarse" if r <= 8 else "middle" if r <= 32 else "fine"].append(i)
    return {g: layers for g, layers in groups.items() if layers}


def layer_spec(layers: List[int]) -> str:
    """``[0, 1, 2, 3, 8]`` -> ``'0-3,8'`` (the syntax of ``gen_audio.py --mix-styles``)."""
    out, layers = [], sorted(set(int(i) for i in layers))
    k = 0
    while k < len(layers):
        j = k
        while j + 1 < len(layers) and layers[j + 1] == layers[j] + 1:
            j += 1
        out.append(str(layers[k]) if j == k else f"{layers[k]}-{layers[j]}")
        k = j + 1
    return ",".join(out)
