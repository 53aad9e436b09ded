"""The learned decoder: training pairs, stored frames kept exact, model file safety, learning on loops."""
import os
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from audio_ext.core.codec import audio_to_logpower, decode_magnitude, encode, image_to_logpower, logpower_to_image
from audio_ext.core.geometry import StftGeometry
from audio_ext.decoder import frame_model, griffin_lim, methods, model_file
from audio_ext.decoder.frame_training import TrainConfig, synthetic_sources, train_decoder
from audio_ext.decoder.model_choice import choose_decoder_model

G = StftGeometry(32)
MEAN, STD = -6.0, 4.0


def naive_frames(y, n_fft, hop, count):
    """|rfft| of Hann-windowed frames starting at j * hop (numpy, a loop: the independent reference)."""
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    return np.stack([np.abs(np.fft.rfft(y[j * hop:j * hop + n_fft] * w)) for j in range(count)], axis=-1)


def test_training_pairs_odd_even_bookkeeping():
    rng = np.random.default_rng(0)
    P = 6
    y = rng.standard_normal((P + 1) * G.hop_length) * 0.1
    x, t = frame_model.training_pairs(torch.from_numpy(y)[None], G, MEAN, STD)
    assert x.shape == (1, G.n_bins, P) and t.shape == (1, G.n_bins, P - 1)
    ref = naive_frames(y, G.n_fft, G.hop_length // 2, 2 * P - 1)  # [R+1, 2P-1] at hop R/2
    v_ref = np.log(ref ** 2 + G.eps)
    # odd hop/2 frames are the target (floored where the codec floors)
    np.testing.assert_allclose(t[0].numpy(), np.maximum(v_ref[:, 1::2], MEAN - 3 * STD), atol=2e-4)
    # even hop/2 frames are the stored frames at hop R, through the 8-bit round trip (within half a step)
    step = STD * 6 / 255
    want = np.clip(v_ref[:G.resolution, 0::2], MEAN - 3 * STD, MEAN + 3 * STD)
    assert np.abs(x[0, :G.resolution].numpy() - want).max() <= step / 2 + 1e-3
    assert torch.all(x[0, G.resolution] == np.float32(np.log(G.eps)))  # Nyquist: not stored


def test_network_forward_is_the_layer_by_layer_definition():
    """The in-place activations and the split mix convolution of FrameInterpNet compute the plain
    stem -> down -> blocks -> up -> concat -> mix -> head definition, and still train."""
    torch.manual_seed(0)
    net = frame_model.FrameInterpNet(width=4, body_width=8, n_blocks=2, dilations=(1, 2), down=4).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    act = torch.nn.LeakyReLU(0.2)
    v = torch.randn(2, 37, 11) * 2 - 6  # 37 bins: replicate-padded to 40
    x = ((v - v.mean(dim=(-2, -1), keepdim=True)) / frame_model.LOG_SCALE).unsqueeze(1)
    x = torch.nn.functional.pad(x, (0, 0, 0, 3), mode="replicate")
    skip = act(net.stem(x))
    h = net.down(skip)
    for block in net.blocks:
        h = h + block.conv2(act(block.conv1(act(h))))
    h = act(net.mix(torch.cat([skip, net.up(h)], dim=1)))
    want = 0.5 * (v[..., :-1] + v[..., 1:]) + net.head(h)[:, 0, :37] * frame_model.LOG_SCALE
    with torch.no_grad():
        torch.testing.assert_close(net(v), want, rtol=1e-5, atol=1e-5)
    net.train()
    vg = v.clone().requires_grad_(True)
    net(vg).square().mean().backward()
    assert torch.isfinite(vg.grad).all() and vg.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())


