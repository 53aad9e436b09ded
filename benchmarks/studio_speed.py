"""How fast is the studio? First sound after the page opens, and each further clip against gen_audio's time.

The shipped network ``pretrained:electro128`` is measured when it is installed (the studio's
default network); ``--size`` writes a randomly initialised stand-in instead (``electro128``: its
size; ``audio1024``: the thesis's preset at 44.1 kHz), or ``--network PKL|pretrained:NAME`` is used. Measured, interleaved so that other load on a shared machine slows all
alike:

- **first sound**: headless Chromium opens the page of a freshly started studio (network loaded,
  server listening) and the clock runs until the first clip's audio element has its data
  (``readyState >= 2``); without Chromium the page's own request sequence is replayed with
  http.client (page, script, info, clips, a 4-seed job, its first clip's audio).
- **each further clip**: one seed's clip through the studio's API (job submitted, its changes
  long-polled as the page does, WAV fetched) against ``audio_ext.generate.generate`` writing the same clip
  (what ``gen_audio.py`` does after its imports: load the snapshot, render, publish) and against the
  render alone on the loaded generator (the work both share), in the main thread as gen_audio.py runs
  it and in a worker thread as the studio does: on an oversubscribed machine torch's two OpenMP
  threads of the main thread wait for each other, and the two differ several times.

    python benchmarks/studio_speed.py [--size electro128|audio1024 | --network PKL|pretrained:NAME] [--clips 5]
"""
from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from benchmarks.report import markdown_table, write_section  # noqa: E402


def stand_in(path: Path, size: str = "electro128") -> Path:
    """A random generator the size of the shipped electro128 network (or of the audio1024 preset at
    44.1 kHz), with its audio block, written as a G_ema-only snapshot."""
    from audio_ext.core.geometry import StftGeometry
    from stylegan2 import networks, snapshot
    torch.manual_seed(0)
    if size == "audio1024":
        from benchmarks.generate_speed import build_generator
        G = build_generator(1024, torch.device("cpu"))
        block = StftGeometry(1024, sample_rate=44100).audio_block(mean=-6.0, std=3.0, target_bpm=130.0)
    else:
        G = networks.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=128, img_channels=1,
                               mapping_kwargs=dict(num_layers=2), channel_base=2048, channel_max=128)
        block = StftGeometry(128, sample_rate=8875).audio_block(mean=-6.0, std=3.0, target_bpm=130.0)
    snapshot.save_snapshot(path, {"G_ema": snapshot.network_record(G), "audio": block, "cur_nimg": 0})
    return path


