// d2v drawing page: choose a photo, draw the camera path, preview it, render it.
//
// The path is recorded in canvas units: the canvas's own pixel grid (canvas.width x
// canvas.height), whatever size the page shows it at. Each point carries t, seconds
// since the stroke began, so drawing speed carries into the camera (see DESIGN.md).
// A stroke that starts near the end of the current path continues it; any other
// stroke starts a new path. Undo steps back through those changes.
//
// Presets (GET /v1/presets) are shown as a gallery, each with a small looping preview of
// the preset on the user's own photo (POST /v1/preview, only for the cards on screen and a
// few at a time, so a page does not flood the farm). Picking one sets the controls to its
// settings; the request then names the preset and sends the controls' values, which (the
// API's rule) override the preset's wherever they differ.
//
// A farm with API keys (D2V_API_KEYS) wants `Authorization: Bearer <key>` on every /v1/*
// request: the key typed at the top is kept in this browser and sent with every request
// the page makes (none is sent while it is empty). A 401 is said next to that field.
//
// Messages appear next to what caused them (the photo and path, Render, the look), announced
// to screen readers, and scrolled into view. The farm's limits (GET /v1/limits) are shown on
// the drop area and checked before anything is uploaded.
//
// History: the caller's recent jobs (GET /v1/jobs) under the presets, each with its poster,
// status and verdict; open shows it in the result card, "render again" loads its photo, path
// and settings back into the page. Paths are saved and loaded as the path JSON of the CLI.
"use strict";

const $ = (id) => document.getElementById(id);

const MAX_POINTS = 10000; // the API's limit
const PREVIEW_MAX_SIDE = 1024; // previews upload a copy of the photo at most this large
const CONTINUE_RADIUS_CSS = 24; // a stroke starting this close to the path's end continues it
const KEY_STORAGE = "d2v.apiKey"; // localStorage: the API key, for the next visit
const GALLERY_CONCURRENCY = 2; // preset previews in flight at once (the farm renders 2 per API replica)
const HISTORY_LIMIT = 12; // jobs shown in the history
const CUBE = "__cube__"; // the look picker's "a .cube file…" entry
// What the controls show without a preset (the API's defaults); a preset sets some of them.
const DEFAULTS = {
  effect: "auto", duration_s: 4, end_zoom: null, shake: 0, speed_ramp: 0, motion_blur: 0, loop: false,
  look: "natural", post: [], glitch_amount: 0.3,
};
const KNOBS = { shake: "shake", speed_ramp: "speed-ramp", motion_blur: "motion-blur", glitch_amount: "glitch-amount" };
const STAGE_LABELS = {
  queued: "Queued",
  trajectory: "Camera path",
  base: "Render frames",
  interpolate: "Interpolate",
  upscale: "Upscale",
  encode: "Encode",
  check: "Check path",
  done: "Done",
};

const state = {
  file: null, // the photo as chosen: what Render uploads
  previewBlob: null, // a smaller copy for previews
  bitmap: null, // the decoded photo, drawn on the canvas
  history: [], // paths, newest last; the current path is the last one
  stroke: null, // the stroke being drawn: {points, t0, base}
  effects: [],
  presets: [], // GET /v1/presets: [{name, description, settings}]
  preset: null, // the picked preset's name
  post: [], // the ticked post effects, in the order ticked
  lutFile: null, // the .cube file chosen as the look
  photoId: 0, // counts photos chosen: the gallery's previews are of one photo
  preview: null, // the last /v1/preview answer
  previewFor: "", // ...and the request JSON it answered
  previewAbort: null,
  previewTimer: 0,
  job: null,
  apiKey: storedKey(), // "" when none: then no Authorization header is sent
  shownJob: null, // the job whose result the result card shows (results load asynchronously)
  objectUrls: [], // blob: URLs of results fetched with the key, revoked when replaced
  limits: null, // GET /v1/limits: what this farm takes
};

// --- small helpers ------------------------------------------------------------------

function currentPath() {
  return state.history.length ? state.history[state.history.length - 1] : [];
}

// A message next to what caused it: `where` is "photo" (the photo, the path, its preview),
// "render" (under Render) or "look". `source` lets a later success clear its own message.
function say(where, message, source = "") {
  const box = $(`${where}-message`);
  box.querySelector(".message-text").textContent = message;
  box.hidden = false;
  box.dataset.source = source;
  box.scrollIntoView({ block: "nearest" }); // on a small screen it may be below the fold
}

// Clear the message at `where` (only if it came from `source`, when one is given).
function unsay(where, source = null) {
  const box = $(`${where}-message`);
  if (source !== null && box.dataset.source !== source) return;
  box.hidden = true;
  box.querySelector(".message-text").textContent = "";
  box.dataset.source = "";
}

function shownMessages() {
  return ["photo", "render", "look"].map((w) => $(`${w}-message`)).filter((b) => !b.hidden)
    .map((b) => b.querySelector(".message-text").textContent);
}

// --- the API key ----------------------------------------------------------------------

function storedKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch (_) {
    return ""; // storage blocked: the key lasts as long as the page
  }
}

// Every request to the API goes through here, with the key when there is one.
function apiFetch(url, options = {}) {
  const headers = new Headers(options.headers);
  if (state.apiKey) headers.set("Authorization", `Bearer ${state.apiKey}`);
  return fetch(url, { ...options, headers });
}

// A 401 is about the key, not the request: say so next to the key field (true), instead
// of showing a failure. Nothing drawn or chosen is lost; send again once the key is in.
function refusedKey(response) {
  if (response.status !== 401) return false;
  showKeyStatus(state.apiKey
    ? "The API key was refused: check it and enter it again."
    : "This farm needs an API key: enter it here.");
  return true;
}

function showKeyStatus(message) {
  $("key-status").textContent = message;
  $("key-status").hidden = false;
  $("api-key").setAttribute("aria-invalid", "true");
}

function clearKeyStatus() {
  $("key-status").hidden = true;
  $("key-status").textContent = "";
  $("api-key").removeAttribute("aria-invalid");
}

function setupApiKey() {
  const input = $("api-key");
  input.value = state.apiKey;
  const keep = () => {
    const key = input.value.trim();
    // A header carries printable ASCII only (fetch would throw on anything else).
    if (!/^[\x20-\x7e]*$/.test(key)) {
      showKeyStatus("An API key is plain text (letters, digits, punctuation): check what was pasted.");
      return false;
    }
    state.apiKey = key;
    try {
      if (key) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
    } catch (_) {
      // storage blocked: the key still works on this page
    }
    return true;
  };
  input.addEventListener("input", keep);
  // Once a key is entered (Enter, or leaving the field), ask again what a 401 refused.
  const apply = () => {
    if (!keep() || $("key-status").hidden) return;
    clearKeyStatus();
    if (!state.effects.length) loadEffects();
    if (!state.presets.length) loadChoices();
    loadHistory();
    schedulePreview(0);
    refreshGallery(0);
  };
  input.addEventListener("change", apply);
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    apply();
  });
}

// The API's 4xx answers carry {"detail": "..."}: show those words.
async function apiError(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
  } catch (_) {
    detail = response.statusText;
  }
  return `${detail || "the server answered " + response.status} (HTTP ${response.status})`;
}

