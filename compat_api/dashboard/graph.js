// The topology as node cards: each card shows the node's values at the bin on display (with units),
// its colour (SPEC §3) as a stripe and border, the reason on hover, a badge with its active warnings
// and a sparkline of `served` over the held bins; under a class selection (classes.js) the class's
// values, a bar with its share and the class in the kind line. Cards are SVG groups, built once per graph; a
// render only rewrites the texts and attributes that changed, so a 1,000-node run stays cheap.
// Wheel zooms, dragging pans; a click selects a node for the inspector.

import { CARD_FIELDS, FIELDS, colorReasonText, deltaTone, num, percent, withUnit } from "./format.js";

const SVG = "http://www.w3.org/2000/svg"; // the XML namespace name, never fetched
export const NODE_W = 216, NODE_H = 104;
const GAP_X = 64, GAP_Y = 28, MARGIN = 24, SPARK_H = 16, MAX_ROWS = 24, MAX_SPREAD = 8;
const MIN_READABLE_PX = 110; // a card narrower than this on screen shows its colour only
const CULL_FROM = 120; // graphs with more cards than this hide the texts of cards off screen

export function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

/** Nodes at their `ui` positions when all have one, else in layers by longest path from a source
 *  (a layer taller than MAX_ROWS wraps into more columns). */
