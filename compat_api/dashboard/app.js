// FlowTime Live dashboard (SPEC §11): the topology of one run with live colours and sparklines,
// its warnings, and the stream connection's epoch, seq and lag. Plain ES module, no dependencies.
//
// Data flow: REST loads the run list, the graph and `state/live`; the WebSocket (SPEC §7) then
// subscribes with the cursor {epoch, seq} of that state, so it continues without a gap, and on
// every reconnect resumes from the last seq seen. Seq'd events are applied idempotently (a bin's
// value is set, not appended), so a replay that overlaps what we hold is harmless.

const SVG = "http://www.w3.org/2000/svg"; // the XML namespace name, never fetched
const TOKEN_KEY = "flowtime.token";
const NODE_W = 168, NODE_H = 64, GAP_X = 80, GAP_Y = 36, MARGIN = 24;
const SPARK_H = 22, DEFAULT_WINDOW_BINS = 288;
const GAP_GRACE_MS = 3000; // a missing seq not listed in a later `skipped` by then is a gap
const AUTH_CLOSE = new Set([4401, 4403, 4408]);

const $ = (id) => document.getElementById(id);

// ---- state --------------------------------------------------------------------------------------
const run = {
  id: null, epoch: null, seq: 0, status: null, lastBin: null, watermark: null, lagBins: null,
  windowBins: DEFAULT_WINDOW_BINS,
  nodes: new Map(),    // id -> {id, kind, color, colorReason, colorBin, values: Map(bin -> number|null)}
  warnings: new Map(), // key -> warning
  missing: new Set(), missingSince: 0, gaps: 0,
};
const conn = { ws: null, connected: false, state: "offline", reconnects: 0, attempt: 0, timer: null };
const views = new Map(); // node id -> {g, spark}
const dirty = new Set(); // node ids whose sparkline needs drawing

window.__flowtime = {
  get runId() { return run.id; },
  get seq() { return run.seq; },
  get epoch() { return run.epoch; },
  get connected() { return conn.connected; },
  get connection() { return conn.state; },
  get reconnects() { return conn.reconnects; },
  get lastBin() { return run.lastBin; },
  get lagBins() { return run.lagBins; },
  get status() { return run.status; },
  get gaps() { return run.gaps; },
  get nodeColors() { return Object.fromEntries([...run.nodes].map(([id, n]) => [id, n.color])); },
  get warnings() { return [...run.warnings.values()]; },
};

// ---- REST ---------------------------------------------------------------------------------------
class AuthRequired extends Error {}

const token = () => sessionStorage.getItem(TOKEN_KEY);

async function api(path) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const res = await fetch(path, { headers });
  if (res.status === 401 || res.status === 403) throw new AuthRequired(`${path}: ${res.status}`);
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
}

function listOf(body, ...keys) {
  if (Array.isArray(body)) return body;
  for (const k of keys) if (Array.isArray(body?.[k])) return body[k];
  return [];
}

// ---- runs ---------------------------------------------------------------------------------------
async function loadRuns() {
  const runs = listOf(await api("/v1/runs"), "runs", "items");
  const select = $("run-select");
  select.replaceChildren(...runs.map((r) => {
    const id = r.runId ?? r.id;
    const opt = new Option(`${id} · ${r.mode ?? "?"} · ${r.status ?? "?"}`, id);
    opt.dataset.mode = r.mode ?? "";
    return opt;
  }));
  const wanted = new URLSearchParams(location.search).get("run");
  if (wanted && !runs.some((r) => (r.runId ?? r.id) === wanted)) runs.unshift({ runId: wanted });
  const live = runs.find((r) => r.mode === "live" && r.status === "live") ?? runs.find((r) => r.mode === "live");
  const chosen = wanted ?? (live ?? runs[0])?.runId ?? (live ?? runs[0])?.id;
  if (chosen) {
    select.value = chosen;
    await selectRun(chosen, runs.find((r) => (r.runId ?? r.id) === chosen));
  } else {
    showError("no runs yet");
  }
}