function settings() {
  const [width, height] = $("size").value.split("x").map(Number);
  const endZoom = $("end-zoom").value.trim();
  const body = {
    effect: $("effect").value,
    duration_s: Number($("duration").value),
    fps: Number($("fps").value),
    width,
    height,
    backend: $("backend").value,
    end_zoom: endZoom === "" ? null : Number(endZoom), // null: the effect's own, even over a preset's
    shake: Number($("shake").value),
    speed_ramp: Number($("speed-ramp").value),
    motion_blur: Number($("motion-blur").value),
    loop: $("loop").checked,
    look: lookName(),
    post: state.post.slice(),
    glitch_amount: Number($("glitch-amount").value),
  };
  if (state.preset) body.preset = state.preset;
  return body;
}

function lookName() {
  if ($("look").value !== CUBE) return $("look").value;
  return state.lutFile ? state.lutFile.name : "natural";
}

// A look that names a .cube file travels as the `lut` file part, next to the request.
function appendLut(form) {
  if ($("look").value === CUBE && state.lutFile) form.append("lut", state.lutFile, state.lutFile.name);
}

function requestBody() {
  const canvas = $("canvas");
  const subjects = Subjects.fields(); // subjects.js: things that move along their own paths
  const path = { canvas: { width: canvas.width, height: canvas.height }, points: thin(currentPath()) };
  // With subjects the camera path may be left out: the camera then holds still.
  return { ...(subjects.subjects && distinctPoints(currentPath()) < 2 ? {} : { path }), ...settings(), ...subjects };
}

// Keep under the API's point limit by dropping every other point (ends kept).
function thin(points) {
  let pts = points;
  while (pts.length > MAX_POINTS) {
    pts = pts.filter((_, i) => i % 2 === 0 || i === pts.length - 1);
  }
  return pts.map((p) => ({ x: round1(p.x), y: round1(p.y), t: Math.round(p.t * 1000) / 1000 }));
}

const round1 = (v) => Math.round(v * 10) / 10;

function distinctPoints(points) {
  return new Set(points.map((p) => `${p.x},${p.y}`)).size;
}

function prettyEffect(name) {
  return name.replace(/_/g, " ");
}

// --- the photo ----------------------------------------------------------------------

async function loadFile(file, { keepPath = false } = {}) {
  unsay("photo");
  if (!file) return false;
  const limits = state.limits?.image;
  if (limits && file.size > limits.max_bytes) {
    say("photo", `“${file.name}” is ${mib(file.size)}; this farm takes photos up to ${mib(limits.max_bytes)}. ` +
        "Choose a smaller file (or save it as JPEG).");
    return false;
  }
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (_) {
    say("photo", `“${file.name}” is not an image this browser can open. Choose a JPEG, PNG or WebP photo.`);
    return false;
  }
  const refused = limits && tooBig(bitmap, limits);
  if (refused) {
    bitmap.close();
    say("photo", `“${file.name}” ${refused}`);
    return false;
  }
  clearTimeout(state.previewTimer);
  if (state.previewAbort) state.previewAbort.abort(); // a preview of the old photo
  state.file = file;
  state.bitmap = bitmap;
  state.previewBlob = await previewCopy(file, bitmap);
  if (!keepPath) state.history = [];
  Subjects.reset();
  state.preview = null;
  state.photoId += 1;
  resetPreview("Draw a path to see the camera move.");

  // The canvas grid: the photo's aspect ratio, 800..1600 units on the longer side.
  const longer = Math.max(bitmap.width, bitmap.height);
  const scale = Math.min(Math.max(1, 800 / longer), 1600 / longer);
  const canvas = $("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.hidden = false;
  $("drop-empty").hidden = true;
  $("drop").dataset.state = "loaded";
  $("choose-again").hidden = false;
  $("hint").textContent = "Draw the camera's path on the photo (mouse, pen or finger).";
  updateButtons();
  redraw();
  refreshGallery(0);
  return true;
}

// Why a decoded photo is refused by this farm's limits ("" when it is not), in words.
function tooBig(bitmap, limits) {
  const pixels = bitmap.width * bitmap.height;
  if (pixels > limits.max_pixels) {
    return `is ${bitmap.width}×${bitmap.height} (${mp(pixels)}); this farm takes up to ${mp(limits.max_pixels)}: ` +
      "make it smaller first.";
  }
  if (Math.min(bitmap.width, bitmap.height) < limits.min_side) {
    return `is ${bitmap.width}×${bitmap.height}; both sides must be at least ${limits.min_side} pixels.`;
  }
  return "";
}

const mib = (bytes) => `${(bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 1 : 0)} MiB`;
const mp = (pixels) => `${(pixels / 1e6).toFixed(pixels < 1e7 ? 1 : 0)} MP`;

// Previews upload a smaller copy: planning is scale-free (canvas units), the copy is fast.
async function previewCopy(file, bitmap) {
  const longer = Math.max(bitmap.width, bitmap.height);
  if (longer <= PREVIEW_MAX_SIDE && file.size <= 2 * 2 ** 20) return file;
  const scale = PREVIEW_MAX_SIDE / longer;
  const c = document.createElement("canvas");
  c.width = Math.max(1, Math.round(bitmap.width * scale));
  c.height = Math.max(1, Math.round(bitmap.height * scale));
  c.getContext("2d").drawImage(bitmap, 0, 0, c.width, c.height);
  return await new Promise((resolve) => c.toBlob((b) => resolve(b || file), "image/jpeg", 0.9));
}

function setupFileInputs() {
  const input = $("file");
  $("choose").addEventListener("click", () => input.click());
  $("choose-again").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    loadFile(input.files[0]);
    input.value = ""; // choosing the same file again still fires change
  });

  const drop = $("drop");
  const isFileDrag = (e) => e.dataTransfer && Array.from(e.dataTransfer.types).includes("Files");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      if (!isFileDrag(e)) return;
      e.preventDefault();
      drop.classList.add("dragging");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("dragging");
    const file = e.dataTransfer.files[0];
    if (file) loadFile(file);
  });
  // A file dropped anywhere else must not navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  // Paste an image from the clipboard.
  window.addEventListener("paste", (e) => {
    const item = Array.from(e.clipboardData?.files || []).find((f) => f.type.startsWith("image/"));
    if (item) loadFile(item);
  });
}

// --- drawing --------------------------------------------------------------------------

function canvasPoint(e) {
  const canvas = $("canvas");
  const rect = canvas.getBoundingClientRect();
  return {
    x: Math.min(Math.max(((e.clientX - rect.left) * canvas.width) / rect.width, 0), canvas.width),
    y: Math.min(Math.max(((e.clientY - rect.top) * canvas.height) / rect.height, 0), canvas.height),
  };
}

// Canvas units per CSS pixel: line widths and hit radii are given in CSS pixels.
function unitsPerCssPx() {
  const canvas = $("canvas");
  return canvas.width / (canvas.getBoundingClientRect().width || canvas.width);
}

