"""The listening test under attack and under load (issue 22, items 1-9 and 20).

The blinding key and the other listeners' answers stay hidden whatever the path encoding; every
malformed request is a 4xx with a JSON error; no sheet is lost (50 at once, a survey rebuilt
while a server runs, a full disk is an error and never "saved"); odd sheets are skipped by the
scorer in one line; file modes are explicit.
"""
import errno
import json
import os
import socket
import stat
import threading
import time

import pytest
from click.testing import CliRunner
from survey_helpers import sheet, tiny_archive, tiny_survey, write_sheet

from audio_ext.__main__ import main as cli
from audio_ext.survey import make as make_mod
from audio_ext.survey import serve as serve_mod
from audio_ext.survey.make import SurveyError, SurveyOptions, load_manifest, make_survey
from audio_ext.survey.score import load_ratings
from stylegan2 import misc


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_survey(tmp_path_factory.mktemp("harden"))


def start(folder, **kw):
    httpd = serve_mod.make_server(folder, "127.0.0.1", 0, log=lambda m: None, **kw)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    return httpd, t


def stop(httpd, t):
    httpd.shutdown()
    httpd.server_close()
    t.join(timeout=10)


@pytest.fixture(scope="module")
def server(folder):
    httpd, t = start(folder)
    yield {"port": httpd.server_address[1], "folder": folder, "manifest": load_manifest(folder)}
    stop(httpd, t)


