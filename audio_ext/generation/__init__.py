"""From a trained snapshot to music: clips, loops, walks, mixing, projection, pages.

Stands on the decoder, dataset and core rooms.
"""
