// FlowTime Live dashboard (SPEC §11): an operator's console for one run. Plain ES modules, no
// dependencies, no build step. See docs/dashboard.md.
//
// Data flow. A live run: REST loads the run list, the graph and `state/live` (the state at lastBin
// plus a window of retained bins) into the Store; the WebSocket (SPEC §7, stream.js) then subscribes
// with the cursor {epoch, seq} of that state and every run_update adds its bin. A finished run (batch,
// or a completed live run): its bins are loaded with `state_window` (as many as a budget of cells
// allows; others on demand with `state?binIndex=`). The graph shows one bin: the newest while
// following live, else the bin chosen on the time scrubber (time travel). Rendering happens at most
// once per animation frame, and only what changed is written to the DOM. The class selector (SPEC §14,
// classes.js) shows one class's values (`byClass`) instead of the totals; `?class=` keeps it in the URL.

import { cardClassView, classList, classNoteText, fillClassSelect } from "./classes.js";
import { deltasByNode, fetchCompare, renderCompareTable } from "./compare.js";
import { CARD_FIELDS, FIELDS, LEGEND, binTime } from "./format.js";
import { Graph } from "./graph.js";
import { Inspector, fieldOrder } from "./inspector.js";
import { Store } from "./store.js";
import { Stream } from "./stream.js";

const TOKEN_KEY = "flowtime.token";
const LIVE_WINDOW_BINS = 288;
const FINISHED_CELLS = 400000; // nodes × bins of a finished run loaded up front (the rest on demand)
const WINDOW_CHUNK = 500; // the largest state_window (SPEC §12.16)
const SPARK_BUDGET_MS = 4; // sparklines drawn per frame at most this long (round robin)
const INSPECTOR_EVERY_MS = 250;
const WARNINGS_EVERY_MS = 400; // the warnings list is rebuilt at most this often (a busy run changes it per bin)
const MAX_WARNINGS_SHOWN = 200; // the rest are counted
const OPEN = new Set(["created", "live", "closing", "recovering"]);
const CARD_KEYS = CARD_FIELDS.flat();
const ALWAYS_WRITE_CARDS = 120; // graphs up to this size write every card's texts; larger ones only what can be read

const $ = (id) => document.getElementById(id);

// ---- state --------------------------------------------------------------------------------------
const run = {
  id: null, mode: null, status: null, epoch: null, seq: 0, lastBin: null, watermark: null, lagBins: null,
  grid: { start: null, binMinutes: null, bins: null }, open: false,
  warnings: new Map(), // key -> warning
  meta: new Map(), // node id -> {kind, slaMin}
  classes: [], // the run's declared classes (`/graph`)
};
let store = new Store(LIVE_WINDOW_BINS);
const view = { bin: null, selected: null, compareWith: null, diff: null, drawnDiff: null, cls: null };
const dirty = { cards: true, warnings: true, inspector: true, sparks: true, status: true, compare: false };
// the page's own performance counters (cumulative ms per kind of work; fps from the frame meter)
const perf = { frames: 0, fps: 0, renders: 0, renderMs: 0, maxRenderMs: 0, lastEventAt: 0, screenLagMs: 0,
               maxScreenLagMs: 0, events: 0, applyMs: 0, cardsMs: 0, sparksMs: 0, warningsMs: 0, messageMs: 0 };
let runs = [];
let stream = null;
let sparkCursor = 0;
let lastInspector = 0;
let lastWarnings = -Infinity;
let fetching = new Set();
let classKey = null; // the class selector's options and choice as last written
const cardView = { tag: "", label: "", share: null, scopes: {} }; // one card's class view (reused)
const CLASSED = { tag: "class" }, CLASSLESS = { tag: "none" }; // a card drawn as its colour only

const graph = new Graph($("graph"), (id) => select(id));
graph.hover = (id) => hoverTitle(id);
graph.onView = () => { dirty.cards = dirty.sparks = true; scheduleRender(); }; // zoomed or panned
const inspector = new Inspector($("inspector"), (bin) => travel(bin));

const displayBin = () => (view.bin ?? run.lastBin ?? -1);
const following = () => view.bin === null;