function setupDrawing() {
  const canvas = $("canvas");
  canvas.addEventListener("pointerdown", (e) => {
    if (!state.bitmap || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    unsay("photo");
    const p = canvasPoint(e);
    const path = currentPath();
    const end = path[path.length - 1];
    const continues = end && Math.hypot(p.x - end.x, p.y - end.y) <= CONTINUE_RADIUS_CSS * unitsPerCssPx();
    // A continued stroke picks up the time where the path left off (the pause between
    // strokes is not part of the move).
    const base = continues ? path.slice() : [];
    const t0 = e.timeStamp - (continues ? (end.t + 1 / 60) * 1000 : 0);
    state.stroke = { pointerId: e.pointerId, t0, base, points: [{ ...p, t: (e.timeStamp - t0) / 1000 }] };
    redraw();
  });
  canvas.addEventListener("pointermove", (e) => {
    const stroke = state.stroke;
    if (!stroke || e.pointerId !== stroke.pointerId) return;
    extendStroke(stroke, e);
    redraw();
  });
  const finish = (e) => {
    const stroke = state.stroke;
    if (!stroke || e.pointerId !== stroke.pointerId) return;
    state.stroke = null;
    const path = stroke.base.concat(stroke.points);
    if (distinctPoints(path) < 2 || stroke.points.length < 2) {
      $("hint").textContent = "That was a tap: drag to draw a path.";
      redraw();
      return;
    }
    state.history.push(path);
    $("hint").textContent = "Draw again from the path's end to continue it, or anywhere else to start over.";
    afterPathChange();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);

  $("undo").addEventListener("click", undo);
  $("clear").addEventListener("click", () => {
    if (!currentPath().length) return;
    state.history.push([]);
    afterPathChange();
  });
  document.addEventListener("keydown", (e) => {
    const typing = e.target.matches?.("input[type=text], input[type=password], textarea");
    if ((e.ctrlKey || e.metaKey) && !e.shiftKey && e.key.toLowerCase() === "z" && !typing) {
      e.preventDefault();
      undo();
    }
  });
}

function undo() {
  if (!state.history.length) return;
  state.history.pop();
  afterPathChange();
}

function afterPathChange() {
  state.preview = null;
  updateButtons();
  redraw();
  refreshGallery();
  if (distinctPoints(currentPath()) >= 2 || Subjects.ready()) {
    schedulePreview(0);
  } else {
    if (state.previewAbort) state.previewAbort.abort();
    resetPreview("Draw a path to see the camera move.");
    $("analysis").textContent = "";
  }
}

// A pointer move's samples (the coalesced ones too: a fast stroke keeps its shape) appended
// to a stroke {t0, points}: canvas units, seconds since the stroke began, never backwards in time.
// The path tool and subjects.js's brush and track both draw with it.
function extendStroke(stroke, e) {
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
  for (const ev of events.length ? events : [e]) {
    const p = canvasPoint(ev);
    const last = stroke.points[stroke.points.length - 1];
    const t = Math.max(last.t, (ev.timeStamp - stroke.t0) / 1000);
    if (p.x !== last.x || p.y !== last.y) stroke.points.push({ ...p, t });
  }
}

function updateButtons() {
  const hasPath = distinctPoints(currentPath()) >= 2 || Subjects.ready();
  $("undo").disabled = state.history.length === 0;
  $("clear").disabled = currentPath().length === 0;
  $("export-path").disabled = !hasPath;
  $("import-path").disabled = !state.bitmap;
  $("render").disabled = !(state.bitmap && hasPath) || Boolean(state.job && state.job.active);
}

// --- what the canvas shows ------------------------------------------------------------

function redraw() {
  const canvas = $("canvas");
  if (!state.bitmap) return;
  const ctx = canvas.getContext("2d");
  const u = unitsPerCssPx();
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(state.bitmap, 0, 0, canvas.width, canvas.height);

  const view = currentView();
  if (view) drawView(ctx, view, u);

  const raw = state.stroke ? state.stroke.base.concat(state.stroke.points) : currentPath();
  const smooth = !state.stroke && state.preview?.path.length ? state.preview.path.map(([x, y]) => ({ x, y })) : null;
  // The raw stroke: thin while drawing, faint once the smoothed path is back.
  if (raw.length > 1) {
    strokeLine(ctx, raw, smooth ? 1.5 * u : 3 * u, smooth ? "rgba(255,255,255,0.45)" : "#ffffff", smooth ? [4 * u, 4 * u] : []);
  }
  if (smooth) {
    strokeLine(ctx, smooth, 7 * u, "rgba(0,0,0,0.55)", []);
    strokeLine(ctx, smooth, 4 * u, "#ffb547", []);
  }
  const line = smooth || raw;
  if (line.length > 1) drawEnds(ctx, line, u);
  Subjects.draw(ctx, u);
}

function strokeLine(ctx, pts, width, color, dash) {
  ctx.save();
  ctx.lineJoin = "round";
  ctx.lineCap = "round";
  ctx.lineWidth = width;
  ctx.strokeStyle = color;
  ctx.setLineDash(dash);
  ctx.beginPath();
  ctx.moveTo(pts[0].x, pts[0].y);
  for (const p of pts.slice(1)) ctx.lineTo(p.x, p.y);
  ctx.stroke();
  ctx.restore();
}

// A dot at the start, an arrowhead at the end.
function drawEnds(ctx, pts, u) {
  const a = pts[0];
  const b = pts[pts.length - 1];
  ctx.save();
  ctx.fillStyle = "#ffffff";
  ctx.strokeStyle = "rgba(0,0,0,0.6)";
  ctx.lineWidth = 2 * u;
  ctx.beginPath();
  ctx.arc(a.x, a.y, 6 * u, 0, 2 * Math.PI);
  ctx.fill();
  ctx.stroke();
  // The direction at the end: from a point a little way back along the path.
  let k = pts.length - 2;
  while (k > 0 && Math.hypot(b.x - pts[k].x, b.y - pts[k].y) < 12 * u) k--;
  const ang = Math.atan2(b.y - pts[k].y, b.x - pts[k].x);
  const len = 16 * u;
  ctx.beginPath();
  ctx.moveTo(b.x + Math.cos(ang) * len * 0.4, b.y + Math.sin(ang) * len * 0.4);
  ctx.lineTo(b.x + Math.cos(ang + 2.5) * len, b.y + Math.sin(ang + 2.5) * len);
  ctx.lineTo(b.x + Math.cos(ang - 2.5) * len, b.y + Math.sin(ang - 2.5) * len);
  ctx.closePath();
  ctx.fill();
  ctx.stroke();
  ctx.restore();
}

// The camera's view at the preview video's current frame, as 4 corners (canvas units).
function currentView() {
  const p = state.preview;
  const video = $("preview");
  if (!p || state.stroke || !p.views.length || video.readyState < 2) return null;
  const i = Math.min(p.views.length - 1, Math.floor(video.currentTime * p.fps + 1e-3));
  return p.views[i];
}

// Dim what the camera does not see; outline what it does.
function drawView(ctx, quad, u) {
  const canvas = $("canvas");
  ctx.save();
  ctx.beginPath();
  ctx.rect(0, 0, canvas.width, canvas.height);
  ctx.moveTo(quad[0][0], quad[0][1]);
  for (const [x, y] of quad.slice(1)) ctx.lineTo(x, y);
  ctx.closePath();
  ctx.fillStyle = "rgba(0,0,0,0.6)";
  ctx.fill("evenodd");
  ctx.beginPath();
  ctx.moveTo(quad[0][0], quad[0][1]);
  for (const [x, y] of quad.slice(1)) ctx.lineTo(x, y);
  ctx.closePath();
  ctx.lineWidth = 2 * u;
  ctx.strokeStyle = "rgba(255,255,255,0.85)";
  ctx.stroke();
  ctx.restore();
}

// While a preview plays, its view rectangle moves over the photo in step with it.
let shownView = null;
function animate() {
  const view = currentView();
  if (view !== shownView && !state.stroke) redraw();
  shownView = view;
  requestAnimationFrame(animate);
}

// --- preview --------------------------------------------------------------------------

function resetPreview(message) {
  const video = $("preview");
  video.removeAttribute("src");
  video.load();
  video.closest(".video-box").dataset.empty = "true";
  $("preview-placeholder").textContent = message;
  $("preview-status").textContent = "";
}

function schedulePreview(delayMs = 200) {
  clearTimeout(state.previewTimer);
  if (!state.bitmap || (distinctPoints(currentPath()) < 2 && !Subjects.ready())) return;
  state.previewTimer = setTimeout(runPreview, delayMs);
}

async function runPreview() {
  if (state.previewAbort) state.previewAbort.abort();
  const abort = new AbortController();
  state.previewAbort = abort;
  const body = JSON.stringify(requestBody());
  const form = new FormData();
  form.append("image", state.previewBlob, state.file.name || "photo");
  form.append("request", body);
  appendLut(form);
  $("preview-status").textContent = "Planning the camera move…";
  const started = performance.now();
  let response;
  try {
    response = await apiFetch("v1/preview", { method: "POST", body: form, signal: abort.signal });
  } catch (err) {
    if (abort.signal.aborted) return;
    $("preview-status").textContent = "";
    say("photo", `Could not reach the farm for a preview (${err.message}): is it still running?`, "preview");
    return;
  }
  if (abort.signal.aborted) return;
  if (refusedKey(response)) {
    unsay("photo", "preview");
    resetPreview("The preview needs the farm's API key.");
    return;
  }
  if (!response.ok) {
    $("preview-status").textContent = "";
    say("photo", await apiError(response), "preview");
    return;
  }
  const p = await response.json();
  if (abort.signal.aborted) return;
  state.preview = p;
  state.previewFor = body; // the request this preview shows
  unsay("photo", "preview");
  clearKeyStatus();
  const video = $("preview");
  video.src = p.video;
  video.closest(".video-box").dataset.empty = "false";
  video.closest(".video-box").style.aspectRatio = `${p.width} / ${p.height}`;
  video.play().catch(() => {});
  const ms = Math.round(performance.now() - started);
  const clamped = p.clamped_frames ? `; the view was kept inside the photo on ${p.clamped_frames} frames` : "";
  $("preview-status").textContent =
    `${p.width}×${p.height}, ${p.fps} fps, ${p.duration_s.toFixed(1)} s, ready in ${ms} ms${clamped}.`;
  showAnalysis(p);
  redraw();
}

function showAnalysis(p) {
  if (!p.path_shape) { // subjects only (subjects.js): no camera path
    $("analysis").textContent = "No camera path: the camera holds still while the subjects move.";
    return;
  }
  const shape = { straight: "a straight stroke", closed_loop: "a closed loop", spiral: "a spiral", freeform: "a freeform stroke" }[p.path_shape] || p.path_shape;
  const turn = p.direction > 0 ? " (clockwise)" : p.direction < 0 ? " (counter-clockwise)" : "";
  const el = $("analysis");
  el.textContent = "";
  const strong = document.createElement("strong");
  strong.textContent = prettyEffect(p.effect);
  if (p.requested_effect === "auto") {
    el.append(`Path: ${shape}${turn}. auto picks `, strong, ".");
  } else {
    // The effect chosen is what renders; what auto would pick is only a hint.
    const auto = p.auto_effect === p.effect ? "auto picks it too" : `auto would pick ${prettyEffect(p.auto_effect)}`;
    el.append(`Path: ${shape}${turn}. Rendering `, strong, ` (${auto}).`);
  }
}

// --- effects and settings ---------------------------------------------------------------

async function loadEffects() {
  try {
    const response = await apiFetch("v1/effects");
    if (refusedKey(response)) return; // asked again once a key is entered
    if (!response.ok) throw new Error(await apiError(response));
    state.effects = await response.json();
  } catch (err) {
    say("photo", `Could not load the list of effects: ${err.message}`);
    return;
  }
  const select = $("effect");
  select.textContent = "";
  for (const { name } of state.effects) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = prettyEffect(name);
    select.append(option);
  }
  select.value = "auto";
  describeEffect();
}

