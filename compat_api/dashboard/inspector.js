// The inspector of the selected node: its colour and why, every metric and derived value at the bin
// on display (with units), and one chart per field over the held bins — y axis with unit and ticks,
// x axis in bins and UTC time, the bin on display marked. Clicking a chart travels to that bin.
// Under a class selection the values and charts of fields that carry classes are the class's; the
// rest (derived metrics, fields without classes) and the colour are the node's, and say so.

import { FIELDS, binTime, colorReasonText, num, tick, withUnit } from "./format.js";
import { el } from "./graph.js";

const W = 320, H = 104, PAD_L = 46, PAD_R = 8, PAD_T = 16, PAD_B = 22;

const ORDER = Object.keys(FIELDS);
const order = (a, b) => (ORDER.indexOf(a) < 0 ? 99 : ORDER.indexOf(a)) - (ORDER.indexOf(b) < 0 ? 99 : ORDER.indexOf(b));

export class Inspector {
  constructor(root, onBin) {
    this.root = root;
    this.onBin = onBin;
  }

  clear() {
    this.root.hidden = true;
    this.root.replaceChildren();
  }

  /** ctx: {id, kind, slaMin, bin, grid:{start, binMinutes}, snapshot:{metrics, derived}, warnings,
   *  fields: [names], series(field) -> {bins, values}, cls: the class on display or null,
   *  scope(field) -> "class" | "node" (with a class), classed: whether the node carries classes} */
  render(ctx) {
    this.root.hidden = false;
    const { id, kind, bin, snapshot } = ctx;
    const d = snapshot.derived;
    const head = document.createElement("div");
    head.className = "inspector-head";
    const h = document.createElement("h2");
    h.textContent = id;
    const close = document.createElement("button");
    close.type = "button";
    close.className = "close";
    close.textContent = "×";
    close.title = "close the inspector";
    close.addEventListener("click", () => ctx.close());
    head.append(h, close);
    const sub = document.createElement("p");
    sub.className = "muted";
    const when = binTime(ctx.grid.start, ctx.grid.binMinutes, bin);
    sub.textContent = `${kind || "node"} · bin ${bin}${when ? ` · ${when} UTC` : ""}`;
    const cls = ctx.cls ?? null;
    const scope = (f) => (cls == null ? "" : ctx.scope(f));
    const classNote = document.createElement("p");
    classNote.className = "class-note";
    classNote.dataset.classView = cls == null ? "" : ctx.classed ? "class" : "none";
    classNote.hidden = cls == null;
    classNote.textContent = cls == null ? ""
      : ctx.classed ? `class ${cls}: its values where a field carries classes; "(node)" marks the node's own`
        : `no classes: class ${cls} is not on this node, its totals are shown`;
    const colour = document.createElement("p");
    colour.className = "why";
    colour.dataset.color = d.color ?? "gray";
    colour.textContent = `${d.color ?? "gray"}${cls == null ? "" : " (the node's)"}: `
      + `${colorReasonText(d.color, d.colorReason, d, ctx.slaMin) || "—"}`;
    const table = this.table(snapshot, ctx.fields, scope);
    const warn = document.createElement("ul");
    warn.className = "node-warnings";
    for (const w of ctx.warnings) {
      const li = document.createElement("li");
      li.textContent = `⚠ ${w.code}: ${w.message ?? ""}`;
      warn.append(li);
    }
    const charts = document.createElement("div");
    charts.className = "charts";
    for (const f of ctx.fields) {
      const s = ctx.series(f);
      if (!s.values.some((v) => v != null)) continue;
      charts.append(this.chart(f, s, bin, ctx.grid, scope(f) === "class" ? cls : scope(f)));
    }
    this.root.replaceChildren(head, sub, classNote, colour, warn, table, charts);
  }

