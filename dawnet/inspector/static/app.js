// dawnet inspector page: draw, paste and augment an image; show the model's feature maps, output and the
// per-channel change the server computes (dawnet.diagnose). Plain JS, no libraries, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const state = { info: null, last: null, zoom: 4, tool: "pen", busy: 0, updates: 0, source: null, sourceZoom: 2,
  sourceBox: null, picked: null, rfBox: null, pending: null, inflight: false };
window.inspector = state; // read by the end-to-end test and handy in the console

// -- talking to the server --------------------------------------------------------------------------------
async function api(path, body, raw) {
  const headers = {};
  if (token) headers["X-Dawnet-Token"] = token;
  let init = { method: "GET", headers };
  if (raw) {
    init = { method: "POST", headers: { ...headers, "Content-Type": raw.type || "application/octet-stream",
      "X-Filename": (raw.name || "upload").replace(/[^\w.\- ]/g, "_") }, body: raw };
  } else if (body !== undefined) {
    init = { method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(body) };
  }
  const t0 = performance.now();
  state.busy += 1;
  $("busy").hidden = false;
  try {
    const resp = await fetch("api/" + path, init);
    const data = await resp.json().catch(() => ({ error: `the server answered ${resp.status} without JSON` }));
    if (!resp.ok) throw new Error(data.error || `HTTP ${resp.status}`);
    data._roundTrip = performance.now() - t0;
    showError(null);
    return data;
  } catch (e) {
    showError(e.message || String(e));
    throw e;
  } finally {
    state.busy -= 1;
    $("busy").hidden = state.busy === 0;
  }
}

function showError(message) {
  const el = $("error");
  el.hidden = !message;
  el.textContent = message || "";
}

// Only one update in flight; while it runs, later requests collapse into the latest one (sliders send many).
function update(path, body) {
  state.pending = { path, body };
  if (!state.inflight) pump();
}

async function pump() {
  while (state.pending) {
    const { path, body } = state.pending;
    state.pending = null;
    const payload = typeof body === "function" ? body() : body; // built at send time (live strokes)
    state.inflight = true;
    try {
      render(await api(path, payload));
    } catch (e) { /* shown by api() */ }
    state.inflight = false;
  }
}

// -- rendering an update ------------------------------------------------------------------------------------
function render(s) {
  state.last = s;
  state.updates += 1;
  drawImage(s.image);
  renderOutput(s.output);
  renderMaps(s.maps);
  renderDelta(s.delta, s.maps);
  const t = s.timing || {};
  const lat = $("latency");
  lat.textContent = `update: server ${fmt(t.total_ms)} ms (forward ${fmt(t.forward_ms)}) · round trip ` +
    `${fmt(s._roundTrip)} ms · target ${state.info.target_ms} ms`;
  lat.className = t.total_ms > state.info.target_ms ? "slow" : "fast";
  lat.dataset.serverMs = t.total_ms;
  $("sample-name").textContent = `${s.base} · ${s.ops} edit(s)`;
  document.body.dataset.updates = String(state.updates);
}

const fmt = (v) => (v === undefined || v === null ? "–" : Number(v).toFixed(v < 10 ? 1 : 0));

function drawImage(image) {
  const img = new Image();
  img.onload = () => {
    const wrap = $("canvas-wrap");
    const avail = Math.max(200, wrap.parentElement.clientWidth - 4);
    state.zoom = Math.max(1, Math.min(8, Math.floor(avail / image.width)));
    for (const c of [$("input"), $("overlay")]) {
      c.width = image.width * state.zoom;
      c.height = image.height * state.zoom;
    }
    const ctx = $("input").getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, 0, 0, image.width * state.zoom, image.height * state.zoom);
    drawOverlay();
  };
  img.src = image.png;
  state.imageSize = image;
}

function drawOverlay(preview) {
  const c = $("overlay");
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  const z = state.zoom;
  const rect = (b, style, dash) => {
    ctx.save();
    ctx.strokeStyle = style;
    ctx.lineWidth = 2;
    ctx.setLineDash(dash || []);
    ctx.strokeRect(b[1] * z + 1, b[0] * z + 1, (b[3] - b[1]) * z - 2, (b[2] - b[0]) * z - 2);
    ctx.restore();
  };
  if (state.rfBox) {
    rect(state.rfBox.box, "rgba(36,86,199,0.9)");
    if (state.rfBox.effective_box.join() !== state.rfBox.box.join()) rect(state.rfBox.effective_box, "#e07b00", [6, 4]);
  }
  const out = state.last && state.last.output;
  if (out && out.kind === "boxes") {
    for (const b of out.boxes) rect([b.box[1], b.box[0], b.box[3], b.box[2]], "rgba(27,127,59,0.9)");
  }
  if (preview) preview(ctx, z);
}

