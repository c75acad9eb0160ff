// earshot web page: upload, follow jobs live, show a result. No build step, no dependencies.
"use strict";

const API = "/v1/analyses";
const FINISHED = new Set(["succeeded", "failed", "canceled"]);
// How long to wait for plots after a job succeeded (the render task draws them afterwards).
const PLOT_WAIT_TRIES = 120;

const $ = (id) => document.getElementById(id);
const jobs = new Map(); // id -> {job, row, source}
let selected = null;
let resultShownFor = null; // the job whose result the view shows
// Queues without a warm worker (from /readyz, which needs no key): while one of ours is among
// them, a queued job says "workers starting" instead of sitting silently at 0 %.
let coldQueues = new Set();
let readinessTimer = null;

function apiKey() {
  return localStorage.getItem("earshot.apiKey") || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (!response.ok && response.status !== 304) {
    let problem = { status: response.status, code: `http_${response.status}`, detail: response.statusText };
    try {
      problem = await response.json();
    } catch (_) { /* not a problem document */ }
    const error = new Error(problem.detail || problem.title || `HTTP ${response.status}`);
    error.problem = problem;
    error.retryAfter = Number(response.headers.get("Retry-After") || 0);
    throw error;
  }
  return response;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- uploads --------------------------------------------------------------------------------

function setUpUploads() {
  const zone = $("drop-zone");
  const input = $("file-input");
  input.addEventListener("change", () => {
    uploadAll(input.files);
    input.value = "";
  });
  zone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.remove("over"); });
  }
  zone.addEventListener("drop", (e) => uploadAll(e.dataTransfer.files));
}

function uploadAll(fileList) {
  for (const file of Array.from(fileList || [])) upload(file);
}

async function upload(file) {
  // A placeholder row until the server answers with the job.
  const row = makeRow();
  setRow(row, { filename: file.name, status: "uploading", progress: { stage: "upload", percent: 0 } });
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("profile", $("profile").value);
  try {
    const response = await api(API, { method: "POST", body: form });
    const job = await response.json();
    row.remove();
    track(job, true);
  } catch (error) {
    setRow(row, { filename: file.name, status: "error", progress: { stage: null, percent: 0 } }, error.message);
  }
}

// ---- the job list ---------------------------------------------------------------------------

const PAGE_SIZE = 20;
let nextCursor = null; // of the job list, for "Show older analyses"

function makeRow(older = false) {
  const row = document.createElement("li");
  row.className = "job";
  row.innerHTML = '<div><div class="name"></div><div class="detail"></div></div>' +
    '<span class="facts"></span><span class="status"></span><progress max="100" value="0"></progress>';
  if (older) $("job-list").append(row);
  else $("job-list").prepend(row);
  $("jobs-empty").hidden = true;
  return row;
}

function setRow(row, job, message) {
  row.querySelector(".name").textContent = job.filename;
  row.querySelector(".name").title = job.filename;
  const status = row.querySelector(".status");
  status.textContent = job.status;
  status.className = `status ${job.status}`;
  const progress = row.querySelector("progress");
  progress.value = job.progress ? job.progress.percent : 0;
  progress.title = job.progress && job.progress.stage ? `${job.progress.stage}: ${Math.round(progress.value)} %` : "";
  let detail = message || "";
  if (!detail && job.error) detail = `${job.error.code}: ${job.error.message}`;
  if (!detail && job.progress && job.progress.stage && !FINISHED.has(job.status)) {
    detail = `${job.progress.stage} · ${Math.round(job.progress.percent)} %`;
  }
  if (!detail && job.status === "queued" && coldQueues.has(QUEUE_OF[job.priority])) {
    detail = "workers starting";
  }
  if (!detail && job.cached) detail = "from cache";
  row.querySelector(".detail").textContent = detail;
  applyFilter(row);
}

// The queue of a job's priority (core.names.QUEUE_FOR_PRIORITY).
const QUEUE_OF = { interactive: "earshot.interactive", batch: "earshot.batch" };

// While a job waits in a queue whose workers are still warming up, ask /readyz every 2 s.
function watchReadiness() {
  if (readinessTimer === null) readinessTimer = setTimeout(checkReadiness, 0);
}

async function checkReadiness() {
  try {
    const body = await (await fetch("/readyz")).json(); // 503 carries the same `workers`
    const workers = body.workers || {};
    coldQueues = new Set(Object.keys(workers).filter((queue) => !workers[queue]));
  } catch (_) { /* keep the last picture through a blip */ }
  let waiting = false;
  for (const entry of jobs.values()) {
    if (entry.job.status !== "queued") continue;
    waiting = true;
    setRow(entry.row, entry.job);
  }
  readinessTimer = waiting && coldQueues.size ? setTimeout(checkReadiness, 2000) : null;
}

function track(job, select, older = false) {
  let entry = jobs.get(job.id);
  if (!entry) {
    entry = { job, row: makeRow(older), source: null, facts: null };
    entry.row.dataset.id = job.id;
    entry.row.addEventListener("click", () => show(job.id, true));
    jobs.set(job.id, entry);
  }
  update(job);
  if (!FINISHED.has(job.status)) follow(job.id);
  if (select) show(job.id);
}

