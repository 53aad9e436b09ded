"""The studio's server through http.client on a free port: every clip is the file its command makes,
sessions are isolated and cleaned up, long jobs cancel, bad requests are 4xx JSON and the server stays up.

The network is a small random generator (tests/studio_helpers.py) whose 2.048 s clips hold two bars.
"""
import io
import json
import shlex
import socket
import time

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from studio_helpers import BPM, SAMPLE_RATE, Client, running_studio, studio_snapshot

import gen_audio
from audio_ext.core.synth import techno_loop
from audio_ext.generation import loops


@pytest.fixture(scope="module")
def snap(tmp_path_factory):
    return studio_snapshot(tmp_path_factory.mktemp("net") / "network-snapshot-000000.pkl")


@pytest.fixture(scope="module")
def studio(snap):
    with running_studio(snap) as (app, port):
        yield app, port


def run_command(command: str, snap, outdir):
    """Run a command shown in the page with gen_audio's CLI (network path as shown; --outdir replaced)."""
    args = shlex.split(command)
    assert args[:2] == ["python", "gen_audio.py"], command
    args = args[2:]
    k = args.index("--outdir")
    args[k + 1] = str(outdir)
    result = CliRunner().invoke(gen_audio.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return outdir


def download(client, clip, fmt="wav"):
    status, headers, body = client.request("GET", f"/api/clips/{clip['id']}/download?format={fmt}")
    assert status == 200, body
    return headers, body


def test_seed_loop_mix_and_walk_are_the_files_their_commands_write(studio, snap, tmp_path):
    _, port = studio
    c = Client(port)
    grid = c.run_job({"kind": "seeds", "seeds": [3, 11], "trunc": 0.8})
    assert grid["state"] == "done", grid
    a, b = grid["clips"]
    assert (a["seed"], a["filename"], a["seconds"]) == (3, "seed0003-240bpm.wav", 2.048)
    loop = c.run_job({"kind": "loop", "clip": a["id"], "bars": 2, "bpm": 200})["clips"][0]
    mix = c.run_job({"kind": "mix", "rows": [a["id"]], "cols": [b["id"]], "groups": ["coarse", "fine"],
                     "trunc": 0.8})
    assert mix["result"]["layers"] == "0-3,8-11"
    walk = c.run_job({"kind": "walk", "clips": [a["id"], b["id"]], "bars": 1, "steps": 2, "space": "w",
                      "trunc": 0.8})["clips"][0]
    for clip in [a, b, loop, walk] + mix["clips"]:
        out = run_command(clip["command"], snap, tmp_path / clip["id"])
        _, wav = download(c, clip)
        assert (out / clip["filename"]).read_bytes() == wav, clip["title"]
    # the loop: 2 bars at 200 BPM at the network's rate, its name and tags say so
    info = sf.info(io.BytesIO(download(c, loop)[1]))
    assert (info.samplerate, info.frames) == (SAMPLE_RATE, loops.bars_to_samples(2, SAMPLE_RATE, 200.0))
    assert loop["filename"] == "seed0003-loop2bar-200bpm.wav" and "--loop 2 --bpm 200" in loop["command"]
    # the walk: 4 clips (2 seeds, 2 steps between) of one bar each at 240 BPM
    assert walk["seconds"] == pytest.approx(4 * 60 / BPM * 4, abs=1e-3)


def test_flac_download_has_the_same_samples_and_the_seed_and_bpm_in_name_and_tags(studio):
    _, port = studio
    c = Client(port)
    clip = c.run_job({"kind": "seeds", "seeds": [5]})["clips"][0]
    headers, flac = download(c, clip, "flac")
    assert headers["Content-Disposition"] == 'attachment; filename="seed0005-240bpm.flac"'
    _, wav = download(c, clip, "wav")
    with sf.SoundFile(io.BytesIO(flac)) as f:
        assert f.format == "FLAC"
        tags, pcm_flac = f.copy_metadata(), f.read(dtype="int16")
    pcm_wav, _ = sf.read(io.BytesIO(wav), dtype="int16")
    np.testing.assert_array_equal(pcm_flac, pcm_wav)
    assert "seed=5" in tags["comment"] and "bpm=240" in tags["comment"] and "240 BPM" in tags["title"]


def test_sessions_do_not_see_each_others_clips_or_jobs(studio):
    _, port = studio
    alice, bob = Client(port), Client(port)
    job = alice.json("POST", "/api/jobs", {"kind": "seeds", "seeds": [1]})[1]["job"]
    clip = alice.wait_job(job)["clips"][0]
    assert bob.json("GET", "/api/clips")[1] == {"clips": []}
    for path in (f"/api/clips/{clip['id']}/audio", f"/api/clips/{clip['id']}/download", f"/api/jobs/{job}"):
        status, body = bob.json("GET", path)
        assert status == 404 and "error" in body
    assert bob.json("POST", "/api/jobs", {"kind": "loop", "clip": clip["id"], "bars": 1})[0] == 404
    assert alice.cookie != bob.cookie
    assert [x["id"] for x in alice.json("GET", "/api/clips")[1]["clips"]] == [clip["id"]]


def test_session_folders_are_removed_on_expiry_and_when_the_app_stops(snap):
    with running_studio(snap, ttl_s=3600) as (app, port):
        c = Client(port)
        c.run_job({"kind": "seeds", "seeds": [2]})
        session = app.sessions.get(c.cookie.split("=", 1)[1])
        assert any(session.folder.rglob("*.wav"))
        assert app.sessions.expire(now=time.monotonic() + 7200) == [session.id]
        assert not session.folder.exists()
        status, body = c.json("GET", "/api/clips")   # the old cookie gets a fresh, empty session
        assert status == 200 and body["clips"] == []
        root = app.sessions.root
    assert not root.exists()


def test_long_job_cancels_between_clips_and_the_server_goes_on(studio):
    _, port = studio
    c = Client(port)
    job = c.json("POST", "/api/jobs", {"kind": "seeds", "seeds": list(range(64))})[1]["job"]
    while c.json("GET", f"/api/jobs/{job}")[1]["done"] < 1:
        time.sleep(0.02)
    assert c.json("POST", f"/api/jobs/{job}/cancel", {})[0] == 200
    final = c.wait_job(job)
    assert final["state"] == "cancelled" and 1 <= len(final["clips"]) < 64
    assert c.run_job({"kind": "seeds", "seeds": [9]})["state"] == "done"


@pytest.mark.parametrize("body, status, words", [
    ({"kind": "seeds", "seeds": [1], "trunc": "high"}, 400, "trunc must be a number"),
    ({"kind": "seeds", "seeds": [-1]}, 400, "seeds must be a list"),
    ({"kind": "nothing"}, 400, "kind must be one of"),
    ({"kind": "seeds", "seeds": [1], "noise_mode": "loud"}, 400, "noise_mode must be one of"),
    ({"kind": "seeds", "seeds": [1], "class_idx": 2}, 400, "unconditional"),
    ({"kind": "loop", "clip": "../../etc/passwd", "bars": 1}, 404, "no clip"),
    ({"kind": "project", "upload": "0" * 24}, 404, "no such upload"),
    ({"kind": "mix", "rows": [], "cols": []}, 400, "rows must be a list"),
])
def test_bad_job_requests_are_4xx_json(studio, body, status, words):
    _, port = studio
    got, answer = Client(port).json("POST", "/api/jobs", body)
    assert got == status and words in answer["error"]


def test_malformed_requests_are_4xx_json_and_no_path_reaches_the_file_system(studio):
    _, port = studio
    c = Client(port)
    for method, path, raw, status in [("POST", "/api/jobs", b"{not json", 400), ("POST", "/api/jobs", b"[1]", 400),
                                      ("GET", "/api/clips/../../../etc/passwd", None, 404),
                                      ("GET", "/..%2f..%2fetc%2fpasswd", None, 404),
                                      ("GET", "/api/clips/%2e%2e/audio", None, 404),
                                      ("GET", "/studio.py", None, 404), ("PUT", "/api/jobs", b"{}", 405),
                                      ("GET", "/api/clips/00/download?format=mp3", None, 404)]:
        got, headers, body = c.request(method, path, raw=raw)
        assert got == status, (method, path, body)
        assert headers["Content-Type"] == "application/json" and "error" in json.loads(body)
    assert c.request("GET", "/")[0] == 200 and b"ElectroGAN Studio" in c.request("GET", "/")[2]


def test_loop_longer_than_its_clip_repeats_the_clips_whole_bar_loop_on_the_grid(studio):
    """A 2.048 s clip at 240 BPM holds 2 bars plus the crossfade; 3 bars asked: its 1-bar loop, 3 times."""
    _, port = studio
    c = Client(port)
    clip = c.run_job({"kind": "seeds", "seeds": [1]})["clips"][0]
    loop = c.run_job({"kind": "loop", "clip": clip["id"], "bars": 3})["clips"][0]
    audio, sr = sf.read(io.BytesIO(download(c, loop)[1]), dtype="float32")
    assert len(audio) == loops.bars_to_samples(3, sr, BPM)
    bar = loops.bars_to_samples(1, sr, BPM)
    assert np.array_equal(audio[:bar], audio[bar:2 * bar]) and np.array_equal(audio[:bar], audio[2 * bar:])


def test_two_gigabyte_upload_is_refused_from_its_content_length_before_reading(studio):
    _, port = studio
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"POST /api/upload?name=big.wav HTTP/1.1\r\nHost: x\r\nContent-Length: 2147483648\r\n\r\n")
        s.sendall(b"\0" * 65536)          # a few bytes of the body; the answer must not wait for the rest
        answer = b""
        while True:                       # the server answers and closes the connection
            block = s.recv(65536)
            if not block:
                break
            answer += block
        answer = answer.decode()
    assert answer.startswith("HTTP/1.1 413")
    body = json.loads(answer.split("\r\n\r\n", 1)[1])
    assert "2.0 GB" in body["error"] and "64.0 MB" in body["error"]
    assert Client(port).json("GET", "/api/info")[0] == 200


