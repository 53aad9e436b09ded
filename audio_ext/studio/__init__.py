"""ElectroGAN Studio: a local web app to play with a trained network and take loops home (docs/studio.md).

``python -m audio_ext studio --network PKL``. Standard library server (:mod:`.server`), one loaded
generator (:mod:`.engine`), sessions with their own temporary folders (:mod:`.sessions`), a job
queue with progress and cancel (:mod:`.jobs`), the live beat-joined stream (:mod:`.live`) and the
page (``assets/``: vanilla HTML, JS and CSS).
"""
