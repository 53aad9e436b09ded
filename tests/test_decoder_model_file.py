"""Decoder-model files are checked like snapshots, at every door (issue 22, items 10-12).

Doors: a model file (``--decoder-model``, the side file of an archive, ``train-decoder --init`` and
``--out``), and the ``decoder_model`` dict a snapshot carries. Each bad model is one line naming
the file and the field, before any real network is built or anything decoded.
"""
import os
import threading
import zipfile

import pytest
import torch
from click.testing import CliRunner
from decoder_helpers import tiny_model_payload

import gen_audio
from audio_ext.core.geometry import StftGeometry
from audio_ext.decoder import frame_model, model_file
from audio_ext.decoder.archive_model import check_model_for
from audio_ext.decoder.model_choice import choose_decoder_model
from stylegan2 import networks, snapshot

GEOM = StftGeometry(32)


def nan_payload():
    p = tiny_model_payload(GEOM)
    p["state_dict"]["blocks.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    return p


def write_raw(path, payload):
    """A model file written with torch.save directly (as a crafted file would be), past save_model."""
    torch.save(payload, path)
    return path


def test_nan_weights_are_refused_at_every_door(tmp_path):
    path = write_raw(tmp_path / "nan.pt", nan_payload())
    with pytest.raises(frame_model.ModelError, match=r"nan.pt: state_dict.blocks.0.conv1.weight holds NaN"):
        model_file.read_model_file(path)
    with pytest.raises(frame_model.ModelError, match="NaN"):
        choose_decoder_model(flag=path)                           # --decoder-model / $ELECTROGAN_DECODER_MODEL
    with pytest.raises(frame_model.ModelError, match="snap.pkl:decoder_model: state_dict"):
        choose_decoder_model(carried=nan_payload(), where="snap.pkl")  # a snapshot's own model
    with pytest.raises(frame_model.ModelError, match="NaN"):
        check_model_for(nan_payload(), GEOM, "stft.decoder.pt")  # the file beside an archive
    inf_adam = tiny_model_payload(GEOM)
    inf_adam["optimizer"] = {"state": {0: {"exp_avg": torch.tensor([float("inf")])}}, "param_groups": []}
    with pytest.raises(frame_model.ModelError, match=r"optimizer.state.0.exp_avg holds NaN or infinite"):
        model_file.check_model_payload(inf_adam, "ckpt.pt")


def test_generation_with_a_nan_model_in_the_snapshot_fails_in_one_line(tmp_path):
    torch.manual_seed(0)
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=1,
                           mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=16)
    snap = tmp_path / "snap.pkl"
    snapshot.save_snapshot(snap, {"G_ema": snapshot.network_record(G), "cur_nimg": 0, "decoder_model": nan_payload(),
                                  "audio": GEOM.audio_block(mean=-6.0, std=3.0, target_bpm=130.0)})
    res = CliRunner().invoke(gen_audio.main, ["--network", str(snap), "--seeds", "1", "--outdir",
                                              str(tmp_path / "out"), "--device", "cpu"])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert lines[-1].startswith("Error: ") and "decoder_model" in lines[-1] and "NaN" in lines[-1], res.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.wav"))


@pytest.mark.parametrize("config,why", [
    ({"dilations": []}, "dilations must be a list of 1..16 integers"),
    ({"body_width": 6000}, "config body_width 6000 is not an integer in 1..256"),
    ({"down": 0}, "config down 0 is not an integer in 1..16"),
    ({"width": True}, "config width True is not an integer"),
    ({"n_blocks": 2.0}, "config n_blocks 2.0 is not an integer"),
    ({"extra": 1}, "unknown \\['extra'\\]"),
])
def test_config_is_checked_against_a_schema_and_bounds(tmp_path, config, why):
    p = tiny_model_payload(GEOM)
    p["config"] = dict(p["config"], **config)
    path = write_raw(tmp_path / "m.pt", p)
    with pytest.raises(frame_model.ModelError, match=why):
        model_file.read_model_file(path)


def test_a_large_declared_network_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    p = tiny_model_payload(GEOM)
    p["config"] = dict(p["config"], body_width=256, n_blocks=32)   # within bounds, but not what is stored
    built = []
    real = frame_model.FrameInterpNet.__init__

    def spy(self, *a, **k):
        built.append(torch.empty(0).device.type)   # the default device the network is built on
        real(self, *a, **k)

    monkeypatch.setattr(frame_model.FrameInterpNet, "__init__", spy)
    with pytest.raises(frame_model.ModelError, match=r"down.weight is stored as \[8, 4, 4, 1\], the config "
                                                r"declares \[256, 4, 4, 1\]"):
        model_file.check_model_payload(p, "m.pt")
    assert built == ["meta"]          # the only network made was the shape-only one