function confidenceColour(p) {
  if (p === null || p === undefined) return "transparent";
  const hue = Math.round(120 * Math.max(0, Math.min(1, p)));
  return `hsl(${hue}, 70%, 45%)`;
}

function renderOutput(out) {
  const el = $("output");
  el.textContent = "";
  el.dataset.text = "";
  $("original-output").textContent = "";
  if (!out) return;
  if (out.kind === "error") {
    const e = document.createElement("div");
    e.className = "error";
    e.textContent = "the model cannot read this image: " + out.error;
    el.appendChild(e);
    el.dataset.text = "";
    return;
  }
  if (out.kind === "text") {
    for (const ch of out.chars) {
      const s = document.createElement("span");
      s.className = "ch";
      s.textContent = ch.c;
      s.style.borderBottomColor = confidenceColour(ch.p);
      s.title = ch.p === null ? "no confidence" : `p = ${ch.p.toFixed(3)}`;
      el.appendChild(s);
    }
    if (out.text !== out.greedy) {
      const d = document.createElement("div");
      d.className = "muted";
      d.textContent = `decoder: ${out.text}`;
      el.appendChild(d);
    }
    if (!out.chars.length) el.appendChild(document.createTextNode("∅ (nothing read)"));
    el.dataset.text = out.text;
    if (out.original) $("original-output").textContent = `original image: “${out.original.text}”`;
  } else if (out.kind === "topk") {
    const box = document.createElement("div");
    box.className = "topk";
    for (const it of out.items) {
      const row = document.createElement("div");
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.round(it.p * 200)}px`;
      row.append(bar, ` ${it.label}  ${(100 * it.p).toFixed(1)}%`);
      box.appendChild(row);
    }
    el.appendChild(box);
    el.dataset.text = out.items.map((i) => i.label).join(",");
    if (out.original) $("original-output").textContent = `original image: ${out.original.top.label}`;
  } else if (out.kind === "boxes") {
    el.textContent = `${out.count} box(es)`;
    el.dataset.text = JSON.stringify(out.boxes.map((b) => b.box));
    if (out.original) $("original-output").textContent = `original image: ${out.original.count} box(es)`;
  } else {
    el.textContent = `output ${JSON.stringify(out.shape)}: mean ${out.mean.toFixed(4)}, std ${out.std.toFixed(4)}`;
    el.dataset.text = el.textContent;
  }
}

function lut(name) {
  return state.info.colormaps[name];
}

function renderMaps(m) {
  const box = $("maps");
  box.textContent = "";
  if (!m) return;
  const bytes = Uint8Array.from(atob(m.data), (c) => c.charCodeAt(0));
  const map = lut("viridis");
  const n = m.height * m.width;
  // display size: maps about 180 px wide, sequences as strips
  const sx = Math.max(1, Math.floor(180 / m.width));
  const sy = m.sequence ? 14 : sx;
  m.channels.forEach((ch, i) => {
    const cell = document.createElement("div");
    cell.className = "cell" + (state.picked === ch ? " picked" : "");
    const c = document.createElement("canvas");
    c.width = m.width;
    c.height = m.height;
    c.style.width = `${m.width * sx}px`;
    c.style.height = `${m.height * sy}px`;
    c.dataset.channel = ch;
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(m.width, m.height);
    for (let k = 0; k < n; k++) {
      const q = bytes[i * n + k];
      img.data[4 * k] = map[3 * q];
      img.data[4 * k + 1] = map[3 * q + 1];
      img.data[4 * k + 2] = map[3 * q + 2];
      img.data[4 * k + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    c.addEventListener("click", (ev) => {
      const col = Math.min(m.width - 1, Math.floor(ev.offsetX / sx));
      const row = Math.min(m.height - 1, Math.floor(ev.offsetY / sy));
      pickCell(ch, m.sequence ? [col] : [row, col]);
    });
    const label = document.createElement("span");
    label.textContent = `c${ch} · ${m.min[i].toFixed(2)}…${m.max[i].toFixed(2)}`;
    cell.append(c, label);
    box.appendChild(cell);
  });
  $("cmin").textContent = m.min.length ? Math.min(...m.min).toFixed(3) : "";
  $("cmax").textContent = m.max.length ? Math.max(...m.max).toFixed(3) : "";
  $("maps-info").textContent = `${m.layer}: ${m.channels.length} of ${m.total_channels} channels, ` +
    `${m.sequence ? m.width + " steps" : m.height + "×" + m.width}`;
  box.dataset.layer = m.layer;
}

function renderColorbar() {
  const c = $("colorbar");
  const ctx = c.getContext("2d");
  const img = ctx.createImageData(256, 1);
  const map = lut("viridis");
  for (let i = 0; i < 256; i++) {
    img.data.set([map[3 * i], map[3 * i + 1], map[3 * i + 2], 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
}

function renderDelta(delta, maps) {
  const c = $("delta");
  const w = (c.width = Math.max(300, c.clientWidth || 600));
  const h = c.height;
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  c._values = null;
  if (!delta) {
    ctx.fillStyle = "#6b6b70";
    ctx.fillText("no comparison (the original image cannot be read, or shapes differ)", 8, 20);
    return;
  }
  const v = delta.mean_abs_change;
  const max = Math.max(1e-12, ...v);
  const bw = w / v.length;
  const shown = new Set(maps ? maps.channels : []);
  v.forEach((x, i) => {
    ctx.fillStyle = i === state.picked ? "#e07b00" : shown.has(i) ? "#2456c7" : "#9aa7c7";
    const bh = (x / max) * (h - 14);
    ctx.fillRect(i * bw, h - bh, Math.max(1, bw - (bw > 3 ? 1 : 0)), bh);
  });
  ctx.fillStyle = "#1d1d1f";
  ctx.fillText(`max ${max.toPrecision(3)}`, 4, 10);
  c._values = v;
}

// -- receptive fields and top patches ----------------------------------------------------------------------
async function pickCell(channel, position) {
  state.picked = channel;
  const layer = $("layer").value;
  try {
    const rf = await api("rf", { layer, position });
    state.rfBox = rf;
    drawOverlay();
    const axes = Object.entries(rf.axes).map(([a, r]) =>
      `${a}: ${r.size === null ? "whole axis" : r.size + " px"} (jump ${r.jump})`).join(", ");
    $("rf-info").textContent = `c${channel} at ${JSON.stringify(position)}: receptive field ` +
      `[y ${rf.box[0]}–${rf.box[2]}, x ${rf.box[1]}–${rf.box[3]}] (${rf.method}; ${axes})` +
      (rf.effective_box.join() !== rf.box.join() ? "; dashed: effective field (90% of gradient mass)" : "");
  } catch (e) { /* shown */ }
  document.querySelectorAll(".cell").forEach((el) =>
    el.classList.toggle("picked", el.querySelector("canvas").dataset.channel === String(channel)));
  if (state.last) renderDelta(state.last.delta, state.last.maps);
  loadTop(channel);
}

async function loadTop(channel) {
  const box = $("top");
  $("top-title").textContent = `top patches of channel ${channel}`;
  if (!state.info.samples) {
    box.textContent = "start the inspector with --data DIR to rank patches over a data set";
    return;
  }
  box.textContent = "ranking the data set…";
  try {
    const r = await api("top", { layer: $("layer").value, channel, k: 9 });
    box.textContent = "";
    for (const p of r.patches) {
      const f = document.createElement("figure");
      const img = document.createElement("img");
      img.src = p.png;
      img.alt = `sample ${p.sample}`;
      img.title = `${p.name} box ${p.box}`;
      const cap = document.createElement("figcaption");
      cap.textContent = `#${p.sample} · ${p.value.toFixed(2)}`;
      f.append(img, cap);
      f.addEventListener("click", () => loadSample(p.sample));
      box.appendChild(f);
    }
    $("top-title").textContent = `top patches of channel ${channel} over ${r.images} images`;
  } catch (e) {
    box.textContent = "";
  }
}

