// flow's web page: the queue and history, a run's graph with live node
// states, its outputs, submit and cancel. Talks to the native API (/v1/).
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const FINISHED = new Set(["succeeded", "failed", "interrupted"]);
const BOX_W = 180, BOX_H = 58, GAP_X = 60, GAP_Y = 22, PAD = 10;
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
let selected = null;      // the id of the run shown
let shown = null;         // its last state from the API
let stream = null;        // its EventSource while it runs
let refetchTimer = null;
let parsedParams = {};    // the pasted graph's params (name -> default value)

/// A URL carrying the token, for what cannot send headers (EventSource, img).
function withToken(url) {
  if (!TOKEN) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

/// A request to the API; the JSON answer, or an Error with `status` and `body`.
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (TOKEN) headers.Authorization = "Bearer " + TOKEN;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { message: text }; }
  if (!response.ok) {
    const error = new Error((body && (body.message || body.error)) || response.statusText);
    error.status = response.status;
    error.body = body;
    throw error;
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function when(t) {
  if (!t) return "";
  const d = new Date(typeof t === "number" ? (t > 1e12 ? t : t * 1000) : t);
  return isNaN(d) ? String(t) : d.toLocaleTimeString();
}

// ---- queue and history -------------------------------------------------

async function refreshRuns() {
  try {
    const { runs } = await api("/v1/runs");
    $("connection").textContent = "connected";
    renderRuns(runs || []);
  } catch (e) {
    $("connection").textContent = e.status === 401 ? "a token is required: open this page as /?token=TOKEN" : "server unreachable: " + e.message;
  }
}

function renderRuns(runs) {
  $("runs-empty").hidden = runs.length > 0;
  const list = $("runs");
  list.replaceChildren(...runs.map((run) => {
    const label = run.name || "run " + (run.number ?? run.run_id.slice(0, 8));
    const open = el("button", { type: "button", class: "open", "aria-label": "Show " + label + " (" + run.state + ")" },
      el("span", { text: label }),
      el("span", { class: "when", text: when(run.finished_at || run.started_at || run.submitted_at) }));
    open.addEventListener("click", () => select(run.run_id));
    const item = el("li", { "data-run": run.run_id, "data-state": run.state, class: run.run_id === selected ? "selected" : null },
      open, el("span", { class: "badge " + run.state, text: run.state }));
    if (!FINISHED.has(run.state)) {
      const cancel = el("button", { type: "button", class: "danger cancel", "aria-label": "Cancel " + label, text: "Cancel" });
      cancel.addEventListener("click", () => cancelRun(run.run_id, cancel));
      item.append(cancel);
    }
    return item;
  }));
  if (selected && shown && !FINISHED.has(shown.state)) {
    const mine = runs.find((r) => r.run_id === selected);
    if (mine && mine.state !== shown.state) scheduleRefetch(0);
  }
}

async function cancelRun(id, button) {
  if (button) button.disabled = true;
  try {
    await api("/v1/runs/" + encodeURIComponent(id) + "/cancel", { method: "POST" });
  } catch (e) {
    if (button) button.disabled = false;
    alert("Cannot cancel: " + e.message);
  }
  refreshRuns();
  if (id === selected) scheduleRefetch(200);
}

// ---- one run: graph, live states, outputs ------------------------------

async function select(id) {
  if (stream) { stream.close(); stream = null; }
  selected = id;
  shown = null;
  for (const li of $("runs").children) li.classList.toggle("selected", li.dataset.run === id);
  $("graph").replaceChildren();
  $("outputs").replaceChildren();
  await fetchRun();
  if (shown && !FINISHED.has(shown.state)) listen(id);
}

async function fetchRun() {
  const id = selected;
  if (!id) return;
  let run;
  try {
    run = await api("/v1/runs/" + encodeURIComponent(id));
  } catch (e) {
    if (id !== selected) return;
    $("run-title").textContent = "Run " + id;
    $("run-summary").textContent = e.status === 404 ? "This run is no longer known to the server." : "Cannot load the run: " + e.message;
    $("run-cancel").hidden = true;
    return;
  }
  if (id !== selected) return;
  const first = !shown;
  shown = run;
  renderRunHeader(run);
  if (first || !$("graph").firstChild) drawGraph(run.graph.nodes);
  for (const [node, state] of Object.entries(run.nodes || {})) applyNodeState(node, state);
  renderOutputs(run.outputs || []);
}

function renderRunHeader(run) {
  $("run-title").textContent = run.name || "Run " + run.run_id;
  $("run-summary").textContent = "State: " + run.state + " · id " + run.run_id;
  $("run").dataset.state = run.state;
  $("run").dataset.run = run.run_id;
  const cancel = $("run-cancel");
  cancel.hidden = FINISHED.has(run.state);
  cancel.disabled = false;
  const error = $("run-error");
  error.hidden = !run.error;
  error.textContent = run.error || "";
}

function scheduleRefetch(delay) {
  clearTimeout(refetchTimer);
  refetchTimer = setTimeout(fetchRun, delay);
}

/// Follows the run's events (the `flow run --json` lines) as they happen.
function listen(id) {
  const source = new EventSource(withToken("/v1/runs/" + encodeURIComponent(id) + "/events"));
  stream = source;
  source.onmessage = (message) => {
    if (id !== selected) return;
    let event;
    try { event = JSON.parse(message.data); } catch (_) { return; }
    onEvent(event);
    if (event.event === "run_finished") { source.close(); if (stream === source) stream = null; }
  };
  source.onerror = () => {
    // The stream ends after run_finished, or the connection dropped: the
    // run's state from the API is the truth either way.
    source.close();
    if (stream === source) stream = null;
    scheduleRefetch(300);
  };
}

function onEvent(e) {
  switch (e.event) {
    case "run_started":
      if (shown) { shown.state = "running"; renderRunHeader(shown); }
      break;
    case "node_cached": applyNodeState(e.node, { state: "cached" }); break;
    case "node_started": applyNodeState(e.node, { state: "running", progress: null }); break;
    case "progress": applyNodeState(e.node, { state: "running", progress: { done: e.step, total: e.total } }); break;
    case "node_finished":
      applyNodeState(e.node, { state: e.status === "cached" ? "cached" : "done", time_ms: e.ms });
      break;
    case "node_failed": applyNodeState(e.node, { state: "failed", error: e.error, time_ms: e.ms }); break;
    case "node_skipped": applyNodeState(e.node, { state: "skipped", why: e.cause }); break;
    case "output": scheduleRefetch(150); break;
    case "run_finished": scheduleRefetch(0); refreshRuns(); break;
    default: break;
  }
}

/// Longest-path layers: a node sits one column right of its deepest input.
function layers(nodes) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const depth = new Map();
  const visiting = new Set();
  const walk = (id) => {
    if (depth.has(id)) return depth.get(id);
    if (visiting.has(id) || !byId.has(id)) return 0;
    visiting.add(id);
    const ups = byId.get(id).inputs_from || [];
    const d = ups.length ? 1 + Math.max(...ups.map(walk)) : 0;
    visiting.delete(id);
    depth.set(id, d);
    return d;
  };
  nodes.forEach((n) => walk(n.id));
  const columns = [];
  for (const n of nodes) (columns[depth.get(n.id)] ||= []).push(n);
  // Within a column, nodes follow the mean row of their inputs (fewer crossings).
  const row = new Map();
  columns.forEach((column, c) => {
    if (c > 0) {
      const key = (n) => {
        const rows = (n.inputs_from || []).map((u) => row.get(u)).filter((r) => r !== undefined);
        return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 0;
      };
      column.sort((a, b) => key(a) - key(b));
    }
    column.forEach((n, r) => row.set(n.id, r));
  });
  return { columns, row, depth };
}

