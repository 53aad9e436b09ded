"""Tiny decoder models for tests of which model decodes (archive side file, snapshot, shipped, --decoder-model)."""
from audio_ext.decoder import frame_model


def tiny_model_payload(geometry, seed=0, training=None):
    """A tiny FrameInterpNet for ``geometry`` with a random head, so its in-between frames differ from the
    plain interpolation and from other seeds' (clips decoded with two seeds are audibly different)."""
    import torch
    torch.manual_seed(seed)
    net = frame_model.FrameInterpNet(width=4, body_width=8, n_blocks=1, dilations=(1,), down=4)
    for p in net.head.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return frame_model.model_payload(net, geometry, {"mean": -6.0, "std": 3.0}, training=training)


def tiny_model_file(path, geometry, seed=0, training=None):
    frame_model.save_model(path, tiny_model_payload(geometry, seed, training))
    return path


def shipped_stand_in(tmp_path, monkeypatch, geometry):
    """Generator for a fixture: a tiny model fitting ``geometry`` stands in for the shipped one, with no
    $ELECTROGAN_DECODER_MODEL set."""
    path = tiny_model_file(tmp_path / f"shipped_r{geometry.resolution}.pt", geometry, seed=7)
    monkeypatch.setattr(frame_model, "DEFAULT_MODEL_PATH", path)
    monkeypatch.delenv(frame_model.MODEL_ENV, raising=False)
    yield path
