// earshot web page: the result view (cards, charts, table, downloads, fetching the plots).
// Loaded before app.js, which starts the page; timeline.js draws the plots.
"use strict";

// ---- the result view ------------------------------------------------------------------------

// What the shown result looks like on screen: the document, the peaks, the visible window.
let view = null;

// Units and methods, from docs/result.md, shown as tooltips.
const TIPS = {
  tempo: "Beats per minute, the beat of the meter. Method: the onset envelope's autocorrelation times its Fourier tempogram gives the family of related tempi (under a log-normal prior around 120 BPM), then a model picks the metrical level. Alternatives: the other levels with their weight, the model's probability 0..1.",
  key: "Tonic and mode. Method: the file's pitch-class profile (from spectral peaks) scored against major and minor key profiles (Albrecht-Shanahan, with and without overtones); confidence 0..1 combines the fit and the lead over the second key. Alternatives: the next keys with their score (-1..1).",
  meter: "Beats per bar (2..7), from the accents of the beats (onset strength, level, low band, harmonic change); confidence 0..1: share of bars whose most accented beat is the downbeat, chance reading 0. Downbeats are dark lines, every other bar a shaded band.",
  loudness: "Integrated loudness in LUFS per ITU-R BS.1770-4 / EBU R 128 (K-weighted, 400 ms blocks, -70 LUFS absolute and -10 LU relative gates). Range in LU (EBU Tech 3342), peak in dBFS (sample peak).",
  duration: "Decoded duration (samples decoded / native rate), m:ss.",
  chroma: "Pitch-class content: mean over non-silent frames of the STFT chroma (librosa chroma_stft, each frame normalised to max 1), 0..1, C first; the strongest class is green.",
  mfcc: "Timbre: mel-frequency cepstral coefficients 1-19, mean over all frames (128 mel bands, log-mel in dB, DCT-II ortho), unitless. Coefficient 0 (overall level) is left out of the colours.",
  scores: "Each 0..1, or – when its method has no evidence for this file; hover a score for what it measures (docs/result.md has the formulas).",
  sections: "Sections: contiguous parts of the file; repeats share a letter. Hover one for its time, tempo, key and loudness.",
  keySegments: "Key over time: one segment per stretch in one key, with its confidence 0..1.",
  tempoConfidence: "0..1: the model's probability that the tempo is the beat rather than its half, double, third … (also the first alternative's weight).",
  beats: "Beat count: librosa's dynamic-programming beat tracker run at the global tempo.",
  keyConfidence: "0..1: the key's fit times its lead over the second-best key, calibrated on the evaluation set (docs/accuracy.md).",
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

// What each score measures (docs/result.md, "scores").
const SCORE_TIPS = {
  energy: "Intensity and activity: loudness, spectral flux and brightness.",
  danceability: "How strong and steady a beat at a dance tempo is: rhythm regularity (detrended fluctuation analysis of the level) and pulse.",
  valence: "A heuristic for a positive against a sombre character: mode, tempo and brightness.",
  acousticness: "Acoustic rather than electronic or processed sound: crest factor, loudness range and a dark spectrum, less for clipping.",
  instrumentalness: "No voice: given only when speech is found (1 - speechiness); singing is not detected.",
  speechiness: "Spoken words: unstable chroma and fast-moving formants (MFCC change).",
  liveness: "An audience: seconds of applause-like broadband noise without a pulse, 10 s reading 1.",
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
    // Shown before drawing: the timeline measures its width.
    $("result-body").hidden = false;
    startView(id, result);
    showSummary(result);
    setDownloads(id);
    setPlayer(id, job);
    showWaveform(id);
    showSpectrogram(id);
    reveal();
  } catch (error) {
    $("result-note").textContent = `Could not load the result: ${error.message}`;
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
  // Until a result is loaded only its title and this note show (no empty plots or charts).
  $("result-body").hidden = true;
  $("result-note").textContent = note;
  $("waveform-note").textContent = "";
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
    if (SCORE_TIPS[name]) row.title = SCORE_TIPS[name];
    const meter = document.createElement("meter");
    meter.min = 0;
    meter.max = 1;
    const number = document.createElement("span");
    if (typeof value === "number") {
      meter.value = value;
      number.textContent = fmt(value, 2);
    } else {
      number.textContent = "–";
      row.title = `${SCORE_TIPS[name] || name} No evidence for this file.`;
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
