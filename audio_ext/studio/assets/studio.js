// ElectroGAN Studio page: vanilla JS over the JSON API of audio_ext/studio/server.py.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, clips: new Map(), picked: [], live: null };

function showError(message) {
  $("errortext").textContent = message;
  $("error").hidden = false;
}
$("errorclose").onclick = () => { $("error").hidden = true; };

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
  if (!r.ok) throw new Error(data.error || `${r.status} ${r.statusText}`);
  return data;
}

function settings() {
  const s = { trunc: parseFloat($("trunc").value), noise_mode: $("noise").value };
  if (state.info && state.info.c_dim) s.class_idx = parseInt($("classidx").value, 10);
  return s;
}

function fmtBpm(b) { return b == null ? "" : `${Math.round(b * 100) / 100} BPM`; }

// ------------------------------------------------------------------------------------------- clips

function clipCard(c) {
  const card = document.createElement("div");
  card.className = "clip";
  card.id = `clip-${c.id}`;
  card.dataset.kind = c.kind;
  if (c.has_image) {
    const img = document.createElement("img");
    img.src = `/api/clips/${c.id}/image`;
    img.alt = `spectrogram of ${c.title}`;
    card.appendChild(img);
  }
  const title = document.createElement("div");
  title.className = "title";
  title.textContent = c.title;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = `${c.kind} · ${c.seconds.toFixed(2)} s · ${fmtBpm(c.bpm)}`;
  const audio = document.createElement("audio");
  audio.controls = true;
  audio.preload = "metadata";
  audio.src = `/api/clips/${c.id}/audio`;
  card.append(title, meta, audio);
  const actions = document.createElement("div");
  actions.className = "actions";
  const pick = document.createElement("label");
  const box = document.createElement("input");
  box.type = "checkbox";
  box.className = "pick";
  box.onchange = () => togglePick(c.id, box.checked);
  pick.append(box, " pick");
  actions.appendChild(pick);
  if (c.loopable) actions.appendChild(button("Loop", "loop", () => makeLoop(c.id)));
  if (c.projection) actions.appendChild(button("Variations", "vary", () => makeVariations(c.id)));
  for (const fmt of ["wav", "flac"]) {
    const a = document.createElement("a");
    a.href = `/api/clips/${c.id}/download?format=${fmt}`;
    a.textContent = fmt.toUpperCase();
    a.className = `dl-${fmt}`;
    a.setAttribute("download", "");
    actions.appendChild(a);
  }
  const code = document.createElement("code");
  code.className = "command";
  code.textContent = c.command;
  code.hidden = true;
  actions.appendChild(button("Command", "cmd", () => { code.hidden = !code.hidden; }));
  card.append(actions, code);
  return card;
}

function button(text, cls, onclick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.className = cls;
  b.onclick = onclick;
  return b;
}

function addClip(c) {
  if (state.clips.has(c.id)) return;
  state.clips.set(c.id, c);
  $("clips").appendChild(clipCard(c));
  refreshPicked();
}

function togglePick(id, on) {
  state.picked = state.picked.filter((x) => x !== id);
  if (on) state.picked.push(id);
  const card = $(`clip-${id}`);
  if (card) card.classList.toggle("picked", on);
  refreshPicked();
}

function pickedClips() { return state.picked.map((id) => state.clips.get(id)).filter(Boolean); }

function refreshPicked() {
  const picked = pickedClips();
  $("walkpicked").textContent = picked.length ? `walk: ${picked.map((c) => c.title).join(" → ")}`
                                              : "tick two or more clips";
  const box = $("mixpicked");
  box.textContent = "";
  const seeds = picked.filter((c) => c.kind === "seed");
  if (seeds.length < 2) box.textContent = "tick two or more seed clips in the grid";
  seeds.forEach((c, k) => {
    const label = document.createElement("label");
    const sel = document.createElement("select");
    sel.className = "mixrole";
    sel.dataset.clip = c.id;
    for (const [v, t] of [["row", "row"], ["col", "column"], ["", "—"]]) sel.add(new Option(t, v));
    sel.value = k === 0 ? "row" : "col";
    label.append(`${c.title}: `, sel);
    box.appendChild(label);
  });
  const steer = $("steer");
  for (const sel of steer.querySelectorAll("select")) {
    const keep = sel.value;
    sel.textContent = "";
    sel.add(new Option("— (the walk)", ""));
    for (const c of state.clips.values()) if (c.kind === "seed") sel.add(new Option(c.title, String(c.seed)));
    sel.value = keep;
  }
}