window.__flowtime = {
  get runId() { return run.id; },
  get mode() { return run.mode; },
  get seq() { return run.seq; },
  get epoch() { return run.epoch; },
  get connected() { return stream?.connected ?? false; },
  get connection() { return stream?.state ?? $("conn").dataset.state; },
  get reconnects() { return stream?.reconnects ?? 0; },
  get lastBin() { return run.lastBin; },
  get lagBins() { return run.lagBins; },
  get status() { return run.status; },
  get gaps() { return stream?.gaps ?? 0; },
  get viewBin() { return displayBin(); },
  get following() { return following(); },
  get selected() { return view.selected; },
  get compareWith() { return view.compareWith; },
  get classId() { return view.cls; },
  get classes() { return classList(run.classes, store.classIds); },
  get compareReady() { return view.diff !== null && view.drawnDiff === view.diff; }, // cards show the deltas
  get firstBin() { return store.firstBin(); },
  get nodeColors() {
    const bin = displayBin();
    return Object.fromEntries(store.ids.map((id, i) => [id, store.colorOf(i, bin).color]));
  },
  get warnings() { return [...run.warnings.values()]; },
  get perf() { return { ...perf, messageMs: stream?.messageMs ?? 0 }; },
  /** The values the page holds for a node at a bin (defaults to the bin on display), a class's when given. */
  values(id, bin = displayBin(), cls = null) {
    const i = store.index.get(id);
    return i === undefined || !store.holds(bin) ? null : store.snapshot(i, bin, cls);
  },
  travel: (bin) => travel(bin),
  follow: () => follow(),
  select: (id) => select(id),
  focus: (id) => graph.focus(id),
  compare: (id) => compareWith(id),
  showClass: (id) => showClass(id),
};

// ---- REST ---------------------------------------------------------------------------------------
class AuthRequired extends Error {}

const token = () => sessionStorage.getItem(TOKEN_KEY);

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  if (token()) h.Authorization = `Bearer ${token()}`;
  return h;
}

async function answer(res, path) {
  if (res.status === 401 || res.status === 403) throw new AuthRequired(`${path}: ${res.status}`);
  if (!res.ok) {
    let msg = `HTTP ${res.status}`;
    try { msg = (await res.json()).message ?? msg; } catch { /* not JSON */ }
    throw new Error(`${path}: ${msg}`);
  }
  return res.json();
}

async function api(path) {
  return answer(await fetch(path, { headers: headers() }), path);
}

/** A write: JSON body and content type (the browser guard refuses others), same origin. */
async function post(path, body) {
  const res = await fetch(path, { method: "POST", headers: headers({ "Content-Type": "application/json" }),
                                  body: JSON.stringify(body) });
  return answer(res, path);
}

const listOf = (body, ...keys) => {
  if (Array.isArray(body)) return body;
  for (const k of keys) if (Array.isArray(body?.[k])) return body[k];
  return [];
};

// ---- runs ---------------------------------------------------------------------------------------
async function loadRuns() {
  runs = listOf(await api("/v1/runs?pageSize=200"), "items", "runs");
  const wanted = new URLSearchParams(location.search).get("run");
  if (wanted && !runs.some((r) => r.runId === wanted)) runs.unshift({ runId: wanted });
  const option = (r) => {
    const opt = new Option(`${r.runId} · ${r.mode ?? "?"} · ${r.status ?? "?"}`, r.runId);
    opt.dataset.mode = r.mode ?? "";
    return opt;
  };
  $("run-select").replaceChildren(...runs.map(option));
  $("compare-select").replaceChildren(new Option("— none —", ""), ...runs.map(option));
  const live = runs.find((r) => r.mode === "live" && r.status === "live") ?? runs.find((r) => r.mode === "live");
  const chosen = wanted ?? (live ?? runs[0])?.runId;
  if (!chosen) { showError("no runs yet: start one (flowtime demo)"); return; }
  $("run-select").value = chosen;
  const wantedCompare = new URLSearchParams(location.search).get("compare");
  view.cls = new URLSearchParams(location.search).get("class") || null;
  await selectRun(chosen);
  if (wantedCompare) await compareWith(wantedCompare);
}

function resetRun(id) {
  stream?.disconnect();
  stream = null;
  Object.assign(run, { id, mode: null, status: null, epoch: null, seq: 0, lastBin: null, watermark: null,
                       lagBins: null, open: false });
  run.grid = { start: null, binMinutes: null, bins: null };
  run.warnings.clear();
  run.meta.clear();
  run.classes = [];
  Object.assign(view, { bin: null, selected: null, compareWith: null, diff: null });
  $("compare-select").value = "";
  $("compare-panel").hidden = true;
  inspector.clear();
  fetching = new Set();
  showError("");
}