export function layout(nodes, edges) {
  if (nodes.length && nodes.every((n) => Number.isFinite(n.ui?.x) && Number.isFinite(n.ui?.y))) {
    // upstream positions suit smaller boxes: scale them (evenly) until no two cards overlap
    const s = spread(nodes.map((n) => n.ui));
    return new Map(nodes.map((n) => [n.id, { x: n.ui.x * s, y: n.ui.y * s }]));
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
  const members = new Map();
  for (const id of ids) {
    const l = layer.get(id);
    if (!members.has(l)) members.set(l, []);
    members.get(l).push(id);
  }
  const pos = new Map();
  let col = 0;
  for (const l of [...members.keys()].sort((a, b) => a - b)) {
    const list = members.get(l);
    list.forEach((id, k) => {
      pos.set(id, { x: (col + Math.floor(k / MAX_ROWS)) * (NODE_W + GAP_X), y: (k % MAX_ROWS) * (NODE_H + GAP_Y) });
    });
    col += Math.ceil(list.length / MAX_ROWS);
  }
  return pos;
}

function spread(points) {
  const w = NODE_W + GAP_X / 2, h = NODE_H + GAP_Y / 2;
  let s = 1;
  for (let i = 0; i < points.length; i++) {
    for (let j = i + 1; j < points.length; j++) {
      const dx = Math.abs(points[i].x - points[j].x), dy = Math.abs(points[i].y - points[j].y);
      if (dx * s >= w || dy * s >= h) continue;
      s = Math.max(s, Math.min(dx > 0 ? w / dx : Infinity, dy > 0 ? h / dy : Infinity));
    }
  }
  return Math.min(s, MAX_SPREAD);
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

/** A node's upstream labels for its tooltip: metric aliases ("served: Orders fulfilled") and text labels. */
function labelLines(n) {
  const aliases = Object.entries(n.aliases ?? {}).map(([metric, name]) => `${metric}: ${name}`);
  const labels = Object.entries(n.labels ?? {}).map(([key, value]) => `${key} = ${value}`);
  return [...aliases, ...labels].join("\n");
}

export class Graph {
  constructor(svg, onSelect) {
    this.svg = svg;
    this.onSelect = onSelect;
    this.cards = new Map(); // id -> {g, stripe, badge, badgeText, values: Map(field -> tspan), spark, title, info}
    this.view = null;
    this.box = null;
    this.detailed = true;
    this.onView = null;
    svg.addEventListener("click", (e) => {
      const g = e.target.closest?.("g.node");
      if (g) this.onSelect(g.dataset.nodeId);
    });
    svg.addEventListener("mouseover", (e) => {
      const g = e.target.closest?.("g.node");
      if (g && this.hover) this.hover(g.dataset.nodeId);
    });
    this._zoomPan();
  }

  /** Build the cards and edges of a graph body (`/graph`), or of a state's nodes when it has none. */
  draw(graph, fallbackNodes) {
    const svg = this.svg;
    svg.replaceChildren();
    this.cards.clear();
    const nodes = (graph?.nodes?.length ? graph.nodes : fallbackNodes ?? []).filter((n) => n?.id != null);
    const edges = (graph?.edges ?? []).map((e) => ({ from: e.from ?? e.source, to: e.to ?? e.target }));
    const pos = layout(nodes, edges);
    const defs = el("defs", {}, svg);
    const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                  markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" }, defs);
    el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8c959f" }, marker);
    const edgeLayer = el("g", { class: "edges" }, svg);
    for (const e of edges) {
      const a = pos.get(e.from), b = pos.get(e.to);
      if (a && b) el("path", { class: "edge", d: edgePath(a, b), "marker-end": "url(#arrow)" }, edgeLayer);
    }
    const nodeLayer = el("g", { class: "nodes" }, svg);
    for (const n of nodes) this._card(n, pos.get(n.id), nodeLayer);
    const ps = [...pos.values()];
    const minX = Math.min(0, ...ps.map((p) => p.x)) - MARGIN, minY = Math.min(0, ...ps.map((p) => p.y)) - MARGIN;
    const maxX = Math.max(NODE_W, ...ps.map((p) => p.x + NODE_W)) + MARGIN;
    const maxY = Math.max(NODE_H, ...ps.map((p) => p.y + NODE_H)) + MARGIN;
    this.box = { x: minX, y: minY, w: maxX - minX, h: maxY - minY };
    this.view = { ...this.box };
    this._applyView();
    return nodes;
  }

  _card(n, p, parent) {
    const g = el("g", { class: "node", transform: `translate(${p.x},${p.y})`, "data-node-id": n.id,
                        "data-color": "gray", "data-warnings": "0", tabindex: "0" }, parent);
    const title = el("title", {}, g);
    el("rect", { class: "card", width: NODE_W, height: NODE_H, rx: 6 }, g);
    const stripe = el("rect", { class: "stripe", width: 6, height: NODE_H, rx: 3 }, g);
    el("text", { class: "label", x: 14, y: 17 }, g).textContent = n.id;
    // under the id: upstream's kind when it is shown as another (e.g. dependency), and the class on display
    const kindLabel = n.declaredKind ?? n.kind ?? "";
    const kind = el("text", { class: "kind", x: 14, y: 31 }, g);
    kind.textContent = kindLabel;
    const share = el("rect", { class: "share", x: 14, y: 35, width: 0, height: 3, rx: 1.5 }, g);
    const badge = el("g", { class: "badge", transform: `translate(${NODE_W - 38},6)` }, g);
    el("rect", { width: 32, height: 16, rx: 8 }, badge);
    const badgeText = el("text", { x: 16, y: 12, "text-anchor": "middle" }, badge);
    const values = new Map();
    CARD_FIELDS.forEach((row, r) => {
      const text = el("text", { class: "row", x: 14, y: 48 + r * 15 }, g);
      row.forEach((field, c) => {
        const k = el("tspan", { class: "k", x: 14 + c * 100 }, text);
        k.textContent = `${FIELDS[field].short} `;
        const v = el("tspan", { class: "v", "data-metric": field, "data-value": "" }, text);
        v.textContent = "—";
        values.set(field, v);
      });
    });
    const spark = el("polyline", { class: "spark", points: "" }, g);
    const info = { kind: n.kind ?? "", kindLabel, slaMin: numberOr(n.semantics?.slaMin), labels: labelLines(n) };
    this.cards.set(n.id, { g, stripe, badge, badgeText, values, spark, title, info, kind, share, pos: p,
                           state: { tag: "", kindText: kindLabel, share: null, scopes: {} } });
  }

  /** Write one node's colour and warnings at the bin on display, and its values when `values` is
   *  given (only what changed is touched). `cv`: its class view (classes.js `cardClassView`), or null. */
  renderNode(id, values, color, reason, warnings, bin, cv = null) {
    const c = this.cards.get(id);
    if (!c) return;
    const s = c.state;
    s.stale = values === null; // its texts are left as they were: written when it can be seen
    const tag = cv?.tag ?? "";
    if (s.tag !== tag) { c.g.setAttribute("data-class-view", tag); s.tag = tag; } // "none": dimmed
    if (values === null) {
      if (s.color !== color) { c.g.setAttribute("data-color", color); s.color = color; }
      return;
    }
    const kindText = cv?.label ? `${c.info.kindLabel} · ${cv.label}` : c.info.kindLabel;
    if (s.kindText !== kindText) { c.kind.textContent = kindText; s.kindText = kindText; }
    const share = cv?.share ?? null;
    if (s.share !== share) {
      c.share.setAttribute("width", share == null ? "0" : (share * (NODE_W - 28)).toFixed(1));
      c.share.setAttribute("data-share", share == null ? "" : String(share));
      s.share = share;
    }
    if (s.mode !== "values") { s.mode = "values"; c.g.dataset.mode = "values"; s.color = null; }
    if (s.color !== color) { c.g.setAttribute("data-color", color); s.color = color; }
    if (s.reason !== reason) { c.g.setAttribute("data-reason", reason ?? ""); s.reason = reason; }
    if (s.bin !== bin) { c.g.setAttribute("data-bin", String(bin)); s.bin = bin; }
    const w = String(warnings);
    if (s.warnings !== w) {
      c.g.setAttribute("data-warnings", w);
      c.badgeText.textContent = `⚠ ${w}`;
      s.warnings = w;
    }
    for (const [field, tspan] of c.values) {
      const v = values[field];
      const scope = cv?.scopes?.[field] ?? "";
      if (s.scopes[field] !== scope) { tspan.setAttribute("data-scope", scope); s.scopes[field] = scope; }
      const raw = v == null ? "" : String(v);
      if (tspan.dataset.value !== raw || tspan.dataset.tone) {
        tspan.dataset.value = raw;
        delete tspan.dataset.tone;
        tspan.textContent = withUnit(field, v);
      }
    }
  }

  /** Compare mode: each card's values become the % change of the run against the base. */
  renderDelta(id, deltas) {
    const c = this.cards.get(id);
    if (!c) return;
    c.state.mode = "compare";
    c.g.dataset.mode = "compare";
    this._plain(c); // the changes are of the totals: no class view
    let worst = "none";
    const rank = { none: 0, same: 1, changed: 2, better: 3, worse: 4 };
    for (const [field, tspan] of c.values) {
      const d = deltas?.[field];
      const pd = d?.percentDelta ?? null;
      const tone = deltaTone(field, pd);
      if (rank[tone] > rank[worst]) worst = tone;
      tspan.dataset.value = pd == null ? "" : String(pd);
      tspan.dataset.tone = tone;
      tspan.textContent = d ? percent(pd) : "—";
    }
    c.g.setAttribute("data-color", `delta-${worst}`);
    c.state.color = null;
  }

  _plain(c) {
    const s = c.state;
    if (s.tag) { c.g.setAttribute("data-class-view", ""); s.tag = ""; }
    if (s.kindText !== c.info.kindLabel) { c.kind.textContent = c.info.kindLabel; s.kindText = c.info.kindLabel; }
    if (s.share !== null) { c.share.setAttribute("width", "0"); c.share.setAttribute("data-share", ""); s.share = null; }
  }

  /** The tooltip: id, kind, colour with its reason and number, the class on display, warnings, upstream labels. */
  title(id, color, reason, derived, warnings, classLine = "") {
    const c = this.cards.get(id);
    if (!c) return;
    const why = colorReasonText(color, reason, derived, c.info.slaMin);
    const lines = [`${id} (${c.info.kind}) — ${color}${why ? `: ${why}` : ""}`];
    if (classLine) lines.push(classLine);
    for (const w of warnings) lines.push(`⚠ ${w.code}: ${w.message ?? ""}`);
    if (c.info.labels) lines.push(c.info.labels);
    c.title.textContent = lines.join("\n");
  }

  spark(id, bins, values, bin) {
    const c = this.cards.get(id);
    if (!c) return;
    const nums = values.filter((v) => v != null);
    if (!nums.length) { c.spark.setAttribute("points", ""); return; }
    const lo = Math.min(0, ...nums), hi = Math.max(...nums, lo + 1e-9);
    const first = bins[0], last = Math.max(bins[bins.length - 1], first + 1);
    const dx = (NODE_W - 28) / (last - first), top = NODE_H - 6 - SPARK_H;
    let pts = "";
    for (let k = 0; k < bins.length; k++) {
      const v = values[k];
      if (v == null) continue;
      pts += `${(14 + (bins[k] - first) * dx).toFixed(1)},${(top + SPARK_H * (1 - (v - lo) / (hi - lo))).toFixed(1)} `;
    }
    c.spark.setAttribute("points", pts);
    c.spark.dataset.bin = String(bin);
  }

  select(id) {
    for (const [nid, c] of this.cards) c.g.classList.toggle("selected", nid === id);
  }

  // ---- zoom and pan (the viewBox) ----------------------------------------------------------------
  _applyView() {
    const v = this.view;
    if (!v) return;
    this.svg.setAttribute("viewBox", `${v.x} ${v.y} ${v.w} ${v.h}`);
    // level of detail: cards too small to read show their colour only (their texts are not drawn,
    // nor written), which keeps a 1,000-node overview cheap to paint; zooming in brings them back
    const r = this.svg.getBoundingClientRect();
    const scale = r.width > 0 ? Math.min(r.width / v.w, r.height / v.h) : 1;
    const detailed = NODE_W * scale >= MIN_READABLE_PX;
    if (detailed !== this.detailed) {
      this.detailed = detailed;
      this.svg.classList.toggle("lod-low", !detailed);
    }
    if (detailed && this.cards.size > CULL_FROM) { // cards off screen drop their texts from layout too
      for (const [id, c] of this.cards) {
        const off = !this.readable(id);
        if (off !== c.off) { c.off = off; c.g.classList.toggle("off", off); }
      }
    }
    this.onView?.();
  }

  /** Whether the card can be seen now (inside the view, and drawn with its texts). */
  readable(id) {
    if (!this.detailed || !this.view) return false;
    const c = this.cards.get(id);
    if (!c) return false;
    const v = this.view, p = c.pos;
    return p.x + NODE_W >= v.x && p.x <= v.x + v.w && p.y + NODE_H >= v.y && p.y <= v.y + v.h;
  }

  /** Zoom to a node at a readable size (a click on a warning, or `__flowtime.focus`). */
  focus(id) {
    const c = this.cards.get(id);
    const r = this.svg.getBoundingClientRect();
    if (!c || !r.width) return;
    const scale = Math.max(1, (MIN_READABLE_PX * 1.6) / NODE_W);
    const w = r.width / scale, h = r.height / scale;
    this.view = { x: c.pos.x + NODE_W / 2 - w / 2, y: c.pos.y + NODE_H / 2 - h / 2, w, h };
    this._applyView();
  }

  fit() {
    if (this.box) { this.view = { ...this.box }; this._applyView(); }
  }

  _zoomPan() {
    const svg = this.svg;
    svg.addEventListener("wheel", (e) => {
      if (!this.view) return;
      e.preventDefault();
      const r = svg.getBoundingClientRect();
      const f = e.deltaY > 0 ? 1.15 : 1 / 1.15;
      const v = this.view;
      const scale = Math.max(v.w / r.width, v.h / r.height);
      const cx = v.x + (e.clientX - r.left) * scale, cy = v.y + (e.clientY - r.top) * scale;
      this.view = { x: cx - (cx - v.x) * f, y: cy - (cy - v.y) * f, w: v.w * f, h: v.h * f };
      this._applyView();
    }, { passive: false });
    let drag = null;
    svg.addEventListener("pointerdown", (e) => {
      if (e.target.closest?.("g.node") || !this.view) return;
      drag = { x: e.clientX, y: e.clientY, view: { ...this.view } };
      svg.setPointerCapture(e.pointerId);
    });
    svg.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const r = svg.getBoundingClientRect();
      const scale = Math.max(drag.view.w / r.width, drag.view.h / r.height);
      this.view = { ...drag.view, x: drag.view.x - (e.clientX - drag.x) * scale, y: drag.view.y - (e.clientY - drag.y) * scale };
      this._applyView();
    });
    svg.addEventListener("pointerup", () => { drag = null; });
    svg.addEventListener("dblclick", () => this.fit());
  }
}

function numberOr(v) {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

export { num };
