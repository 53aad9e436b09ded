"""From STFT magnitudes back to audio: Griffin-Lim, PGHI, the learned frame model.

Stands on :mod:`audio_ext.core` and reads archives through :mod:`audio_ext.dataset`.
"""