def _req(port, method, path, body=None, cookie=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    headers = {"Cookie": cookie} if cookie else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    conn.request(method, path, body=data, headers=headers)
    r = conn.getresponse()
    content = r.read()
    cookie = (r.getheader("Set-Cookie") or "").split(";")[0] or cookie
    conn.close()
    return r.status, content, cookie


def studio_clip(port, cookie, seed):
    """Seconds from the request to the clip's audio bytes, as the page does it."""
    t0 = time.perf_counter()
    _, body, cookie = _req(port, "POST", "/api/jobs", {"kind": "seeds", "seeds": [seed]}, cookie)
    job = json.loads(body)["job"]
    version = 0
    while True:   # long polling, as the page does
        _, body, _ = _req(port, "GET", f"/api/jobs/{job}?after={version}", cookie=cookie)
        j = json.loads(body)
        version = j["version"]
        if j["state"] not in ("queued", "running"):
            break
    assert j["state"] == "done", j
    _req(port, "GET", f"/api/clips/{j['clips'][0]['id']}/audio", cookie=cookie)
    return time.perf_counter() - t0, cookie


def first_sound_browser(url):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--mute-audio",
                f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        driver.get("about:blank")
        t0 = time.perf_counter()
        driver.get(url)
        while not driver.execute_script("const a = document.querySelector('.clip audio');"
                                        "return a !== null && a.readyState >= 2"):
            time.sleep(0.01)
        return time.perf_counter() - t0
    finally:
        driver.quit()


def first_sound_http(port):
    t0 = time.perf_counter()
    _, _, cookie = _req(port, "GET", "/")
    for path in ("/studio.js", "/studio.css", "/api/info", "/api/clips"):
        _req(port, "GET", path, cookie=cookie)
    _, body, _ = _req(port, "POST", "/api/jobs", {"kind": "seeds", "count": 4}, cookie)
    job = json.loads(body)["job"]
    version = 0
    while True:
        j = json.loads(_req(port, "GET", f"/api/jobs/{job}?after={version}", cookie=cookie)[1])
        version = j["version"]
        if j["clips"]:
            break
    _req(port, "GET", f"/api/clips/{j['clips'][0]['id']}/audio", cookie=cookie)
    return time.perf_counter() - t0


@click.command()
@click.option("--network", default=None,
              help="snapshot or pretrained:NAME to measure [the studio's default: pretrained:electro128 when installed]")
@click.option("--size", type=click.Choice(["electro128", "audio1024"]), default=None,
              help="measure a random stand-in of this size instead")
@click.option("--clips", type=click.IntRange(min=2), default=5, show_default=True)
@click.option("--write/--no-write", default=True, help="update docs/benchmarks.md")
def main(network, size, clips, write):
    from studio_helpers import running_studio

    from audio_ext.generation.generate import GenerateOptions, generate
    from audio_ext.studio.engine import Engine
    work = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    if network is None and size is None:
        from audio_ext.studio.engine import default_network
        network = default_network()
    if network is None:
        size = size or "electro128"
        network = str(stand_in(work / f"{size}-standin.pkl", size))
        section = size
    else:
        section = network.split(":", 1)[1] if network.startswith("pretrained:") else Path(network).stem
    browser = Path("/usr/bin/chromium").is_file() and Path("/usr/bin/chromedriver").is_file()
    t0 = time.perf_counter()
    engine = Engine(str(network), device="cpu")
    load_s = time.perf_counter() - t0
    engine.close()
    with running_studio(network) as (app, port):
        first = first_sound_browser(f"http://127.0.0.1:{port}/") if browser else first_sound_http(port)
        studio_s, gen_s, render_s, thread_s = [], [], [], []
        cookie = None
        for k in range(clips):
            seed = 1000 + k
            s, cookie = studio_clip(port, cookie, seed)
            studio_s.append(s)
            t = time.perf_counter()
            generate(GenerateOptions(network=str(network), outdir=str(work / f"g{k}"), seeds=[seed], device="cpu"),
                     log=lambda m: None)
            gen_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            app.engine.render(_fresh(work / f"r{k}"), seeds=[seed])
            render_s.append(time.perf_counter() - t)
            done = []
            worker = threading.Thread(target=lambda: done.append(_timed_render(app.engine, work / f"t{k}", seed)))
            worker.start()
            worker.join()
            thread_s.append(done[0])
    med = statistics.median
    info = f"{network if network.startswith('pretrained:') else Path(network).name} (R={app.info['resolution']}, {app.info['sample_rate']} Hz, {app.info['clip_seconds']:.2f} s clips)"
    rows = [["network loaded (studio start)", f"{load_s:.3f}", "-"],
            ["first sound after the page opens" + (" (Chromium)" if browser else " (http.client)"), f"{first:.3f}", "-"],
            ["further clip, studio (request -> WAV fetched)", f"{med(studio_s):.3f}", "1"],
            ["same clip, `generate()` (gen_audio.py's work: load + render + publish)", f"{med(gen_s):.3f}",
             f"{med(studio_s) / med(gen_s):.2f}"],
            ["same clip, render alone on the loaded generator", f"{med(render_s):.3f}",
             f"{med(studio_s) / med(render_s):.2f}"],
            ["same, in a worker thread (where the studio renders)", f"{med(thread_s):.3f}",
             f"{med(studio_s) / med(thread_s):.2f}"]]
    load = os.getloadavg()[0]
    body = (f"Network: {info}; median of {clips} clips each, interleaved; load average {load:.1f} at the end "
            f"(a shared machine: other jobs ran). Ratio = studio time / that row's time (the issue asks for at "
            f"most 1.5x gen_audio's time per further clip, and first sound within 3 s).\n\n"
            + markdown_table(["what", "seconds", "studio / this"], rows))
    print(body)
    if write:
        write_section(f"studio-speed-{section}",
                      f"Studio speed, {info.split(' (')[0]} (`benchmarks/studio_speed.py`)", body)


def _timed_render(engine, folder: Path, seed: int) -> float:
    t = time.perf_counter()
    engine.render(_fresh(folder), seeds=[seed])
    return time.perf_counter() - t


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    main()