// -- drawing on the image ---------------------------------------------------------------------------------
function imagePoint(ev, canvas, zoom) {
  const r = canvas.getBoundingClientRect();
  return [(ev.clientY - r.top) / zoom - 0.5, (ev.clientX - r.left) / zoom - 0.5];
}

function setupDrawing() {
  const c = $("overlay");
  let points = null;
  let start = null;
  let sent = 0; // points of the current stroke already sent
  // The stroke goes to the server while it is drawn: each request carries the points since the last one
  // (plus that one, so the pieces join), and "continue" makes them one edit for undo.
  const strokeBody = () => {
    const from = Math.max(0, sent - 1);
    const body = { op: "stroke", points: points.slice(from), width: Number($("pen-width").value),
      mode: state.tool === "pen" ? "pen" : "eraser", continue: sent > 0 };
    sent = points.length;
    return body;
  };
  c.addEventListener("pointerdown", (ev) => {
    c.setPointerCapture(ev.pointerId);
    const p = imagePoint(ev, c, state.zoom);
    if (state.tool === "pen" || state.tool === "eraser") {
      points = [p];
      sent = 0;
    } else if (state.tool === "erase-box") {
      start = p;
    } else if (state.tool === "paste") {
      if (!state.sourceBox) {
        showError("select a region on the source image first (open “cut & paste”)");
        return;
      }
      update("edit", { op: "paste", box: state.sourceBox, at: [Math.round(p[0]), Math.round(p[1])] });
    }
  });
  c.addEventListener("pointermove", (ev) => {
    const p = imagePoint(ev, c, state.zoom);
    if (points) {
      points.push(p);
      if (!state.inflight && $("live").checked) update("edit", strokeBody);
      const ink = state.tool === "pen" ? "#000" : "#fff";
      const width = Number($("pen-width").value);
      drawOverlay((ctx, z) => {
        ctx.strokeStyle = ink;
        ctx.lineWidth = width * z;
        ctx.lineCap = ctx.lineJoin = "round";
        ctx.beginPath();
        points.forEach(([y, x], i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, (x + 0.5) * z, (y + 0.5) * z));
        ctx.stroke();
      });
    } else if (start) {
      drawOverlay((ctx, z) => {
        ctx.strokeStyle = "#b3261e";
        ctx.setLineDash([4, 3]);
        ctx.strokeRect(Math.min(start[1], p[1]) * z, Math.min(start[0], p[0]) * z,
          Math.abs(p[1] - start[1]) * z, Math.abs(p[0] - start[0]) * z);
      });
    } else if (state.tool === "paste" && state.sourceBox) {
      const b = state.sourceBox;
      drawOverlay((ctx, z) => {
        ctx.strokeStyle = "#2456c7";
        ctx.setLineDash([4, 3]);
        ctx.strokeRect(Math.round(p[1]) * z, Math.round(p[0]) * z, (b[3] - b[1]) * z, (b[2] - b[0]) * z);
      });
    }
  });
  const finish = (ev) => {
    const p = imagePoint(ev, c, state.zoom);
    if (points) {
      if (sent < points.length) update("edit", strokeBody()); // the rest, built now: a new stroke may follow
      points = null;
    } else if (start) {
      const box = [Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.max(start[0], p[0]) + 1,
        Math.max(start[1], p[1]) + 1].map(Math.round);
      start = null;
      update("edit", { op: "erase", box });
    }
  };
  c.addEventListener("pointerup", finish);
  c.addEventListener("pointercancel", () => { points = null; start = null; drawOverlay(); });
  document.querySelectorAll('input[name="tool"]').forEach((r) =>
    r.addEventListener("change", () => { state.tool = r.value; drawOverlay(); }));
  $("pen-width").addEventListener("input", () => { $("pen-width-value").textContent = $("pen-width").value; });
  $("undo").addEventListener("click", () => update("edit", { op: "undo" }));
  $("reset").addEventListener("click", () => update("edit", { op: "reset" }));
}