async function selectRun(id, summary) {
  disconnect();
  Object.assign(run, { id, epoch: null, seq: 0, status: summary?.status ?? null, lastBin: null,
                       watermark: null, lagBins: null, gaps: 0 });
  run.nodes.clear(); run.warnings.clear(); run.missing.clear(); reloadedFor.clear();
  conn.reconnects = 0;
  showError("");
  const graph = await api(`/v1/runs/${encodeURIComponent(id)}/graph`).catch(rethrowAuth);
  let state = null;
  try {
    state = await api(`/v1/runs/${encodeURIComponent(id)}/state/live`);
  } catch (err) {
    rethrowAuth(err);
    if (summary?.mode === "live") showError(`state: ${err.message}`);
  }
  if (run.id !== id) return; // another run was selected meanwhile
  drawGraph(graph, state);
  if (state) applyState(state);
  renderAll();
  if (!summary || summary.mode === "live" || state) connect();
  else setConn("closed", "not a live run");
}

function rethrowAuth(err) {
  if (err instanceof AuthRequired) throw err;
  return null;
}

// ---- applying state and events ------------------------------------------------------------------
function ensureNode(id, kind) {
  let n = run.nodes.get(id);
  if (!n) {
    n = { id, kind: kind ?? "", color: "gray", colorReason: null, colorBin: -1, values: new Map() };
    run.nodes.set(id, n);
  }
  if (kind) n.kind = kind;
  return n;
}

const sparkValue = (metrics) => metrics?.served ?? metrics?.arrivals ?? null;

/** Per-node arrays of the retained bins, wherever the state body keeps them. */
function windowSeries(state) {
  const out = new Map();
  const startBin = state.window?.startBin ?? 0;
  const wn = state.window?.nodes;
  const windowNodes = Array.isArray(wn) ? wn : Object.entries(wn ?? {}).map(([id, v]) => ({ id, ...v }));
  const sources = [...windowNodes, ...(state.nodes ?? [])];
  for (const n of sources) {
    const m = n.window?.metrics ?? n.metrics ?? {};
    const arr = Array.isArray(m.served) ? m.served : Array.isArray(m.arrivals) ? m.arrivals : null;
    if (arr && !out.has(n.id)) out.set(n.id, { startBin: n.window?.startBin ?? startBin, values: arr });
  }
  return out;
}

/** A full state (`state/live` body or a WebSocket snapshot) replaces what we hold. */
function applyState(state, envelope = {}) {
  run.epoch = envelope.epoch ?? state.epoch ?? run.epoch;
  run.seq = envelope.seq ?? state.seq ?? run.seq;
  run.status = state.status ?? run.status;
  run.lastBin = state.lastBin ?? state.bin?.index ?? run.lastBin;
  run.watermark = state.watermark ?? run.watermark;
  if (run.watermark != null && run.lastBin != null) run.lagBins = Math.max(0, run.watermark - run.lastBin);
  const w = state.window;
  if (w && Number.isInteger(w.startBin) && Number.isInteger(w.endBin)) run.windowBins = Math.max(run.windowBins, w.endBin - w.startBin + 1);
  run.missing.clear();

  const series = windowSeries(state);
  for (const n of state.nodes ?? []) {
    const node = ensureNode(n.id, n.kind);
    const color = n.derived?.color;
    node.color = typeof color === "string" ? color : "gray";
    node.colorReason = n.derived?.colorReason ?? null;
    node.colorBin = run.lastBin ?? -1;
    node.values = new Map();
    const s = series.get(n.id);
    if (s) s.values.forEach((v, i) => node.values.set(s.startBin + i, typeof v === "number" ? v : null));
    else if (run.lastBin != null) node.values.set(run.lastBin, sparkValue(n.metrics));
    dirty.add(n.id);
  }
  run.warnings.clear();
  for (const w of state.warnings ?? []) run.warnings.set(warningKey(w), w);
}