def test_quantisation_matches_the_codec_exactly():
    rng = np.random.default_rng(1)
    y = (rng.standard_normal(G.clip_samples) * 0.1).astype(np.float32)
    v = torch.from_numpy(audio_to_logpower(y, G))  # [R bins, R frames]
    want = image_to_logpower(logpower_to_image(v, G, MEAN, STD), G, MEAN, STD)
    full = torch.cat([v, torch.zeros(1, v.shape[1])], dim=0)
    got = frame_model.quantise_logpower(full, G, MEAN, STD)[:G.resolution]
    assert torch.equal(got, want)
    # and the magnitude the decoder sees is the codec's decode_magnitude
    mag = decode_magnitude(encode(y, G, MEAN, STD), G, MEAN, STD)
    np.testing.assert_allclose(frame_model.magnitude_of_logpower(got, G).numpy(), mag[:G.resolution, :G.resolution],
                               rtol=1e-5, atol=1e-9)


def tiny_model_file(tmp_path, geometry=G, name="m.pt"):
    torch.manual_seed(0)
    net = frame_model.FrameInterpNet(width=4, body_width=8, n_blocks=1, dilations=(1,), down=4)
    for p in net.head.parameters():
        torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / name
    frame_model.save_model(path, frame_model.model_payload(net, geometry, {"mean": MEAN, "std": STD}))
    return path, net


def test_stored_frames_stay_bit_exact(tmp_path):
    path, _ = tiny_model_file(tmp_path)
    S = torch.rand(2, G.n_bins, G.n_frames) + 0.01
    fine = frame_model.upsample_magnitude(S, G, choose_decoder_model(path).model_for(G))
    assert fine.shape == (2, G.n_bins, 2 * G.n_frames - 1)
    assert torch.equal(fine[..., 0::2], S)
    assert not torch.equal(fine[..., 1::2], 0.5 * (S[..., :-1] + S[..., 1:]))  # the model did something
    # every iteration imposes the stored magnitudes exactly and moves only the predicted ones
    consistent = torch.polar(torch.rand_like(fine) * 3, torch.rand_like(fine))
    for r in (0.0, 0.5, 1.0):
        T = griffin_lim.magnitude_target(fine, consistent, r)
        assert torch.equal(T[..., 0::2], S)
    T = griffin_lim.magnitude_target(fine, consistent, 1.0)
    torch.testing.assert_close(T[..., 1::2], consistent.abs()[..., 1::2])


def test_learned_method_decodes_whole_clips(tmp_path):
    path, _ = tiny_model_file(tmp_path)
    mine = choose_decoder_model(path)
    assert methods.default_method(G, mine) == methods.LEARNED_METHOD
    assert methods.default_method(StftGeometry(64), mine) == methods.DEFAULT_METHOD  # the model does not fit R=64
    assert methods.describe_method(methods.LEARNED_METHOD, G, mine) == f"{methods.LEARNED_METHOD}[file: m.pt]"
    y = synthetic_sources(1, 1.0, 44100, seed=3)[0][:G.clip_samples]
    img = encode(np.stack([y, y * 0.5]), G, MEAN, STD)
    audio = methods.decode_audio(img, G.audio_block(MEAN, STD), generator=[1, 2], decoder=mine)
    assert audio.shape == (2, G.clip_samples) and np.isfinite(audio).all()
    one = methods.decode_audio(img[1:], G.audio_block(MEAN, STD), generator=[2], decoder=mine)
    np.testing.assert_allclose(one[0], audio[1], atol=1e-5)  # a clip does not depend on its batch