def test_non_audio_upload_is_refused_and_removed(studio):
    app, port = studio
    c = Client(port)
    status, body = c.json("POST", "/api/upload?name=notes.wav", raw=b"this is not audio" * 100)
    assert status == 415 and "notes.wav: not an audio file" in body["error"]
    session = app.sessions.get(c.cookie.split("=", 1)[1])
    assert not any(session.folder.iterdir())


@pytest.fixture(scope="module")
def track(tmp_path_factory):
    path = tmp_path_factory.mktemp("track") / "my track.wav"
    sf.write(path, techno_loop(120.0, 10.0, sr=22050, seed=3, offset=0.1), 22050)
    return path


def test_projection_then_variations_walk_and_loop_match_their_commands(studio, snap, track, tmp_path):
    _, port = studio
    c = Client(port)
    status, up = c.json("POST", "/api/upload?name=my%20track.wav", raw=track.read_bytes())
    assert status == 200 and up["name"] == "my_track.wav" and up["seconds"] == pytest.approx(10.0)
    job = c.run_job({"kind": "project", "upload": up["upload"], "start": 1.0, "steps": 8})
    assert job["state"] == "done", job
    assert [x["kind"] for x in job["clips"]] == ["target", "projection"]
    proj = job["clips"][1]
    assert "project_audio.py" in proj["command"] and "--steps 8" in proj["command"]
    seed = c.run_job({"kind": "seeds", "seeds": [4]})["clips"][0]
    made = c.run_job({"kind": "variations", "clip": proj["id"], "n": 2})["clips"]
    made += c.run_job({"kind": "walk", "clips": [proj["id"], seed["id"]], "bars": 1})["clips"]
    made += c.run_job({"kind": "loop", "clip": proj["id"], "bars": 1, "bpm": 150})["clips"]
    assert [m["filename"] for m in made] == ["proj-proj-var00-240bpm.wav", "proj-proj-var01-240bpm.wav",
                                             "walk-proj_proj-4-240bpm.wav", "proj-proj-loop1bar-150bpm.wav"]
    # the projection's latent, where the command expects it (project_audio.py --outdir proj)
    app = studio[0]
    session = app.sessions.get(c.cookie.split("=", 1)[1])
    npz = next(session.folder.rglob("projected_w.npz"))
    for m in made:
        outdir = tmp_path / m["id"]
        outdir.mkdir()
        (outdir / "proj").mkdir()
        (outdir / "proj" / "projected_w.npz").write_bytes(npz.read_bytes())
        import os
        cwd = os.getcwd()
        os.chdir(outdir)
        try:
            run_command(m["command"], snap, outdir / "out")
        finally:
            os.chdir(cwd)
        assert (outdir / "out" / m["filename"]).read_bytes() == download(c, m)[1], m["filename"]


