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

function makeRow() {
  const row = document.createElement("li");
  row.className = "job";
  row.innerHTML = '<div><div class="name"></div><div class="detail"></div></div>' +
    '<span class="status"></span><progress max="100" value="0"></progress>';
  $("job-list").prepend(row);
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
  let detail = message || "";
  if (!detail && job.error) detail = `${job.error.code}: ${job.error.message}`;
  if (!detail && job.status === "queued" && coldQueues.has(`earshot.${job.priority || "interactive"}`)) {
    detail = "workers starting: the job waits until a worker has warmed up";
  }
  if (!detail && job.progress && job.progress.stage && !FINISHED.has(job.status)) detail = job.progress.stage;
  if (!detail && job.cached) detail = "from cache";
  row.querySelector(".detail").textContent = detail;
}

function track(job, select) {
  let entry = jobs.get(job.id);
  if (!entry) {
    entry = { job, row: makeRow(), source: null };
    entry.row.dataset.id = job.id;
    entry.row.addEventListener("click", () => show(job.id));
    jobs.set(job.id, entry);
  }
  update(job);
  if (!FINISHED.has(job.status)) follow(job.id);
  if (job.status === "queued") watchReadiness();
  if (select) show(job.id);
}

function watchReadiness() {
  if (readinessTimer !== null) return;
  const poll = async () => {
    try {
      const body = await (await fetch("/readyz")).json();
      coldQueues = new Set(Object.entries(body.workers || {}).filter(([, warm]) => !warm).map(([q]) => q));
    } catch (_) { /* the next poll tells */ }
    for (const entry of jobs.values()) setRow(entry.row, entry.job);
    const waiting = [...jobs.values()].some((entry) => entry.job.status === "queued");
    readinessTimer = waiting && coldQueues.size ? setTimeout(poll, 1000) : null;
  };
  readinessTimer = 0;
  poll();
}

function update(job) {
  const entry = jobs.get(job.id);
  if (!entry) return;
  const was = entry.job.status;
  entry.job = job;
  setRow(entry.row, job);
  if (selected === job.id && (was !== job.status || !resultShownFor)) show(job.id);
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
  try {
    const page = await (await api(`${API}?limit=20`)).json();
    for (const job of page.items.reverse()) track(job, false);
  } catch (error) {
    $("jobs-empty").textContent = `Could not list analyses: ${error.message}`;
  }
}

// ---- the result view ------------------------------------------------------------------------

async function show(id) {
  selected = id;
  for (const [jobId, entry] of jobs) entry.row.classList.toggle("selected", jobId === id);
  const job = jobs.get(id).job;
  const section = $("result");
  section.hidden = false;
  $("result-title").textContent = job.filename;
  if (job.status !== "succeeded") {
    resultShownFor = null;
    clearResult(job.status === "failed" && job.error ? `Failed: ${job.error.message}` : `Analysis ${job.status} …`);
    return;
  }
  if (resultShownFor === id) return;
  resultShownFor = id;
  clearResult("");
  try {
    const result = await (await api(`${API}/${id}/result`)).json();
    if (selected !== id) return;
    showSummary(result);
    setDownloads(id);
    showWaveform(id, result);
    showSpectrogram(id);
  } catch (error) {
    $("waveform-note").textContent = `Could not load the result: ${error.message}`;
  }
}

function clearResult(note) {
  for (const id of ["tempo", "key", "loudness", "duration"]) $(id).textContent = "–";
  $("features").querySelector("tbody").replaceChildren();
  const canvas = $("waveform");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  $("waveform-note").textContent = note;
  $("spectrogram").hidden = true;
  $("spectrogram-note").textContent = "";
  for (const a of document.querySelectorAll(".downloads a")) a.removeAttribute("href");
}

const fmt = (value, digits = 2) => (typeof value === "number" ? value.toFixed(digits) : "–");