function describeEffect() {
  const e = state.effects.find((x) => x.name === $("effect").value);
  $("effect-help").textContent = e ? e.description.replace(/->/g, "→") : "";
}

function setupSettings() {
  $("effect").addEventListener("change", () => {
    describeEffect();
    schedulePreview(0);
  });
  const duration = $("duration");
  const showDuration = () => ($("duration-out").textContent = `${Number(duration.value)} s`);
  duration.addEventListener("input", () => {
    showDuration();
    schedulePreview(250);
  });
  showDuration();
  $("size").addEventListener("change", () => {
    schedulePreview(0);
    refreshGallery(0);
  });
  $("fps").addEventListener("change", () => schedulePreview(0));
  $("settings").addEventListener("submit", (e) => {
    e.preventDefault();
    render();
  });
  for (const where of ["photo", "render", "look"]) {
    $(`${where}-message`).querySelector(".message-close").addEventListener("click", () => unsay(where));
  }
  $("copy").addEventListener("click", copyLink);
  setupKnobs();
}

// --- presets, looks, post effects, backends ----------------------------------------------

// What a request can name, for the pickers: presets, looks, post effects, backends.
async function loadChoices() {
  let presets, looks, post, backends;
  try {
    const responses = await Promise.all(["v1/presets", "v1/looks", "v1/post", "v1/backends"].map((u) => apiFetch(u)));
    if (responses.some(refusedKey)) return; // asked again once a key is entered
    for (const r of responses) if (!r.ok) throw new Error(await apiError(r));
    [presets, looks, post, backends] = await Promise.all(responses.map((r) => r.json()));
  } catch (err) {
    say("photo", `Could not load the presets and looks: ${err.message}`);
    return;
  }
  state.presets = presets;
  fillLooks(looks);
  fillPost(post);
  fillBackends(backends);
  buildGallery();
}

function fillLooks(looks) {
  const select = $("look");
  select.textContent = "";
  state.looks = looks;
  for (const { name } of looks) select.append(new Option(prettyEffect(name), name));
  select.append(new Option("a .cube file…", CUBE));
  select.value = "natural";
  describeLook();
}