function applyRunUpdate(ev) {
  run.status = ev.status ?? run.status;
  run.lastBin = Math.max(run.lastBin ?? -1, ev.lastBin ?? ev.binIndex);
  run.watermark = ev.watermark ?? run.watermark;
  if (run.watermark != null) run.lagBins = Math.max(0, run.watermark - run.lastBin);
  for (const d of ev.deltas ?? []) {
    if (d.nodeId == null) continue; // a model without topology: series deltas, nothing to draw
    if (!views.has(d.nodeId)) scheduleGraphReload(d.nodeId);
    const node = ensureNode(d.nodeId, d.kind);
    // a delta without a colour (no derived values for it) keeps the colour we have
    if (ev.binIndex >= node.colorBin && typeof d.derived?.color === "string") {
      node.color = d.derived.color;
      node.colorReason = d.derived.colorReason ?? null;
      node.colorBin = ev.binIndex;
    }
    node.values.set(ev.binIndex, sparkValue(d.metrics));
    trimValues(node);
    dirty.add(d.nodeId);
  }
}

function trimValues(node) {
  const oldest = (run.lastBin ?? 0) - run.windowBins + 1;
  for (const bin of node.values.keys()) if (bin < oldest) node.values.delete(bin);
}

const warningKey = (w) => `${w.code}|${w.nodeId ?? ""}|${w.seriesId ?? ""}`;

function applyWarning(ev) {
  const w = ev.warning ?? {};
  if (ev.op === "clear") run.warnings.delete(warningKey(w));
  else run.warnings.set(warningKey(w), w);
}

// ---- seq bookkeeping: detect gaps, tolerate `skipped` -------------------------------------------
const CONSUMES_SEQ = new Set(["run_update", "warning_update", "status"]);

/** True when the event is new (to apply); false for a duplicate from an overlapping replay. */
function advance(ev) {
  if (run.epoch != null && ev.epoch != null && ev.epoch !== run.epoch) {
    // a new epoch without a snapshot: our numbering is meaningless, start over
    reconnectNow(null);
    return false;
  }
  for (const s of ev.skipped ?? []) run.missing.delete(s);
  const seq = ev.seq;
  if (!Number.isInteger(seq)) return !CONSUMES_SEQ.has(ev.type);
  if (seq < run.seq) return false; // a duplicate from an overlapping replay
  if (seq === run.seq) return !CONSUMES_SEQ.has(ev.type) || ev.type === "status"; // repeats the current seq
  const consumes = CONSUMES_SEQ.has(ev.type);
  const skipped = new Set(ev.skipped ?? []);
  for (let s = run.seq + 1; s < (consumes ? seq : seq + 1); s++) if (!skipped.has(s)) run.missing.add(s);
  if (run.missing.size && !run.missingSince) run.missingSince = Date.now();
  run.seq = seq;
  return true;
}

function checkGaps() {
  if (!run.missing.size) { run.missingSince = 0; return; }
  if (Date.now() - run.missingSince < GAP_GRACE_MS) return;
  // a real gap: replay from just before it (events apply idempotently)
  run.gaps += 1;
  const from = Math.min(...run.missing) - 1;
  run.missing.clear(); run.missingSince = 0;
  reconnectNow({ epoch: run.epoch, seq: Math.max(0, from) });
}

function handle(msg) {
  switch (msg.type) {
    case "subscribed": // a replay (recovered) or a snapshot follows
      conn.attempt = 0;
      conn.connected = true;
      if (msg.epoch !== run.epoch) { run.missing.clear(); run.epoch = msg.epoch; }
      setConn("live");
      break;
    case "snapshot":
      applyState(msg.state ?? {}, msg);
      renderAll();
      return;
    case "resync":
      run.missing.clear(); // a snapshot follows
      break;
    case "run_update":
      if (advance(msg)) applyRunUpdate(msg);
      break;
    case "warning_update":
      if (advance(msg)) { applyWarning(msg); renderWarnings(); }
      break;
    case "status":
      if (advance(msg)) run.status = msg.status;
      break;
    case "progress":
      advance(msg);
      run.watermark = msg.watermark ?? run.watermark;
      run.lagBins = msg.lagBins ?? run.lagBins;
      break;
    case "snapshot_written":
      advance(msg);
      break;
    default:
      return; // pong and future types
  }
  renderStatus();
  renderColors();
  scheduleSparks();
}