async function selectRun(id) {
  resetRun(id);
  const path = `/v1/runs/${encodeURIComponent(id)}`;
  const detail = await api(path).catch(rethrowAuth);
  if (run.id !== id) return;
  run.mode = detail?.mode ?? null;
  run.status = detail?.status ?? null;
  run.grid = gridOf(detail);
  run.open = run.mode === "live" && OPEN.has(run.status);
  const graphBody = await api(`${path}/graph`).catch(rethrowAuth);
  if (run.id !== id) return;
  if (run.mode === "live") await loadLive(id, detail, graphBody);
  else await loadFinished(id, detail, graphBody);
}

function gridOf(body) {
  const g = body?.grid ?? {};
  return { start: g.start ?? null, binMinutes: body?.binMinutes ?? g.binMinutes ?? null, bins: g.bins ?? null };
}

function drawNodes(graphBody, stateNodes) {
  const nodes = graph.draw(graphBody, stateNodes);
  if (Array.isArray(graphBody?.classes)) run.classes = graphBody.classes.filter((c) => typeof c === "string");
  for (const n of nodes) {
    run.meta.set(n.id, { kind: n.kind ?? "", slaMin: n.semantics?.slaMin ?? null });
    store.node(n.id, n.kind);
  }
  markAll();
}

/** A live run: `state/live` (state at lastBin plus the retained window), then the stream. */
async function loadLive(id, detail, graphBody) {
  let state = null;
  try {
    state = await api(`/v1/runs/${encodeURIComponent(id)}/state/live`);
  } catch (err) {
    rethrowAuth(err);
    showError(`state: ${err.message}`);
  }
  if (run.id !== id) return;
  const w = state?.window;
  const held = w && Number.isInteger(w.startBin) ? w.endBin - w.startBin + 1 : 0;
  store = new Store(Math.max(LIVE_WINDOW_BINS, held));
  drawNodes(graphBody, state?.nodes);
  if (state) applyState(state);
  if (!run.open && state) {
    setConn("ended", run.status ?? "completed");
    if ((run.lastBin ?? -1) >= 0) await loadWindowChunks(id, Math.max(0, run.lastBin - store.cap + 1), run.lastBin);
  }
  startStream(id);
  scheduleRender();
}

/** A finished run: its bins by `state_window` (within a budget), its warnings from the detail. */
async function loadFinished(id, detail, graphBody) {
  const bins = run.grid.bins ?? 0;
  const n = Math.max(1, graphBody?.nodes?.length ?? 1);
  const loadBins = Math.max(1, Math.min(bins, Math.floor(FINISHED_CELLS / n)));
  store = new Store(Math.max(loadBins, 1));
  drawNodes(graphBody, null);
  run.lastBin = bins - 1;
  run.watermark = bins - 1;
  for (const w of detail?.warnings ?? []) run.warnings.set(warningKey(w), w);
  setConn("finished", `${run.mode ?? "batch"} run, ${bins} bins`);
  if (bins > 0) {
    view.bin = null;
    await loadWindowChunks(id, Math.max(0, bins - loadBins), bins - 1);
    if (run.warnings.size === 0) {
      const last = await api(`/v1/runs/${encodeURIComponent(id)}/state?binIndex=${bins - 1}`).catch(() => null);
      for (const w of last?.warnings ?? []) run.warnings.set(warningKey(w), w);
    }
  }
  markAll();
  scheduleRender();
}

async function loadWindowChunks(id, from, to) {
  for (let s = from; s <= to && run.id === id; s += WINDOW_CHUNK) {
    const e = Math.min(to, s + WINDOW_CHUNK - 1);
    const body = await api(`/v1/runs/${encodeURIComponent(id)}/state_window?startBin=${s}&endBin=${e}`).catch(() => null);
    if (body && run.id === id) store.applyWindow(body.window?.startBin ?? s, body.nodes);
  }
}

function rethrowAuth(err) {
  if (err instanceof AuthRequired) throw err;
  return null;
}

