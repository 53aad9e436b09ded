/* The listening test page (ElectroGAN, docs/evaluation.md). Plain JavaScript, no downloads.
 *
 * Data: window.SURVEY_DATA from survey-data.js (survey id, clip ids and their audio files, nothing else).
 * State: one localStorage entry per survey, saved after every change, so a reload loses nothing.
 * Order: a Fisher-Yates shuffle driven by mulberry32(seed); the seed is ?seed=N, else the survey's
 * page_seed, else random per listener, and is written into the answer sheet (audio_ext/survey/order.py
 * reproduces the same order).
 */
(function () {
  "use strict";
  var D = window.SURVEY_DATA;
  var KEY = "electrogan-survey:" + D.survey_id;
  var $ = function (id) { return document.getElementById(id); };
  var params = new URLSearchParams(window.location.search);
  var state = null;
  var storageOk = true;

  function mulberry32(a) {
    return function () {
      a = (a + 0x6D2B79F5) | 0;
      var t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function shuffled(items, seed) {
    var out = items.slice(), rand = mulberry32(seed >>> 0);
    for (var i = out.length - 1; i > 0; i--) {
      var j = Math.floor(rand() * (i + 1));
      var t = out[i]; out[i] = out[j]; out[j] = t;
    }
    return out;
  }

  function randomUint32() {
    var a = new Uint32Array(1);
    (window.crypto || window.msCrypto).getRandomValues(a);
    return a[0];
  }

  function save() {
    try { localStorage.setItem(KEY, JSON.stringify(state)); }
    catch (e) { storageOk = false; }
  }

  function load() {
    try {
      var s = JSON.parse(localStorage.getItem(KEY) || "null");
      if (s && s.survey_id === D.survey_id && Array.isArray(s.order)) { return s; }
    } catch (e) { storageOk = false; }
    return null;
  }

  function show(id) {
    ["intro", "trial", "done"].forEach(function (s) { $(s).hidden = (s !== id); });
  }

  function cleanListener(text) {
    return String(text || "").trim().replace(/[^A-Za-z0-9_.-]+/g, "-").slice(0, 64);
  }

  // ---------------------------------------------------------------- intro
  function renderIntro() {
    $("training").src = D.training.src;
    var suggested = cleanListener(params.get("listener")) || ("L" + randomUint32().toString(16));
    $("listener").value = suggested;
    show("intro");
  }

  function start() {
    var listener = cleanListener($("listener").value) || ("L" + randomUint32().toString(16));
    var seedParam = params.get("seed");
    var seed = seedParam !== null && /^\d+$/.test(seedParam) ? (Number(seedParam) >>> 0)
      : (D.page_seed !== null && D.page_seed !== undefined ? (D.page_seed >>> 0) : randomUint32());
    var ids = D.clips.map(function (c) { return c.id; });
    state = { survey_id: D.survey_id, listener: listener, seed: seed, order: shuffled(ids, seed), index: 0,
              answers: {}, current: null, started: new Date().toISOString(), finished: null };
    $("training").pause();
    save();
    render();
  }

  // ---------------------------------------------------------------- trial
  var player = null, lastTime = 0;

  function srcOf(id) {
    for (var i = 0; i < D.clips.length; i++) { if (D.clips[i].id === id) { return D.clips[i].src; } }
    return null;
  }

  function current() {
    var id = state.order[state.index];
    if (!state.current || state.current.id !== id) {
      state.current = { id: id, heard: false, listened_s: 0, plays: 0, rating: null, comment: "" };
    }
    return state.current;
  }

  function updateNext() {
    var c = current();
    var ok = c.heard && c.rating !== null;
    $("next").disabled = !ok;
    $("hint").textContent = ok ? "" : (!c.heard ? "Listen to the whole clip to go on." : "Choose a rating to go on.");
  }

  function renderTrial() {
    var c = current(), n = state.order.length;
    $("progress-text").textContent = "Clip " + (state.index + 1) + " of " + n;
    $("progress").max = n;
    $("progress").value = state.index;
    player = $("player");
    if (player.dataset.clip !== c.id) {
      player.src = srcOf(c.id);
      player.dataset.clip = c.id;
      lastTime = 0;
    }
    Array.prototype.forEach.call(document.querySelectorAll("input[name=rating]"), function (r) {
      r.checked = (c.rating !== null && Number(r.value) === c.rating);
    });
    $("comment").value = c.comment || "";
    show("trial");
    updateNext();
  }

  // Listening time: the advance of currentTime in small steps while playing (a seek is a jump, not listening).
  var playing = false;

  function account() {
    var t = player.currentTime, d = t - lastTime;
    if (playing && d > 0 && d < 1.0) { state.current.listened_s += d; }
    lastTime = t;
  }

  function onTimeUpdate() {
    if (!state || !state.current) { return; }
    account();
    if (player.duration && state.current.listened_s >= 0.95 * player.duration && !state.current.heard) {
      state.current.heard = true;
      save();
      updateNext();
    }
  }

  function onPause() {
    if (!state || !state.current) { return; }
    account();
    playing = false;
    save();
  }

  function onSeeked() { lastTime = player.currentTime; }

  function onPlay() {
    if (!state || !state.current) { return; }
    playing = true;
    lastTime = player.currentTime;
    if (player.currentTime < 0.25) { state.current.plays += 1; }
    save();
  }

  function onEnded() {
    if (!state || !state.current) { return; }
    account();
    playing = false;
    // skipping to the end does not count: most of the clip must have been played
    if (player.duration && state.current.listened_s < 0.8 * player.duration) { return; }
    state.current.heard = true;
    save();
    updateNext();
  }

  function setRating(value) {
    current().rating = value;
    save();
    renderTrial();
  }

  function next(ev) {
    if (ev) { ev.preventDefault(); }
    var c = current();
    if (!c.heard || c.rating === null) { updateNext(); return; }
    player.pause();
    state.answers[c.id] = { rating: c.rating, listened_s: Math.round(c.listened_s * 100) / 100, plays: c.plays,
                            comment: String(c.comment || "").slice(0, 1000), answered_at: new Date().toISOString() };
    state.index += 1;
    state.current = null;
    if (state.index >= state.order.length) { state.finished = new Date().toISOString(); }
    save();
    render();
    var target = state.finished ? $("export-json") : $("player");
    if (target) { target.focus(); }
  }

  // ---------------------------------------------------------------- done and export
  function sheet() {
    return {
      format: "electrogan-survey-answers", version: 1, survey_id: D.survey_id, listener: state.listener,
      seed: state.seed, started: state.started, finished: state.finished, user_agent: navigator.userAgent,
      answers: state.order.filter(function (id) { return state.answers[id]; }).map(function (id) {
        var a = state.answers[id];
        return { clip: id, rating: a.rating, listened_s: a.listened_s, plays: a.plays, comment: a.comment,
                 answered_at: a.answered_at };
      })
    };
  }

  function csvCell(v) {
    var s = String(v === null || v === undefined ? "" : v);
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function sheetCsv(s) {
    var rows = [["survey_id", "listener", "seed", "clip", "rating", "listened_s", "plays", "comment"]];
    s.answers.forEach(function (a) {
      rows.push([s.survey_id, s.listener, s.seed, a.clip, a.rating, a.listened_s, a.plays, a.comment]);
    });
    return rows.map(function (r) { return r.map(csvCell).join(","); }).join("\r\n") + "\r\n";
  }

  function download(text, type, ext) {
    var name = "survey-" + D.survey_id + "-" + state.listener + "." + ext;
    var url = URL.createObjectURL(new Blob([text], { type: type }));
    var a = document.createElement("a");
    a.href = url; a.download = name; a.style.display = "none";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(url); a.remove(); }, 1000);
    $("status").textContent = "Saved " + name + " to your downloads.";
  }

  function submit() {
    $("status").textContent = "Sending…";
    fetch("submit", { method: "POST", headers: { "Content-Type": "application/json" },
                      body: JSON.stringify(sheet()) })
      .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, j: j }; }); })
      .then(function (res) {
        $("status").textContent = res.ok ? "Submitted, thank you." : ("Not accepted: " + (res.j.error || "error") +
          ". Please download the file instead.");
      })
      .catch(function () { $("status").textContent = "Could not reach the server; please download the file instead."; });
  }

  function renderDone() {
    var n = Object.keys(state.answers).length;
    $("done-text").textContent = "You rated " + n + " clips. Your listener id is " + state.listener + ".";
    show("done");
    if (/^https?:$/.test(window.location.protocol)) {
      fetch("api/ping").then(function (r) { return r.ok ? r.json() : null; }).then(function (j) {
        if (j && j.survey_id === D.survey_id) { $("submit").hidden = false; }
      }).catch(function () {});
    }
  }

  function render() {
    if (!state) { renderIntro(); }
    else if (state.index >= state.order.length) { renderDone(); }
    else { renderTrial(); }
  }

  // ---------------------------------------------------------------- wiring
  function init() {
    $("start").addEventListener("click", start);
    player = $("player");
    player.addEventListener("timeupdate", onTimeUpdate);
    player.addEventListener("play", onPlay);
    player.addEventListener("ended", onEnded);
    player.addEventListener("pause", onPause);
    player.addEventListener("seeked", onSeeked);
    Array.prototype.forEach.call(document.querySelectorAll("input[name=rating]"), function (r) {
      r.addEventListener("change", function () { setRating(Number(r.value)); });
    });
    $("comment").addEventListener("input", function () { current().comment = $("comment").value; save(); });
    $("rating-form").addEventListener("submit", next);
    $("export-json").addEventListener("click", function () {
      download(JSON.stringify(sheet(), null, 1), "application/json", "json");
    });
    $("export-csv").addEventListener("click", function () { download(sheetCsv(sheet()), "text/csv", "csv"); });
    $("submit").addEventListener("click", submit);
    $("restart").addEventListener("click", function () {
      if (window.confirm("Start again as a new listener? Download your answers first: they will be cleared.")) {
        try { localStorage.removeItem(KEY); } catch (e) { /* nothing stored */ }
        state = null; render();
      }
    });
    document.addEventListener("keydown", function (ev) {
      if (!state || state.index >= state.order.length || $("trial").hidden) { return; }
      var tag = (ev.target && ev.target.tagName) || "";
      if (tag === "TEXTAREA" || tag === "INPUT" && ev.target.type === "text") { return; }
      if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
      if (/^[1-5]$/.test(ev.key)) { setRating(Number(ev.key)); ev.preventDefault(); }
      else if (ev.key === "p" || ev.key === "P") { if (player.paused) { player.play(); } else { player.pause(); } ev.preventDefault(); }
      else if (ev.key === "n" || ev.key === "N") { next(); ev.preventDefault(); }
    });
    state = load();
    if (!storageOk) {
      $("hint").textContent = "This browser does not keep answers (private mode?): do not reload the page.";
    }
    render();
  }

  window.electroganSurvey = { shuffled: shuffled, sheet: function () { return state ? sheet() : null; } };
  init();
}());