def test_projection_cancelled_half_way_leaves_no_clip_and_the_server_goes_on(studio, track):
    _, port = studio
    c = Client(port)
    up = c.json("POST", "/api/upload?name=t.wav", raw=track.read_bytes())[1]
    job = c.json("POST", "/api/jobs", {"kind": "project", "upload": up["upload"], "steps": 2000})[1]["job"]
    while c.json("GET", f"/api/jobs/{job}")[1]["done"] < 3:
        time.sleep(0.05)
    c.json("POST", f"/api/jobs/{job}/cancel", {})
    final = c.wait_job(job)
    assert final["state"] == "cancelled" and final["clips"] == [] and 3 <= final["done"] < 2000
    assert c.json("GET", "/api/clips")[1]["clips"] == []
    assert c.run_job({"kind": "seeds", "seeds": [1]})["state"] == "done"


def test_live_stream_is_gen_audios_walk_chunk_by_chunk(studio, snap, tmp_path):
    _, port = studio
    c = Client(port)
    grid = c.run_job({"kind": "seeds", "seeds": [5, 9]})["clips"]
    status, live = c.json("POST", "/api/live", {"clips": [g["id"] for g in grid], "bars": 1, "steps": 1})
    assert status == 200 and live["sample_rate"] == SAMPLE_RATE
    chunks = []
    for n in range(6):
        status, headers, body = c.request("GET", f"/api/live/{live['live']}/chunk/{n}")
        assert status == 200
        chunks.append(np.frombuffer(body, "<f4"))
    bar = loops.bars_to_samples(1, SAMPLE_RATE, BPM)
    assert [len(x) for x in chunks] == [bar] * 6
    stream = np.concatenate(chunks).astype(np.float64)
    out = run_command(f"python gen_audio.py --network {snap} --walk 5,9,5,9 --bars 1 --walk-steps 1 --batch 1 --outdir x",
                      snap, tmp_path / "walk")
    piece, _ = sf.read(out / "walk-5-9-5-9-240bpm.wav", dtype="float64")
    ref = piece[:6 * bar]   # (--batch 1: the stream renders one clip per pass, and batched convolutions round differently)
    scale = float(stream @ ref / (stream @ stream))      # gen_audio scales a loud piece down to its peak limit
    assert 0.5 < scale <= 1.0 + 1e-4
    assert np.max(np.abs(scale * stream - ref)) < 2.0 / 32768
    assert c.json("POST", f"/api/live/{live['live']}/steer", {"coarse": 9, "fine": None})[0] == 200
    assert c.json("POST", f"/api/live/{live['live']}/stop", {})[0] == 200
    assert c.request("GET", f"/api/live/{live['live']}/chunk/7")[0] == 404


