"""Test helpers for the studio: a small network whose clips hold whole bars, and a running app on a free port."""
import contextlib
import http.client
import json
import threading
from pathlib import Path

import torch

from audio_ext.core.geometry import StftGeometry

#: 128 x 128 at 8 kHz: 2.048 s clips; at 240 BPM that is 2 whole bars (of 1 s) plus the crossfade.
RESOLUTION, SAMPLE_RATE, BPM = 128, 8000, 240.0


def studio_snapshot(path: Path, resolution: int = RESOLUTION, sample_rate: int = SAMPLE_RATE, bpm: float = BPM,
                    c_dim: int = 0, seed: int = 0) -> Path:
    """A randomly initialised small generator with an audio block, written as a training snapshot."""
    from stylegan2 import networks, snapshot
    torch.manual_seed(seed)
    G = networks.Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=resolution, img_channels=1,
                           mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=16)
    block = StftGeometry(resolution, sample_rate=sample_rate).audio_block(mean=-6.0, std=3.0, target_bpm=bpm)
    snapshot.save_snapshot(path, {"G_ema": snapshot.network_record(G), "audio": block, "cur_nimg": 0})
    return path


@contextlib.contextmanager
def running_studio(network: Path, **app_kwargs):
    """(app, port) of a studio serving ``network`` on 127.0.0.1 in a thread; stopped and cleaned up afterwards."""
    from audio_ext.studio.engine import Engine
    from audio_ext.studio.server import StudioApp, make_server
    app = StudioApp(Engine(str(network), device="cpu"), log=lambda m: None, **app_kwargs)
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield app, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        app.close()
        thread.join(10)


class Client:
    """One browser session's worth of requests (keeps its cookie)."""

    def __init__(self, port: int):
        self.port = port
        self.cookie = None

    def request(self, method: str, path: str, body=None, headers=None, raw: bytes = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        h = dict(headers or {})
        if self.cookie:
            h["Cookie"] = self.cookie
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        content = r.read()
        set_cookie = r.getheader("Set-Cookie")
        if set_cookie:
            self.cookie = set_cookie.split(";")[0]
        conn.close()
        return r.status, dict(r.getheaders()), content

    def json(self, method: str, path: str, body=None, **kw):
        status, headers, content = self.request(method, path, body, **kw)
        return status, json.loads(content)

    def wait_job(self, job_id: str, timeout: float = 300.0) -> dict:
        import time
        end, version = time.monotonic() + timeout, 0
        while time.monotonic() < end:
            status, job = self.json("GET", f"/api/jobs/{job_id}?after={version}")
            assert status == 200, job
            if job["state"] in ("done", "failed", "cancelled"):
                return job
            version = job["version"]
        raise AssertionError(f"job {job_id} did not finish")

    def run_job(self, body: dict) -> dict:
        status, r = self.json("POST", "/api/jobs", body)
        assert status == 202, r
        return self.wait_job(r["job"])