// ---- WebSocket ----------------------------------------------------------------------------------
function wsUrl(id) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/v1/runs/${encodeURIComponent(id)}/stream`;
}

function connect(since = run.epoch ? { epoch: run.epoch, seq: run.seq } : null) {
  clearTimeout(conn.timer);
  const ws = new WebSocket(wsUrl(run.id));
  conn.ws = ws;
  ws.onopen = () => {
    if (token()) ws.send(JSON.stringify({ type: "auth", token: token() }));
    ws.send(JSON.stringify({ type: "subscribe", since, nodes: null }));
    setConn("connecting");
  };
  ws.onmessage = (e) => {
    try { handle(JSON.parse(e.data)); } catch (err) { console.error("bad message", err); }
  };
  ws.onclose = (e) => {
    if (ws !== conn.ws) return; // replaced on purpose
    conn.connected = false;
    conn.ws = null;
    if (AUTH_CLOSE.has(e.code)) { setConn("auth", "token needed"); askForToken(); return; }
    if (e.code === 4404) { setConn("closed", "unknown run"); return; }
    if (e.code === 1000) { setConn("closed", run.status ?? "closed"); return; } // completed or deleted
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  const delay = Math.min(30000, 500 * 2 ** conn.attempt) * (0.75 + Math.random() / 2);
  conn.attempt += 1;
  setConn("reconnecting");
  conn.timer = setTimeout(() => { conn.reconnects += 1; connect(); }, delay);
}

/** Reconnect at once from `since` (null: from seq 1 of the current epoch); events after it re-apply. */
function reconnectNow(since) {
  disconnect();
  conn.reconnects += 1;
  if (since === null) run.epoch = null;
  run.seq = since?.seq ?? 0;
  connect(since);
}

function disconnect() {
  clearTimeout(conn.timer);
  const ws = conn.ws;
  conn.ws = null;
  conn.connected = false;
  if (ws) ws.close(1000);
}

// ---- auth ---------------------------------------------------------------------------------------
function askForToken() {
  const form = $("auth-form");
  form.hidden = false;
  $("auth-token").focus();
}

function onTokenSubmit(e) {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("auth-token").value.trim());
  $("auth-token").value = "";
  $("auth-form").hidden = true;
  start();
}

// ---- drawing ------------------------------------------------------------------------------------
function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

/** Nodes at their `ui` positions when all have one, else in layers by longest path from a source. */
function layout(nodes, edges) {
  if (nodes.length && nodes.every((n) => Number.isFinite(n.ui?.x) && Number.isFinite(n.ui?.y))) {
    return new Map(nodes.map((n) => [n.id, { x: n.ui.x, y: n.ui.y }]));
  }
  const ids = nodes.map((n) => n.id);
  const layer = new Map(ids.map((id) => [id, 0]));
  const indegree = new Map(ids.map((id) => [id, 0]));
  const out = new Map(ids.map((id) => [id, []]));
  for (const e of edges) {
    if (!out.has(e.from) || !out.has(e.to)) continue;
    out.get(e.from).push(e.to);
    indegree.set(e.to, indegree.get(e.to) + 1);
  }
  const queue = ids.filter((id) => indegree.get(id) === 0);
  const placed = new Set();
  while (queue.length) {
    const id = queue.shift();
    placed.add(id);
    for (const to of out.get(id)) {
      layer.set(to, Math.max(layer.get(to), layer.get(id) + 1));
      indegree.set(to, indegree.get(to) - 1);
      if (indegree.get(to) === 0) queue.push(to);
    }
  }
  const deepest = Math.max(0, ...layer.values());
  for (const id of ids) if (!placed.has(id)) layer.set(id, deepest + 1); // on a cycle
  const rows = new Map();
  const pos = new Map();
  for (const id of ids) {
    const l = layer.get(id);
    const row = rows.get(l) ?? 0;
    rows.set(l, row + 1);
    pos.set(id, { x: l * (NODE_W + GAP_X), y: row * (NODE_H + GAP_Y) });
  }
  return pos;
}

/** Left-to-right when the target lies to the right; else between the facing bottom and top sides. */
function edgePath(a, b) {
  if (b.x >= a.x + NODE_W) {
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2, mx = (x1 + x2) / 2;
    return `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
  }
  const down = b.y >= a.y;
  const x1 = a.x + NODE_W / 2, y1 = down ? a.y + NODE_H : a.y;
  const x2 = b.x + NODE_W / 2, y2 = down ? b.y : b.y + NODE_H, my = (y1 + y2) / 2;
  return `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`;
}