def raw(port, data: bytes, timeout=10.0) -> bytes:
    """Send ``data`` as it is (http.client would refuse some of these requests) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks)


def status_and_json(answer: bytes):
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1."), answer[:200]
    return int(head.split()[1]), json.loads(body)


def get(port, path):
    return raw(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))


def post(port, body: bytes, length=None, path="/submit"):
    n = str(len(body)) if length is None else length
    return raw(port, f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {n}\r\n"
                     f"Content-Type: application/json\r\n\r\n".encode("utf-8") + body)


def one_sheet(manifest, listener="ann"):
    return sheet(manifest, listener, {manifest["clips"][0]["id"]: 4})


# --- 1: paths are normalised before the block check ------------------------------------------------

@pytest.mark.parametrize("path", ["/%2Fmanifest.json", "//manifest.json", "/%2Fresponses/", "///responses/",
                                  "/audio/%2E%2E/manifest.json", "/audio/..%2F%2Fmanifest.json",
                                  "/%2e/manifest.json", "/audio/%2E%2E/%2Freport/", "/%2F.hidden"])
def test_encoded_paths_cannot_reach_the_key_or_the_answers(server, path):
    write_sheet(server["folder"] / "responses", "bob-20260101T000000-abc123.json", one_sheet(server["manifest"], "bob"))
    answer = get(server["port"], path)
    code, body = status_and_json(answer)
    assert code == 404 and "error" in body, answer[:300]
    assert b"survey_id" not in answer and b"bob-" not in answer


def test_path_segments_decode_once_and_normalise():
    from audio_ext.survey.request import RequestError, path_segments
    assert path_segments("/audio/../%2Fmanifest.json?x=1#y") == ["manifest.json"]
    assert path_segments("//a/./b//") == ["a", "b"]
    assert path_segments("/%256Danifest.json") == ["%6Danifest.json"]   # decoded once, not twice
    for bad in ("/%00", "/a%00b", "/..", "/a/../../etc/passwd", "/a%5Cb", "/%ff"):
        with pytest.raises(RequestError) as e:
            path_segments(bad)
        assert e.value.status == 400


# --- 2, 3: listener ids ------------------------------------------------------------------------------

@pytest.mark.parametrize("listener", [".bob", "bob\n", "-x", "a" * 65, "", "a/b"])
def test_listener_ids_that_would_hide_or_break_the_file_are_refused(server, listener):
    s = one_sheet(server["manifest"], listener)
    with pytest.raises(serve_mod.SheetError, match="listener"):
        serve_mod.validate_sheet(s, server["manifest"])
    code, body = status_and_json(post(server["port"], json.dumps(s).encode()))
    assert code == 400 and "listener" in body["error"]
    assert serve_mod.validate_sheet(one_sheet(server["manifest"], "b.o-b_1"), server["manifest"])["listener"] == "b.o-b_1"


# --- 5: malformed requests are 4xx with a JSON error --------------------------------------------------

def test_malformed_requests_are_4xx_json(server):
    port, m = server["port"], server["manifest"]
    cases = [
        (post(port, b"[" * 100000 + b"]" * 100000), 400, "nests deeper"),
        (post(port, json.dumps(one_sheet(m)).encode(), length="\u00b2"), 400, "Content-Length"),
        (post(port, json.dumps(one_sheet(m)).encode(), length="-1"), 400, "Content-Length"),
        (get(port, "/%00"), 400, "NUL"),
        (get(port, "/audio/%00.wav"), 400, "NUL"),
        (post(port, b"{}", path="/sub%00mit"), 400, "NUL"),
        (get(port, "/%ff%fe"), 400, "UTF-8"),
        (post(port, b"\xff\xfe"), 400, "UTF-8"),
        (post(port, json.dumps({**one_sheet(m), "answers": [{"clip": ["x"], "rating": 3}]}).encode()), 400,
         "unknown clip"),
        (raw(port, b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n"), 501, ""),
    ]
    for answer, want, words in cases:
        code, body = status_and_json(answer)
        assert code == want and words in body["error"], (answer[:300], want, words)
    assert status_and_json(post(port, json.dumps(one_sheet(m)).encode()))[0] == 200   # still serving


def test_request_parser_units():
    from audio_ext.survey.request import RequestError, content_length, parse_json
    assert content_length("12", 100) == 12
    for value, code in ((None, 411), ("\u00b2", 400), ("1e3", 400), ("12 3", 400), ("101", 413)):
        with pytest.raises(RequestError) as e:
            content_length(value, 100)
        assert e.value.status == code
    assert parse_json(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[["}') == {"a": "[" * 26}   # brackets in strings do not count
    with pytest.raises(RequestError, match="nests deeper than 16"):
        parse_json(b"[" * 17 + b"]" * 17)


# --- 4: fifty listeners press Submit at once ----------------------------------------------------------

def test_fifty_simultaneous_submissions_are_all_kept(folder, tmp_path):
    """Fifty connections arrive while the server is not accepting yet (busy): all must be queued by the
    kernel (a backlog of 5 refuses or drops most), then all fifty sheets are saved."""
    manifest = load_manifest(folder)
    responses = folder / "responses"
    before = set(responses.iterdir()) if responses.is_dir() else set()
    httpd = serve_mod.make_server(folder, "127.0.0.1", 0, log=lambda m: None)
    port = httpd.server_address[1]
    socks, failed = [], []

    def connect(k):
        s = socket.socket()
        s.settimeout(3.0)
        try:
            s.connect(("127.0.0.1", port))
            body = json.dumps(one_sheet(manifest, f"crowd{k:02d}")).encode()
            s.sendall(f"POST /submit HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
                      f"\r\n".encode() + body)
            socks.append(s)
        except OSError as e:
            failed.append(e)
            s.close()

    threads = [threading.Thread(target=connect, args=(k,)) for k in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    try:
        codes = []
        for s in socks:
            s.settimeout(20)
            data = b""
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    data += b
            except OSError as e:
                failed.append(e)
            codes.append(data.split(b" ", 2)[1] if data else b"")
            s.close()
    finally:
        stop(httpd, t)
    assert not failed and codes == [b"200"] * 50, (len(failed), failed[:3], codes[:5])
    saved = [p for p in set(responses.iterdir()) - before if p.name.startswith("crowd")]
    assert len(saved) == 50
    assert httpd.request_queue_size >= 50


# --- 20: a stalled request does not hold a thread forever ---------------------------------------------

def test_a_stalled_body_is_dropped_after_the_timeout(folder):
    httpd, t = start(folder, timeout=0.3)
    try:
        with socket.create_connection(("127.0.0.1", httpd.server_address[1]), timeout=10) as s:
            s.sendall(b"POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\":")
            t0 = time.monotonic()
            try:
                rest = s.recv(65536)      # the server closes the connection: b"" (no answer is owed)
            except socket.timeout:
                pytest.fail("the server kept a stalled connection open for 10 s")
            waited = time.monotonic() - t0
        assert rest == b"" and waited < 10
    finally:
        stop(httpd, t)


# --- a full disk is an error, never "saved" -----------------------------------------------------------

def test_a_sheet_that_cannot_be_written_is_an_error_not_saved(tmp_path, folder, full_disk):
    import shutil
    copy = tmp_path / "s"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("responses"))
    (copy / "responses").symlink_to(full_disk)
    httpd, t = start(copy)
    try:
        code, body = status_and_json(post(httpd.server_address[1], json.dumps(one_sheet(load_manifest(copy))).encode()))
    finally:
        stop(httpd, t)
    assert code == 507 and "No space left on device" in body["error"] and "saved" not in body
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


# --- 6: the scorer skips odd sheets in one line; its report on a full disk is one line ----------------

def test_score_skips_odd_sheets_with_one_line_each(folder, tmp_path):
    m = load_manifest(folder)
    d = tmp_path / "answers"
    write_sheet(d, "good.json", one_sheet(m, "good"))
    (d / "deep.json").write_text("[" * 200000 + "]" * 200000)
    write_sheet(d, "listclip.json", {**one_sheet(m), "answers": [{"clip": ["x"], "rating": 3}]})
    write_sheet(d, "dictclip.json", {**one_sheet(m), "answers": [{"clip": {"a": 1}, "rating": 3}]})
    (d / "short.csv").write_text("survey_id,listener,clip,rating\n" + f"{m['survey_id']},x\n")
    (d / "nul.csv").write_text("survey_id,listener,clip,rating\n\x00,\x00\n")
    (d / "seed.csv").write_text("survey_id,listener,clip,rating,seed\n" + f"{m['survey_id']},y,{m['clips'][0]['id']},3,\u00b2\n")
    (d / "huge.csv").write_text("survey_id,listener,clip,rating\n" + "x" * 200000 + ",a,b,1\n")
    logs = []
    ratings = load_ratings([d], m, logs.append)
    assert {r.listener for r in ratings} == {"good", "y"}
    skipped = [line for line in logs if line.startswith("skipped")]
    assert len(skipped) == 6 and all("\n" not in line for line in logs), logs
    assert any("deep.json: the body nests deeper" in line for line in skipped)


def test_score_report_on_a_full_disk_is_one_line(folder, tmp_path, full_disk):
    m = load_manifest(folder)
    d = tmp_path / "answers"
    write_sheet(d, "good.json", sheet(m, "good", {c["id"]: 3 for c in m["clips"]}))
    r = CliRunner().invoke(cli, ["survey", "score", str(d), "--manifest", str(folder / "manifest.json"),
                                 "--outdir", str(full_disk / "report"), "--bootstrap", "100"])
    assert r.exit_code == 1, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: --outdir {full_disk / 'report'}: cannot write the report (") and \
        "No space left on device" in last, r.output


# --- 7, 8, 9: survey make ----------------------------------------------------------------------------

@pytest.mark.parametrize("level", ["nan", "-1e9", "inf", "3"])
def test_level_is_validated(tmp_path, level):
    data = tiny_archive(tmp_path / "a.zip", n=3)
    r = CliRunner().invoke(cli, ["survey", "make", "--outdir", str(tmp_path / "s"), "--data", str(data),
                                 "--clips-per-condition", "1", "--level", level])
    assert r.exit_code == 1 and f"--level {float(level)!r}: the RMS level must be" in r.output, r.output
    assert not (tmp_path / "s").exists()


def test_a_sheet_saved_while_the_survey_is_rebuilt_is_kept(tmp_path, monkeypatch):
    data = tiny_archive(tmp_path / "a.zip", n=3)
    out = tmp_path / "s"
    opts = SurveyOptions(outdir=str(out), clips_per_condition=1, seed=1, data=str(data), overwrite=True)
    make_survey(opts, log=lambda m: None)
    real = make_mod.normalise_set

    def late_listener(*a, **k):   # a running server saves a sheet while the clips are rendered
        write_sheet(out / "responses", "late-20260101T000000-abcdef.json", {"answers": "mine"})
        return real(*a, **k)

    monkeypatch.setattr(make_mod, "normalise_set", late_listener)
    with pytest.raises(SurveyError, match="1 answer sheet.s. arrived in responses/ while the survey was made"):
        make_survey(opts, log=lambda m: None)
    assert json.loads((out / "responses" / "late-20260101T000000-abcdef.json").read_text()) == {"answers": "mine"}
    assert (out / "manifest.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_survey_folder_modes_are_explicit(tmp_path):
    data = tiny_archive(tmp_path / "a.zip", n=3)
    out = tmp_path / "s"
    old = os.umask(0o077)         # even a private umask gives a folder a web server can read
    try:
        make_survey(SurveyOptions(outdir=str(out), clips_per_condition=1, seed=1, data=str(data)), log=lambda m: None)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for p in out.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o755 if p.is_dir() else 0o644), p


def test_atomic_writes_never_touch_the_process_umask(tmp_path, monkeypatch):
    """Setting the umask to read it would race with every other thread creating files."""
    def no_umask(*a):
        raise AssertionError("os.umask called")

    old = os.umask(0o027)
    os.umask(old)
    monkeypatch.setattr(os, "umask", no_umask)
    try:
        real_umask = old
        misc.atomic_write_text(tmp_path / "a.json", "{}")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~real_umask
        os.chmod(tmp_path / "a.json", 0o600)
        misc.atomic_write_text(tmp_path / "a.json", "{}")      # a replaced file keeps its mode
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o600
    finally:
        monkeypatch.undo()


def test_survey_make_on_a_full_disk_is_one_line(tmp_path, full_disk):
    data = tiny_archive(tmp_path / "a.zip", n=3)
    r = CliRunner().invoke(cli, ["survey", "make", "--outdir", str(full_disk / "s"), "--data", str(data),
                                 "--clips-per-condition", "1"])
    assert r.exit_code == 1, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: --outdir {full_disk / 's'}: cannot write") and "No space left" in last, r.output
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]


def test_survey_make_into_a_read_only_place_is_one_line(tmp_path, monkeypatch):
    """EROFS, simulated at the lowest write call (root ignores permission bits, so chmod cannot show it)."""
    data = tiny_archive(tmp_path / "a.zip", n=3)
    real = os.open

    def read_only(path, flags, *a, **k):
        if str(path).startswith(str(tmp_path / ".s.")) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    r = CliRunner().invoke(cli, ["survey", "make", "--outdir", str(tmp_path / "s"), "--data", str(data),
                                 "--clips-per-condition", "1"])
    monkeypatch.undo()
    assert r.exit_code == 1 and "Read-only file system" in r.output.strip().splitlines()[-1], r.output
    assert not (tmp_path / "s").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".s.")]


def test_make_and_score_under_a_file_are_one_line(folder, tmp_path):
    """ENOTDIR: a destination under a file."""
    (tmp_path / "file").write_text("x")
    data = tiny_archive(tmp_path / "a.zip", n=3)
    r = CliRunner().invoke(cli, ["survey", "make", "--outdir", str(tmp_path / "file" / "s"), "--data", str(data),
                                 "--clips-per-condition", "1"])
    assert r.exit_code == 1 and r.output.strip().splitlines()[-1].startswith(
        f"Error: --outdir {tmp_path / 'file' / 's'}: cannot write there ("), r.output
    m = load_manifest(folder)
    write_sheet(tmp_path / "answers", "good.json", sheet(m, "good", {c["id"]: 3 for c in m["clips"]}))
    r = CliRunner().invoke(cli, ["survey", "score", str(tmp_path / "answers"), "--manifest", str(folder / "manifest.json"),
                                 "--outdir", str(tmp_path / "file" / "report"), "--bootstrap", "100"])
    assert r.exit_code == 1 and r.output.strip().splitlines()[-1].startswith(
        f"Error: --outdir {tmp_path / 'file' / 'report'}: cannot write the report ("), r.output