// ---- applying state and events ------------------------------------------------------------------
/** A full state (`state/live` body or a WebSocket snapshot) replaces what we hold. */
function applyState(state, envelope = {}) {
  run.epoch = envelope.epoch ?? state.epoch ?? run.epoch;
  run.seq = envelope.seq ?? state.seq ?? run.seq;
  run.status = state.status ?? run.status;
  run.lastBin = state.lastBin ?? state.bin?.index ?? run.lastBin;
  run.watermark = state.watermark ?? run.watermark;
  if (state.grid) run.grid = { ...run.grid, ...gridOf(state) };
  if (run.watermark != null && run.lastBin != null) run.lagBins = Math.max(0, run.watermark - run.lastBin);
  const w = state.window;
  if (w && Number.isInteger(w.startBin)) store.applyWindow(w.startBin, listOf(w.nodes ?? w, "nodes"));
  if (state.bin && Number.isInteger(state.bin.index)) store.applyBinState(state);
  run.warnings.clear();
  for (const x of state.warnings ?? []) run.warnings.set(warningKey(x), x);
  markAll();
}

function applyRunUpdate(ev) {
  run.status = ev.status ?? run.status;
  run.lastBin = Math.max(run.lastBin ?? -1, ev.lastBin ?? ev.binIndex);
  run.watermark = ev.watermark ?? run.watermark;
  if (run.watermark != null) run.lagBins = Math.max(0, run.watermark - run.lastBin);
  for (const d of ev.deltas ?? []) {
    if (d.nodeId != null && !graph.cards.has(d.nodeId)) scheduleGraphReload(d.nodeId);
  }
  store.applyDeltas(ev.binIndex, ev.deltas);
  perf.events += 1;
  perf.lastEventAt = performance.now();
  if (following() || ev.binIndex === view.bin) { dirty.cards = true; dirty.inspector = true; }
  dirty.sparks = true;
  dirty.status = true;
}

const warningKey = (w) => `${w.code}|${w.nodeId ?? ""}|${w.seriesId ?? ""}`;

function applyWarning(ev) {
  const w = ev.warning ?? {};
  if (ev.op === "clear") run.warnings.delete(warningKey(w));
  else run.warnings.set(warningKey(w), w);
  dirty.warnings = dirty.cards = dirty.inspector = true;
}

function startStream(id) {
  stream = new Stream(run, {
    token,
    subscribed: () => { dirty.status = true; scheduleRender(); },
    snapshot: (msg) => { applyState(msg.state ?? {}, msg); scheduleRender(); },
    runUpdate: (msg) => {
      const a0 = performance.now();
      applyRunUpdate(msg);
      perf.applyMs += performance.now() - a0;
      scheduleRender();
    },
    warning: (msg) => { applyWarning(msg); scheduleRender(); },
    status: (msg) => {
      run.status = msg.status;
      run.open = OPEN.has(msg.status);
      dirty.status = true;
      scheduleRender();
    },
    progress: (msg) => {
      run.watermark = msg.watermark ?? run.watermark;
      run.lagBins = msg.lagBins ?? run.lagBins;
      dirty.status = true;
      scheduleRender();
    },
    conn: (state, detail) => setConn(state, detail),
    auth: () => askForToken(),
  });
  if (run.id === id) stream.connect();
}

let graphReload = null;
const reloadedFor = new Set(); // node ids that already caused one reload (added by PATCH)
function scheduleGraphReload(nodeId) {
  if (graphReload || !run.id || reloadedFor.has(nodeId)) return;
  reloadedFor.add(nodeId);
  const id = run.id;
  graphReload = setTimeout(async () => {
    graphReload = null;
    const body = await api(`/v1/runs/${encodeURIComponent(id)}/graph`).catch(() => null);
    if (body && id === run.id) { drawNodes(body, null); scheduleRender(); }
  }, 500);
}

// ---- time travel, selection, compare ------------------------------------------------------------
function travel(bin) {
  const last = run.lastBin ?? -1;
  if (!Number.isInteger(bin) || bin < 0 || last < 0) return;
  view.bin = Math.min(bin, last);
  if (view.bin === last) view.bin = null; // the newest bin: follow again (or "last bin" of a finished run)
  ensureBin(displayBin());
  markAll();
  scheduleRender();
}

function follow() {
  view.bin = null;
  markAll();
  scheduleRender();
}

