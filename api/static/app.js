// earshot web page: upload, follow jobs live, start the page (the last of its three scripts:
// timeline.js and result.js define the result view). No build step, no dependencies.
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
