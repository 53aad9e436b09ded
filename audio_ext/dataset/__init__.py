"""From music files to a training archive: tempo tracking, stretching, cutting, the archive.

Stands on :mod:`audio_ext.core` only.
"""