/** Fetch one bin the store does not hold (time travel before the retained window). */
async function ensureBin(bin) {
  if (bin < 0 || store.holds(bin) || fetching.has(bin) || !run.id) return;
  fetching.add(bin);
  const id = run.id;
  const body = await api(`/v1/runs/${encodeURIComponent(id)}/state?binIndex=${bin}`).catch((err) => {
    showError(`bin ${bin}: ${err.message}`);
    return null;
  });
  fetching.delete(bin);
  if (body && id === run.id) { store.applyBinState(body); markAll(); scheduleRender(); }
}

/** Show one class's values (null or "": all classes, the totals). */
function showClass(cls) {
  view.cls = cls || null;
  setUrl("class", view.cls ?? "");
  markAll();
  scheduleRender();
}

function select(id) {
  view.selected = id || null;
  graph.select(view.selected);
  dirty.inspector = true;
  scheduleRender();
}

async function compareWith(otherId) {
  view.compareWith = otherId || null;
  view.diff = null;
  $("compare-select").value = otherId || "";
  if (!otherId) { $("compare-panel").hidden = true; markAll(); scheduleRender(); return; }
  try {
    const diff = await fetchCompare(post, run.id, otherId);
    if (view.compareWith !== otherId) return;
    view.diff = diff;
    renderCompareTable($("compare-panel"), diff, (id) => select(id));
    showError("");
  } catch (err) {
    if (err instanceof AuthRequired) { askForToken(); return; }
    showError(`compare: ${err.message}`);
    view.compareWith = null;
    $("compare-select").value = "";
  }
  markAll();
  scheduleRender();
}

// ---- rendering ----------------------------------------------------------------------------------
function markAll() {
  dirty.cards = dirty.warnings = dirty.inspector = dirty.sparks = dirty.status = true;
}

let frame = 0;
function scheduleRender() {
  if (frame) return;
  frame = document.hidden ? setTimeout(render, 250) : requestAnimationFrame(render);
}

function warningsByNode() {
  const m = new Map();
  for (const w of run.warnings.values()) {
    if (!w.nodeId) continue;
    if (!m.has(w.nodeId)) m.set(w.nodeId, []);
    m.get(w.nodeId).push(w);
  }
  return m;
}

function render() {
  frame = 0;
  const t0 = performance.now();
  const bin = displayBin();
  if (dirty.status) renderStatus();
  if (dirty.cards) { const c0 = performance.now(); renderCards(bin); perf.cardsMs += performance.now() - c0; }
  if (dirty.warnings && t0 - lastWarnings >= WARNINGS_EVERY_MS) {
    const w0 = performance.now();
    renderWarnings();
    lastWarnings = t0;
    perf.warningsMs += performance.now() - w0;
  }
  if (dirty.inspector && view.selected && (!following() || t0 - lastInspector > INSPECTOR_EVERY_MS)) {
    renderInspector(bin);
    lastInspector = t0;
  } else if (dirty.inspector && !view.selected) {
    inspector.clear();
    dirty.inspector = false;
  }
  if (dirty.sparks) { const s0 = performance.now(); renderSparks(bin, t0); perf.sparksMs += performance.now() - s0; }
  const ms = performance.now() - t0;
  perf.renders += 1;
  perf.renderMs = ms;
  perf.maxRenderMs = Math.max(perf.maxRenderMs, ms);
  if (perf.lastEventAt) {
    perf.screenLagMs = performance.now() - perf.lastEventAt;
    perf.maxScreenLagMs = Math.max(perf.maxScreenLagMs, perf.screenLagMs);
    perf.lastEventAt = 0;
  }
  if (dirty.inspector || dirty.sparks) scheduleRender(); // the rest of the work, next frame
  else if (dirty.warnings) setTimeout(scheduleRender, WARNINGS_EVERY_MS); // the list, a little later
}