// -------------------------------------------------------------------------------------------- jobs

async function runJob(body, label) {
  let job;
  try {
    job = (await api("/api/jobs", body)).job;
  } catch (e) { showError(e.message); return null; }
  const row = document.createElement("div");
  row.className = "job";
  row.id = `job-${job}`;
  const text = document.createElement("span");
  const bar = document.createElement("progress");
  bar.max = 1; bar.value = 0;
  const cancel = button("Cancel", "cancel", () => api(`/api/jobs/${job}/cancel`, {}).catch((e) => showError(e.message)));
  row.append(text, bar, cancel);
  $("jobs").appendChild(row);
  text.textContent = label;
  let version = 0;
  for (;;) {
    let j;
    try { j = await api(`/api/jobs/${job}?after=${version}`); }  // answers at the job's next change
    catch (e) { showError(e.message); row.remove(); return null; }
    version = j.version;
    bar.max = j.total; bar.value = j.done;
    text.textContent = `${label}: ${j.message}`;
    j.clips.forEach(addClip);
    if (j.state === "done") { row.remove(); return j; }
    if (j.state === "failed") { row.remove(); showError(`${label}: ${j.error}`); return null; }
    if (j.state === "cancelled") { row.remove(); showError(`${label}: cancelled`); return null; }
  }
}

function bpmValue() {
  const v = parseFloat($("bpm").value);
  return Number.isFinite(v) ? v : null;
}

function makeLoop(id) {
  const bars = parseInt($("bars").value, 10);
  const bpm = bpmValue();
  runJob({ kind: "loop", clip: id, bars, bpm }, `loop of ${bars} bar(s)${bpm ? ` at ${bpm} BPM` : ""}`);
}

function makeVariations(id) {
  runJob(Object.assign({ kind: "variations", clip: id, n: parseInt($("nvar").value, 10),
                         spread: parseFloat($("spread").value) }, settings()), "variations");
}

$("newseeds").onclick = () => runJob(Object.assign({ kind: "seeds", count: 8 }, settings()), "new seeds");

$("genseeds").onclick = () => {
  const seeds = [];
  for (const part of $("seedlist").value.split(",")) {
    const m = part.trim().match(/^(\d+)(?:-(\d+))?$/);
    if (!m) { showError(`seeds: '${part.trim()}' is not a seed or a range like 0-7`); return; }
    const a = parseInt(m[1], 10), b = m[2] ? parseInt(m[2], 10) : a;
    for (let s = a; s <= b && seeds.length <= 64; s++) seeds.push(s);
  }
  runJob(Object.assign({ kind: "seeds", seeds }, settings()), "seeds");
};

// --------------------------------------------------------------------------------------------- mix

$("domix").onclick = async () => {
  const rows = [], cols = [];
  for (const sel of document.querySelectorAll(".mixrole")) {
    if (sel.value === "row") rows.push(sel.dataset.clip);
    if (sel.value === "col") cols.push(sel.dataset.clip);
  }
  const body = Object.assign({ kind: "mix", rows, cols }, settings());
  const layers = $("mixlayers").value.trim();
  if (layers) body.layers = layers;
  else body.groups = [...document.querySelectorAll(".mixgroup:checked")].map((b) => b.value);
  const j = await runJob(body, "style mixing");
  if (j) drawMix(j.result);
};

function mixTile(id, cls) {
  const td = document.createElement("td");
  if (!id) return td;
  const c = state.clips.get(id);
  const img = document.createElement("img");
  img.src = `/api/clips/${id}/image`;
  img.title = c ? c.title : id;
  img.dataset.clip = id;
  img.className = "mixcell";
  img.onclick = () => {
    document.querySelectorAll("#mixgrid img").forEach((x) => x.classList.remove("playing"));
    img.classList.add("playing");
    const p = $("mixplayer");
    p.src = `/api/clips/${id}/audio`;
    p.play().catch(() => {});
  };
  td.className = cls;
  td.appendChild(img);
  return td;
}