function showSummary(result) {
  const s = result.summary;
  $("tempo").textContent = `${fmt(s.tempo.bpm, 1)} BPM`;
  $("key").textContent = `${s.key.tonic} ${s.key.mode}`;
  $("loudness").textContent = `${fmt(s.loudness.integrated_lufs, 1)} LUFS`;
  $("duration").textContent = `${fmt(result.audio.duration_s, 2)} s`;
  const rows = [
    ["Tempo confidence", fmt(s.tempo.confidence, 3)],
    ["Beats", String(s.beats_s.length)],
    ["Key confidence", fmt(s.key.confidence, 3)],
    ["Loudness range", `${fmt(s.loudness.loudness_range_lu, 1)} LU`],
    ["Peak", `${fmt(s.loudness.peak_dbfs, 1)} dBFS`],
    ["Clipping ratio", fmt(s.loudness.clipping_ratio, 6)],
    ["RMS mean", `${fmt(s.loudness.rms_mean_db, 1)} dB`],
    ["Spectral centroid (mean ± std)", `${fmt(s.spectral_centroid_hz.mean, 0)} ± ${fmt(s.spectral_centroid_hz.std, 0)} Hz`],
    ["Spectral bandwidth", `${fmt(s.spectral_bandwidth_hz.mean, 0)} ± ${fmt(s.spectral_bandwidth_hz.std, 0)} Hz`],
    ["Spectral rolloff", `${fmt(s.spectral_rolloff_hz.mean, 0)} ± ${fmt(s.spectral_rolloff_hz.std, 0)} Hz`],
    ["Spectral flatness", `${fmt(s.spectral_flatness.mean, 4)} ± ${fmt(s.spectral_flatness.std, 4)}`],
    ["Zero-crossing rate", `${fmt(s.zero_crossing_rate.mean, 4)} ± ${fmt(s.zero_crossing_rate.std, 4)}`],
    ["Onset rate", `${fmt(s.onset_rate_per_s, 2)} /s`],
    ["Silence ratio", fmt(s.silence_ratio, 3)],
    ["Tuning", `${fmt(s.chroma.tuning_semitones, 3)} semitones`],
    ["Audio", `${result.audio.format} / ${result.audio.codec}, ${result.audio.sample_rate} Hz, ${result.audio.channels} ch`],
    ["Profile", result.profile],
    ["Analyzer version", result.analyzer_version],
  ];
  const body = $("features").querySelector("tbody");
  for (const [name, value] of rows) {
    const tr = document.createElement("tr");
    const th = document.createElement("td");
    const td = document.createElement("td");
    th.textContent = name;
    td.textContent = value;
    tr.append(th, td);
    body.append(tr);
  }
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

async function showWaveform(id, result) {
  const note = $("waveform-note");
  const response = await fetchPlot(id, "waveform.json", note);
  if (!response || selected !== id) return;
  const peaks = await response.json();
  note.textContent = "";
  drawPeaks($("waveform"), peaks, result.summary.beats_s);
  $("waveform").dataset.length = String(peaks.length);
}

function drawPeaks(canvas, peaks, beats) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const full = 2 ** (peaks.bits - 1);
  const middle = height / 2;
  const pairs = peaks.length;
  const seconds = (pairs * peaks.samples_per_pixel) / peaks.sample_rate;
  ctx.strokeStyle = "#d2d2d7";
  ctx.beginPath();
  ctx.moveTo(0, middle);
  ctx.lineTo(width, middle);
  ctx.stroke();
  // One vertical bar per screen pixel: the min of the mins and max of the maxes under it.
  ctx.fillStyle = "#0a66c2";
  for (let x = 0; x < width; x++) {
    const from = Math.floor((x / width) * pairs);
    const to = Math.max(from + 1, Math.floor(((x + 1) / width) * pairs));
    let low = 0;
    let high = 0;
    for (let i = from; i < to && i < pairs; i++) {
      low = Math.min(low, peaks.data[2 * i]);
      high = Math.max(high, peaks.data[2 * i + 1]);
    }
    const top = middle - (high / full) * middle;
    const bottom = middle - (low / full) * middle;
    ctx.fillRect(x, top, 1, Math.max(1, bottom - top));
  }
  ctx.fillStyle = "rgba(198, 40, 40, 0.55)";
  for (const beat of beats || []) {
    ctx.fillRect(Math.round((beat / seconds) * width), 0, 1, height);
  }
}

async function showSpectrogram(id) {
  const note = $("spectrogram-note");
  const response = await fetchPlot(id, "spectrogram.png", note);
  if (!response || selected !== id) return;
  const img = $("spectrogram");
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(await response.blob());
  img.hidden = false;
  note.textContent = "";
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

window.addEventListener("resize", () => {
  if (selected && resultShownFor === selected) {
    resultShownFor = null;
    show(selected);
  }
});

setUpSettings();
setUpUploads();
loadRecent();
