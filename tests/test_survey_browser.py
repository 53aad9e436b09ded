"""The survey page in a real browser: headless Chromium driven by Selenium.

Rates every clip, reloads midway without losing answers, exports the answer sheet through the
page's own download button and scores the downloaded file; checks the page's shuffle against
audio_ext.survey.order and the submit path of ``survey serve``. Uses Debian's ``chromium`` and
``chromium-driver`` at fixed paths (never Selenium Manager, never a downloaded browser); skips,
with the reason, where they or Selenium are missing. ``ELECTROGAN_SCREENSHOTS=DIR`` keeps
screenshots of each screen for a look.
"""
import json
import shutil
import threading

import pytest
from browser_helpers import need_browser, open_browser, shot, wait
from survey_helpers import tiny_archive

from audio_ext.survey import order
from audio_ext.survey.make import SurveyOptions, load_manifest, make_survey
from audio_ext.survey.score import score_survey

RATING = {"roundtrip-pghi+fgla": 4, "anchor": 1}


@pytest.fixture()
def browser(tmp_path):
    need_browser()
    driver = open_browser(tmp_path, "412,915")  # a phone's viewport
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture()
def survey(tmp_path):
    data = tiny_archive(tmp_path / "a.zip", n=5)
    folder = tmp_path / "survey"
    make_survey(SurveyOptions(outdir=str(folder), clips_per_condition=3, seed=5, data=str(data), anchors=2,
                              title="Browser test"), log=lambda m: None)
    return folder


def _visible(driver, section):
    return driver.execute_script(f"return !document.getElementById('{section}').hidden")


def _state(driver, survey_id):
    return driver.execute_script(f"return JSON.parse(localStorage.getItem('electrogan-survey:{survey_id}'))")


def _rate_current(driver, manifest):
    """Play the clip to its end, choose the rating its condition should get; returns the clip id."""
    by_id = {c["id"]: c["condition"] for c in manifest["clips"]}
    clip = driver.execute_script("return document.getElementById('player').dataset.clip")
    assert driver.find_element("id", "next").get_attribute("disabled") is not None  # not before listening
    driver.execute_script("document.getElementById('player').play()")
    wait(lambda: "Choose a rating" in driver.find_element("id", "hint").text, "the clip to end")
    driver.find_element("css selector", f"input[name=rating][value='{RATING[by_id[clip]]}']").click()
    wait(lambda: driver.find_element("id", "next").get_attribute("disabled") is None, "Next to enable")
    return clip


def _next(driver):
    driver.find_element("id", "next").click()


def test_rate_reload_export_and_score(browser, survey):
    m = load_manifest(survey)
    n = len(m["clips"])
    browser.get(survey.joinpath("index.html").as_uri() + "?seed=12345")
    wait(lambda: _visible(browser, "intro"), "the instructions")
    shot(browser, "1-intro")
    listener = browser.find_element("id", "listener")
    listener.clear()
    listener.send_keys("tester one")
    browser.find_element("id", "start").click()
    wait(lambda: _visible(browser, "trial"), "the first clip")
    state = _state(browser, m["survey_id"])
    # the page's shuffle is the Python one, for the same seed
    assert state["seed"] == 12345 and state["listener"] == "tester-one"
    assert state["order"] == order.shuffled([c["id"] for c in m["clips"]], 12345)
    rated = []
    for k in range(n):
        assert browser.find_element("id", "progress-text").text == f"Clip {k + 1} of {n}"
        rated.append(_rate_current(browser, m))
        if k == n // 2:
            shot(browser, "2-trial")
            browser.refresh()  # midway, after rating but before Next: nothing may be lost
            wait(lambda: _visible(browser, "trial"), "the page after reload")
            assert browser.find_element("id", "progress-text").text == f"Clip {k + 1} of {n}"
            assert len(_state(browser, m["survey_id"])["answers"]) == k
            checked = browser.find_element("css selector", "input[name=rating]:checked").get_attribute("value")
            assert int(checked) in RATING.values()
            assert browser.find_element("id", "next").get_attribute("disabled") is None
        _next(browser)
    wait(lambda: _visible(browser, "done"), "the end screen")
    assert rated == state["order"]
    shot(browser, "3-done")
    browser.find_element("id", "export-json").click()
    files = wait(lambda: [p for p in browser.downloads.glob("*.json")], "the download")
    wait(lambda: files[0].stat().st_size > 0 and not list(browser.downloads.glob("*.crdownload")),
          "the download to finish")
    exported = json.loads(files[0].read_text())
    assert files[0].name == f"survey-{m['survey_id']}-tester-one.json"
    assert [a["clip"] for a in exported["answers"]] == rated
    assert all(a["listened_s"] > 0 and a["plays"] >= 1 for a in exported["answers"])
    assert "condition" not in json.dumps(exported)
    browser.find_element("id", "export-csv").click()
    wait(lambda: list(browser.downloads.glob("*.csv")) and
          not list(browser.downloads.glob("*.crdownload")), "the CSV download")
    responses = survey / "responses"
    responses.mkdir()
    shutil.copy(files[0], responses)
    res = score_survey([responses], log=lambda s: None)
    mos = {r["condition"]: r["mos"] for r in res["conditions"]}
    assert mos == {"roundtrip-pghi+fgla": 4.0, "anchor": 1.0}
    csv_res = score_survey([next(browser.downloads.glob("*.csv"))], manifest_path=survey / "manifest.json",
                           outdir=survey / "report-csv", log=lambda s: None)
    assert {r["condition"]: r["n"] for r in csv_res["conditions"]} == {"roundtrip-pghi+fgla": 3, "anchor": 2}


def test_keyboard_and_submit_to_server(browser, survey):
    """Rating with the keys 1-5 and N, and the Submit button when the page is served by survey serve."""
    from audio_ext.survey.serve import make_server
    m = load_manifest(survey)
    httpd = make_server(survey, "127.0.0.1", 0, log=lambda s: None)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        browser.get(f"http://127.0.0.1:{httpd.server_address[1]}/?listener=lab-7")
        wait(lambda: _visible(browser, "intro"), "the instructions")
        browser.find_element("id", "start").click()
        body = browser.find_element("tag name", "body")
        for _ in range(len(m["clips"])):
            wait(lambda: _visible(browser, "trial"), "a clip")
            browser.execute_script("document.getElementById('next').focus()")
            browser.execute_script("document.getElementById('player').play()")
            wait(lambda: "Choose a rating" in browser.find_element("id", "hint").text, "the clip to end")
            body.send_keys("3")
            body.send_keys("n")
        wait(lambda: _visible(browser, "done"), "the end screen")
        submit = wait(lambda: browser.find_element("id", "submit").is_displayed()
                       and browser.find_element("id", "submit"), "the Submit button")
        submit.click()
        wait(lambda: "Submitted" in browser.find_element("id", "status").text, "the server's answer")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
    saved = list((survey / "responses").glob("lab-7-*.json"))
    assert len(saved) == 1
    sheet = json.loads(saved[0].read_text())
    assert len(sheet["answers"]) == len(m["clips"]) and {a["rating"] for a in sheet["answers"]} == {3}