function describeLook() {
  const value = $("look").value;
  const look = (state.looks || []).find((x) => x.name === value);
  $("look-help").textContent = value === CUBE
    ? (state.lutFile ? `3D LUT ${state.lutFile.name}` : "Choose a .cube 3D LUT file")
    : look ? look.description : "";
}

function fillPost(effects) {
  const list = $("post-list");
  list.textContent = "";
  for (const { name, description } of effects) {
    const label = document.createElement("label");
    label.title = description;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = name;
    box.addEventListener("change", () => {
      state.post = box.checked ? state.post.concat(name) : state.post.filter((x) => x !== name);
      showPost();
      schedulePreview(0);
    });
    const order = document.createElement("span");
    order.className = "post-order";
    label.append(box, prettyEffect(name), order);
    list.append(label);
  }
  showPost();
}

// The boxes ticked as state.post says, each with its place in the order.
function showPost() {
  for (const label of $("post-list").children) {
    const box = label.querySelector("input");
    const at = state.post.indexOf(box.value);
    box.checked = at >= 0;
    label.querySelector(".post-order").textContent = at >= 0 && state.post.length > 1 ? `${at + 1}` : "";
  }
  $("glitch-field").hidden = !state.post.includes("glitch");
}

function fillBackends(backends) {
  const select = $("backend");
  for (const b of backends) {
    const option = [...select.options].find((o) => o.value === b.name);
    if (!option) continue;
    option.disabled = !b.available;
    option.textContent = b.available ? b.name : `${b.name} (unavailable)`;
  }
  const svd = backends.find((b) => b.name === "svd");
  if (select.selectedOptions[0]?.disabled) select.value = "camera";
  $("backend-help").textContent = svd && !svd.available ? `svd: ${svd.reason}` : "";
}

function setupKnobs() {
  for (const id of Object.values(KNOBS)) {
    $(id).addEventListener("input", () => {
      showKnob(id);
      schedulePreview(250);
    });
    showKnob(id);
  }
  $("end-zoom").addEventListener("change", () => schedulePreview(0));
  $("loop").addEventListener("change", () => schedulePreview(0));
  $("backend").addEventListener("change", () => schedulePreview(0));
  $("look").addEventListener("change", () => {
    if ($("look").value === CUBE) $("lut-file").click();
    describeLook();
    schedulePreview(0);
  });
  $("lut-file").addEventListener("change", () => {
    const file = $("lut-file").files[0];
    $("lut-file").value = "";
    if (!file) return;
    if (!file.name.toLowerCase().endsWith(".cube")) {
      say("look", `“${file.name}” is not a .cube file: a look file is a 3D LUT in the .cube format.`);
      return;
    }
    unsay("look");
    state.lutFile = file;
    $("look").value = CUBE;
    describeLook();
    schedulePreview(0);
  });
  $("preset-clear").addEventListener("click", () => pickPreset(null));
}

function showKnob(id) {
  $(`${id}-out`).textContent = Number($(id).value).toFixed(2).replace(/\.?0+$/, "") || "0";
}

// Pick a preset (null: none): the controls show its settings, over the defaults.
function pickPreset(name) {
  const preset = state.presets.find((p) => p.name === name);
  markPreset(preset ? preset.name : null);
  if (preset) applySettings({ ...DEFAULTS, ...preset.settings });
  schedulePreview(0);
}

// The preset the request names (null: none), shown on its card and by Render.
function markPreset(name) {
  state.preset = name;
  for (const card of $("gallery").querySelectorAll(".preset-card")) {
    card.setAttribute("aria-pressed", String(card.dataset.preset === name));
  }
  $("preset-chip").hidden = !name;
  $("preset-name").textContent = name ? prettyEffect(name) : "";
}

// The strip shows the presets whose name or description has every word typed.
function filterGallery() {
  const words = $("gallery-filter").value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const p of state.presets) {
    const text = `${p.name.replace(/_/g, " ")} ${p.description}`.toLowerCase();
    card(p.name).closest("li").hidden = !words.every((w) => text.includes(w));
  }
}

// The controls show request fields `s` (a preset's, over the defaults; or a job's request).
// The one place that writes the controls: settings() is the one that reads them.
function applySettings(s) {
  $("effect").value = s.effect;
  $("duration").value = s.duration_s;
  $("duration-out").textContent = `${Number($("duration").value)} s`;
  $("end-zoom").value = s.end_zoom ?? "";
  $("loop").checked = Boolean(s.loop);
  for (const [field, id] of Object.entries(KNOBS)) {
    $(id).value = s[field];
    showKnob(id);
  }
  if (s.width && s.height) selectOption($("size"), `${s.width}x${s.height}`, `${s.width} × ${s.height}`);
  if (s.fps) selectOption($("fps"), String(s.fps), `${s.fps} fps`);
  if (s.backend) $("backend").value = s.backend;
  // A .cube look cannot come back without its file: the named look natural stands in.
  $("look").value = [...$("look").options].some((o) => o.value === s.look && o.value !== CUBE) ? s.look : "natural";
  state.post = (s.post || []).slice();
  showPost();
  describeEffect();
  describeLook();
}

// Select `value` in a <select>, adding it (as `label`) when the list does not have it.
function selectOption(select, value, label) {
  if (![...select.options].some((o) => o.value === value)) select.append(new Option(label, value));
  select.value = value;
}

// --- the preset gallery --------------------------------------------------------------------

const gallery = {
  generation: 0, // bumped whenever the previews go stale (photo, path or size changed)
  abort: null, // aborts the stale generation's requests
  queue: [], // preset names waiting for a preview, on screen
  running: 0,
  visible: new Set(),
  timer: 0,
  observer: null,
};

