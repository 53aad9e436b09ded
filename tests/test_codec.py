"""The STFT image codec follows docs/contract.md: geometry, librosa-equal STFT, orientation, 8-bit inverse."""
import json

import librosa
import numpy as np
import pytest
import torch

from audio_ext.core.codec import AudioCodec, audio_to_logpower, decode_magnitude, encode, image_to_logpower, stft
from audio_ext.core.geometry import AUDIO_BLOCK_KEYS, StftGeometry


def music_like(n, sr=44100, seed=0):
    """Decaying tones plus enveloped noise: many levels of log power, like a mix."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    y = 0.3 * np.sin(2 * np.pi * 220 * t) * np.exp(-3 * (t % 0.05) / 0.05)
    y += 0.1 * np.sin(2 * np.pi * 3000 * t + 0.5)
    y += 0.05 * rng.standard_normal(n) * (0.5 + 0.5 * np.sin(2 * np.pi * 30 * t))
    return y


# --- geometry -----------------------------------------------------------------------------

def test_thesis_geometry_numbers():
    g = StftGeometry(1024)
    assert (g.n_fft, g.hop_length, g.clip_samples) == (2048, 1024, 1024 * 1024)
    assert g.clip_seconds == pytest.approx(1048576 / 44100)
    assert round(g.clip_seconds, 2) == 23.78
    assert StftGeometry(512).clip_seconds == pytest.approx(512 * 512 / 44100)
    half = StftGeometry(1024, hop_length=512)
    assert half.clip_samples == 1024 * 512 and half.n_fft == 2048


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(resolution=1000), "power of two"),
    (dict(resolution=2), "power of two"),
    (dict(resolution=64, hop_length=48), "hop_length"),
    (dict(resolution=64, sample_rate=0), "sample_rate"),
    (dict(resolution=64, eps=0.0), "eps"),
    (dict(resolution=64, clip_sigma=-1), "clip_sigma"),
])
def test_geometry_rejects_bad_values_with_a_clear_message(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        StftGeometry(**kwargs)


def test_geometry_round_trips_through_a_json_audio_block():
    g = StftGeometry(256, hop_length=128, eps=1e-9)
    block = json.loads(json.dumps(g.audio_block(mean=-4.5, std=3.25, target_bpm=130)))
    assert tuple(block) == AUDIO_BLOCK_KEYS
    assert block["n_fft"] == 512 and block["window"] == "hann" and block["center"] is True
    assert StftGeometry.from_dict(block) == g
    assert StftGeometry.from_dict(g.to_dict()) == g


@pytest.mark.parametrize("change, fragment", [
    (dict(n_fft=1024), "n_fft"), (dict(window="hamming"), "window"), (dict(center=False), "center"),
    (dict(format_version=99), "format_version"),
])
def test_geometry_refuses_blocks_it_cannot_reproduce(change, fragment):
    block = {**StftGeometry(256).audio_block(0.0, 1.0), **change}
    with pytest.raises(ValueError, match=fragment):
        StftGeometry.from_dict(block)


# --- STFT -----------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution, hop", [(32, 32), (32, 16), (64, 64)])
def test_log_power_equals_librosa_stft_with_reflect_padding(resolution, hop):
    g = StftGeometry(resolution, hop_length=hop)
    y = music_like(g.clip_samples)
    # docs/contract.md's definition: reflect-pad the whole clip by n_fft/2, then frame without centring
    # (librosa >= 0.10 pads only the edge frames when centring, which differs in the very last frame)
    full = librosa.stft(np.pad(y, g.n_fft // 2, mode="reflect"), n_fft=g.n_fft, hop_length=hop, window="hann",
                        center=False)
    assert full.shape == (resolution + 1, resolution + 1)
    np.testing.assert_allclose(stft(y, g), full, rtol=1e-9, atol=1e-9)
    ref = librosa.stft(y, n_fft=g.n_fft, hop_length=hop, window="hann", center=True, pad_mode="reflect")
    expected = np.log(np.abs(ref[:resolution, :resolution]) ** 2 + g.eps)
    np.testing.assert_allclose(audio_to_logpower(y, g), expected, rtol=0, atol=1e-8)


def test_float32_clips_match_librosa_to_single_precision():
    g = StftGeometry(64)
    y = music_like(g.clip_samples).astype(np.float32)
    ref = np.abs(librosa.stft(y, n_fft=g.n_fft, hop_length=g.hop_length, pad_mode="reflect")[:64, :64]) ** 2
    ours = np.exp(audio_to_logpower(torch.from_numpy(y), g).numpy())
    loud = ref > 1e-4 * ref.max()
    np.testing.assert_allclose(ours[loud], ref[loud] + g.eps, rtol=1e-3)


def test_a_clip_of_r_times_hop_samples_gives_r_frames():
    g = StftGeometry(16, hop_length=8)
    assert stft(np.zeros(g.clip_samples), g).shape == (17, 17)
    assert audio_to_logpower(np.zeros((3, g.clip_samples)), g).shape == (3, 16, 16)
    with pytest.raises(ValueError, match=f"needs exactly {g.clip_samples}"):
        audio_to_logpower(np.zeros(g.clip_samples + 1), g)


def test_integer_pcm_is_refused():
    g = StftGeometry(16)
    with pytest.raises(TypeError, match="floating-point"):
        encode(np.zeros(g.clip_samples, dtype=np.int16), g, 0.0, 1.0)


# --- orientation ------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [3, 50])
def test_a_sine_lights_the_row_of_its_bin_counted_from_the_top(k):
    g = StftGeometry(64)
    t = np.arange(g.clip_samples) / g.sample_rate
    y = 0.5 * np.sin(2 * np.pi * g.bin_frequency(k) * t)
    img = encode(y, g, mean=-10.0, std=5.0)
    brightest_row = int(np.argmax(img[:, 2:-2].astype(float).mean(axis=1)))
    assert brightest_row == g.image_row(k) == 63 - k


# --- encode / decode --------------------------------------------------------------------------

def test_encode_decode_is_exact_up_to_half_an_8bit_step():
    g = StftGeometry(64, hop_length=32)
    y = music_like(g.clip_samples, seed=3)
    v = audio_to_logpower(y, g)
    mean, std = float(v.mean()), float(v.std())
    img = encode(y, g, mean, std)
    assert img.dtype == np.uint8 and img.shape == (64, 64)
    assert img.min() == 0 or img.max() == 255  # the clip is exercised
    clipped = np.clip(v, mean - 3 * std, mean + 3 * std)
    step = std * 2 * g.clip_sigma / 255  # one grey level in ln power
    err = np.abs(image_to_logpower(img, g, mean, std) - clipped)
    assert err.max() <= step / 2 + 1e-5
    assert err.max() > step / 10  # the quantisation is real, not skipped


def test_decode_magnitude_restores_nyquist_and_last_frame():
    g = StftGeometry(32)
    y = music_like(g.clip_samples, seed=1)
    img = encode(y, g, mean=-6.0, std=4.0)
    mag = decode_magnitude(img, g, -6.0, 4.0)
    assert mag.shape == (33, 33)
    assert np.all(mag[32] == 0)
    np.testing.assert_array_equal(mag[:, 32], mag[:, 31])
    v = image_to_logpower(img, g, -6.0, 4.0)
    np.testing.assert_allclose(mag[:32, :32] ** 2 + g.eps, np.exp(v), rtol=1e-5)
    # where nothing was clipped, the magnitude matches the true one within half a grey level
    true = np.abs(stft(y, g))[:32, :32]
    inside = (img > 0) & (img < 255)
    ratio = np.log(mag[:32, :32][np.flipud(inside)] ** 2 / true[np.flipud(inside)] ** 2)
    assert np.abs(ratio).max() <= 4.0 * 6 / 255 / 2 + 1e-4


def test_float_generator_output_decodes_like_the_matching_uint8_image():
    g = StftGeometry(16)
    u = np.random.default_rng(0).integers(0, 256, size=(2, 1, 16, 16), dtype=np.uint8)
    x = torch.from_numpy(u.astype(np.float32) / 127.5 - 1)
    from_float = decode_magnitude(x, g, -5.0, 3.0)
    assert isinstance(from_float, torch.Tensor) and from_float.shape == (2, 1, 17, 17)
    np.testing.assert_allclose(from_float.numpy(), decode_magnitude(u, g, -5.0, 3.0), rtol=1e-5)
    # values beyond [-1, 1] saturate like the clip in encode
    over = x * 1.5
    np.testing.assert_allclose(decode_magnitude(over, g, -5.0, 3.0).numpy(),
                               decode_magnitude(over.clamp(-1, 1), g, -5.0, 3.0).numpy(), rtol=0)


def test_images_that_are_not_what_they_claim_are_refused():
    g = StftGeometry(16)
    with pytest.raises(ValueError, match=r"expected generator output"):
        decode_magnitude(np.full((16, 16), 200.0, dtype=np.float32), g, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"does not end in \(16, 16\)"):
        decode_magnitude(np.zeros((16, 32), dtype=np.uint8), g, 0.0, 1.0)
    with pytest.raises(ValueError, match="std"):
        decode_magnitude(np.zeros((16, 16), dtype=np.uint8), g, 0.0, 0.0)


def test_batches_equal_clip_by_clip_and_keep_the_array_kind():
    g = StftGeometry(32, hop_length=16)
    ys = np.stack([music_like(g.clip_samples, seed=s) for s in range(6)]).reshape(2, 3, -1).astype(np.float32)
    batch = encode(torch.from_numpy(ys), g, -5.0, 4.0)
    assert isinstance(batch, torch.Tensor) and batch.dtype == torch.uint8 and batch.shape == (2, 3, 32, 32)
    for i in range(2):
        for j in range(3):
            single = encode(ys[i, j], g, -5.0, 4.0)
            assert isinstance(single, np.ndarray)
            np.testing.assert_array_equal(batch[i, j].numpy(), single)


def test_codec_object_is_built_from_an_audio_block():
    g = StftGeometry(32)
    codec = AudioCodec.from_audio_block(g.audio_block(mean=-5.0, std=4.0, target_bpm=130))
    assert codec.geometry == g and (codec.mean, codec.std, codec.target_bpm) == (-5.0, 4.0, 130.0)
    assert AudioCodec(codec.audio_block()).audio_block() == codec.audio_block()
    y = music_like(g.clip_samples)
    np.testing.assert_array_equal(codec.encode(y), encode(y, g, -5.0, 4.0))
    with pytest.raises(ValueError, match="'mean'"):
        AudioCodec({**g.to_dict(), "std": 1.0})


@pytest.mark.gpu
def test_cuda_codec_matches_cpu():
    g = StftGeometry(256)
    y = torch.from_numpy(np.stack([music_like(g.clip_samples, seed=s) for s in range(4)]).astype(np.float32))
    cpu = encode(y, g, -5.0, 4.0)
    gpu = encode(y.cuda(), g, -5.0, 4.0)
    assert gpu.device.type == "cuda"
    # float32 FFTs differ in the last bits; a rounding may flip by one grey level
    assert (gpu.cpu().int() - cpu.int()).abs().max() <= 1
    mag_gpu = decode_magnitude(gpu, g, -5.0, 4.0).cpu()
    np.testing.assert_allclose(mag_gpu.numpy(), decode_magnitude(gpu.cpu(), g, -5.0, 4.0).numpy(), rtol=1e-5)