function renderCards(bin) {
  dirty.cards = false;
  const byNode = warningsByNode();
  if (view.diff) {
    const deltas = deltasByNode(view.diff);
    for (const id of graph.cards.keys()) graph.renderDelta(id, deltas.get(id));
    view.drawnDiff = view.diff;
    return;
  }
  const held = store.holds(bin);
  if (!held && bin >= 0) ensureBin(bin);
  const values = {};
  const small = graph.cards.size <= ALWAYS_WRITE_CARDS;
  const cls = view.cls; // a class: its values where a field carries classes (store.value), else the node's
  for (const id of graph.cards.keys()) {
    const i = store.index.get(id);
    let color = "gray", reason = null;
    if (held && i !== undefined) ({ color, reason } = store.colorOf(i, bin));
    if (!small && !graph.readable(id)) { // off screen or too small to read: its colour only
      const tag = cls === null ? null : i !== undefined && store.hasClasses(i) ? CLASSED : CLASSLESS;
      graph.renderNode(id, null, color, reason, 0, bin, tag);
      continue;
    }
    for (const k of CARD_KEYS) values[k] = held && i !== undefined ? store.value(k, i, bin, cls) : null;
    const cv = cls === null ? null : cardClassView(cardView, store, i, bin, cls, CARD_KEYS);
    // data-bin names the bin whose values the card shows: none while they are being fetched
    graph.renderNode(id, values, color, reason, byNode.get(id)?.length ?? 0, held ? bin : -1, cv);
  }
}

function hoverTitle(id) {
  const i = store.index.get(id);
  const bin = displayBin();
  const snap = i === undefined || !store.holds(bin) ? { derived: { color: "gray" } } : store.snapshot(i, bin);
  const cls = view.cls;
  const classLine = cls === null ? ""
    : i !== undefined && store.hasClasses(i) ? `class ${cls}: bold values are ${cls}'s; italic ones and the colour the node's`
      : `no classes: the node's totals (class ${cls} selected)`;
  graph.title(id, snap.derived.color, snap.derived.colorReason, snap.derived, warningsByNode().get(id) ?? [], classLine);
}

function renderSparks(bin, t0) {
  const ids = store.ids;
  if (!ids.length) { dirty.sparks = false; return; }
  const n = ids.length;
  let done = 0;
  while (done < n && performance.now() - t0 < SPARK_BUDGET_MS + 8) {
    const i = sparkCursor % n;
    sparkCursor += 1;
    done += 1;
    if (n > ALWAYS_WRITE_CARDS && !graph.readable(ids[i])) continue;
    const s = store.series("served", i, view.cls);
    graph.spark(ids[i], s.bins, s.values, bin);
    if (sparkCursor % n === 0) break; // a full round: the rest when data changes again
  }
  if (sparkCursor % n === 0) dirty.sparks = false;
}

function renderInspector(bin) {
  dirty.inspector = false;
  const id = view.selected;
  const i = store.index.get(id);
  if (i === undefined) { inspector.clear(); return; }
  const cls = view.cls;
  const snapshot = store.holds(bin) ? store.snapshot(i, bin, cls) : { metrics: {}, derived: { color: "gray" } };
  const fields = store.fieldNames().filter((f) => f in FIELDS || store.groups.get(f) === "metrics").sort(fieldOrder);
  inspector.render({
    id, bin, snapshot, fields,
    kind: run.meta.get(id)?.kind ?? store.kinds[i],
    slaMin: run.meta.get(id)?.slaMin ?? null,
    grid: run.grid,
    warnings: warningsByNode().get(id) ?? [],
    series: (f) => store.series(f, i, cls),
    cls, classed: store.hasClasses(i), scope: (f) => (store.perClass(i, f) ? "class" : "node"),
    close: () => select(null),
  });
}

function renderWarnings() {
  dirty.warnings = false;
  const all = [...run.warnings.values()];
  // warnings before infos, then by code and node; the first MAX_WARNINGS_SHOWN are listed
  const rank = (w) => (w.severity === "info" ? 1 : 0);
  all.sort((a, b) => rank(a) - rank(b) || warningKey(a).localeCompare(warningKey(b)));
  const items = all.slice(0, MAX_WARNINGS_SHOWN);
  const more = document.createElement("li");
  more.className = "more";
  more.textContent = all.length > items.length ? `… and ${all.length - items.length} more (marked on their nodes)` : "";
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
    // the message names its bins already: only say how many there are in all
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = Number.isInteger(w.count) && w.count > 1 ? ` (${w.count} bins)` : "";
    li.append(code, where, count, document.createElement("br"), w.message ?? "");
    if (w.nodeId) li.addEventListener("click", () => { select(w.nodeId); if (!graph.readable(w.nodeId)) graph.focus(w.nodeId); });
    return li;
  }), ...(all.length > items.length ? [more] : []));
  $("warning-count").textContent = String(all.length);
}