def test_a_deflated_bomb_and_an_oversized_file_are_refused_before_torch_reads_them(tmp_path):
    good = tmp_path / "good.pt"
    frame_model.save_model(good, tiny_model_payload(GEOM))
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
        prefix = src.infolist()[0].filename.split("/")[0]
        dst.writestr(f"{prefix}/data/999", bytes(64 * 2**20))          # 64 MiB of zeros, ~64 kB deflated
    assert bomb.stat().st_size < 2**20
    with pytest.raises(frame_model.ModelError, match=r"bomb.pt: its members unpack to .* decoder models are stored "
                                                r"uncompressed"):
        model_file.read_model_file(bomb)
    big = tmp_path / "big.pt"
    with open(big, "wb") as f:                 # sparse: costs no disk
        f.write(b"PK\x03\x04")
        f.truncate(65 * 2**20)
    with pytest.raises(frame_model.ModelError, match="big.pt: 68,157,440 bytes, larger than any decoder model"):
        model_file.read_model_file(big)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "m.pt"
    os.mkfifo(fifo)
    result = []
    t = threading.Thread(target=lambda: result.append(pytest.raises(frame_model.ModelError, model_file.read_model_file, fifo)),
                         daemon=True)
    t.start()
    t.join(timeout=10)
    assert result and "FIFO" in str(result[0].value)


def _train_args(tmp_path):
    import soundfile as sf

    from audio_ext.decoder.frame_training import synthetic_sources
    src = tmp_path / "music"
    src.mkdir()
    for i, y in enumerate(synthetic_sources(1, 2.0, 44100, seed=5)):
        sf.write(str(src / f"loop{i}.wav"), y, 44100)
    return ["train-decoder", "--source", str(src), "--resolution", "32", "--batch", "2", "--patch-frames", "8",
            "--arch", "tiny", "--seed", "3", "--device", "cpu", "--steps", "2"]


def test_train_decoder_refuses_a_nan_init_and_an_out_under_a_file_before_training(tmp_path):
    from audio_ext.__main__ import main
    args = _train_args(tmp_path)
    p = tiny_model_payload(GEOM)
    from audio_ext.decoder.frame_training import ARCHS
    net = frame_model.FrameInterpNet(**ARCHS["tiny"])
    p = frame_model.model_payload(net, GEOM, {"mean": -6.0, "std": 3.0})
    p["state_dict"]["stem.weight"].fill_(float("nan"))
    init = write_raw(tmp_path / "init.pt", p)
    r = CliRunner().invoke(main, args + ["--init", str(init), "--out", str(tmp_path / "a.pt")])
    assert r.exit_code == 1 and "init.pt: state_dict.stem.weight holds NaN" in r.output, r.output
    assert not (tmp_path / "a.pt").exists()
    (tmp_path / "file").write_text("x")
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "file" / "m.pt")])
    assert r.exit_code == 1, r.output
    assert r.output.strip().splitlines() == [f"Error: --out {tmp_path / 'file' / 'm.pt'}: cannot be created "
                                             f"({tmp_path / 'file'} is a file)"]


def test_train_decoder_on_a_full_disk_is_one_line(tmp_path, full_disk):
    from audio_ext.__main__ import main
    r = CliRunner().invoke(main, _train_args(tmp_path) + ["--out", str(full_disk / "m.pt")])
    assert r.exit_code == 1, r.output
    last = r.output.strip().splitlines()[-1]
    assert last == f"Error: --out {full_disk / 'm.pt'}: cannot write the model ({full_disk / 'm.pt'}: " \
                   f"No space left on device)", r.output
    assert [p.name for p in full_disk.iterdir()] == ["filler"]       # no temporary file left


def test_train_decoder_progress_redraws_rarely_into_a_log(tmp_path, capsys):
    """Redirected (not a terminal), the bar is drawn at start and end, not once per step."""
    from audio_ext.decoder.frame_training import TrainConfig, synthetic_sources, train_decoder
    train = synthetic_sources(1, 2.0, 44100, seed=1)
    train_decoder(train, tmp_path / "m.pt", GEOM, TrainConfig(steps=40, batch=1, patch_frames=4, arch="tiny"),
                  log=lambda s: None, progress=True)
    err = capsys.readouterr().err
    draws = err.count("train-decoder")
    assert 1 <= draws <= 3, err[-500:]