function drawMix(r) {
  const table = document.createElement("table");
  const head = document.createElement("tr");
  head.appendChild(document.createElement("td"));
  r.cols.forEach((id) => head.appendChild(mixTile(id, "src")));
  table.appendChild(head);
  r.rows.forEach((rid, i) => {
    const tr = document.createElement("tr");
    tr.appendChild(mixTile(rid, "src"));
    r.cells[i].forEach((id) => tr.appendChild(mixTile(id, "cell")));
    table.appendChild(tr);
  });
  const box = $("mixgrid");
  box.textContent = `layers ${r.layers} from the columns`;
  box.appendChild(table);
}

// -------------------------------------------------------------------------------------------- walk

$("dowalk").onclick = () => runJob(Object.assign({
  kind: "walk", clips: state.picked.slice(), bars: parseInt($("bars").value, 10),
  steps: parseInt($("walksteps").value, 10), space: $("walkspace").value }, settings()), "walk");

// ------------------------------------------------------------------------------------- your track

// Sends a file as the request body; a file over the limit is refused here, before a byte is sent.
async function upload(file) {
  if (!file) throw new Error("choose a file first");
  if (file.size > state.info.max_upload) {
    throw new Error(`${file.name} is ${(file.size / 1048576).toFixed(1)} MB; the studio takes uploads up to ` +
                    `${(state.info.max_upload / 1048576).toFixed(0)} MB`);
  }
  const r = await fetch(`/api/upload?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
  const up = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
  if (!r.ok) throw new Error(up.error);
  return up;
}

$("doproject").onclick = async () => {
  let up;
  try { up = await upload($("file").files[0]); } catch (e) { showError(`upload: ${e.message}`); return; }
  if (up.latent) { runJob({ kind: "latent", upload: up.upload }, `opening ${up.name}`); return; }
  runJob({ kind: "project", upload: up.upload, start: parseFloat($("start").value),
           steps: parseInt($("steps").value, 10) }, `projecting ${up.name}`);
};

$("opennet").onclick = async () => {
  const file = $("netfile").files[0];
  $("netinfo").textContent = file ? `opening ${file.name}…` : $("netinfo").textContent;
  try { await upload(file); } catch (e) { showError(`network: ${e.message}`); showInfo(); return; }
  await stopLive();
  await loadInfo();
};

// -------------------------------------------------------------------------------------------- live
// Chunks are fetched ahead and scheduled back to back on one AudioContext clock. An underrun is a
// chunk that arrives after the moment it should have started: counted, then playback restarts.

// Audio queued ahead of the playhead before the next chunk is fetched: two chunks, at least 3 s. A
// steering change is heard after about this lead plus the one chunk the server renders ahead.
const LIVE_MIN_LEAD_S = 3;
const live = { ctx: null, id: null, next: 0, n: 0, underruns: 0, chunks: 0, running: false, sr: 0,
               lead: LIVE_MIN_LEAD_S };
window.studioLive = live;

async function liveLoop() {
  while (live.running) {
    const lead = live.next - live.ctx.currentTime;
    if (live.chunks > 0 && lead > live.lead) { await new Promise((r) => setTimeout(r, 50)); continue; }
    let r;
    try {
      r = await fetch(`/api/live/${live.id}/chunk/${live.n}`);
    } catch (e) { if (live.running) showError(`live: ${e.message}`); break; }
    if (!r.ok) {
      const d = await r.json().catch(() => ({}));
      if (live.running) showError(`live: ${d.error || r.status}`);
      break;
    }
    const pcm = new Float32Array(await r.arrayBuffer());
    if (!live.running) break;
    const buf = live.ctx.createBuffer(1, pcm.length, live.sr);
    buf.copyToChannel(pcm, 0);
    const src = live.ctx.createBufferSource();
    src.buffer = buf;
    src.connect(live.ctx.destination);
    const now = live.ctx.currentTime;
    if (live.chunks === 0) live.next = now + 0.3;
    else if (live.next < now + 0.005) { live.underruns += 1; live.next = now + 0.1; }
    src.start(live.next);
    live.next += pcm.length / live.sr;
    live.lead = Math.max(LIVE_MIN_LEAD_S, 2 * pcm.length / live.sr);
    live.n += 1;
    live.chunks += 1;
    $("livestatus").textContent = `playing: ${live.chunks} chunk(s), ${(live.next - now).toFixed(1)} s ahead, ` +
                                  `${live.underruns} underrun(s)`;
  }
}

$("livestart").onclick = async () => {
  await stopLive();
  let r;
  try {
    r = await api("/api/live", Object.assign({ clips: state.picked.filter((id) => (state.clips.get(id) || {}).kind === "seed"),
                                               bars: parseInt($("bars").value, 10),
                                               steps: parseInt($("livesteps").value, 10) }, settings()));
  } catch (e) { showError(`live: ${e.message}`); return; }
  live.ctx = live.ctx || new AudioContext();
  await live.ctx.resume();
  Object.assign(live, { id: r.live, sr: r.sample_rate, n: 0, chunks: 0, underruns: 0, running: true });
  $("livestart").disabled = true;
  $("livestop").disabled = false;
  sendSteer();
  liveLoop();
};

async function stopLive() {
  if (!live.running) return;
  live.running = false;
  $("livestart").disabled = false;
  $("livestop").disabled = true;
  $("livestatus").textContent = `stopped after ${live.chunks} chunk(s), ${live.underruns} underrun(s)`;
  try { await api(`/api/live/${live.id}/stop`, {}); } catch (e) { /* already gone */ }
  if (live.ctx) await live.ctx.suspend();
}
$("livestop").onclick = stopLive;

function sendSteer() {
  if (!live.running) return;
  const body = {};
  for (const sel of $("steer").querySelectorAll("select")) body[sel.dataset.group] = sel.value === "" ? null : parseInt(sel.value, 10);
  api(`/api/live/${live.id}/steer`, body).catch((e) => showError(`steer: ${e.message}`));
}

// -------------------------------------------------------------------------------------------- tabs

for (const b of document.querySelectorAll("#tabs button")) {
  b.onclick = () => {
    document.querySelectorAll("#tabs button").forEach((x) => x.classList.toggle("active", x === b));
    document.querySelectorAll(".tab").forEach((t) => { t.hidden = t.id !== `tab-${b.dataset.tab}`; });
  };
}

function showInfo() {
  const i = state.info;
  $("netinfo").textContent = `${i.network}: ${i.resolution}×${i.resolution}, ${i.sample_rate} Hz, ` +
    `${i.clip_seconds.toFixed(2)} s clips at ${i.bpm ?? "?"} BPM; ${i.phase}`;
}

// The network's facts into the settings: classes, tempo, bars, layer groups for mixing and steering.
async function loadInfo() {
  state.info = await api("/api/info");
  const i = state.info;
  showInfo();
  $("noise").textContent = "";
  for (const m of i.noise_modes) $("noise").add(new Option(m, m));
  $("classidx").textContent = "";
  $("classlabel").hidden = !i.c_dim;
  for (let c = 0; c < i.c_dim; c++) $("classidx").add(new Option(String(c), String(c)));
  if (i.bpm) $("bpm").value = i.bpm;
  $("bars").value = Math.max(1, Math.min(4, i.max_bars || 1));   // live needs bars a clip holds
  const groups = $("mixgroups");
  const steer = $("steer");
  groups.textContent = "";
  steer.textContent = "";
  Object.keys(i.groups).forEach((g, k) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox"; box.className = "mixgroup"; box.value = g; box.checked = k === 0;
    label.append(box, ` ${g} (layers ${i.groups[g][0]}-${i.groups[g][i.groups[g].length - 1]})`);
    groups.appendChild(label);
    const sl = document.createElement("label");
    const sel = document.createElement("select");
    sel.dataset.group = g;
    sel.className = "steer";
    sel.onchange = sendSteer;
    sl.append(`${g}: `, sel);
    steer.appendChild(sl);
  });
  refreshPicked();
}

async function init() {
  try { await loadInfo(); } catch (e) { showError(`cannot reach the studio: ${e.message}`); return; }
  const clips = await api("/api/clips");
  clips.clips.forEach(addClip);
  refreshPicked();
  document.body.dataset.ready = "1";
  if (!clips.clips.length) runJob(Object.assign({ kind: "seeds", count: 4 }, settings()), "first seeds");
}
init();
