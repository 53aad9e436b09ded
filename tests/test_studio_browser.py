"""The studio in a real browser (Debian's headless Chromium through Selenium), doing what a user does.

Generate a grid, play a clip, loop it at another BPM and download it, mix two clips, walk, upload
and project a track, hit each error (non-audio upload, a 2 GB upload, a cancelled projection), two
sessions side by side, and (slow) 60 s of the live stream without an underrun, counted by the page.
Skips, with the reason, where Chromium, chromedriver or Selenium are missing.
``ELECTROGAN_SCREENSHOTS=DIR`` keeps a screenshot of each screen (docs/img/studio-*.png come from it).
"""
import re
import time

import numpy as np
import pytest
import soundfile as sf
from browser_helpers import need_browser, open_browser, shot, wait
from studio_helpers import BPM, SAMPLE_RATE, running_studio, studio_snapshot

from audio_ext.core.synth import techno_loop
from audio_ext.generation import loops


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    need_browser()
    snap = studio_snapshot(tmp_path_factory.mktemp("net") / "network-snapshot-000000.pkl")
    with running_studio(snap) as (app, port):
        yield app, f"http://127.0.0.1:{port}/"


@pytest.fixture()
def browser(tmp_path):
    need_browser()
    driver = open_browser(tmp_path / "b1", "1280,1000")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def track(tmp_path_factory):
    path = tmp_path_factory.mktemp("track") / "my track.wav"
    sf.write(path, techno_loop(120.0, 10.0, sr=22050, seed=3, offset=0.1), 22050)
    return path


def _wait(condition, what, timeout=240.0):
    return wait(condition, what, timeout)


def _shot(driver, name):
    shot(driver, f"studio-{name}")


def _cards(driver, kind=None):
    sel = ".clip" if kind is None else f".clip[data-kind='{kind}']"
    return driver.find_elements("css selector", sel)


def _tab(driver, name):
    driver.find_element("css selector", f"#tabs button[data-tab='{name}']").click()


def _set(driver, element_id, value):
    driver.execute_script("const e = document.getElementById(arguments[0]); e.value = arguments[1];"
                          "e.dispatchEvent(new Event('change'));", element_id, str(value))


def _error(driver):
    return driver.execute_script("return document.getElementById('error').hidden ? '' : "
                                 "document.getElementById('errortext').textContent")


def _open(driver, url):
    driver.get(url)
    _wait(lambda: driver.execute_script("return document.body.dataset.ready") == "1", "the page")
    # the page asks for four seeds by itself on a first visit
    return _wait(lambda: len(_cards(driver, "seed")) >= 4 and _cards(driver, "seed"), "the first grid")


def _duration(driver, audio):
    driver.execute_script("arguments[0].load()", audio)
    return _wait(lambda: driver.execute_script("const a = arguments[0]; return a.readyState >= 1 && a.duration", audio),
                 "the audio to load")


def test_grid_play_loop_download_mix_and_walk(studio, browser):
    _, url = studio
    cards = _open(browser, url)
    browser.find_element("id", "newseeds").click()
    _wait(lambda: len(_cards(browser, "seed")) >= 12, "eight more seeds")
    audio = cards[0].find_element("tag name", "audio")
    assert _duration(browser, audio) == pytest.approx(2.048, abs=1e-3)
    browser.execute_script("arguments[0].play()", audio)
    _wait(lambda: browser.execute_script("return arguments[0].currentTime > 0", audio), "playback")
    _shot(browser, "browse")

    # loop of 2 bars at 200 BPM, downloaded
    _set(browser, "bpm", 200)
    _set(browser, "bars", 2)
    cards[0].find_element("css selector", "button.loop").click()
    loop = _wait(lambda: _cards(browser, "loop"), "the loop")[0]
    assert _duration(browser, loop.find_element("tag name", "audio")) == pytest.approx(2.4, abs=1e-3)
    loop.find_element("css selector", "a.dl-wav").click()
    done = _wait(lambda: [p for p in browser.downloads.glob("*.wav")] if not list(browser.downloads.glob("*.crdownload"))
                 else None, "the download")
    seed = cards[0].find_element("class name", "title").text.split()[-1]
    assert done[0].name == f"seed{int(seed):04d}-loop2bar-200bpm.wav"
    info = sf.info(str(done[0]))
    assert (info.samplerate, info.frames) == (SAMPLE_RATE, loops.bars_to_samples(2, SAMPLE_RATE, 200.0))
    loop.find_element("css selector", "button.cmd").click()
    assert "--seeds " + seed in loop.find_element("css selector", "code.command").text
    assert "--loop 2 --bpm 200" in loop.find_element("css selector", "code.command").text

    # mix: tick two seed clips, coarse layers from the second
    for card in cards[:2]:
        card.find_element("css selector", "input.pick").click()
    _tab(browser, "mix")
    browser.find_element("id", "domix").click()
    cells = _wait(lambda: browser.find_elements("css selector", "#mixgrid td.cell img"), "the mixing grid")
    assert len(cells) == 1 and len(browser.find_elements("css selector", "#mixgrid td.src img")) == 2
    cells[0].click()
    player = browser.find_element("id", "mixplayer")
    assert _duration(browser, player) == pytest.approx(2.048, abs=1e-3)
    _shot(browser, "mix")

    # walk through the two ticked clips, 1 bar each with one step between: 3 bars at 240 BPM
    _tab(browser, "walk")
    _set(browser, "bars", 1)
    browser.find_element("id", "dowalk").click()
    walk = _wait(lambda: _cards(browser, "walk"), "the walk")[0]
    assert _duration(browser, walk.find_element("tag name", "audio")) == pytest.approx(3 * 4 * 60 / BPM, abs=1e-3)
    assert _error(browser) == ""


