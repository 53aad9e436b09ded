"""Ground floor: audio files in and out, the STFT geometry and the audio <-> image codec.

Imports nothing else of audio_ext; every other room stands on it.
"""