def test_uploaded_network_opens_for_its_session_only_and_bad_ones_are_clear_errors(studio, tmp_path):
    import os

    from audio_ext.core.geometry import StftGeometry
    from stylegan2 import networks, snapshot
    _, port = studio
    c, other = Client(port), Client(port)
    crafted = b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR." + os.urandom(64)
    status, body = c.json("POST", "/api/upload?name=evil.pkl", raw=crafted)
    assert status == 415 and body["error"].startswith("evil.pkl")
    G = networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=64, img_channels=1,
                           mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=16)
    block = StftGeometry(128, sample_rate=8000).audio_block(mean=-6.0, std=3.0, target_bpm=240.0)
    snapshot.save_snapshot(tmp_path / "odd.pkl", {"G_ema": snapshot.network_record(G), "audio": block, "cur_nimg": 0})
    status, body = c.json("POST", "/api/upload?name=odd.pkl", raw=(tmp_path / "odd.pkl").read_bytes())
    assert status == 415 and body["error"] == "odd.pkl: generator resolution 64 does not match the audio block's 128"
    small = studio_snapshot(tmp_path / "small.pkl", resolution=64, sample_rate=4000, seed=3)
    status, body = c.json("POST", "/api/upload?name=small.pkl", raw=small.read_bytes())
    assert status == 200 and body["network"]["resolution"] == 64 and body["network"]["network"] == "small.pkl"
    clip = c.run_job({"kind": "seeds", "seeds": [2]})["clips"][0]
    assert (clip["sample_rate"], clip["seconds"]) == (4000, 64 * 64 / 4000)
    assert clip["command"].startswith("python gen_audio.py --network small.pkl --seeds 2")
    assert other.json("GET", "/api/info")[1]["resolution"] == 128          # the other session keeps the app's


