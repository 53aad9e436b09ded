"""ElectroGAN's own StyleGAN2(-ADA): ops, networks, loss, augmentation, training loop, metrics.

Imports nothing from the audio layer: that layer uses this package through its public modules and
fills its plug-in points (metric modules: ``stylegan2.metrics.registry.load_plugins``; snapshot
extras: ``training_loop(snapshot_extra=...)``; previews: ``snapshot_hook``). Two parts are tuned for
spectrogram images but need no audio code: the ``audio*`` presets of :mod:`.presets` (the thesis's
hyper-parameters) and the augmentation pipe of :mod:`.augment` (transforms that never move content
along the frequency axis), chosen by name with ``--cfg`` and ``--augpipe``.
"""