function renderStatus() {
  dirty.status = false;
  $("run-status").textContent = run.status ?? "–";
  $("epoch").textContent = run.epoch ?? "–";
  $("seq").textContent = String(run.seq);
  $("last-bin").textContent = run.lastBin ?? "–";
  $("watermark").textContent = run.watermark ?? "–";
  $("lag").textContent = run.lagBins ?? "–";
  $("reconnects").textContent = String(stream?.reconnects ?? 0);
  $("run-kind").textContent = run.mode ? `${run.mode} run${run.grid.bins ? ` · ${run.grid.bins} bins` : ""}` : "";
  const scrub = $("scrubber");
  const last = run.lastBin ?? -1;
  scrub.min = String(run.open ? Math.max(0, store.firstBin()) : 0);
  scrub.max = String(Math.max(0, last));
  scrub.disabled = last < 0;
  scrub.value = String(Math.max(0, displayBin()));
  const b = displayBin();
  const when = binTime(run.grid.start, run.grid.binMinutes, b);
  $("bin-label").textContent = b >= 0
    ? `bin ${b}${when ? ` · ${when} UTC` : ""}${run.grid.binMinutes ? ` · ${run.grid.binMinutes}-minute bins` : ""}`
      + (following() ? (run.open ? " · live" : " · last bin") : ` · time travel (newest ${last})`)
    : "bin –";
  renderClassSelect();
  const btn = $("follow");
  btn.setAttribute("aria-pressed", String(following()));
  btn.textContent = run.open ? (following() ? "● Following live" : "▶ Follow live") : (following() ? "Last bin" : "Go to last bin");
}

/** The class selector's options (declared classes and any seen in the data) and the note, when changed. */
function renderClassSelect() {
  const classes = classList(run.classes, store.classIds);
  const key = `${classes.join("\n")}|${view.cls ?? ""}|${view.compareWith ?? ""}`;
  if (key === classKey) return;
  classKey = key;
  fillClassSelect($("class-select"), classes, view.cls);
  $("class-note").textContent = view.compareWith
    ? `Compare shows the changes of the totals; class ${view.cls} applies again without compare.`
    : classNoteText(view.cls);
  $("class-note").hidden = view.cls === null;
}

function setConn(state, detail = "") {
  const c = $("conn");
  c.dataset.state = state;
  c.textContent = detail ? `${state}: ${detail}` : state;
  dirty.status = true;
  scheduleRender();
}

function showError(text) {
  $("error").textContent = text;
}

function fpsMeter() {
  let last = performance.now(), frames = 0;
  const tick = (now) => {
    frames += 1;
    perf.frames += 1;
    if (now - last >= 1000) {
      perf.fps = Math.round((frames * 1000) / (now - last));
      $("fps").textContent = String(perf.fps);
      frames = 0;
      last = now;
    }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

// ---- auth ---------------------------------------------------------------------------------------
function askForToken() {
  $("auth-form").hidden = false;
  $("auth-token").focus();
}

function onTokenSubmit(e) {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("auth-token").value.trim());
  $("auth-token").value = "";
  $("auth-form").hidden = true;
  start();
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

function setUrl(key, value) {
  const url = new URL(location.href);
  if (value) url.searchParams.set(key, value); else url.searchParams.delete(key);
  history.replaceState(null, "", url);
}

$("legend-items").replaceChildren(...LEGEND.map(([color, text]) => {
  const li = document.createElement("li");
  const sw = document.createElement("span");
  sw.className = "swatch";
  sw.dataset.color = color;
  li.append(sw, `${color}: ${text}`);
  return li;
}));
$("auth-form").addEventListener("submit", onTokenSubmit);
$("run-select").addEventListener("change", (e) => {
  setUrl("run", e.target.value);
  setUrl("compare", "");
  setUrl("class", "");
  view.cls = null;
  selectRun(e.target.value).catch((err) => {
    if (err instanceof AuthRequired) askForToken(); else showError(err.message);
  });
});
$("compare-select").addEventListener("change", (e) => {
  setUrl("compare", e.target.value);
  compareWith(e.target.value);
});
$("class-select").addEventListener("change", (e) => showClass(e.target.value));
$("scrubber").addEventListener("input", (e) => travel(Number(e.target.value)));
$("follow").addEventListener("click", () => follow());
$("fit").addEventListener("click", () => graph.fit());
setInterval(() => stream?.checkGaps(), 1000);
fpsMeter();
start();