function buildGallery() {
  const list = $("gallery");
  list.textContent = "";
  if (gallery.observer) gallery.observer.disconnect();
  gallery.observer = new IntersectionObserver(onGalleryScroll, { rootMargin: "100px" });
  for (const p of state.presets) {
    const li = document.createElement("li");
    const card = document.createElement("button");
    card.type = "button";
    card.className = "preset-card";
    card.dataset.preset = p.name;
    card.setAttribute("aria-pressed", "false");
    card.title = Object.entries(p.settings).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : v}`).join("\n");
    const thumb = document.createElement("div");
    thumb.className = "thumb";
    thumb.dataset.state = "empty";
    const video = document.createElement("video");
    video.muted = true;
    video.loop = true;
    video.playsInline = true;
    video.autoplay = true;
    video.setAttribute("aria-label", `Preview of ${p.name} on your photo`);
    const status = document.createElement("p");
    status.className = "thumb-status";
    status.textContent = "Choose a photo to preview";
    thumb.append(video, status);
    const name = document.createElement("span");
    name.className = "preset-name";
    name.textContent = prettyEffect(p.name);
    const desc = document.createElement("span");
    desc.className = "preset-desc";
    desc.textContent = p.description;
    card.append(thumb, name, desc);
    card.addEventListener("click", () => pickPreset(p.name));
    li.append(card);
    list.append(li);
    gallery.observer.observe(card);
  }
  refreshGallery(0);
}

function card(name) {
  return $("gallery").querySelector(`.preset-card[data-preset="${CSS.escape(name)}"]`);
}

function onGalleryScroll(entries) {
  for (const entry of entries) {
    const name = entry.target.dataset.preset;
    if (entry.isIntersecting) {
      gallery.visible.add(name);
      want(name);
    } else {
      gallery.visible.delete(name);
      gallery.queue = gallery.queue.filter((n) => n !== name); // not started: not needed now
    }
  }
  pump();
}

// The previews are stale: start a new generation (after `delayMs`, so drawing is not chased).
function refreshGallery(delayMs = 600) {
  clearTimeout(gallery.timer);
  gallery.timer = setTimeout(() => {
    gallery.generation += 1;
    if (gallery.abort) gallery.abort.abort();
    gallery.abort = new AbortController();
    gallery.queue = [];
    gallery.running = 0;
    for (const p of state.presets) {
      const thumb = card(p.name).querySelector(".thumb");
      thumb.dataset.for = "";
      if (state.bitmap) thumb.querySelector(".thumb-status").textContent = "Waiting…";
    }
    for (const p of state.presets) if (gallery.visible.has(p.name)) want(p.name);
    pump();
  }, delayMs);
}

function want(name) {
  const thumb = card(name).querySelector(".thumb");
  if (!state.bitmap || thumb.dataset.for === String(gallery.generation) || gallery.queue.includes(name)) return;
  gallery.queue.push(name);
}

function pump() {
  while (gallery.running < GALLERY_CONCURRENCY && gallery.queue.length) {
    const name = gallery.queue.shift();
    gallery.running += 1;
    const generation = gallery.generation;
    galleryPreview(name, generation, gallery.abort.signal).finally(() => {
      if (generation !== gallery.generation) return; // a newer generation counts its own
      gallery.running -= 1;
      pump();
    });
  }
}

// The gallery's stroke: the drawn path, or (before one is drawn) a gentle rising diagonal.
function galleryPath() {
  const canvas = $("canvas");
  const drawn = distinctPoints(currentPath()) >= 2;
  const points = drawn ? thin(currentPath()) : Array.from({ length: 20 }, (_, i) => ({
    x: round1(canvas.width * (0.3 + 0.4 * i / 19)), y: round1(canvas.height * (0.6 - 0.15 * i / 19)),
  }));
  return { canvas: { width: canvas.width, height: canvas.height }, points };
}

async function galleryPreview(name, generation, signal) {
  const thumb = card(name).querySelector(".thumb");
  const status = thumb.querySelector(".thumb-status");
  const [width, height] = $("size").value.split("x").map(Number);
  const form = new FormData();
  form.append("image", state.previewBlob, state.file.name || "photo");
  form.append("request", JSON.stringify({ path: galleryPath(), preset: name, width, height }));
  status.textContent = "Rendering…";
  let response;
  try {
    response = await apiFetch("v1/preview", { method: "POST", body: form, signal });
  } catch (err) {
    // (A fetch that fails says only "Failed to fetch": say what it means.)
    if (!signal.aborted) status.textContent = "No preview: the farm did not answer";
    return;
  }
  if (signal.aborted || generation !== gallery.generation) return;
  if (refusedKey(response)) {
    gallery.queue = []; // nothing more without the key; asked again once it is entered
    status.textContent = "Needs the farm's API key";
    return;
  }
  if (!response.ok) {
    status.textContent = `No preview: ${await apiError(response)}`;
    return;
  }
  const p = await response.json();
  if (signal.aborted || generation !== gallery.generation) return;
  const video = thumb.querySelector("video");
  video.src = p.video;
  thumb.dataset.for = String(generation);
  thumb.dataset.state = "ready";
  video.play().catch(() => {});
}

// --- render ---------------------------------------------------------------------------

async function render() {
  unsay("render");
  if (!state.bitmap || (distinctPoints(currentPath()) < 2 && !Subjects.ready())) return;
  const tooLong = clipTooLarge(settings());
  if (tooLong) return say("render", tooLong);
  const form = new FormData();
  form.append("image", state.file, state.file.name || "photo");
  form.append("request", JSON.stringify(requestBody()));
  appendLut(form);
  state.job = { active: true };
  updateButtons();
  showResultCard();
  setStages("queued", 0);
  $("result-card").scrollIntoView({ block: "nearest", behavior: "smooth" });
  let response;
  try {
    response = await apiFetch("v1/jobs", { method: "POST", body: form });
  } catch (err) {
    return refused(`Could not reach the farm (${err.message}): is it still running? Nothing was sent.`);
  }
  if (refusedKey(response)) {
    // Nothing was queued: no render card, and Render works again once the key is in.
    state.job = null;
    updateButtons();
    $("result-card").hidden = true;
    $("api-key").focus();
    return;
  }
  if (!response.ok) return refused(await apiError(response));
  clearKeyStatus();
  const accepted = await response.json();
  state.job = { active: true, id: accepted.job_id, statusUrl: accepted.status_url };
  // Answered at once: the same photo and settings were rendered before (by anyone).
  const note = $("result-note");
  note.hidden = accepted.status !== "succeeded";
  note.textContent = "Rendered before: the same photo and settings, answered from the store without rendering.";
  poll(state.job);
}

// Refused before a job existed: no render card (nothing is queued), the words under Render.
function refused(message) {
  state.job = null;
  updateButtons();
  $("result-card").hidden = true;
  say("render", message);
}

// The frames a clip holds, against the farm's max_clip_bytes: said before anything is sent.
function clipTooLarge(s) {
  const limit = state.limits?.max_clip_bytes;
  const frames = Math.round(s.duration_s * s.fps);
  if (!limit || frames * s.width * s.height * 3 <= limit) return "";
  return `${frames} frames at ${s.width}×${s.height} is more than this farm renders in one job ` +
    `(${(limit / 2 ** 30).toFixed(0)} GiB of frames): shorten the clip, or lower the frame rate or size.`;
}

function showResultCard() {
  $("result-card").hidden = false;
  $("result-note").hidden = true;
  $("video-box").hidden = true;
  $("actions").hidden = true;
  $("fidelity").hidden = true;
  $("link").hidden = true;
  state.shownJob = null;
  const video = $("video");
  video.removeAttribute("src");
  video.load();
  $("fidelity-image").removeAttribute("src");
  for (const url of state.objectUrls) URL.revokeObjectURL(url);
  state.objectUrls = [];
}

async function poll(job) {
  while (state.job === job) {
    let status;
    try {
      const response = await apiFetch(job.statusUrl, { cache: "no-store" });
      if (refusedKey(response)) {
        // (The key changed while the job ran.) Nothing more of it is seen without the key
        // that submitted it: the drawing is still here to Render again.
        state.job = null;
        updateButtons();
        $("progress-text").textContent = "Stopped following: the API key was refused";
        return;
      }
      if (!response.ok) return jobFailed(await apiError(response));
      status = await response.json();
    } catch (err) {
      return jobFailed(`Lost touch with the server: ${err.message}`);
    }
    if (status.status === "failed") {
      setStages(status.stage, status.progress, true);
      return jobFailed(`The render failed: ${status.error || "no reason given"}`);
    }
    if (status.status === "succeeded") {
      setStages("done", 1);
      return jobDone(job, status.result);
    }
    setStages(status.stage || status.status, status.progress);
    await new Promise((r) => setTimeout(r, 400));
  }
}

function setStages(stage, progress, failed = false) {
  const order = Object.keys(STAGE_LABELS);
  const at = order.indexOf(stage);
  const list = $("stages");
  list.textContent = "";
  for (const [i, name] of order.entries()) {
    const li = document.createElement("li");
    li.textContent = STAGE_LABELS[name];
    if (i < at || stage === "done") li.className = "done";
    else if (i === at) li.className = failed ? "failed" : "active";
    if (i === at) li.setAttribute("aria-current", "step");
    list.append(li);
  }
  $("progress").value = stage === "done" ? 1 : progress || 0;
  const label = STAGE_LABELS[stage] || stage || "";
  $("progress-text").textContent = stage === "done" ? "Done" : `${label} ${Math.round((progress || 0) * 100)}%`;
}

function jobFailed(message) {
  state.job = null;
  updateButtons();
  $("progress-text").textContent = "Failed";
  // The step it stopped at (Queued, when it never started) is marked failed, not left lit.
  const active = $("stages").querySelector("li.active");
  if (active) active.className = "failed";
  say("render", message);
  loadHistory();
}

async function jobDone(job, result) {
  state.job = null;
  state.shownJob = job;
  updateButtons();
  loadHistory();
  $("progress-text").textContent = `Done: ${result.width}×${result.height}, ${result.frames} frames at ${result.fps} fps`;
  let video;
  try {
    video = await resultSource(result.video_url);
  } catch (err) {
    return say("render", `The video is rendered, but this page could not load it: ${err.message}`);
  }
  if (!video || state.shownJob !== job) return; // the key was refused, or another render began
  const player = $("video");
  player.src = video.src;
  $("video-box").style.aspectRatio = `${result.width} / ${result.height}`;
  $("video-box").hidden = false;
  player.play().catch(() => {});
  const download = $("download");
  download.href = video.src;
  download.download = `d2v-${job.id}.mp4`;
  $("link").value = video.link;
  $("actions").hidden = false;
  showFidelity(job, result);
}

// A result file (video, path check) as something a <video> or <img> can show: {src, link},
// or null when the farm refused the key. Without a key, the API's own URL. With one, the
// page fetches the file with the key and shows a blob: URL, since an element's src cannot
// carry an Authorization header. On S3 the API answers with a redirect to a presigned URL
// on another origin: the browser drops the Authorization header on that hop (S3 would
// refuse a second way of signing) and reads the object through CORS, which the object
// store has to allow for this page's origin. The link to share is where the file came
// from: the presigned URL (no key needed until it expires), or the API's URL.
async function resultSource(path) {
  const url = new URL(path, location.href).href;
  if (!state.apiKey) return { src: url, link: url };
  let response;
  try {
    response = await apiFetch(url);
  } catch (err) {
    throw new Error(`${err.message} (from ${new URL(url).pathname}; where the file is on S3, the bucket must allow ` +
                    `this page's origin, ${location.origin}, to read it: CORS)`);
  }
  if (refusedKey(response)) return null;
  if (!response.ok) throw new Error(await apiError(response));
  const src = URL.createObjectURL(await response.blob());
  state.objectUrls.push(src);
  return { src, link: response.url };
}

