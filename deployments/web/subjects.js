// d2v drawing page: the subject tool (a motion brush). Paint over a thing in the photo, see
// its outline refined to the object's edges at once (POST v1/subjects/outline), then draw where
// it goes. Up to six subjects, each in its own colour and removable; they travel in the
// request's `subjects` (docs/subjects.md), so the preview and the render show them moving.
//
// Hooks into app.js (plain globals, loaded before it): Subjects.setup() once, Subjects.fields()
// in requestBody(), Subjects.ready() where a path is needed, Subjects.draw() in redraw(),
// Subjects.reset() when a new photo is chosen. While the tool paints or tracks it takes the
// canvas's pointer events before app.js's path drawing sees them.

const Subjects = (() => {
  const MAX = 6; // the API's limit
  const COLOURS = ["#ff5a5a", "#4fb3ff", "#ffd23f", "#5ee07a", "#c77dff", "#ff9f40"];
  const BRUSH_CSS = 16; // the brush's radius, CSS pixels
  const list = []; // {id, colour, brush: [{x, y}], radius, outlines: [[[x, y]...]], path: [{x, y, t}], status}
  let mode = null; // null (the camera path), "paint" or "track": what the next stroke is
  let stroke = null; // the stroke being drawn: {pointerId, t0, points}
  let nextId = 1;

  const el = (id) => document.getElementById(id);
  const current = () => list[list.length - 1];
  const ready = () => list.some((s) => s.path);
  const round1 = (v) => Math.round(v * 10) / 10;

  function setup() {
    const panel = el("subjects");
    panel.innerHTML = `
      <button type="button" class="button" id="subject-add">Add a moving subject</button>
      <ul id="subject-list" class="subject-list" aria-label="Subjects"></ul>`;
    el("subject-add").addEventListener("click", () => {
      if (!state.bitmap || list.length >= MAX) return;
      if (current() && !current().path) list.pop(); // an unfinished one is replaced
      list.push({ id: nextId++, colour: unusedColour(), brush: [], radius: 0, outlines: null, path: null,
                  status: "Paint over the thing that moves." });
      mode = "paint";
      changed(false);
    });
    const canvas = el("canvas");
    // Capture: these run before app.js's listeners on the canvas, and keep the stroke from them.
    canvas.addEventListener("pointerdown", down, { capture: true });
    canvas.addEventListener("pointermove", move, { capture: true });
    canvas.addEventListener("pointerup", up, { capture: true });
    canvas.addEventListener("pointercancel", up, { capture: true });
    showList();
  }

  function unusedColour() {
    const used = new Set(list.map((s) => s.colour));
    return COLOURS.find((c) => !used.has(c)) || COLOURS[0];
  }

  function down(e) {
    if (!mode || !state.bitmap || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    e.stopImmediatePropagation();
    el("canvas").setPointerCapture(e.pointerId);
    unsay("photo");
    stroke = { pointerId: e.pointerId, t0: e.timeStamp, points: [{ ...canvasPoint(e), t: 0 }] };
    if (mode === "paint") current().radius = BRUSH_CSS * unitsPerCssPx();
    redraw();
  }

  function move(e) {
    if (!stroke || e.pointerId !== stroke.pointerId) return;
    e.stopImmediatePropagation();
    extendStroke(stroke, e); // app.js: the path tool's own sampling
    redraw();
  }

  function up(e) {
    if (!stroke || e.pointerId !== stroke.pointerId) return;
    e.stopImmediatePropagation();
    const points = stroke.points;
    stroke = null;
    const subject = current();
    if (mode === "paint") {
      subject.brush = subject.brush.concat(points.map(({ x, y }) => ({ x: round1(x), y: round1(y) })));
      refine(subject);
    } else if (mode === "track") {
      if (new Set(points.map((p) => `${p.x},${p.y}`)).size < 2) {
        subject.status = "That was a tap: drag from the subject to where it goes.";
      } else {
        subject.path = points.map((p) => ({ x: round1(p.x), y: round1(p.y), t: Math.round(p.t * 1000) / 1000 }));
        subject.status = "Moves along its path.";
        mode = null;
        changed(true);
        return;
      }
    }
    changed(false);
  }

  // The painted region refined to the object's edges, shown at once; then its path is drawn.
  async function refine(subject) {
    subject.status = "Finding its edges…";
    showList();
    const canvas = el("canvas");
    const form = new FormData();
    form.append("image", state.previewBlob, state.file.name || "photo");
    form.append("region", JSON.stringify(region(subject)));
    let response;
    try {
      response = await apiFetch("v1/subjects/outline", { method: "POST", body: form });
    } catch (err) {
      say("photo", `Could not reach the server for the outline: ${err.message}`);
      return remove(subject.id);
    }
    if (!list.includes(subject)) return; // removed meanwhile
    if (!response.ok) {
      say("photo", await apiError(response));
      return remove(subject.id);
    }
    const answer = await response.json();
    const k = canvas.width / answer.canvas.width;
    subject.outlines = answer.outlines.map((o) => o.map(([x, y]) => [x * k, y * k]));
    subject.status = "Now draw where it goes, from the subject.";
    if (current() === subject && !subject.path) mode = "track";
    changed(false);
  }

  function region(subject) {
    const canvas = el("canvas");
    return { canvas: { width: canvas.width, height: canvas.height }, brush: subject.brush,
             radius: round1(subject.radius) };
  }

  function remove(id) {
    const i = list.findIndex((s) => s.id === id);
    if (i < 0) return;
    const wasCurrent = i === list.length - 1;
    list.splice(i, 1);
    if (wasCurrent) mode = null;
    changed(true);
  }

  // changedRequest: the request changed (a subject finished or went): preview again.
  function changed(changedRequest) {
    showList();
    redraw();
    updateButtons();
    if (!changedRequest) return;
    state.preview = null;
    if (ready() || distinctPoints(currentPath()) >= 2) schedulePreview(0);
    else resetPreview("Draw a path to see the camera move.");
  }

  function showList() {
    const ul = el("subject-list");
    if (!ul) return;
    ul.replaceChildren(...list.map((s, i) => {
      const li = document.createElement("li");
      li.className = "subject";
      li.dataset.id = s.id;
      li.innerHTML = `<span class="swatch" style="background:${s.colour}"></span>
        <span class="subject-name">Subject ${i + 1}</span> <span class="subject-status"></span>
        <button type="button" class="subject-remove" aria-label="Remove subject ${i + 1}">×</button>`;
      li.querySelector(".subject-status").textContent = s.status;
      li.querySelector(".subject-remove").addEventListener("click", () => remove(s.id));
      return li;
    }));
    el("subject-add").disabled = !state.bitmap || list.length >= MAX;
    const busy = mode === "paint" ? "paint" : mode === "track" ? "track" : "";
    el("canvas").dataset.subjectTool = busy;
  }

  function draw(ctx, u) {
    for (const s of list) {
      ctx.save();
      if (s.outlines) {
        ctx.fillStyle = s.colour + "55";
        ctx.strokeStyle = s.colour;
        ctx.lineWidth = 2 * u;
        for (const o of s.outlines) {
          ctx.beginPath();
          o.forEach(([x, y], j) => (j ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
          ctx.closePath();
          ctx.fill();
          ctx.stroke();
        }
      } else if (s.brush.length) {
        brushLine(ctx, s.brush, s.radius, s.colour + "66");
      }
      if (s.path) arrow(ctx, s.path, u, s.colour);
      ctx.restore();
    }
    if (stroke && mode === "paint") brushLine(ctx, stroke.points, current().radius, current().colour + "66");
    if (stroke && mode === "track") arrow(ctx, stroke.points, u, current().colour);
  }

  function brushLine(ctx, pts, radius, colour) {
    ctx.save();
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.lineWidth = 2 * radius;
    ctx.strokeStyle = colour;
    ctx.beginPath();
    pts.forEach((p, j) => (j ? ctx.lineTo(p.x, p.y) : ctx.moveTo(p.x, p.y)));
    if (pts.length === 1) ctx.lineTo(pts[0].x + 0.01, pts[0].y);
    ctx.stroke();
    ctx.restore();
  }

  function arrow(ctx, pts, u, colour) {
    if (pts.length < 2) return;
    strokeLine(ctx, pts, 6 * u, "rgba(0,0,0,0.55)", [6 * u, 4 * u]);
    strokeLine(ctx, pts, 3 * u, colour, [6 * u, 4 * u]);
    const a = pts[pts.length - 2], b = pts[pts.length - 1];
    const ang = Math.atan2(b.y - a.y, b.x - a.x), len = 14 * u;
    ctx.save();
    ctx.fillStyle = colour;
    ctx.beginPath();
    ctx.moveTo(b.x, b.y);
    ctx.lineTo(b.x - len * Math.cos(ang - 0.45), b.y - len * Math.sin(ang - 0.45));
    ctx.lineTo(b.x - len * Math.cos(ang + 0.45), b.y - len * Math.sin(ang + 0.45));
    ctx.closePath();
    ctx.fill();
    ctx.restore();
  }

  // The request's `subjects`: the finished ones (a region and a path), on the canvas's grid.
  function fields() {
    const canvas = el("canvas");
    const done = list.filter((s) => s.path);
    if (!done.length) return {};
    return { subjects: done.map((s) => ({ region: region(s),
      path: { canvas: { width: canvas.width, height: canvas.height }, points: s.path } })) };
  }

  function reset() {
    list.length = 0;
    mode = null;
    stroke = null;
    showList();
  }

  return { setup, fields, ready, draw, reset, list, get mode() { return mode; } };
})();