function update(job) {
  const entry = jobs.get(job.id);
  if (!entry) return;
  const was = entry.job.status;
  entry.job = job;
  setRow(entry.row, job);
  if (job.status === "succeeded") loadFacts(entry);
  if (job.status === "queued") watchReadiness();
  if (selected === job.id && (was !== job.status || !resultShownFor)) show(job.id);
}

// Tempo and key of finished rows come from their result documents (immutable, so the
// browser may cache them); one at a time, newest first, so a long list never floods the API.
const factsQueue = [];
let factsRunning = false;

function loadFacts(entry) {
  if (entry.facts !== null) return;
  entry.facts = "loading";
  factsQueue.push(entry);
  if (!factsRunning) drainFacts();
}

async function drainFacts() {
  factsRunning = true;
  while (factsQueue.length) {
    const entry = factsQueue.shift();
    try {
      const result = await (await api(`${API}/${entry.job.id}/result`)).json();
      setFacts(entry, result);
    } catch (_) {
      entry.facts = "";
    }
  }
  factsRunning = false;
}

function setFacts(entry, result) {
  const s = result.summary || {};
  const parts = [];
  if (s.tempo) parts.push(`${fmt(s.tempo.bpm, 1)} BPM`);
  if (s.key) parts.push(`${s.key.tonic} ${s.key.mode}`);
  entry.facts = parts.join(" · ");
  const cell = entry.row.querySelector(".facts");
  cell.textContent = entry.facts;
  cell.title = entry.facts;
  applyFilter(entry.row);
}

function applyFilter(row) {
  const words = ($("job-filter").value || "").toLowerCase().split(/\s+/).filter(Boolean);
  const text = row.textContent.toLowerCase();
  row.hidden = !words.every((w) => text.includes(w));
}

function filterRows() {
  for (const row of $("job-list").children) applyFilter(row);
  const shown = Array.from($("job-list").children).filter((r) => !r.hidden).length;
  $("jobs-count").textContent = $("job-filter").value ? `${shown} of ${jobs.size} shown` : "";
}

function follow(id) {
  const entry = jobs.get(id);
  if (entry.source) return;
  if (window.EventSource && !apiKey()) {
    // EventSource cannot send an Authorization header; with a key the page polls instead.
    const source = new EventSource(`${API}/${id}/events`);
    entry.source = source;
    source.addEventListener("status", (e) => {
      const job = JSON.parse(e.data);
      update(job);
      if (FINISHED.has(job.status)) { source.close(); entry.source = null; }
    });
    source.onerror = () => {
      // The server closes the stream after the terminal event; the browser would reconnect.
      if (FINISHED.has(entry.job.status)) { source.close(); entry.source = null; }
    };
    return;
  }
  entry.source = { close() { this.closed = true; } };
  (async () => {
    const poller = entry.source;
    while (!poller.closed) {
      await sleep(1000);
      try {
        const job = await (await api(`${API}/${id}`)).json();
        update(job);
        if (FINISHED.has(job.status)) break;
      } catch (_) { /* keep polling through a blip */ }
    }
    entry.source = null;
  })();
}

async function loadRecent() {
  await loadPage(null);
}