// The path check: did the video go where the path was drawn? The verdict, and the photo
// with the drawn path and the measured path of the view's centre.
async function showFidelity(job, result) {
  const fidelity = result.fidelity;
  if (!fidelity || !result.fidelity_url) return;
  let picture;
  try {
    picture = await resultSource(result.fidelity_url);
  } catch (err) {
    return say("render", `The path check's picture could not be loaded: ${err.message}`);
  }
  if (!picture || state.shownJob !== job) return;
  const verdict = $("fidelity-verdict");
  verdict.dataset.verdict = fidelity.verdict;
  verdict.textContent = verdictText(fidelity);
  $("fidelity-image").src = picture.src;
  $("fidelity").hidden = false;
}

function verdictText(fidelity) {
  const moved = (fidelity.subjects || []).map((s) => s.verdict); // subjects.js's subjects, each checked
  const located = `${fidelity.located}/${fidelity.sampled} frames located${moved.length ? `; subjects: ${moved.join(", ")}` : ""}`;
  const pct = (x) => (x === null || x === undefined ? "?" : `${x.toFixed(1)}%`);
  return {
    followed: `Path followed: end ${pct(fidelity.end_center_pct)} off, worst ${pct(fidelity.worst_center_pct)} (${located})`,
    clamped: `Path clamped: ${fidelity.reason}`,
    missed: `Path missed: ${fidelity.reason} (${located})`,
  }[fidelity.verdict] || `Path not measured: ${fidelity.reason}`;
}

async function copyLink() {
  const link = $("link");
  try {
    await navigator.clipboard.writeText(link.value);
    $("copy").textContent = "Copied ✓";
    setTimeout(() => ($("copy").textContent = "Copy link"), 1600);
  } catch (_) {
    // No clipboard access (e.g. not a secure context): show the link, selected.
    link.hidden = false;
    link.focus();
    link.select();
  }
}

// --- the farm's limits ------------------------------------------------------------------

// GET /v1/limits: shown on the drop area, and checked before a photo or a job is sent.
async function loadLimits() {
  let limits;
  try {
    const response = await apiFetch("v1/limits");
    if (!response.ok) return; // the server checks anyway; the page just cannot say it first
    limits = await response.json();
  } catch (_) {
    return;
  }
  state.limits = limits;
  const img = limits.image;
  const formats = img.formats.map((f) => ({ jpeg: "JPEG", png: "PNG", webp: "WebP", avif: "AVIF", heif: "HEIC", bmp: "BMP", tiff: "TIFF" }[f] || f));
  $("limits-text").textContent = `${formats.slice(0, -1).join(", ")} or ${formats.at(-1)}: up to ` +
    `${mib(img.max_bytes)} and ${mp(img.max_pixels)}, at least ${img.min_side} pixels a side. ` +
    `Videos of ${limits.duration_s.min}–${limits.duration_s.max} s, up to ${limits.size.max} pixels a side.`;
  const duration = $("duration");
  duration.max = String(limits.duration_s.max);
  for (const option of $("size").options) {
    const [w, h] = option.value.split("x").map(Number);
    option.disabled = Math.max(w, h) > limits.size.max || Math.min(w, h) < limits.size.min;
  }
}

// --- paths as files ---------------------------------------------------------------------

// The path as the JSON that `d2v render --path` takes: canvas size and points (with t).
function pathJson() {
  const canvas = $("canvas");
  return JSON.stringify({ canvas: { width: canvas.width, height: canvas.height }, points: thin(currentPath()) },
    null, 1);
}