  table(snapshot, fields, scope = () => "") {
    const table = document.createElement("table");
    table.className = "values";
    const body = table.createTBody();
    for (const f of fields) {
      const v = snapshot.metrics[f] ?? snapshot.derived[f] ?? null;
      const tr = body.insertRow();
      tr.dataset.field = f;
      tr.dataset.scope = scope(f);
      tr.insertCell().textContent = `${FIELDS[f]?.label ?? f}${scope(f) === "node" ? " (node)" : ""}`;
      const cell = tr.insertCell();
      cell.className = "num";
      cell.dataset.value = v == null ? "" : String(v);
      cell.textContent = withUnit(f, v);
    }
    for (const k of ["capacityMethod", "capacityConfidence", "slaMet"]) {
      const v = snapshot.derived[k];
      if (v == null) continue;
      const tr = body.insertRow();
      tr.insertCell().textContent = k;
      tr.insertCell().textContent = String(v);
    }
    return table;
  }

  /** `whose`: "" (totals), a class id, or "node" (the node's own value under a class selection). */
  chart(field, series, bin, grid, whose = "") {
    const { bins, values } = series;
    const wrap = document.createElement("figure");
    wrap.className = "chart";
    wrap.dataset.field = field;
    wrap.dataset.scope = whose === "" ? "" : whose === "node" ? "node" : "class";
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
                            "aria-label": `${field} over bins` });
    const nums = values.filter((v) => v != null);
    let lo = Math.min(...nums), hi = Math.max(...nums);
    if (lo > 0 && FIELDS[field]?.kind !== "number") lo = 0;
    if (hi - lo < 1e-9) { hi = lo + (Math.abs(lo) || 1); }
    const first = bins[0], last = Math.max(bins[bins.length - 1], first + 1);
    const x = (b) => PAD_L + ((b - first) / (last - first)) * (W - PAD_L - PAD_R);
    const y = (v) => PAD_T + (1 - (v - lo) / (hi - lo)) * (H - PAD_T - PAD_B);
    // axes, ticks and the unit
    const axis = el("g", { class: "axis" }, svg);
    el("line", { x1: PAD_L, y1: PAD_T, x2: PAD_L, y2: H - PAD_B }, axis);
    el("line", { x1: PAD_L, y1: H - PAD_B, x2: W - PAD_R, y2: H - PAD_B }, axis);
    for (const v of [lo, (lo + hi) / 2, hi]) {
      el("line", { class: "grid", x1: PAD_L, y1: y(v), x2: W - PAD_R, y2: y(v) }, axis);
      el("text", { x: PAD_L - 4, y: y(v) + 3, "text-anchor": "end" }, axis).textContent = tick(field, v);
    }
    const label = `${FIELDS[field]?.label ?? field}${whose ? ` · ${whose}` : ""}`;
    el("text", { class: "unit", x: 2, y: 10 }, axis).textContent = `${label} (${FIELDS[field]?.unit || "value"})`;
    const t0 = binTime(grid.start, grid.binMinutes, first), t1 = binTime(grid.start, grid.binMinutes, last);
    el("text", { x: PAD_L, y: H - 6 }, axis).textContent = `bin ${first}${t0 ? ` · ${t0.slice(11)}` : ""}`;
    el("text", { x: W - PAD_R, y: H - 6, "text-anchor": "end" }, axis).textContent = `bin ${last}${t1 ? ` · ${t1.slice(11)}` : ""}`;
    // the line (broken where values are missing)
    let d = "", pen = false;
    bins.forEach((b, k) => {
      const v = values[k];
      if (v == null) { pen = false; return; }
      d += `${pen ? "L" : "M"}${x(b).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    el("path", { class: "line", d }, svg);
    // the bin on display
    if (bin >= first && bin <= last) {
      const k = bins.indexOf(bin);
      const v = k >= 0 ? values[k] : null;
      el("line", { class: "now", x1: x(bin), y1: PAD_T - 4, x2: x(bin), y2: H - PAD_B, "data-bin": bin }, svg);
      if (v != null) el("circle", { class: "now", cx: x(bin), cy: y(v), r: 3 }, svg);
      const label = el("text", { class: "now-label", x: Math.min(x(bin) + 4, W - 60), y: PAD_T - 4 }, svg);
      label.textContent = num(field, v);
    }
    svg.addEventListener("click", (e) => {
      const r = svg.getBoundingClientRect();
      const px = ((e.clientX - r.left) / r.width) * W;
      const b = Math.round(first + ((px - PAD_L) / (W - PAD_L - PAD_R)) * (last - first));
      if (b >= first && b <= last) this.onBin(b);
    });
    wrap.append(svg);
    return wrap;
  }
}

export { order as fieldOrder };