// One page of the list: the first is the newest PAGE_SIZE, "Show older analyses" appends the
// next one below (the API pages with a cursor).
async function loadPage(cursor) {
  const button = $("jobs-more");
  button.disabled = true;
  try {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (cursor) query.set("cursor", cursor);
    const page = await (await api(`${API}?${query}`)).json();
    const items = cursor ? page.items : page.items.reverse();
    for (const job of items) track(job, false, Boolean(cursor));
    nextCursor = page.next_cursor;
    button.hidden = !nextCursor;
    filterRows();
  } catch (error) {
    $("jobs-empty").hidden = false;
    $("jobs-empty").textContent = `Could not list analyses: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

function setUpJobList() {
  $("job-filter").addEventListener("input", filterRows);
  $("jobs-more").addEventListener("click", () => { if (nextCursor) loadPage(nextCursor); });
}

// ---- the result view ------------------------------------------------------------------------

// Where the plot area sits in the 1200 x 400 spectrogram PNG, in its pixels: analysis/plots.py
// spectrogram_png() places the axes at (0.07, 0.14, 0.86, 0.78) of the figure and its colorbar
// (fraction 0.03, pad 0.01) takes 4 % of their width. The page crops the image to that area
// and scales it so that the spectrogram shares the waveform's time axis (and its zoom).
const SPECTRO = { width: 1200, height: 400, left: 84, plotWidth: 1200 * 0.86 * 0.96, top: 32, plotHeight: 312 };
// Its frequency axis: 128 mel bands (Slaney's mel scale) from 0 to 11 025 Hz (22 050 Hz audio).
const SPECTRO_FMAX = 11025;
// Beat lines closer than this many CSS pixels are thinned (every 2nd, 4th, … beat or bar).
const MIN_BEAT_PX = 6;
// The narrowest view the zoom goes to, in seconds.
const MIN_VIEW_S = 0.5;

// What the shown result looks like on screen: the document, the peaks, the visible window.
let view = null;

// Units and methods, from docs/result.md, shown as tooltips.
const TIPS = {
  tempo: "Beats per minute. Method: autocorrelation of the whole onset envelope weighted by a log-normal prior around 120 BPM, folded by an octave into 70-180 BPM when that octave is at least half as periodic. Alternatives: other tempi with evidence, weight 0..1.",
  key: "Tonic and mode. Method: the mean chroma correlated (Pearson) with the 24 Krumhansl-Kessler key profiles; confidence 0..1, below ~0.5 the key is doubtful. Alternatives: the next keys with their score.",
  meter: "Beats per bar (2..7), confidence 0..1. Downbeats are drawn as dark lines, every other bar as a shaded band.",
  loudness: "Integrated loudness in LUFS per ITU-R BS.1770-4 / EBU R 128 (K-weighted, 400 ms blocks, -70 LUFS absolute and -10 LU relative gates). Range in LU (EBU Tech 3342), peak in dBFS (sample peak).",
  duration: "Decoded duration (samples decoded / native rate), m:ss.",
  chroma: "Pitch-class content: mean over non-silent frames of the STFT chroma (librosa chroma_stft, each frame normalised to max 1), 0..1, C first; the strongest class is green.",
  mfcc: "Timbre: mel-frequency cepstral coefficients 1-19, mean over all frames (128 mel bands, log-mel in dB, DCT-II ortho), unitless. Coefficient 0 (overall level) is left out of the colours.",
  scores: "Each 0..1; – when the method has no evidence for this file (docs/result.md says why).",
  sections: "Sections: contiguous parts of the file; repeats share a letter. Hover one for its time, tempo, key and loudness.",
  keySegments: "Key over time: one segment per stretch in one key, with its confidence 0..1.",
  tempoConfidence: "0..1: normalised autocorrelation of the onset envelope at the beat period (how periodic the onsets are).",
  beats: "Beat count: librosa's dynamic-programming beat tracker run at the global tempo.",
  keyConfidence: "0..1: Pearson correlation of the mean chroma with the winning key profile, clipped at 0.",
  loudnessRange: "LU, EBU Tech 3342: spread between the 10th and 95th percentiles of 3 s short-term loudness, gated.",
  peak: "dBFS: sample peak over all channels at the native rate (not an oversampled true peak); floor -120.",
  clipping: "0..1: fraction of samples at or above 0.999 of full scale (on the rails).",
  rms: "dB re full scale: mean of the frame RMS of the mono 22 050 Hz signal; floor -120.",
  centroid: "Hz: magnitude-weighted mean frequency (librosa spectral_centroid), mean ± std over non-silent frames.",
  bandwidth: "Hz: magnitude-weighted standard deviation of frequency around the centroid (spectral_bandwidth, p = 2).",
  rolloff: "Hz: frequency below which 85 % of the magnitude lies (spectral_rolloff).",
  flatness: "0 (a pure tone) .. 1 (white noise): Wiener entropy of the power spectrum (spectral_flatness).",
  zcr: "Sign changes per sample within each 2048-sample frame (zero_crossing_rate).",
  onsets: "Onsets per second: librosa onset_detect on the onset envelope.",
  silence: "0..1: fraction of frames whose RMS is below -60 dBFS.",
  tuning: "Semitones from A440, estimated once from the first ~12 s with sound (librosa estimate_tuning's method).",
};

function tip(element, name) {
  if (TIPS[name]) element.title = TIPS[name];
}

const fmt = (value, digits = 2) => (typeof value === "number" ? value.toFixed(digits) : "–");

// Seconds as m:ss (h:mm:ss past an hour), with tenths when asked.
function clock(seconds, tenths = false) {
  const t = Math.max(0, seconds);
  const whole = tenths ? Math.floor(t * 10) / 10 : Math.floor(t);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  let s = String(Math.floor(whole % 60)).padStart(2, "0");
  if (tenths) s += `.${Math.round((whole % 1) * 10) % 10}`;
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

// Show a job's result; `scroll` brings it into view once it is laid out (a row was clicked).
async function show(id, scroll = false) {
  const reveal = () => { if (scroll) $("result").scrollIntoView({ behavior: "smooth", block: "start" }); };
  selected = id;
  for (const [jobId, entry] of jobs) entry.row.classList.toggle("selected", jobId === id);
  const job = jobs.get(id).job;
  const section = $("result");
  section.hidden = false;
  $("result-title").textContent = job.filename;
  if (job.status !== "succeeded") {
    resultShownFor = null;
    clearResult(job.status === "failed" && job.error ? `Failed: ${job.error.message}` : `Analysis ${job.status} …`);
    reveal();
    return;
  }
  if (resultShownFor === id) { reveal(); return; }
  resultShownFor = id;
  clearResult("");
  try {
    const result = await (await api(`${API}/${id}/result`)).json();
    if (selected !== id) return;
    const entry = jobs.get(id);
    if (entry && !entry.facts) setFacts(entry, result);
    startView(id, result);
    showSummary(result);
    setDownloads(id);
    setPlayer(id, job);
    showWaveform(id);
    showSpectrogram(id);
    reveal();
  } catch (error) {
    $("waveform-note").textContent = `Could not load the result: ${error.message}`;
  }
}

function clearResult(note) {
  for (const id of ["tempo", "key", "loudness", "duration", "meter"]) $(id).textContent = "–";
  for (const id of ["tempo-more", "key-more", "loudness-more", "duration-more", "meter-more", "legend"]) $(id).textContent = "";
  $("meter-card").hidden = true;
  $("features").querySelector("tbody").replaceChildren();
  for (const id of ["chroma", "mfcc", "scores", "sections", "key-strip", "axis", "hz-labels"]) $(id).replaceChildren();
  for (const id of ["scores-box", "sections", "key-strip", "cursor"]) $(id).hidden = true;
  const canvas = $("waveform");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  delete canvas.dataset.length;
  $("waveform-note").textContent = note;
  $("spectrogram").hidden = true;
  $("spectrogram-note").textContent = "";
  const player = $("player");
  player.pause();
  if (player.src.startsWith("blob:")) URL.revokeObjectURL(player.src);
  player.removeAttribute("src");
  player.load();
  view = null;
  $("view-span").textContent = "";
  for (const a of document.querySelectorAll(".downloads a")) a.removeAttribute("href");
}

function startView(id, result) {
  const s = result.summary;
  const duration = Math.max(result.audio.duration_s, 1e-3);
  const beats = s.beats_s || [];
  const intervals = beats.slice(1).map((b, i) => b - beats[i]).sort((a, b) => a - b);
  view = {
    id,
    result,
    duration,
    peaks: null,
    t0: 0,
    t1: duration,
    beats,
    beatPeriod: intervals.length ? intervals[Math.floor(intervals.length / 2)] : 0,
    positions: Array.isArray(s.beat_positions) && s.beat_positions.length === beats.length ? s.beat_positions : null,
    downbeats: Array.isArray(s.downbeats_s) ? s.downbeats_s : [],
    beatsPerBar: s.meter ? s.meter.beats_per_bar : 0,
  };
  drawTimeline();
}

function showSummary(result) {
  const s = result.summary;
  $("tempo").textContent = `${fmt(s.tempo.bpm, 1)} BPM`;
  const tempoMore = [`confidence ${fmt(s.tempo.confidence, 2)}`];
  const tempoAlt = (s.tempo.candidates || []).slice(1).map((c) => `${fmt(c.bpm, 1)} (${fmt(c.weight, 2)})`);
  if (tempoAlt.length) tempoMore.push(`or ${tempoAlt.join(", ")}`);
  $("tempo-more").textContent = tempoMore.join(" · ");
  $("key").textContent = `${s.key.tonic} ${s.key.mode}`;
  const keyMore = [`confidence ${fmt(s.key.confidence, 2)}`];
  const keyAlt = (s.key.candidates || []).slice(1).map((c) => `${c.tonic} ${c.mode} (${fmt(c.score, 2)})`);
  if (keyAlt.length) keyMore.push(`or ${keyAlt.join(", ")}`);
  $("key-more").textContent = keyMore.join(" · ");
  if (s.meter && s.meter.beats_per_bar > 0) {
    $("meter-card").hidden = false;
    $("meter").textContent = `${s.meter.beats_per_bar} beats/bar`;
    const bars = (s.downbeats_s || []).length;
    $("meter-more").textContent = `confidence ${fmt(s.meter.confidence, 2)}${bars ? ` · ${bars} bars` : ""}`;
  }
  $("loudness").textContent = `${fmt(s.loudness.integrated_lufs, 1)} LUFS`;
  $("loudness-more").textContent = `range ${fmt(s.loudness.loudness_range_lu, 1)} LU · peak ${fmt(s.loudness.peak_dbfs, 1)} dBFS`;
  $("duration").textContent = clock(result.audio.duration_s);
  $("duration-more").textContent = `${fmt(result.audio.duration_s, 2)} s · ${result.audio.format}/${result.audio.codec}`;
  const rows = [
    ["Tempo confidence", fmt(s.tempo.confidence, 3), "tempoConfidence"],
    ["Beats", String(s.beats_s.length), "beats"],
    ["Key confidence", fmt(s.key.confidence, 3), "keyConfidence"],
    ["Loudness range", `${fmt(s.loudness.loudness_range_lu, 1)} LU`, "loudnessRange"],
    ["Peak", `${fmt(s.loudness.peak_dbfs, 1)} dBFS`, "peak"],
    ["Clipping ratio", fmt(s.loudness.clipping_ratio, 6), "clipping"],
    ["RMS mean", `${fmt(s.loudness.rms_mean_db, 1)} dB`, "rms"],
    ["Spectral centroid (mean ± std)", `${fmt(s.spectral_centroid_hz.mean, 0)} ± ${fmt(s.spectral_centroid_hz.std, 0)} Hz`, "centroid"],
    ["Spectral bandwidth", `${fmt(s.spectral_bandwidth_hz.mean, 0)} ± ${fmt(s.spectral_bandwidth_hz.std, 0)} Hz`, "bandwidth"],
    ["Spectral rolloff", `${fmt(s.spectral_rolloff_hz.mean, 0)} ± ${fmt(s.spectral_rolloff_hz.std, 0)} Hz`, "rolloff"],
    ["Spectral flatness", `${fmt(s.spectral_flatness.mean, 4)} ± ${fmt(s.spectral_flatness.std, 4)}`, "flatness"],
    ["Zero-crossing rate", `${fmt(s.zero_crossing_rate.mean, 4)} ± ${fmt(s.zero_crossing_rate.std, 4)}`, "zcr"],
    ["Onset rate", `${fmt(s.onset_rate_per_s, 2)} /s`, "onsets"],
    ["Silence ratio", fmt(s.silence_ratio, 3), "silence"],
    ["Tuning", `${fmt(s.chroma.tuning_semitones, 3)} semitones`, "tuning"],
    ["Audio", `${result.audio.format} / ${result.audio.codec}, ${result.audio.sample_rate} Hz, ${result.audio.channels} ch`, null],
    ["Profile", result.profile, null],
    ["Analyzer version", result.analyzer_version, null],
  ];
  const body = $("features").querySelector("tbody");
  for (const [name, value, tipName] of rows) {
    const tr = document.createElement("tr");
    const th = document.createElement("td");
    const td = document.createElement("td");
    th.textContent = name;
    if (tipName) { tip(th, tipName); th.dataset.tip = tipName; }
    td.textContent = value;
    tr.append(th, td);
    body.append(tr);
  }
  showChroma(s.chroma);
  showMfcc(s.mfcc);
  showScores(s.scores);
}

function showChroma(chroma) {
  const box = $("chroma");
  const values = chroma.mean || [];
  const top = Math.max(...values, 1e-9);
  values.forEach((value, i) => {
    const cell = document.createElement("div");
    const bar = document.createElement("b");
    bar.style.height = `${Math.round((value / top) * 88)}px`;
    cell.append(bar, document.createTextNode(chroma.pitch_classes[i]));
    cell.title = `${chroma.pitch_classes[i]}: ${fmt(value, 3)} (mean chroma, 0..1)`;
    if (value === top) cell.classList.add("top");
    box.append(cell);
  });
}

function showMfcc(mfcc) {
  const box = $("mfcc");
  const means = (mfcc.mean || []).slice(1, 20);
  const scale = Math.max(...means.map(Math.abs), 1e-9);
  means.forEach((value, i) => {
    const cell = document.createElement("div");
    const a = Math.min(1, Math.abs(value) / scale);
    cell.style.background = value >= 0 ? `rgba(198, 40, 40, ${a})` : `rgba(10, 102, 194, ${a})`;
    cell.title = `MFCC ${i + 1}: mean ${fmt(value, 2)} ± ${fmt((mfcc.std || [])[i + 1], 2)}`;
    box.append(cell);
  });
}

function showScores(scores) {
  if (!scores) return;
  const box = $("scores");
  for (const [name, value] of Object.entries(scores)) {
    const row = document.createElement("div");
    row.className = "score";
    const label = document.createElement("span");
    label.textContent = name;
    const meter = document.createElement("meter");
    meter.min = 0;
    meter.max = 1;
    const number = document.createElement("span");
    if (typeof value === "number") {
      meter.value = value;
      number.textContent = fmt(value, 2);
    } else {
      number.textContent = "–";
      row.title = `${name}: no evidence for this file`;
    }
    row.append(label, meter, number);
    box.append(row);
  }
  $("scores-box").hidden = false;
}

function setDownloads(id) {
  for (const a of document.querySelectorAll(".downloads a")) {
    const format = a.dataset.format;
    a.href = `${API}/${id}/result?format=${format}`;
    a.onclick = apiKey() ? (e) => { e.preventDefault(); download(a.href, format); } : null;
  }
}

async function download(url, format) {
  // With an API key a plain link would arrive without the key: fetch, then save the bytes.
  const response = await api(url);
  const name = (/filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "") || [])[1];
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = name || `analysis.${format}`;
  link.click();
  URL.revokeObjectURL(link.href);
}

// ---- the player ----------------------------------------------------------------------------

async function setPlayer(id, job) {
  const player = $("player");
  const url = (job.links && job.links.audio) || `${API}/${id}/audio`;
  if (!apiKey()) {
    // The browser asks for byte ranges itself (the route answers 206) to seek.
    player.src = url;
    return;
  }
  // An <audio> element cannot send an Authorization header: fetch the file, play the blob.
  try {
    const blob = await (await api(url)).blob();
    if (selected === id) player.src = URL.createObjectURL(blob);
  } catch (error) {
    $("waveform-note").textContent = `Could not load the audio: ${error.message}`;
  }
}

function seek(seconds) {
  const player = $("player");
  if (!view) return;
  player.currentTime = Math.min(Math.max(0, seconds), view.duration);
  moveCursor();
}

function togglePlay() {
  const player = $("player");
  if (!player.src) return;
  if (player.paused) player.play().catch(() => {});
  else player.pause();
}

function followPlayhead() {
  const player = $("player");
  if (!view) return;
  const t = player.currentTime;
  // While playing, turn the page when the playhead leaves a zoomed view.
  if (!player.paused && (t > view.t1 || t < view.t0)) {
    const span = view.t1 - view.t0;
    setView(t - span * 0.05, t + span * 0.95);
  }
  moveCursor();
}

function animate() {
  followPlayhead();
  if (!$("player").paused) requestAnimationFrame(animate);
}

// ---- the timeline: waveform, spectrogram, strips, axis, cursor -----------------------------

function setView(t0, t1) {
  if (!view) return;
  const d = view.duration;
  let span = Math.min(Math.max(t1 - t0, Math.min(MIN_VIEW_S, d)), d);
  let start = Math.min(Math.max(t0, 0), d - span);
  view.t0 = start;
  view.t1 = start + span;
  drawTimeline();
}

function zoom(factor, around) {
  if (!view) return;
  const span = view.t1 - view.t0;
  const center = around === undefined ? (view.t0 + view.t1) / 2 : around;
  const ratio = (center - view.t0) / span;
  const next = span * factor;
  setView(center - ratio * next, center - ratio * next + next);
}

function timeAt(element, clientX) {
  const rect = element.getBoundingClientRect();
  const fraction = Math.min(Math.max((clientX - rect.left) / rect.width, 0), 1);
  return view.t0 + fraction * (view.t1 - view.t0);
}

function drawTimeline() {
  if (!view) return;
  drawWaveform();
  layoutSpectrogram();
  drawStrips();
  drawAxis();
  moveCursor();
  const span = view.t1 - view.t0;
  $("view-span").textContent = span < view.duration - 1e-6
    ? `${clock(view.t0, span < 10)}–${clock(view.t1, span < 10)} of ${clock(view.duration)}`
    : `all ${clock(view.duration)}`;
}

// Which beats to draw at this zoom: all of them when they are MIN_BEAT_PX apart, else whole
// bars (downbeats) when the meter is known, else every 2nd, 4th, … beat.
function beatsToDraw() {
  const { beats, t0, t1 } = view;
  const width = $("waveform").clientWidth || 1;
  const pxPerS = width / (t1 - t0);
  const inView = [];
  for (let i = 0; i < beats.length; i++) if (beats[i] >= t0 && beats[i] <= t1) inView.push(i);
  let step = 1;
  while (view.beatPeriod > 0 && view.beatPeriod * pxPerS * step < MIN_BEAT_PX) step *= 2;
  let drawn;
  let what;
  if (step === 1) {
    drawn = inView;
    what = "every beat";
  } else if (view.positions && view.beatsPerBar >= 2) {
    let barStep = 1;
    while (view.beatPeriod * view.beatsPerBar * pxPerS * barStep < MIN_BEAT_PX) barStep *= 2;
    let bar = -1;
    drawn = [];
    for (const i of inView) {
      if (view.positions[i] !== 1) continue;
      bar++;
      if (bar % barStep === 0) drawn.push(i);
    }
    what = barStep === 1 ? "downbeats only" : `1 bar in ${barStep}`;
  } else {
    drawn = inView.filter((i) => i % step === 0);
    what = `1 beat in ${step}`;
  }
  return { drawn, inView: inView.length, what };
}

function drawWaveform() {
  const canvas = $("waveform");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const { t0, t1 } = view;
  const span = t1 - t0;
  const x = (t) => ((t - t0) / span) * width;
  // Bars as bands: every other bar shaded, when bars are wide enough to see.
  const downs = view.downbeats;
  if (downs.length >= 2 && ((downs[downs.length - 1] - downs[0]) / (downs.length - 1)) * (width / span) >= 8) {
    ctx.fillStyle = "rgba(10, 102, 194, 0.07)";
    for (let i = 0; i < downs.length; i += 2) {
      const end = i + 1 < downs.length ? downs[i + 1] : view.duration;
      if (end < t0 || downs[i] > t1) continue;
      ctx.fillRect(x(downs[i]), 0, x(end) - x(downs[i]), height);
    }
  }
  const middle = height / 2;
  ctx.strokeStyle = "#d2d2d7";
  ctx.beginPath();
  ctx.moveTo(0, middle);
  ctx.lineTo(width, middle);
  ctx.stroke();
  const peaks = view.peaks;
  if (peaks) {
    // One vertical bar per screen pixel: the min of the mins and max of the maxes under it.
    const full = 2 ** (peaks.bits - 1);
    const pairsPerS = peaks.sample_rate / peaks.samples_per_pixel;
    const pairs = peaks.length;
    ctx.fillStyle = "#0a66c2";
    for (let px = 0; px < width; px++) {
      const from = Math.floor((t0 + (px / width) * span) * pairsPerS);
      const to = Math.max(from + 1, Math.floor((t0 + ((px + 1) / width) * span) * pairsPerS));
      if (from >= pairs) break;
      let low = 0;
      let high = 0;
      for (let i = Math.max(from, 0); i < to && i < pairs; i++) {
        low = Math.min(low, peaks.data[2 * i]);
        high = Math.max(high, peaks.data[2 * i + 1]);
      }
      const top = middle - (high / full) * middle;
      const bottom = middle - (low / full) * middle;
      ctx.fillRect(px, top, 1, Math.max(1, bottom - top));
    }
  }
  const { drawn, inView, what } = beatsToDraw();
  for (const i of drawn) {
    const downbeat = view.positions ? view.positions[i] === 1 : false;
    ctx.fillStyle = downbeat ? "rgba(140, 20, 20, 0.85)" : "rgba(198, 40, 40, 0.55)";
    ctx.fillRect(Math.round(x(view.beats[i])), 0, downbeat ? 2 : 1, height);
  }
  canvas.dataset.viewStart = t0.toFixed(3);
  canvas.dataset.viewEnd = t1.toFixed(3);
  canvas.dataset.beatsTotal = String(view.beats.length);
  canvas.dataset.beatsInView = String(inView);
  canvas.dataset.beatsDrawn = String(drawn.length);
  const legend = [`Beats: ${inView} in view, ${what === "every beat" ? "all drawn" : `${what} drawn at this zoom`}`];
  if (downs.length) legend.push("dark lines are downbeats, shaded bands every other bar");
  $("legend").textContent = legend.join("; ");
}

function layoutSpectrogram() {
  const img = $("spectrogram");
  const box = $("spectro-box");
  const width = box.clientWidth;
  const height = box.clientHeight;
  if (!img.hidden && width) {
    const d = view.duration;
    const sx = width / (((view.t1 - view.t0) / d) * SPECTRO.plotWidth);
    const sy = height / SPECTRO.plotHeight;
    img.style.width = `${SPECTRO.width * sx}px`;
    img.style.height = `${SPECTRO.height * sy}px`;
    img.style.left = `${-(SPECTRO.left + (view.t0 / d) * SPECTRO.plotWidth) * sx}px`;
    img.style.top = `${-SPECTRO.top * sy}px`;
  }
  const labels = $("hz-labels");
  if (!labels.childElementCount && height) {
    const mel = (f) => (f < 1000 ? f / (200 / 3) : 15 + (27 * Math.log(f / 1000)) / Math.log(6.4));
    for (const [f, text] of [[500, "500 Hz"], [1000, "1 kHz"], [2000, "2 kHz"], [4000, "4 kHz"], [8000, "8 kHz"]]) {
      const span = document.createElement("span");
      span.textContent = text;
      span.style.top = `${(1 - mel(f) / mel(SPECTRO_FMAX)) * 100}%`;
      labels.append(span);
    }
  }
}

const SECTION_COLOURS = ["#ffd8a8", "#b2f2bb", "#a5d8ff", "#fcc2d7", "#d0bfff", "#ffec99", "#99e9f2", "#eebefa"];

function fillStrip(strip, items, label, title, colour) {
  strip.replaceChildren();
  strip.hidden = !items.length;
  const { t0, t1 } = view;
  const span = t1 - t0;
  for (const item of items) {
    if (item.end_s < t0 || item.start_s > t1) continue;
    const a = Math.max(item.start_s, t0);
    const b = Math.min(item.end_s, t1);
    const cell = document.createElement("div");
    cell.style.left = `${((a - t0) / span) * 100}%`;
    cell.style.width = `${((b - a) / span) * 100}%`;
    cell.style.background = colour(item);
    cell.textContent = label(item);
    cell.title = title(item);
    strip.append(cell);
  }
}

function drawStrips() {
  const s = view.result.summary;
  const sections = Array.isArray(s.sections) ? s.sections : [];
  fillStrip(
    $("sections"),
    sections,
    (x) => x.label,
    (x) => [
      `Section ${x.label}: ${clock(x.start_s)}–${clock(x.end_s)}`,
      typeof x.tempo_bpm === "number" ? `${fmt(x.tempo_bpm, 1)} BPM` : null,
      x.key ? `${x.key.tonic} ${x.key.mode} (${fmt(x.key.confidence, 2)})` : null,
      typeof x.loudness_lufs === "number" ? `${fmt(x.loudness_lufs, 1)} LUFS` : null,
      `confidence ${fmt(x.confidence, 2)}`,
    ].filter(Boolean).join(" · "),
    (x) => SECTION_COLOURS[(String(x.label).charCodeAt(0) - 65 + 800) % SECTION_COLOURS.length],
  );
  const segments = s.key && Array.isArray(s.key.segments) && s.key.segments.length > 1 ? s.key.segments : [];
  fillStrip(
    $("key-strip"),
    segments,
    (x) => `${x.tonic} ${x.mode}`,
    (x) => `${x.tonic} ${x.mode}: ${clock(x.start_s)}–${clock(x.end_s)}, confidence ${fmt(x.confidence, 2)}`,
    (x) => (x.mode === "major" ? "#e7f5ff" : "#f3f0ff"),
  );
  tip($("sections"), "sections");
  tip($("key-strip"), "keySegments");
}

// Tick spacing: the smallest step that leaves room for an m:ss label.
const TICK_STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];

function drawAxis() {
  const axis = $("axis");
  axis.replaceChildren();
  const width = axis.clientWidth;
  const { t0, t1 } = view;
  const span = t1 - t0;
  if (!width) return;
  const step = TICK_STEPS.find((s) => (s * width) / span >= 64) || 3600;
  const tenths = step < 1;
  for (let k = Math.ceil(t0 / step - 1e-9); k * step <= t1 + 1e-9; k++) {
    const t = k * step;
    const label = document.createElement("span");
    label.textContent = clock(t, tenths);
    label.style.left = `${((t - t0) / span) * 100}%`;
    // Keep the first and last labels inside the box.
    const px = ((t - t0) / span) * width;
    if (px < 14) label.style.transform = "translateX(-2px)";
    else if (px > width - 14) label.style.transform = "translateX(-100%)";
    axis.append(label);
  }
}

function moveCursor() {
  const cursor = $("cursor");
  if (!view) { cursor.hidden = true; return; }
  const t = $("player").currentTime || 0;
  const canvas = $("waveform");
  const inView = t >= view.t0 && t <= view.t1;
  cursor.hidden = !inView;
  if (!inView) return;
  const box = $("timeline").getBoundingClientRect();
  const rect = canvas.getBoundingClientRect();
  cursor.style.left = `${rect.left - box.left + ((t - view.t0) / (view.t1 - view.t0)) * rect.width}px`;
}

async function showWaveform(id) {
  const note = $("waveform-note");
  const response = await fetchPlot(id, "waveform.json", note);
  if (!response || selected !== id || !view) return;
  view.peaks = await response.json();
  note.textContent = "";
  drawTimeline();
  $("waveform").dataset.length = String(view.peaks.length);
}

async function showSpectrogram(id) {
  const note = $("spectrogram-note");
  const response = await fetchPlot(id, "spectrogram.png", note);
  if (!response || selected !== id) return;
  const img = $("spectrogram");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.onload = () => { img.hidden = false; if (view) layoutSpectrogram(); };
  img.src = URL.createObjectURL(await response.blob());
  note.textContent = "";
}

function setUpTimeline() {
  for (const element of document.querySelectorAll("[data-tip]")) tip(element, element.dataset.tip);
  const canvas = $("waveform");
  const player = $("player");
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => {
    if (!view) return;
    drag = { x: e.clientX, t0: view.t0, t1: view.t1, moved: false };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x;
    if (Math.abs(dx) > 3) drag.moved = true;
    if (drag.moved) {
      const shift = (-dx / canvas.clientWidth) * (drag.t1 - drag.t0);
      setView(drag.t0 + shift, drag.t1 + shift);
    }
  });
  canvas.addEventListener("pointerup", (e) => {
    if (drag && !drag.moved) seek(timeAt(canvas, e.clientX));
    drag = null;
  });
  canvas.addEventListener("pointercancel", () => { drag = null; });
  canvas.addEventListener("wheel", (e) => {
    if (!view) return;
    e.preventDefault();
    if (Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
      const shift = (e.deltaX / canvas.clientWidth) * (view.t1 - view.t0);
      setView(view.t0 + shift, view.t1 + shift);
    } else {
      zoom(Math.exp(e.deltaY * 0.002), timeAt(canvas, e.clientX));
    }
  }, { passive: false });
  for (const id of ["spectro-box", "axis", "sections", "key-strip"]) {
    $(id).addEventListener("click", (e) => { if (view) seek(timeAt($(id), e.clientX)); });
  }
  const playhead = () => {
    const t = player.currentTime;
    return view && t >= view.t0 && t <= view.t1 && t > 0 ? t : undefined;
  };
  $("zoom-in").addEventListener("click", () => zoom(0.5, playhead()));
  $("zoom-out").addEventListener("click", () => zoom(2, playhead()));
  $("zoom-all").addEventListener("click", () => { if (view) setView(0, view.duration); });
  player.addEventListener("play", () => requestAnimationFrame(animate));
  for (const type of ["timeupdate", "seeked", "loadedmetadata"]) player.addEventListener(type, followPlayhead);
  document.addEventListener("keydown", (e) => {
    if (e.key !== " " || e.repeat || !view) return;
    const target = e.target;
    // Space keeps its meaning in form fields, buttons, the drop zone and the player itself.
    if (target.closest && target.closest("input, select, textarea, button, summary, label, audio, [contenteditable]")) return;
    e.preventDefault();
    togglePlay();
  });
}

// Plots are drawn by a worker after the job succeeded: 409 plot_pending means "soon".
async function fetchPlot(id, name, note) {
  for (let i = 0; i < PLOT_WAIT_TRIES && selected === id; i++) {
    try {
      return await api(`${API}/${id}/${name}`);
    } catch (error) {
      if (!error.problem || error.problem.code !== "plot_pending") {
        note.textContent = error.message;
        return null;
      }
      note.textContent = "Drawing …";
      await sleep(1000 * (error.retryAfter || 1));
    }
  }
  return null;
}

// ---- start ----------------------------------------------------------------------------------

function setUpSettings() {
  const input = $("api-key");
  input.value = apiKey();
  input.addEventListener("change", () => {
    localStorage.setItem("earshot.apiKey", input.value.trim());
    location.reload();
  });
}

// A new width redraws the timeline from what is loaded (nothing is fetched again).
let resizeQueued = false;
window.addEventListener("resize", () => {
  if (resizeQueued) return;
  resizeQueued = true;
  requestAnimationFrame(() => { resizeQueued = false; drawTimeline(); });
});

setUpSettings();
setUpUploads();
setUpJobList();
setUpTimeline();
loadRecent();
