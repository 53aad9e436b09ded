"""survey serve: static files without the manifest, validated and size-capped posts, atomic writes."""
import http.client
import json
import threading

import pytest
from survey_helpers import sheet, tiny_survey

from audio_ext.survey import serve as serve_mod
from audio_ext.survey.make import load_manifest


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tiny_survey(tmp_path_factory.mktemp("serve"))
    logs = []
    httpd = serve_mod.make_server(folder, "127.0.0.1", 0, log=logs.append)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield {"folder": folder, "port": httpd.server_address[1], "manifest": load_manifest(folder), "logs": logs}
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def _request(srv, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", srv["port"], timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def _post(srv, payload, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    return _request(srv, "POST", "/submit", body, {"Content-Type": "application/json"})


def _responses(srv):
    return sorted((srv["folder"] / "responses").iterdir())


def test_serves_page_and_audio_but_not_the_manifest(server):
    m = server["manifest"]
    status, body = _request(server, "GET", "/")
    assert status == 200 and b"survey-data.js" in body
    status, body = _request(server, "GET", "/" + m["clips"][0]["file"])
    assert status == 200 and body[:4] == b"RIFF"
    for hidden in ("/manifest.json", "/responses/", "/README.txt/../manifest.json", "/./manifest.json?x=1",
                   "/%6Danifest.json", "/audio/..%2Fmanifest.json", "/%72esponses/"):
        assert _request(server, "GET", hidden)[0] == 404, hidden
    status, body = _request(server, "GET", "/api/ping")
    assert status == 200 and json.loads(body) == {"survey_id": m["survey_id"]}


def test_valid_sheet_is_saved_whole(server):
    m = server["manifest"]
    before = _responses(server)
    good = sheet(m, "lab-01", {c["id"]: 4 for c in m["clips"]})
    status, body = _post(server, good)
    assert status == 200, body
    new = [p for p in _responses(server) if p not in before]
    assert len(new) == 1 and new[0].name.startswith("lab-01-") and json.loads(body)["saved"] == new[0].name
    saved = json.loads(new[0].read_text())
    assert [a["rating"] for a in saved["answers"]] == [4] * len(m["clips"])
    assert saved["survey_id"] == m["survey_id"]
    # no temporary file is left behind
    assert not [p for p in (server["folder"] / "responses").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.update(survey_id="nope"), "survey_id"),
    (lambda s: s.update(listener="../../etc"), "listener"),
    (lambda s: s["answers"][0].update(rating=6), "rating"),
    (lambda s: s["answers"][0].update(rating="5"), "rating"),
    (lambda s: s["answers"][0].update(clip="ffffffffff"), "unknown clip"),
    (lambda s: s["answers"].append(dict(s["answers"][0])), "twice"),
    (lambda s: s["answers"][0].update(listened_s=-1), "listened_s"),
    (lambda s: s["answers"][0].update(comment="x" * 1001), "comment"),
    (lambda s: s.update(answers=[]), "non-empty"),
    (lambda s: s.update(format="other"), "format"),
])
def test_malformed_sheets_are_rejected(server, mutate, message):
    m = server["manifest"]
    bad = sheet(m, "lab-02", {c["id"]: 3 for c in m["clips"]})
    mutate(bad)
    before = _responses(server)
    status, body = _post(server, bad)
    assert status == 400 and message in json.loads(body)["error"]
    assert _responses(server) == before


def test_not_json_oversized_and_missing_length(server):
    before = _responses(server)
    status, body = _post(server, None, raw=b"{not json")
    assert status == 400 and "not JSON" in json.loads(body)["error"]
    for headers, expected in (({"Content-Length": str(serve_mod.MAX_BODY + 1)}, 413), ({}, 411)):
        # the server answers from the headers alone: it never reads an oversized body
        conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=10)
        conn.putrequest("POST", "/submit")
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        assert r.status == expected
        conn.close()
    assert _request(server, "POST", "/elsewhere", b"{}")[0] == 404
    assert _responses(server) == before


def test_save_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves neither a partial sheet nor a temporary file."""
    import os
    m = {"survey_id": "abc", "clips": [{"id": "c1"}]}
    clean = serve_mod.validate_sheet(sheet(m, "x", {"c1": 2}), m)

    def broken_fsync(fd):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        serve_mod.save_sheet(tmp_path, clean)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    path = serve_mod.save_sheet(tmp_path, clean)
    assert json.loads(path.read_text())["answers"][0]["rating"] == 2


def test_cli_serves_until_stopped(server):
    """``python -m audio_ext survey serve`` in its own process: announces its address, serves, stops."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "audio_ext", "survey", "serve", str(server["folder"]),
                             "--port", "0"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    watchdog = threading.Timer(120, proc.kill)  # bounds the blocking readline below
    watchdog.start()
    try:
        line = proc.stdout.readline()  # the first line names the address
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        status, body = _request({"port": int(m.group(1))}, "GET", "/api/ping")
        assert status == 200 and json.loads(body)["survey_id"] == server["manifest"]["survey_id"]
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(timeout=30)