def test_uploaded_latent_plays_and_one_of_another_network_or_crafted_is_refused(studio):
    app, port = studio
    c = Client(port)
    num_ws, w_dim = int(app.engine.G.num_ws), int(app.engine.G.w_dim)
    good, wrong, crafted = io.BytesIO(), io.BytesIO(), io.BytesIO()
    np.savez(good, w=np.random.RandomState(0).randn(1, num_ws, w_dim).astype(np.float32))
    np.savez(wrong, w=np.zeros((1, 18, 512), np.float32))
    objects = np.empty((1, num_ws, w_dim), dtype=object)     # the right shape, but pickled Python objects
    objects[...] = {"a": 1}
    np.savez(crafted, w=objects)
    status, body = c.json("POST", "/api/upload?name=other_w.npz", raw=wrong.getvalue())
    assert status == 415 and body["error"] == (f"other_w.npz: w has shape [18, 512], this network needs "
                                               f"[{num_ws}, {w_dim}] (projected with another snapshot?)")
    status, body = c.json("POST", "/api/upload?name=crafted.npz", raw=crafted.getvalue())
    assert status == 415 and body["error"] == "crafted.npz: w holds object, not floating-point numbers"
    status, body = c.json("POST", "/api/upload?name=projected_w.npz", raw=good.getvalue())
    assert status == 200 and body["latent"]
    job = c.run_job({"kind": "latent", "upload": body["upload"]})
    assert job["state"] == "done" and job["clips"][0]["projection"] and job["clips"][0]["seconds"] == 2.048
    assert "--projected-w proj/projected_w.npz" in job["clips"][0]["command"]


def test_any_clip_loops_at_another_bpm_from_its_own_audio(studio):
    from audio_ext.generation.retempo import change_tempo
    _, port = studio
    c = Client(port)
    a, b = c.run_job({"kind": "seeds", "seeds": [6, 7]})["clips"]
    cell = c.run_job({"kind": "mix", "rows": [a["id"]], "cols": [b["id"]], "layers": "4-7"})["clips"][-1]
    walk = c.run_job({"kind": "walk", "clips": [a["id"], b["id"]], "bars": 2, "steps": 0})["clips"][0]
    for source, bars in ((cell, 2), (walk, 3)):
        loop = c.run_job({"kind": "loop", "clip": source["id"], "bars": bars, "bpm": 180})["clips"][0]
        stem = source["filename"].rsplit("-", 1)[0]
        assert loop["filename"] == f"{stem}-loop{bars}bar-180bpm.wav" and loop["bpm"] == 180
        assert "looped in the studio" in sf.SoundFile(io.BytesIO(download(c, loop)[1])).copy_metadata()["comment"]
        got, sr = sf.read(io.BytesIO(download(c, loop)[1]), dtype="float64")
        assert (sr, len(got)) == (SAMPLE_RATE, loops.bars_to_samples(bars, SAMPLE_RATE, 180.0))
        src, _ = sf.read(io.BytesIO(download(c, source)[1]), dtype="float32")
        ref = loops.loop_clip(change_tempo(src, SAMPLE_RATE, BPM, 180.0), SAMPLE_RATE, 180.0, bars, 0.02)
        scale = float(got @ ref / (ref @ ref))             # a loud loop is scaled down to the peak limit
        assert 0.5 < scale <= 1.0 + 1e-4 and np.max(np.abs(scale * ref - got)) < 1.5 / 32768
    longer = c.run_job({"kind": "loop", "clip": cell["id"], "bars": 3})["clips"][0]   # holds 2: its 1-bar loop x3
    got, sr = sf.read(io.BytesIO(download(c, longer)[1]), dtype="float32")
    assert len(got) == loops.bars_to_samples(3, sr, BPM)