// A node's upstream labels for its tooltip: metric aliases ("served: Orders fulfilled") and text labels.
function labelLines(n) {
  const aliases = Object.entries(n.aliases ?? {}).map(([metric, name]) => `${metric}: ${name}`);
  const labels = Object.entries(n.labels ?? {}).map(([key, value]) => `${key} = ${value}`);
  return [...aliases, ...labels].join("\n");
}

function drawGraph(graph, state) {
  const svg = $("graph");
  svg.replaceChildren();
  views.clear();
  const source = listOf(graph, "nodes").length ? graph : state ?? {};
  const nodes = listOf(source, "nodes").filter((n) => n?.id != null);
  const edges = listOf(graph, "edges").map((e) => ({ from: e.from ?? e.source, to: e.to ?? e.target }));
  const pos = layout(nodes, edges);

  const defs = el("defs", {}, svg);
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" }, defs);
  el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8c959f" }, marker);
  for (const e of edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    el("path", { class: "edge", d: edgePath(a, b), "marker-end": "url(#arrow)" }, svg);
  }
  for (const n of nodes) {
    ensureNode(n.id, n.kind).labels = labelLines(n);
    const p = pos.get(n.id);
    const g = el("g", { class: "node", transform: `translate(${p.x},${p.y})`, "data-node-id": n.id, "data-color": "gray" }, svg);
    el("rect", { width: NODE_W, height: NODE_H, rx: 6 }, g);
    el("text", { class: "label", x: 8, y: 17 }, g).textContent = n.id;
    // under the id (long ids fit): upstream's kind when it is shown as another (e.g. dependency)
    el("text", { class: "kind", x: 8, y: 31 }, g).textContent = n.declaredKind ?? n.kind ?? "";
    const title = el("title", {}, g);
    title.textContent = [n.id, run.nodes.get(n.id)?.labels].filter(Boolean).join("\n");
    const spark = el("polyline", { class: "spark", points: "" }, g);
    views.set(n.id, { g, spark, title });
    dirty.add(n.id);
  }
  const xs = [...pos.values()];
  const minX = Math.min(0, ...xs.map((p) => p.x)) - MARGIN, minY = Math.min(0, ...xs.map((p) => p.y)) - MARGIN;
  const maxX = Math.max(NODE_W, ...xs.map((p) => p.x + NODE_W)) + MARGIN;
  const maxY = Math.max(NODE_H, ...xs.map((p) => p.y + NODE_H)) + MARGIN;
  svg.setAttribute("viewBox", `${minX} ${minY} ${maxX - minX} ${maxY - minY}`);
}

let graphReload = null;
const reloadedFor = new Set(); // node ids that already caused one reload (added by PATCH)
function scheduleGraphReload(nodeId) {
  if (graphReload || !run.id || reloadedFor.has(nodeId)) return;
  reloadedFor.add(nodeId);
  const id = run.id;
  graphReload = setTimeout(async () => {
    graphReload = null;
    const graph = await api(`/v1/runs/${encodeURIComponent(id)}/graph`).catch(() => null);
    if (graph && id === run.id) { drawGraph(graph, null); renderAll(); }
  }, 500);
}