// -- the cut source ---------------------------------------------------------------------------------------
function showSource(src) {
  state.source = src;
  state.sourceBox = null;
  const img = new Image();
  img.onload = () => {
    const c = $("source");
    state.sourceZoom = Math.max(1, Math.min(6, Math.floor(Math.max(200, $("source-wrap").clientWidth - 4) / src.width)));
    c.width = src.width * state.sourceZoom;
    c.height = src.height * state.sourceZoom;
    state.sourceImage = img;
    drawSource();
  };
  img.src = src.png;
}

function drawSource(box) {
  const c = $("source");
  const ctx = c.getContext("2d");
  const z = state.sourceZoom;
  ctx.imageSmoothingEnabled = false;
  if (state.sourceImage) ctx.drawImage(state.sourceImage, 0, 0, c.width, c.height);
  const b = box || state.sourceBox;
  if (b) {
    ctx.strokeStyle = "#2456c7";
    ctx.lineWidth = 2;
    ctx.strokeRect(b[1] * z, b[0] * z, (b[3] - b[1]) * z, (b[2] - b[0]) * z);
  }
}

function setupSource() {
  const c = $("source");
  let start = null;
  const boxOf = (a, p) => [Math.min(a[0], p[0]), Math.min(a[1], p[1]), Math.max(a[0], p[0]) + 1,
    Math.max(a[1], p[1]) + 1].map(Math.round);
  c.addEventListener("pointerdown", (ev) => {
    if (!state.source) return;
    c.setPointerCapture(ev.pointerId);
    start = imagePoint(ev, c, state.sourceZoom);
  });
  c.addEventListener("pointermove", (ev) => {
    if (start) drawSource(boxOf(start, imagePoint(ev, c, state.sourceZoom)));
  });
  c.addEventListener("pointerup", (ev) => {
    if (!start) return;
    state.sourceBox = boxOf(start, imagePoint(ev, c, state.sourceZoom));
    start = null;
    drawSource();
    document.querySelector('input[name="tool"][value="paste"]').click();
  });
  $("source-current").addEventListener("click", async () => showSource(await api("source", { current: true })));
  $("source-sample").addEventListener("click", async () =>
    showSource(await api("source", { index: Number($("source-index").value) })));
  $("source-upload").addEventListener("change", async (ev) => {
    const f = ev.target.files[0];
    if (f) showSource(await api("upload?to=source", undefined, f));
  });
}