def test_model_file_round_trip_and_geometry_mismatch(tmp_path):
    path, net = tiny_model_file(tmp_path)
    model = model_file.load_decoder_model(path)
    v = torch.randn(1, G.n_bins, 9)
    with torch.no_grad():
        torch.testing.assert_close(model.predict(v), net.eval()(v), rtol=1e-5, atol=1e-5)  # NHWC vs NCHW order
    with pytest.raises(frame_model.ModelError, match="trained for another geometry: resolution 32 .model. vs 64"):
        model.check(StftGeometry(64))
    with pytest.raises(frame_model.ModelError, match="hop_length 32 .model. vs 16"):
        choose_decoder_model(path).model_for(StftGeometry(32, 16))


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# torch's safe unpickler warns about the crafted file's pickle protocol before refusing it; that is expected.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_crafted_pickle_is_refused_without_running_it(tmp_path):
    marker = str(tmp_path / "pwned")
    evil = tmp_path / "evil.pt"
    torch.save({"format": frame_model.MODEL_FORMAT, "payload": _Exploit(marker)}, evil)
    with pytest.raises(frame_model.ModelError, match="evil.pt: not a loadable decoder model"):
        model_file.read_model_file(evil)
    assert not os.path.exists(marker)
    with pytest.raises(frame_model.ModelError, match="not found"):
        choose_decoder_model(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"format": "something else"}, other)
    with pytest.raises(frame_model.ModelError, match="not an ElectroGAN frame-interpolation model"):
        model_file.read_model_file(other)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(pickle.dumps([1, 2, 3])[:5])
    with pytest.raises(frame_model.ModelError, match="junk.pt"):
        model_file.read_model_file(junk)


@pytest.mark.parametrize("loss,steps", [("wl1", 120), ("sc", 600)])
def test_tiny_model_beats_interpolation_on_held_out_loops(tmp_path, loss, steps):
    """Either objective, measured on loops it never saw, beats geometric-mean interpolation by 5 %
    (the SC objective learns more slowly at R = 32: its gradient comes from the loudest cells)."""
    train = synthetic_sources(4, 6.0, 44100, seed=10)
    held = synthetic_sources(2, 6.0, 44100, seed=77)
    cfg = TrainConfig(steps=steps, batch=8, patch_frames=16, lr=3e-3, seed=0, checkpoint_every=1000, arch="small",
                      loss=loss)
    out = tmp_path / "loops.pt"
    summary = train_decoder(train, out, G, cfg, validation=held, log=lambda s: None, progress=False)
    assert summary["held_out"] and summary["loss"] == loss
    assert summary["val_loss"] < 0.95 * summary["val_loss_baseline"]
    payload = model_file.read_model_file(out)
    assert payload["training"]["step"] == steps and payload["geometry"]["resolution"] == 32
    assert payload["training"]["config"]["loss"] == loss


def test_train_decoder_cli_resumes_and_is_deterministic(tmp_path):
    import soundfile as sf

    from audio_ext.__main__ import main
    src = tmp_path / "music"
    src.mkdir()
    for i, y in enumerate(synthetic_sources(2, 3.0, 44100, seed=5)):
        sf.write(str(src / f"loop{i}.wav"), y, 44100)
    args = ["train-decoder", "--source", str(src), "--resolution", "32", "--batch", "2", "--patch-frames", "8",
            "--arch", "tiny", "--seed", "3", "--device", "cpu"]
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "a.pt"), "--steps", "6"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "a.pt"), "--steps", "6"])
    assert "already trained for 6 steps" in r.output
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "b.pt"), "--steps", "6"])
    a = model_file.read_model_file(tmp_path / "a.pt")["state_dict"]
    b = model_file.read_model_file(tmp_path / "b.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same weights
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "a.pt"), "--steps", "9"])
    assert r.exit_code == 0 and "resuming" in r.output and "at step 6 of 9" in r.output
    assert model_file.read_model_file(tmp_path / "a.pt")["training"]["step"] == 9
    bad = args[:args.index("--resolution")] + ["--resolution", "64"] + args[args.index("--resolution") + 2:]
    r = CliRunner().invoke(main, bad + ["--out", str(tmp_path / "a.pt"), "--steps", "9"])
    assert r.exit_code != 0 and "trained for another geometry" in r.output
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "d.pt"), "--steps", "2", "--holdout", "loop1.wav"])
    assert r.exit_code == 0, r.output
    t = model_file.read_model_file(tmp_path / "d.pt")["training"]
    assert t["sources"] == ["loop0.wav"] and t["validation_sources"] == ["loop1.wav"]
    r = CliRunner().invoke(main, args + ["--out", str(tmp_path / "c.pt"), "--holdout", "nope.wav"])
    assert r.exit_code != 0 and "--holdout: nope.wav not found" in r.output