def test_upload_project_and_the_errors(studio, browser, track, tmp_path):
    _, url = studio
    _open(browser, url)
    _tab(browser, "own")
    # not audio
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all\n" * 50)
    browser.find_element("id", "file").send_keys(str(bad))
    browser.find_element("id", "doproject").click()
    assert "notes.wav: not an audio file" in _wait(lambda: _error(browser), "the non-audio error")
    browser.find_element("id", "errorclose").click()
    # 2 GB (a sparse file): refused in the page, before anything is sent
    big = tmp_path / "huge.wav"
    with open(big, "wb") as f:
        f.truncate(2 << 30)
    browser.find_element("id", "file").clear()
    browser.find_element("id", "file").send_keys(str(big))
    browser.find_element("id", "doproject").click()
    assert "huge.wav is 2048.0 MB; the studio takes uploads up to 64 MB" in _wait(lambda: _error(browser), "size error")
    browser.find_element("id", "errorclose").click()
    # a crafted "network" and a latent of another network
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"\x80\x04cos\nsystem\n(S'echo pwned'\ntR." + bytes(64))
    browser.find_element("id", "netfile").send_keys(str(evil))
    browser.find_element("id", "opennet").click()
    assert _wait(lambda: _error(browser), "the network error").startswith("network: evil.pkl")
    assert "network-snapshot-000000.pkl: 128×128" in browser.find_element("id", "netinfo").text  # still the app's
    browser.find_element("id", "errorclose").click()
    other = tmp_path / "projected_w.npz"
    np.savez(other, w=np.zeros((1, 18, 512), np.float32))
    browser.find_element("id", "file").clear()
    browser.find_element("id", "file").send_keys(str(other))
    browser.find_element("id", "doproject").click()
    assert "w has shape [18, 512], this network needs [12, 16] (projected with another snapshot?)" in \
        _wait(lambda: _error(browser), "the latent error")
    browser.find_element("id", "errorclose").click()
    # a projection cancelled half-way
    browser.find_element("id", "file").clear()
    browser.find_element("id", "file").send_keys(str(track))
    _set(browser, "steps", 2000)
    browser.find_element("id", "doproject").click()

    def step():  # the page shows every step; a fast machine passes step 3 between two looks
        m = re.search(r"step (\d+)/", browser.find_element("css selector", ".job").text)
        return int(m.group(1)) if m else 0
    _wait(lambda: step() >= 3, "projection progress")
    _shot(browser, "project-progress")
    browser.find_element("css selector", ".job button.cancel").click()
    assert "cancelled" in _wait(lambda: _error(browser), "the cancel message")
    browser.find_element("id", "errorclose").click()
    # a real one, few steps: target and projection appear and play; variations of it
    _set(browser, "steps", 6)
    _set(browser, "start", 1)
    browser.find_element("id", "doproject").click()
    proj = _wait(lambda: _cards(browser, "projection"), "the projection", 300)[0]
    assert _cards(browser, "target")
    assert _duration(browser, proj.find_element("tag name", "audio")) == pytest.approx(2.048, abs=1e-3)
    proj.find_element("css selector", "button.vary").click()
    _wait(lambda: len(_cards(browser, "variation")) == 4, "four variations")
    _shot(browser, "project")
    assert _error(browser) == ""


def test_two_sessions_at_once_do_not_see_each_others_clips(studio, browser, tmp_path):
    _, url = studio
    other = open_browser(tmp_path / "b2", "1280,1000")
    try:
        mine = {c.get_attribute("id") for c in _open(browser, url)}
        theirs = {c.get_attribute("id") for c in _open(other, url)}
        assert mine and theirs and not mine & theirs
        browser.refresh()
        _wait(lambda: browser.execute_script("return document.body.dataset.ready") == "1", "reload")
        assert {c.get_attribute("id") for c in _cards(browser)} >= mine   # a reload keeps the session's clips
        assert not {c.get_attribute("id") for c in _cards(browser)} & theirs
        clip = next(iter(mine)).removeprefix("clip-")
        status = other.execute_script(f"return fetch('/api/clips/{clip}/audio').then(r => r.status)")
        assert status == 404
    finally:
        other.quit()


@pytest.mark.slow
def test_live_stream_plays_60_seconds_without_an_underrun(studio, browser):
    _, url = studio
    _open(browser, url)
    _tab(browser, "live")
    browser.find_element("id", "livestart").click()
    _wait(lambda: browser.execute_script("return window.studioLive.chunks") >= 2, "the first chunks")
    t0 = browser.execute_script("return window.studioLive.ctx.currentTime")
    steered = False
    while browser.execute_script("return window.studioLive.ctx.currentTime") - t0 < 60:
        if not steered and browser.execute_script("return window.studioLive.ctx.currentTime") - t0 > 20:
            seed = browser.find_element("css selector", "#steer select option:nth-child(2)").get_attribute("value")
            browser.execute_script("const s = document.querySelector('#steer select'); s.value = arguments[0];"
                                   "s.dispatchEvent(new Event('change'));", seed)   # coarse styles from a seed
            steered = True
        time.sleep(1)
    live = browser.execute_script("return {u: window.studioLive.underruns, c: window.studioLive.chunks}")
    _shot(browser, "live")
    assert steered and live["u"] == 0 and live["c"] >= 60 / (4 * 60 / BPM * 2) - 1
    browser.find_element("id", "livestop").click()
    assert _error(browser) == ""
