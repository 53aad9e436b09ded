"""ElectroGAN's own StyleGAN2(-ADA): ops, networks, loss, augmentation, training loop, metrics.

Knows nothing about audio; the audio layer (`audio_ext`) uses it through its public modules.
"""