def test_fine_tuning_starts_from_the_init_model_and_keeps_the_best_checkpoint(tmp_path):
    from audio_ext.decoder.frame_training import best_path
    train = synthetic_sources(2, 3.0, 44100, seed=21)
    held = synthetic_sources(1, 3.0, 44100, seed=22)
    base = tmp_path / "base.pt"
    train_decoder(train, base, G, TrainConfig(steps=4, batch=2, patch_frames=8, arch="tiny", seed=1),
                  log=lambda s: None, progress=False)
    start = model_file.read_model_file(base)["state_dict"]
    # zero steps of fine-tuning is impossible (steps >= 1); one step at lr 0 must keep the init weights exactly
    cfg = TrainConfig(steps=1, batch=2, patch_frames=8, arch="tiny", seed=2, lr=0.0, init=str(base))
    train_decoder(train, tmp_path / "ft0.pt", G, cfg, log=lambda s: None, progress=False)
    kept = model_file.read_model_file(tmp_path / "ft0.pt")["state_dict"]
    assert all(torch.equal(start[k], kept[k]) for k in start)
    # a real fine-tuning run moves away from them, validates at every checkpoint, keeps the best
    logs = []
    cfg = TrainConfig(steps=6, batch=2, patch_frames=8, arch="tiny", seed=2, lr=3e-3, init=str(base),
                      checkpoint_every=2)
    out = tmp_path / "ft.pt"
    train_decoder(train, out, G, cfg, validation=held, log=logs.append, progress=False)
    tuned = model_file.read_model_file(out)
    assert not all(torch.equal(start[k], tuned["state_dict"][k]) for k in start)
    history = tuned["training"]["val_history"]
    assert [h[0] for h in history] == [2, 4, 6] and sum("validation error" in m for m in logs) == 3
    best = model_file.read_model_file(best_path(out))
    assert best_path(out).name == "ft.best.pt" and "optimizer" not in best
    step, err = min(((h[0], h[1]) for h in history), key=lambda h: h[1])
    assert best["training"]["step"] == step
    r = frame_model.DecoderModel(best).net
    with torch.no_grad():  # the best file holds the weights that scored ``err``: re-evaluate them
        from audio_ext.decoder.frame_training import CropSampler, evaluate
        crop = (cfg.patch_frames + 1) * G.hop_length
        again = evaluate(r, CropSampler(held, crop, torch.device("cpu")), G, tuned["stats"], n_batches=2)
    assert again["model"] == pytest.approx(err, rel=1e-5)
    # an init model of another architecture or geometry is refused with one line
    with pytest.raises(ValueError, match="architecture"):
        train_decoder(train, tmp_path / "x.pt", G, TrainConfig(steps=1, batch=2, patch_frames=8, arch="small",
                                                                init=str(base)), log=lambda s: None, progress=False)
    with pytest.raises(frame_model.ModelError, match="another geometry"):
        train_decoder(train, tmp_path / "y.pt", StftGeometry(64), TrainConfig(steps=1, batch=2, patch_frames=8,
                      arch="tiny", init=str(base)), log=lambda s: None, progress=False)


