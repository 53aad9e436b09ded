"""Shipped networks: export (G_ema only, checked, atomic, size-capped) and ``--network pretrained:NAME``
in gen_audio.py, calc_metrics.py and the generator loader (projection uses the same loader)."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import calc_metrics
import gen_audio
from audio_ext.__main__ import main as audio_main
from audio_ext.core.geometry import StftGeometry
from audio_ext.generation import pretrained
from audio_ext.generation.synthesis import GenerateError, load_generator
from stylegan2 import networks, snapshot


def make_training_snapshot(path: Path, data_path: str = "stft.zip") -> Path:
    """A snapshot as train.py writes it: G, D, G_ema, counters, the audio block, the training set."""
    torch.manual_seed(0)
    kw = dict(z_dim=8, w_dim=8, img_resolution=32, img_channels=1, mapping_kwargs=dict(num_layers=1),
              channel_base=256, channel_max=8)
    G, G_ema = networks.Generator(**kw), networks.Generator(**kw)
    with torch.no_grad():
        for p in G_ema.parameters():
            p.add_(0.01)            # G_ema differs from G, so the export can be told to keep the right one
    D = networks.Discriminator(img_resolution=32, img_channels=1, channel_base=256, channel_max=8)
    block = StftGeometry(32, sample_rate=2048).audio_block(mean=-6.0, std=3.0, target_bpm=130.0)
    snapshot.save_snapshot(path, {"G": snapshot.network_record(G), "D": snapshot.network_record(D),
                                  "G_ema": snapshot.network_record(G_ema), "audio": block, "cur_nimg": 12345,
                                  "training_set_kwargs": {"path": data_path, "resolution": 32}})
    return path


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """An empty package folder of shipped networks and a training snapshot to export into it."""
    folder = tmp_path / "pretrained"
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", folder)
    return folder, make_training_snapshot(tmp_path / "network-snapshot-000012.pkl")


def test_export_keeps_g_ema_audio_and_provenance_only(shipped):
    folder, snap = shipped
    dest = pretrained.export_pretrained(snap, "tiny", notes="a test network")
    assert dest == folder / "tiny.pt"
    data = snapshot.load_snapshot(dest)
    assert set(data) == {"format_version", "G_ema", "audio", "pretrained", "cur_nimg"}
    assert data["cur_nimg"] == 12345
    source = snapshot.load_snapshot(snap)
    for k, v in source["G_ema"]["state_dict"].items():
        assert torch.equal(data["G_ema"]["state_dict"][k], v)
    assert data["audio"] == source["audio"]
    prov = data["pretrained"]
    assert prov["name"] == "tiny" and prov["notes"] == "a test network" and prov["kimg"] == 12.345
    assert prov["source_snapshot"] == snap.name and prov["training_set"] == "stft.zip"
    assert prov["decoder"] in ("pghi+fgla", "learned+pghi+fgla")
    assert dest.stat().st_size < snap.stat().st_size / 2     # no D, no G, no optimizer


def test_name_resolves_everywhere_and_unknown_names_are_listed(shipped, tmp_path):
    folder, snap = shipped
    with pytest.raises(pretrained.PretrainedError, match=r"pretrained:nope: unknown .*known: none"):
        pretrained.resolve_network("pretrained:nope")
    pretrained.export_pretrained(snap, "tiny")
    pretrained.export_pretrained(snap, "other-1")
    assert pretrained.resolve_network("pretrained:tiny") == str(folder / "tiny.pt")
    assert pretrained.resolve_network("runs/x.pkl") == "runs/x.pkl"
    with pytest.raises(pretrained.PretrainedError,
                       match=r"^pretrained:nope: unknown shipped network; known: pretrained:other-1, pretrained:tiny$"):
        pretrained.resolve_network("pretrained:nope")
    with pytest.raises(pretrained.PretrainedError, match="known: pretrained:other-1"):
        pretrained.resolve_network("pretrained:../tiny")        # no path tricks
    G, block = load_generator("pretrained:tiny", torch.device("cpu"))
    ref = snapshot.build_networks(snapshot.load_snapshot(snap), names=["G_ema"])["G_ema"]
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(G(z, None, noise_mode="const"), ref(z, None, noise_mode="const"))
    with pytest.raises(GenerateError, match="known: pretrained:other-1, pretrained:tiny"):
        load_generator("pretrained:missing", torch.device("cpu"))


def test_gen_audio_plays_a_shipped_network(shipped, tmp_path):
    folder, snap = shipped
    pretrained.export_pretrained(snap, "tiny")
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    for network, out in (("pretrained:tiny", out_a), (str(folder / "tiny.pt"), out_b)):
        r = CliRunner().invoke(gen_audio.main, ["--network", network, "--seeds", "0-1", "--outdir", str(out)])
        assert r.exit_code == 0, r.output
    wavs = sorted(p.name for p in out_a.glob("*.wav"))
    assert len(wavs) == 2
    for name in wavs:   # the name and the path give the same audio (the tags name the network as given)
        a, sr_a = sf.read(out_a / name, dtype="int16")
        b, sr_b = sf.read(out_b / name, dtype="int16")
        assert sr_a == sr_b == 2048 and np.array_equal(a, b) and np.abs(a).max() > 0
    r = CliRunner().invoke(gen_audio.main, ["--network", "pretrained:nope", "--seeds", "0",
                                            "--outdir", str(tmp_path / "c")])
    assert r.exit_code == 1 and "pretrained:nope: unknown shipped network; known: pretrained:tiny" in r.output
    assert not (tmp_path / "c").exists()


def test_calc_metrics_takes_a_shipped_network_and_logs_nothing_into_the_package(shipped, tmp_path, monkeypatch):
    from archive_helpers import write_encoded_archive

    from audio_ext.core.synth import techno_loop
    folder, snap = shipped
    pretrained.export_pretrained(snap, "tiny")
    geom = StftGeometry(32, sample_rate=2048)
    clips = np.stack([techno_loop(130, 0.6, sr=2048, seed=s)[: geom.clip_samples] for s in range(6)])
    write_encoded_archive(tmp_path / "stft.zip", clips, geom)
    monkeypatch.setenv("ELECTROGAN_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(calc_metrics.main, ["--network", "pretrained:tiny", "--data", str(tmp_path / "stft.zip"),
                                               "--metrics", "sfd1k", "--num-gen", "6", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    record = json.loads([line for line in r.output.splitlines() if line.startswith("{")][0])
    assert np.isfinite(record["results"]["sfd1k"])
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.pt"]
    r = CliRunner().invoke(calc_metrics.main, ["--network", "pretrained:nope", "--metrics", "sfd1k"])
    assert r.exit_code == 1 and "known: pretrained:tiny" in r.output and "Traceback" not in r.output


def test_export_refusals_leave_nothing_behind(shipped, tmp_path):
    folder, snap = shipped
    with pytest.raises(pretrained.PretrainedError, match="over the 0 MiB limit"):
        pretrained.export_pretrained(snap, "tiny", max_bytes=1000)
    assert not folder.exists() or not list(folder.iterdir())
    with pytest.raises(pretrained.PretrainedError, match="--name 'Bad Name'"):
        pretrained.export_pretrained(snap, "Bad Name")
    first = pretrained.export_pretrained(snap, "tiny")
    before = first.read_bytes()
    with pytest.raises(pretrained.PretrainedError, match=r"tiny\.pt: already exists"):
        pretrained.export_pretrained(snap, "tiny")
    assert first.read_bytes() == before
    silent = tmp_path / "silent.pkl"
    snapshot.save_snapshot(silent, {"G_ema": snapshot.load_snapshot(snap)["G_ema"]})
    with pytest.raises(pretrained.PretrainedError, match=r"silent\.pkl: snapshot has no 'audio' block"):
        pretrained.export_pretrained(silent, "silent")
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(pretrained.PretrainedError, match=r"broken\.pkl"):
        pretrained.export_pretrained(broken, "broken")
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.pt"]


def test_export_cli(shipped, tmp_path):
    folder, snap = shipped
    r = CliRunner().invoke(audio_main, ["export-pretrained", "--network", str(snap), "--name", "tiny",
                                        "--notes", "cli", "--outdir", str(tmp_path / "elsewhere")])
    assert r.exit_code == 0, r.output
    assert "use --network pretrained:tiny" in r.output
    assert snapshot.load_snapshot(tmp_path / "elsewhere" / "tiny.pt")["pretrained"]["notes"] == "cli"
    r = CliRunner().invoke(audio_main, ["export-pretrained", "--network", str(tmp_path / "nope.pkl"), "--name", "x"])
    assert r.exit_code == 1 and r.output.startswith("Error: ") and "nope.pkl" in r.output


def test_shipped_files_are_small_and_load_as_plain_data():
    """Whatever the package ships: under the size cap, loadable with every snapshot check, with provenance."""
    for name in pretrained.known_names():
        path = Path(pretrained.resolve_network(f"{pretrained.PREFIX}{name}"))
        assert path.stat().st_size <= pretrained.MAX_BYTES
        data = snapshot.load_snapshot(path)
        assert data["pretrained"]["name"] == name and "D" not in data and "G" not in data