function exportPath() {
  const blob = new Blob([pathJson() + "\n"], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `${(state.file?.name || "photo").replace(/\.[^.]+$/, "")}-path.json`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// A path JSON file (ours or hand-made): {canvas, points} scales to this photo's canvas; a
// bare list of points is in the photo's pixels.
async function importPath(file) {
  let data;
  try {
    data = JSON.parse(await file.text());
  } catch (err) {
    return say("photo", `“${file.name}” is not JSON: ${err.message}`);
  }
  const canvas = $("canvas");
  const bare = Array.isArray(data);
  const points = bare ? data : data?.points;
  const from = bare ? { width: state.bitmap.width, height: state.bitmap.height } : data?.canvas;
  const ok = Array.isArray(points) && points.length >= 2 && from && from.width > 0 && from.height > 0 &&
    points.every((p) => Number.isFinite(p?.x) && Number.isFinite(p?.y));
  if (!ok) {
    return say("photo", `“${file.name}” is not a path: expected {"canvas": {"width", "height"}, "points": ` +
      "[{\"x\", \"y\", \"t\"}, ...]} or a list of {\"x\", \"y\"} in the photo's pixels.");
  }
  setPath(points.map((p, i) => ({
    x: (p.x * canvas.width) / from.width,
    y: (p.y * canvas.height) / from.height,
    t: Number.isFinite(p.t) ? p.t : i / 60,
  })));
}

function setPath(points) {
  unsay("photo");
  state.history.push(points);
  afterPathChange();
}

function setupPathFiles() {
  $("export-path").addEventListener("click", exportPath);
  $("import-path").addEventListener("click", () => $("path-file").click());
  $("path-file").addEventListener("change", () => {
    const file = $("path-file").files[0];
    $("path-file").value = "";
    if (file) importPath(file);
  });
}

// --- history: the caller's recent jobs ---------------------------------------------------------

async function loadHistory() {
  let jobs;
  try {
    const response = await apiFetch(`v1/jobs?limit=${HISTORY_LIMIT}`, { cache: "no-store" });
    if (refusedKey(response)) return; // asked again once a key is entered
    if (!response.ok) throw new Error(await apiError(response));
    jobs = (await response.json()).jobs;
  } catch (err) {
    $("history-status").textContent = `Could not load your renders: ${err.message}`;
    return;
  }
  $("history-status").textContent = jobs.length ? "" : "Nothing rendered yet: your renders will be listed here.";
  const list = $("history");
  list.textContent = "";
  for (const job of jobs) list.append(historyItem(job));
}

function historyItem(job) {
  const li = document.createElement("li");
  li.className = "history-item";
  li.dataset.job = job.job_id;
  li.dataset.status = job.status;
  const thumb = document.createElement("div");
  thumb.className = "history-thumb";
  const body = document.createElement("div");
  body.className = "history-body";
  const title = document.createElement("p");
  title.className = "history-title";
  const when = job.created_at ? new Date(job.created_at).toLocaleString() : "";
  title.textContent = `${job.status}${when ? " · " + when : ""}`;
  const detail = document.createElement("p");
  detail.className = "history-detail";
  const result = job.result;
  if (result) {
    detail.textContent = `${result.width}×${result.height}, ${(result.frames / result.fps).toFixed(1)} s` +
      (result.fidelity ? ` · ${verdictText(result.fidelity)}` : "");
    if (result.fidelity) detail.dataset.verdict = result.fidelity.verdict;
  } else {
    detail.textContent = job.status === "failed" ? job.error || "failed"
      : `${STAGE_LABELS[job.stage] || job.stage || "waiting"} ${Math.round((job.progress || 0) * 100)}%`;
  }
  const actions = document.createElement("div");
  actions.className = "history-actions";
  if (result) {
    actions.append(button("Open", () => openJob(job)), button("Download", () => downloadJob(job)));
    showPoster(thumb, result.poster_url, job.job_id);
  }
  actions.append(button("Render again…", () => renderAgain(job)));
  body.append(title, detail, actions);
  li.append(thumb, body);
  return li;
}

function button(text, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "button small";
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

async function showPoster(thumb, url, jobId) {
  try {
    const poster = await resultSource(url);
    if (!poster) return;
    const img = document.createElement("img");
    img.alt = `Poster of job ${jobId}`;
    img.src = poster.src;
    thumb.append(img);
  } catch (_) {
    thumb.textContent = "no poster";
  }
}

// Open: the job's result in the result card, as if it had just been rendered here.
function openJob(job) {
  unsay("render");
  state.job = null;
  showResultCard();
  setStages("done", 1);
  const shown = { id: job.job_id };
  jobDone(shown, job.result);
  $("result-card").scrollIntoView({ block: "nearest" });
}

async function downloadJob(job) {
  try {
    const video = await resultSource(job.result.video_url);
    if (!video) return;
    const a = document.createElement("a");
    a.href = video.src;
    a.download = `d2v-${job.job_id}.mp4`;
    document.body.append(a);
    a.click();
    a.remove();
  } catch (err) {
    say("render", `Could not download the video: ${err.message}`);
  }
}

// Render again with changes: the job's photo, path and settings back in the page, to change
// and render. (The request's preset is kept: its fields are in the request already.)
async function renderAgain(job) {
  unsay("render");
  let request, photo;
  try {
    const [manifest, image] = await Promise.all([`v1/jobs/${job.job_id}/request`, `v1/jobs/${job.job_id}/image`]
      .map((u) => apiFetch(u)));
    for (const r of [manifest, image]) if (!r.ok) throw new Error(await apiError(r));
    request = await manifest.json();
    const blob = await image.blob();
    photo = new File([blob], `job-${job.job_id}.${(blob.type.split("/")[1] || "jpg").replace("jpeg", "jpg")}`,
      { type: blob.type });
  } catch (err) {
    return say("render", `Could not load that job's photo and settings: ${err.message}`);
  }
  if (!(await loadFile(photo))) return;
  applySettings({ ...DEFAULTS, ...request });
  markPreset(request.preset || null);
  const path = request.path;
  const from = path.canvas || { width: state.bitmap.width, height: state.bitmap.height };
  const canvas = $("canvas");
  setPath(path.points.map((p, i) => ({
    x: (p.x * canvas.width) / from.width, y: (p.y * canvas.height) / from.height, t: p.t ?? i / 60,
  })));
  $("hint").textContent = "The job's photo, path and settings: change anything, then Render.";
  window.scrollTo({ top: 0, behavior: "smooth" });
}

// --- start ----------------------------------------------------------------------------
// Where everything is wired. A new drawing tool: a button in index.html's toolbar and its
// setup here. A new request field: its control in the settings form, read in settings(),
// written in applySettings() (presets, "render again"), its listener in setupSettings() or
// setupKnobs(). What the farm offers (effects, presets, looks, post effects, backends,
// limits) is asked of the API below and fills the pickers.

setupApiKey();
setupFileInputs(); // the photo: choose, drop, paste
setupDrawing(); // the path: draw, continue, undo, clear
Subjects.setup(); // subjects.js: paint a thing, draw where it goes
setupPathFiles(); // the path as a file: save, load
setupSettings(); // the settings form and Render
$("history-refresh").addEventListener("click", loadHistory);
$("gallery-filter").addEventListener("input", filterGallery);
loadEffects();
loadChoices(); // presets (the gallery), looks, post effects, backends
loadLimits();
loadHistory();
requestAnimationFrame(animate);