function drawGraph(nodes) {
  const { columns, row, depth } = layers(nodes);
  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const width = PAD * 2 + columns.length * BOX_W + Math.max(0, columns.length - 1) * GAP_X;
  const height = PAD * 2 + tallest * BOX_H + (tallest - 1) * GAP_Y;
  const place = (id) => {
    const c = depth.get(id), column = columns[c];
    const offset = ((tallest - column.length) * (BOX_H + GAP_Y)) / 2;
    return { x: PAD + c * (BOX_W + GAP_X), y: PAD + offset + row.get(id) * (BOX_H + GAP_Y) };
  };
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
  const title = svg("title");
  title.textContent = "Graph of " + nodes.length + " nodes";
  root.append(title);
  for (const n of nodes) {
    const to = place(n.id);
    for (const up of n.inputs_from || []) {
      if (!depth.has(up)) continue;
      const from = place(up);
      const x1 = from.x + BOX_W, y1 = from.y + BOX_H / 2, x2 = to.x, y2 = to.y + BOX_H / 2, mid = (x1 + x2) / 2;
      root.append(svg("path", { class: "edge", "data-from": up, "data-to": n.id, d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
    }
  }
  for (const n of nodes) {
    const { x, y } = place(n.id);
    const g = svg("g", { class: "node", "data-node": n.id, "data-state": "pending", transform: `translate(${x},${y})` });
    const tip = svg("title");
    tip.textContent = n.id + " (" + n.op + ")";
    const op = svg("text", { class: "op", x: 8, y: 16 });
    op.textContent = clip(n.op, 24);
    const id = svg("text", { class: "id", x: 8, y: 31 });
    id.textContent = clip(n.id, 26);
    const status = svg("text", { class: "status", x: 8, y: 46 });
    status.textContent = "pending";
    const barBg = svg("rect", { class: "bar-bg", x: 8, y: 50, width: BOX_W - 16, height: 4, rx: 2, visibility: "hidden" });
    const bar = svg("rect", { class: "bar", x: 8, y: 50, width: 0, height: 4, rx: 2, visibility: "hidden" });
    g.append(tip, svg("rect", { class: "box", width: BOX_W, height: BOX_H, rx: 6 }), op, id, status, barBg, bar);
    root.append(g);
  }
  $("graph").replaceChildren(root);
}

function clip(text, n) {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

/// One node's box shows `state` (the API's node state, or a part of it).
function applyNodeState(id, state) {
  const g = document.querySelector(`#graph [data-node="${CSS.escape(id)}"]`);
  if (!g) return;
  const name = state.state || g.dataset.state;
  g.dataset.state = name;
  const progress = state.progress;
  const bar = g.querySelector(".bar"), barBg = g.querySelector(".bar-bg");
  const running = name === "running";
  let text = name;
  if (running && progress && progress.total) {
    const share = Math.min(1, progress.done / progress.total);
    bar.setAttribute("width", String((BOX_W - 16) * share));
    text = `running ${progress.done}/${progress.total}`;
  } else if (running) {
    bar.setAttribute("width", "0");
  }
  bar.setAttribute("visibility", running && progress ? "visible" : "hidden");
  barBg.setAttribute("visibility", running && progress ? "visible" : "hidden");
  if (name === "done" && state.time_ms != null) text = "done in " + formatMs(state.time_ms);
  if (name === "failed") text = "failed: " + (state.error || "");
  if (name === "skipped" && state.why) text = "skipped: " + state.why;
  const status = g.querySelector(".status");
  status.textContent = clip(text, 30);
  g.querySelector("title").textContent = g.dataset.node + ": " + text;
}

function formatMs(ms) {
  return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
}

function renderOutputs(outputs) {
  $("outputs-title").hidden = outputs.length === 0;
  $("outputs").replaceChildren(...outputs.map((o) => {
    const caption = el("figcaption", { text: o.node + " → " + (o.path || o.kind) });
    if (o.kind === "image" && o.url) {
      return el("figure", { "data-node": o.node }, el("img", { src: withToken(o.url), alt: "Image from node " + o.node, loading: "lazy" }), caption);
    }
    if (o.kind === "text") {
      return el("figure", { "data-node": o.node }, el("pre", { text: o.text ?? "" }), caption);
    }
    const link = o.url ? el("a", { href: withToken(o.url), text: o.path || "file" }) : el("span", { text: o.path || "" });
    return el("figure", { "data-node": o.node }, link, el("figcaption", { text: o.node }));
  }));
}

// ---- submit ------------------------------------------------------------

/// The params of a pasted graph: a JSON flow graph's `params`, or the
/// top-level `params:` block of scalars of a YAML one. ComfyUI workflows
/// have none.
function readParams(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("{")) {
    try {
      const doc = JSON.parse(trimmed);
      return doc && typeof doc.params === "object" && !Array.isArray(doc.params) ? scalars(doc.params) : {};
    } catch (_) { return {}; }
  }
  const lines = text.split(/\r?\n/);
  const start = lines.findIndex((l) => /^params:\s*(#.*)?$/.test(l));
  const out = {};
  if (start < 0) {
    const inline = lines.find((l) => /^params:\s*\{.*\}\s*$/.test(l));
    if (inline) splitInline(inline.replace(/^params:\s*\{/, "").replace(/\}\s*$/, "")).forEach(([k, v]) => (out[k] = yamlScalar(v)));
    return out;
  }
  let indent = null;
  for (const line of lines.slice(start + 1)) {
    if (/^\s*(#.*)?$/.test(line)) continue;
    const m = line.match(/^(\s+)([A-Za-z_][\w.-]*)\s*:\s*(.*)$/);
    if (!m) break;
    if (indent === null) indent = m[1].length;
    if (m[1].length !== indent) continue;
    out[m[2]] = yamlScalar(m[3]);
  }
  return out;
}

function scalars(map) {
  const out = {};
  for (const [k, v] of Object.entries(map)) if (v === null || typeof v !== "object") out[k] = v;
  return out;
}

function splitInline(body) {
  const parts = [];
  let depth = 0, quote = null, cur = "";
  for (const ch of body) {
    if (quote) { if (ch === quote) quote = null; cur += ch; continue; }
    if (ch === '"' || ch === "'") quote = ch;
    if (ch === "[" || ch === "{") depth++;
    if (ch === "]" || ch === "}") depth--;
    if (ch === "," && depth === 0) { parts.push(cur); cur = ""; continue; }
    cur += ch;
  }
  if (cur.trim()) parts.push(cur);
  return parts.map((p) => {
    const i = p.indexOf(":");
    return [p.slice(0, i).trim(), p.slice(i + 1)];
  }).filter(([k]) => k);
}

/// A YAML scalar as JSON would have it (strings, numbers, booleans, null).
function yamlScalar(raw) {
  let v = raw.trim();
  if (v.startsWith('"')) {
    try { return JSON.parse(v.match(/^"(?:[^"\\]|\\.)*"/)[0]); } catch (_) { return v.slice(1, -1); }
  }
  if (v.startsWith("'")) {
    const m = v.match(/^'((?:[^']|'')*)'/);
    return m ? m[1].replace(/''/g, "'") : v;
  }
  v = v.replace(/\s+#.*$/, "").trim();
  if (/^(true|false)$/i.test(v)) return v.toLowerCase() === "true";
  if (/^(null|~)?$/.test(v)) return null;
  if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v)) return Number(v);
  return v;
}

function renderParams(params) {
  parsedParams = params;
  const names = Object.keys(params);
  $("params").hidden = names.length === 0;
  $("params-fields").replaceChildren(...names.map((name) => {
    const value = params[name];
    const id = "param-" + name;
    if (typeof value === "boolean") {
      const box = el("input", { type: "checkbox", id, name, "data-param": name });
      box.checked = value;
      return el("div", { class: "checkbox" }, box, el("label", { for: id, text: name }));
    }
    const input = el("input", {
      type: typeof value === "number" ? "number" : "text", id, name, "data-param": name,
      step: typeof value === "number" ? "any" : null,
    });
    input.value = value === null ? "" : String(value);
    return el("div", {}, el("label", { for: id, text: name }), input);
  }));
}

/// The params that differ from the graph's own values, typed like them.
function formParams() {
  const out = {};
  for (const input of $("params-fields").querySelectorAll("[data-param]")) {
    const name = input.dataset.param;
    const original = parsedParams[name];
    let value;
    if (input.type === "checkbox") value = input.checked;
    else if (typeof original === "number") {
      if (input.value.trim() === "" || isNaN(Number(input.value))) continue;
      value = Number(input.value);
    } else value = input.value;
    if (value !== original) out[name] = value;
  }
  return out;
}

async function submit(event) {
  event.preventDefault();
  const error = $("submit-error");
  error.hidden = true;
  const graph = $("graph-text").value;
  if (!graph.trim()) {
    error.textContent = "Paste or drop a graph first.";
    error.hidden = false;
    return;
  }
  const body = { graph, params: formParams() };
  const name = $("run-name").value.trim();
  if (name) body.name = name;
  const button = $("submit-button");
  button.disabled = true;
  try {
    const answer = await api("/v1/runs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    await refreshRuns();
    select(answer.run_id);
  } catch (e) {
    const b = e.body || {};
    const comfy = b.comfy_errors ? "\n" + JSON.stringify(b.comfy_errors, null, 2) : "";
    error.textContent = (b.rendered || b.message || e.message) + comfy;
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

function setupDrop(area) {
  area.addEventListener("dragover", (e) => { e.preventDefault(); area.classList.add("dragging"); });
  area.addEventListener("dragleave", () => area.classList.remove("dragging"));
  area.addEventListener("drop", async (e) => {
    e.preventDefault();
    area.classList.remove("dragging");
    const file = e.dataTransfer.files[0];
    const text = file ? await file.text() : e.dataTransfer.getData("text");
    if (!text) return;
    area.value = text;
    renderParams(readParams(text));
    if (file && !$("run-name").value) $("run-name").value = file.name;
  });
}

function start() {
  const area = $("graph-text");
  area.addEventListener("input", () => renderParams(readParams(area.value)));
  setupDrop(area);
  $("submit-form").addEventListener("submit", submit);
  $("run-cancel").addEventListener("click", () => selected && cancelRun(selected, $("run-cancel")));
  refreshRuns();
  setInterval(refreshRuns, 1000);
}

start();