def test_convergence_loss_is_the_squared_spectral_convergence_of_the_magnitudes():
    rng = np.random.default_rng(4)
    target = torch.from_numpy(rng.normal(-4.0, 3.0, (3, G.resolution + 1, 7))).float()
    pred = target + torch.from_numpy(rng.normal(0.0, 0.7, target.shape)).float()
    pred[:, G.resolution, :] += 50.0  # the Nyquist bin is never stored: it must not count
    got = float(frame_model.convergence_loss(pred, target, G))
    want = []  # naive: per crop, linear magnitudes sqrt(exp(v)), bins 0..R-1
    for b in range(3):
        mp = np.exp(0.5 * pred[b, :G.resolution].double().numpy())
        mt = np.exp(0.5 * target[b, :G.resolution].double().numpy())
        want.append(np.sum((mp - mt) ** 2) / np.sum(mt ** 2))
    assert got == pytest.approx(np.mean(want), rel=1e-5)
    # every crop counts the same whatever its level: +20 dB on one crop (ln power + ln 100) changes nothing
    louder = target.clone(), pred.clone()
    louder[0][1] += np.log(100.0)
    louder[1][1] += np.log(100.0)
    assert float(frame_model.convergence_loss(louder[1], louder[0], G)) == pytest.approx(got, rel=1e-5)
    assert float(frame_model.convergence_loss(target, target, G)) == 0.0
    assert float(frame_model.training_loss(pred, target, G, "wl1")) == pytest.approx(
        float(frame_model.weighted_l1(pred, target, frame_model.loss_weights(target, G))))
    with pytest.raises(ValueError, match="unknown decoder training loss 'l2'"):
        frame_model.training_loss(pred, target, G, "l2")


def test_models_trained_before_the_loss_setting_still_resume(tmp_path):
    """A file from before ``TrainConfig.loss`` (its config has no 'loss': it was trained with 'wl1')
    resumes under --loss wl1 and is refused under the new default 'sc' (another objective)."""
    train = synthetic_sources(1, 3.0, 44100, seed=31)
    out = tmp_path / "old.pt"
    cfg = TrainConfig(steps=2, batch=2, patch_frames=8, arch="tiny", seed=1, loss="wl1")
    train_decoder(train, out, G, cfg, log=lambda s: None, progress=False)
    payload = model_file.read_model_file(out)
    del payload["training"]["config"]["loss"]
    frame_model.save_model(out, payload)
    logs = []
    train_decoder(train, out, G, TrainConfig(steps=3, batch=2, patch_frames=8, arch="tiny", seed=1, loss="wl1"),
                  log=logs.append, progress=False)
    assert any("resuming" in m for m in logs) and model_file.read_model_file(out)["training"]["step"] == 3
    with pytest.raises(ValueError, match="other settings"):
        train_decoder(train, out, G, TrainConfig(steps=4, batch=2, patch_frames=8, arch="tiny", seed=1),
                      log=lambda s: None, progress=False)
    with pytest.raises(ValueError, match="unknown training loss"):
        train_decoder(train, tmp_path / "n.pt", G, TrainConfig(steps=1, batch=2, patch_frames=8, arch="tiny",
                                                                loss="mse"), log=lambda s: None, progress=False)


def test_shipped_model_loads_for_the_thesis_geometry():
    if not frame_model.DEFAULT_MODEL_PATH.is_file():
        pytest.skip("no shipped model")
    model = model_file.load_decoder_model(frame_model.DEFAULT_MODEL_PATH)
    model.check(StftGeometry(1024))
    assert frame_model.DEFAULT_MODEL_PATH.stat().st_size < 3_000_000
    assert "optimizer" not in model_file.read_model_file(frame_model.DEFAULT_MODEL_PATH)
    with torch.no_grad():
        v = torch.full((1, 1025, 6), -5.0)
        out = model.predict(v)
    assert out.shape == (1, 1025, 5) and torch.isfinite(out).all()


