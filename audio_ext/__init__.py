"""The audio layer: STFT image codec, phase reconstruction, slicing, archive, audio metrics."""