// -- samples, upload, sliders, view ------------------------------------------------------------------------
function loadSample(i) {
  $("sample-index").value = i;
  state.rfBox = null;
  update("sample", { index: i });
}

function setupSamples() {
  const n = state.info.samples;
  $("sample-index").max = Math.max(0, n - 1);
  $("sample-row").classList.toggle("nodata", !n);
  const step = (d) => {
    if (!n) { showError("no data set: start the inspector with --data DIR"); return; }
    loadSample((Number($("sample-index").value) + d + n) % n);
  };
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  $("sample-index").addEventListener("change", () => step(0));
  $("upload").addEventListener("change", async (ev) => {
    const f = ev.target.files[0];
    if (!f) return;
    state.rfBox = null;
    try { render(await api("upload", undefined, f)); } catch (e) { /* shown */ }
  });
}

function augmentValues() {
  const out = {};
  for (const name of Object.keys(state.info.ranges)) out[name] = Number($(`aug-${name}`).value);
  return out;
}

function setupAugment() {
  const box = $("augment");
  for (const [name, [lo, hi, step]] of Object.entries(state.info.ranges)) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    Object.assign(input, { type: "range", id: `aug-${name}`, min: lo, max: hi, step, value: state.info.augment[name] });
    const out = document.createElement("output");
    out.textContent = input.value;
    input.addEventListener("input", () => {
      out.textContent = input.value;
      update("view", { augment: augmentValues() });
    });
    label.append(name, input, out);
    box.appendChild(label);
  }
  $("augment-reset").addEventListener("click", () => {
    for (const [name, v] of Object.entries(state.info.augment)) {
      $(`aug-${name}`).value = v;
      $(`aug-${name}`).nextSibling.textContent = v;
    }
    update("view", { augment: augmentValues() });
  });
}

function parseChannels(text, max) {
  const out = [];
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = part.match(/^(\d+)(?:\s*-\s*(\d+))?$/);
    if (!m) throw new Error(`cannot read channels “${part}”: write e.g. 0-7, 12`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    for (let c = a; c <= b && out.length < 64; c++) if (c < max) out.push(c);
  }
  return out;
}

function setupView() {
  const sel = $("layer");
  for (const l of state.info.layers) {
    const o = document.createElement("option");
    o.value = l.name;
    o.textContent = `${l.name} (${l.type}, ${l.channels}×${l.shape.slice(1).join("×")})`;
    sel.appendChild(o);
  }
  sel.value = state.info.layer;
  const send = () => {
    const layer = state.info.layers.find((l) => l.name === sel.value);
    const body = { layer: sel.value, rank: $("rank").value, count: Number($("count").value), scale: $("scale").value };
    if (body.rank === "list") {
      try { body.channels = parseChannels($("channels").value, layer.channels); } catch (e) { showError(e.message); return; }
      if (!body.channels.length) { showError("list the channels to show, e.g. 0-7, 12"); return; }
    }
    state.rfBox = null;
    drawOverlay();
    update("view", body);
  };
  for (const id of ["layer", "rank", "count", "scale"]) $(id).addEventListener("change", send);
  $("channels").addEventListener("change", () => { $("rank").value = "list"; send(); });
  $("delta").addEventListener("click", (ev) => {
    const v = $("delta")._values;
    if (!v) return;
    const i = Math.min(v.length - 1, Math.floor((ev.offsetX / $("delta").clientWidth) * v.length));
    $("channels").value = String(i);
    $("rank").value = "list";
    state.picked = i;
    send();
    loadTop(i);
  });
}

async function main() {
  try {
    state.info = await api("info");
  } catch (e) {
    return;
  }
  $("model-name").textContent = `${state.info.name} (${state.info.kind})`;
  renderColorbar();
  setupDrawing();
  setupSource();
  setupSamples();
  setupAugment();
  setupView();
  update("state");
}

main();