function sparkPoints(values) {
  const bins = [...values.keys()].sort((a, b) => a - b);
  const nums = bins.map((b) => values.get(b)).filter((v) => typeof v === "number");
  if (!nums.length) return "";
  const lo = Math.min(0, ...nums), hi = Math.max(...nums, lo + 1e-9);
  const last = Math.max(run.lastBin ?? 0, bins[bins.length - 1]);
  const first = Math.max(bins[0], last - run.windowBins + 1);
  const dx = (NODE_W - 16) / Math.max(1, last - first);
  const top = NODE_H - 6 - SPARK_H;
  return bins.filter((b) => b >= first && typeof values.get(b) === "number")
    .map((b) => `${(8 + (b - first) * dx).toFixed(1)},${(top + SPARK_H * (1 - (values.get(b) - lo) / (hi - lo))).toFixed(1)}`)
    .join(" ");
}

function renderColors() {
  for (const [id, n] of run.nodes) {
    const v = views.get(id);
    if (!v || v.g.getAttribute("data-color") === n.color) continue;
    v.g.setAttribute("data-color", n.color);
    const head = `${id}: ${n.color}${n.colorReason ? ` (${n.colorReason})` : ""}`;
    v.title.textContent = n.labels ? `${head}\n${n.labels}` : head;
  }
}

let sparkFrame = 0;
function scheduleSparks() {
  if (sparkFrame) return;
  const draw = () => {
    sparkFrame = 0;
    for (const id of dirty) {
      const v = views.get(id), n = run.nodes.get(id);
      if (v && n) v.spark.setAttribute("points", sparkPoints(n.values));
    }
    dirty.clear();
  };
  sparkFrame = document.hidden ? setTimeout(draw, 250) : requestAnimationFrame(draw);
}

function renderWarnings() {
  const items = [...run.warnings.values()].sort((a, b) => warningKey(a).localeCompare(warningKey(b)));
  $("warnings").replaceChildren(...items.map((w) => {
    const li = document.createElement("li");
    li.dataset.code = w.code ?? "";
    li.dataset.nodeId = w.nodeId ?? "";
    li.dataset.severity = w.severity ?? "warning";
    const code = document.createElement("span");
    code.className = "code";
    code.textContent = w.code;
    const where = document.createElement("span");
    where.className = "node";
    where.textContent = w.nodeId ? ` · ${w.nodeId}` : "";
    const bins = Array.isArray(w.bins) && w.bins.length ? ` (bins ${w.bins.join(", ")}${w.count > w.bins.length ? ", …" : ""})` : "";
    li.append(code, where, document.createElement("br"), `${w.message ?? ""}${bins}`);
    return li;
  }));
  $("warning-count").textContent = String(items.length);
}

function renderStatus() {
  $("run-status").textContent = run.status ?? "–";
  $("epoch").textContent = run.epoch ?? "–";
  $("seq").textContent = String(run.seq);
  $("last-bin").textContent = run.lastBin ?? "–";
  $("watermark").textContent = run.watermark ?? "–";
  $("lag").textContent = run.lagBins ?? "–";
  $("reconnects").textContent = String(conn.reconnects);
}

function renderAll() {
  renderStatus();
  renderColors();
  renderWarnings();
  scheduleSparks();
}

function setConn(state, detail = "") {
  conn.state = state;
  const c = $("conn");
  c.dataset.state = state;
  c.textContent = detail ? `${state}: ${detail}` : state;
  renderStatus();
}

function showError(text) {
  $("error").textContent = text;
}

// ---- start --------------------------------------------------------------------------------------
async function start() {
  try {
    await loadRuns();
  } catch (err) {
    if (err instanceof AuthRequired) { setConn("auth", "token needed"); askForToken(); }
    else showError(String(err.message ?? err));
  }
}

$("auth-form").addEventListener("submit", onTokenSubmit);
$("run-select").addEventListener("change", (e) => {
  const id = e.target.value;
  const url = new URL(location.href);
  url.searchParams.set("run", id);
  history.replaceState(null, "", url);
  const mode = e.target.selectedOptions[0]?.dataset.mode || undefined;
  selectRun(id, mode ? { mode } : undefined).catch((err) => {
    if (err instanceof AuthRequired) askForToken(); else showError(err.message);
  });
});
setInterval(checkGaps, 1000);
start();
