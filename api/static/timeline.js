// earshot web page: the player and the timeline (sections, waveform, spectrogram, one time
// axis, the cursor), zoom, pan and seeking. Loaded before result.js and app.js.
"use strict";

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