def test_dataset_tool_trains_a_decoder_beside_the_archive(tmp_path):
    import soundfile as sf

    from audio_ext.core.synth import techno_loop
    from dataset_tool_audio import main as dataset_tool
    src = tmp_path / "music"
    src.mkdir()
    sf.write(str(src / "a.wav"), techno_loop(126, 6.0, seed=1, offset=0.05), 44100)
    dest = tmp_path / "stft.zip"
    r = CliRunner().invoke(dataset_tool, ["--source", str(src), "--dest", str(dest), "--resolution", "64",
                                          "--segment-seconds", "6", "--stride-beats", "4", "--no-progress",
                                          "--train-decoder", "3"])
    assert r.exit_code == 0, r.output
    model = model_file.load_decoder_model(tmp_path / "stft.decoder.pt")
    model.check(StftGeometry(64))
    assert model.training["step"] == 3 and model.training["sources"] == ["a.wav"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_learned_decoder_on_the_gpu_matches_the_cpu(tmp_path):
    path, _ = tiny_model_file(tmp_path)
    model = model_file.load_decoder_model(path)
    v = torch.randn(3, G.n_bins, 17) - 5
    cpu = model.predict(v)
    gpu = model.predict(v.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
    y = synthetic_sources(1, 1.0, 44100, seed=3)[0][:G.clip_samples]
    img = torch.from_numpy(encode(np.stack([y, y]), G, MEAN, STD)).cuda()
    audio = methods.decode_audio(img, G.audio_block(MEAN, STD), method=methods.LEARNED_METHOD, generator=[1, 1],
                                 decoder=choose_decoder_model(path))
    assert audio.device.type == "cuda" and audio.shape == (2, G.clip_samples)
    assert torch.isfinite(audio).all()
    torch.testing.assert_close(audio[0], audio[1])


def test_generation_labels_name_the_decoder_and_its_model(tmp_path):
    from audio_ext.generation.synthesis import describe_phase
    path, _ = tiny_model_file(tmp_path)
    mine = choose_decoder_model(path)
    assert describe_phase(None, None, G, mine) == (f"{methods.LEARNED_METHOD}[file: m.pt]", 10)
    assert describe_phase("pghi+fgla", 5, G, mine) == ("pghi+fgla", 5)
    assert describe_phase(None, None, StftGeometry(64), mine) == ("pghi+fgla", 10)
    os.environ[frame_model.MODEL_ENV] = "none"
    try:
        assert methods.default_method(G) == methods.DEFAULT_METHOD  # the environment turned the model off
    finally:
        del os.environ[frame_model.MODEL_ENV]


def test_a_broken_model_setting_is_an_error_not_a_silent_fallback(tmp_path):
    os.environ[frame_model.MODEL_ENV] = str(tmp_path / "nowhere.pt")
    try:
        with pytest.raises(frame_model.ModelError, match="nowhere.pt: decoder model file not found"):
            methods.default_method(G)
    finally:
        del os.environ[frame_model.MODEL_ENV]
    with pytest.raises(frame_model.ModelError, match="trained for another geometry|no decoder model available"):
        methods.reconstruct(torch.rand(1, 33, 9), G, methods.LEARNED_METHOD)  # the shipped model is for R=1024


def test_every_music_source_of_the_shipped_model_is_fetchable_and_in_the_notice():
    """The shipped model's extra training music must be rebuilt by fetch_training_music.sh (with a
    sha256 each) and its Debian package and copyright line named in NOTICE."""
    import re
    from pathlib import Path
    if not frame_model.DEFAULT_MODEL_PATH.is_file():
        pytest.skip("no shipped model")
    root = Path(__file__).resolve().parent.parent
    script = (frame_model.DEFAULT_MODEL_PATH.parent / "fetch_training_music.sh").read_text()
    notice = (root / "NOTICE").read_text()
    rows = {m.group(1): m.groups()[1:] for m in
            re.finditer(r"^([\w.-]+\.ogg)\|([\w.-]+)\|(usr/\S+?)\|([0-9a-f]{64})\|", script, re.M)}
    copyright_of = dict(re.findall(r"^([\w.-]+-data)\|[\w.+~-]+\|(.+)$", script, re.M))
    sources = model_file.read_model_file(frame_model.DEFAULT_MODEL_PATH)["training"]["sources"]
    oggs = [s for s in sources if s.endswith(".ogg")]
    assert len(oggs) == 20
    for name in oggs:
        assert name in rows, f"{name} is not in fetch_training_music.sh"
        package, path, _ = rows[name]
        assert path.endswith(name.split("_", 1)[1])
        assert package in notice and copyright_of[package] in notice, f"{package} missing from NOTICE"
