// The bins the dashboard holds, per node and field, as columns (typed arrays, NaN for null) in a
// ring of `capacity` bins: a 1,000-node run keeps a day of 5-minute bins in a few tens of MB and
// applies a run_update without allocating per value. Bins outside the ring that the operator
// scrubs to are fetched one at a time (`/state?binIndex=`) and kept in a small cache beside it.
// A class-bearing node's per-class metrics (`byClass`, SPEC §14) are columns of the same layout, one
// set per class; `value`/`series`/`snapshot` read them when given a class (`perClass` says which).

import { COLORS, NUMERIC_DERIVED } from "./format.js";

const EXTRA_BINS = 64; // single bins fetched for time travel outside the ring
const NULLABLE = new Set(NUMERIC_DERIVED); // derived numbers that may be null (labels are not stored)

export class Store {
  constructor(capacity) {
    this.cap = Math.max(1, capacity | 0);
    this.ids = [];
    this.index = new Map();
    this.kinds = [];
    this.fields = new Map(); // name -> Float64Array(n * cap)
    this.groups = new Map(); // name -> "metrics" | "derived"
    this.color = new Uint8Array(0);
    this.reason = new Uint16Array(0);
    this.reasons = [null];
    this.reasonIndex = new Map([[null, 0]]);
    this.binAt = new Int32Array(this.cap).fill(-1);
    this.lastBin = -1;
    this.extra = new Map(); // bin -> Map(nodeId -> {metrics, derived, byClass})
    this.classIds = []; // the classes seen in byClass, in order
    this.classCols = new Map(); // classId -> Map(field -> Float64Array(n * cap))
    this.classFieldsOf = []; // node -> Set of its fields that carry classes (null: a class-less node)
  }

  get n() { return this.ids.length; }

  /** The node's row, created (columns grown) when it is new. */
  node(id, kind) {
    let i = this.index.get(id);
    if (i === undefined) {
      i = this.ids.length;
      this.ids.push(id);
      this.kinds.push(kind ?? "");
      this.classFieldsOf.push(null);
      this.index.set(id, i);
      this._grow();
    } else if (kind) {
      this.kinds[i] = kind;
    }
    return i;
  }

  _grow() {
    const n = this.ids.length, cap = this.cap;
    const grow = (old, Type, fill) => {
      const a = new Type(n * cap);
      if (fill !== 0) a.fill(fill);
      a.set(old.subarray(0, Math.min(old.length, a.length)));
      return a;
    };
    for (const [k, a] of this.fields) this.fields.set(k, grow(a, Float64Array, NaN));
    for (const cols of this.classCols.values()) for (const [k, a] of cols) cols.set(k, grow(a, Float64Array, NaN));
    this.color = grow(this.color, Uint8Array, 0);
    this.reason = grow(this.reason, Uint16Array, 0);
  }

  _field(name, group) {
    let a = this.fields.get(name);
    if (!a) {
      a = new Float64Array(this.n * this.cap).fill(NaN);
      this.fields.set(name, a);
      this.groups.set(name, group);
    }
    return a;
  }

  _classField(classId, name) {
    let cols = this.classCols.get(classId);
    if (!cols) {
      cols = new Map();
      this.classCols.set(classId, cols);
      this.classIds.push(classId);
    }
    let a = cols.get(name);
    if (!a) {
      a = new Float64Array(this.n * this.cap).fill(NaN);
      cols.set(name, a);
    }
    return a;
  }

  /** Note which of node i's fields carry classes (from a byClass object). */
  _classFields(i, byClass) {
    for (const c in byClass) {
      for (const k in byClass[c]) (this.classFieldsOf[i] ??= new Set()).add(k);
    }
  }

  _reasonCode(r) {
    let c = this.reasonIndex.get(r ?? null);
    if (c === undefined) {
      c = this.reasons.length;
      this.reasons.push(r);
      this.reasonIndex.set(r, c);
    }
    return c;
  }

  /** Make the ring slot of `bin` hold that bin (clearing what an older bin left there). */
  _slot(bin) {
    const s = bin % this.cap;
    if (this.binAt[s] !== bin) {
      if (this.binAt[s] > bin) return -1; // older than the ring holds
      this.binAt[s] = bin;
      const n = this.n;
      for (const a of this.fields.values()) for (let i = 0; i < n; i++) a[i * this.cap + s] = NaN;
      for (const cols of this.classCols.values()) {
        for (const a of cols.values()) for (let i = 0; i < n; i++) a[i * this.cap + s] = NaN;
      }
      for (let i = 0; i < n; i++) { this.color[i * this.cap + s] = 0; this.reason[i * this.cap + s] = 0; }
    }
    if (bin > this.lastBin) this.lastBin = bin;
    return s;
  }

  has(bin) { return bin >= 0 && this.binAt[bin % this.cap] === bin; }

  /** The oldest bin the ring still holds (with the newest one, the scrubber's range). */
  firstBin() {
    let first = this.lastBin;
    for (const b of this.binAt) if (b >= 0 && b < first) first = b;
    return first;
  }

  /** One node's values at one bin (`metrics`, `derived`, `byClass` as on the wire). */
  set(bin, i, metrics, derived, byClass) {
    const s = this._slot(bin);
    if (s < 0) return;
    const at = i * this.cap + s;
    for (const k in metrics ?? {}) {
      const v = metrics[k];
      if (typeof v === "number" || v === null) this._field(k, "metrics")[at] = v ?? NaN;
    }
    for (const k in derived ?? {}) {
      const v = derived[k];
      if (typeof v === "number" || (v === null && NULLABLE.has(k))) this._field(k, "derived")[at] = v ?? NaN;
    }
    if (derived && typeof derived.color === "string") {
      const c = COLORS.indexOf(derived.color);
      this.color[at] = c < 0 ? 0 : c;
      this.reason[at] = this._reasonCode(derived.colorReason ?? null);
    }
    if (byClass) {
      this._classFields(i, byClass);
      for (const c in byClass) {
        const m = byClass[c];
        for (const k in m) {
          const v = m[k];
          if (typeof v === "number" || v === null) this._classField(c, k)[at] = v ?? NaN;
        }
      }
    }
  }

  /** A run_update's deltas for its bin. */
  applyDeltas(bin, deltas) {
    for (const d of deltas ?? []) {
      if (d.nodeId == null) continue; // a model without topology: series, nothing to draw
      this.set(bin, this.node(d.nodeId, d.kind), d.metrics, d.derived, d.byClass);
    }
  }

  /** A window body (`/state_window`, or the `window` of `/state/live`): per node arrays from startBin. */
  applyWindow(startBin, nodes) {
    for (const n of nodes ?? []) {
      const i = this.node(n.id, n.kind);
      const m = n.metrics ?? {}, d = n.derived ?? {}, byClass = n.byClass ?? null;
      const len = Math.max(0, ...Object.values(m).map((a) => (Array.isArray(a) ? a.length : 0)),
                           ...Object.values(d).map((a) => (Array.isArray(a) ? a.length : 0)));
      for (let j = 0; j < len; j++) {
        const pick = (o) => {
          const out = {};
          for (const k in o) if (Array.isArray(o[k])) out[k] = o[k][j];
          return out;
        };
        let classes = null;
        if (byClass) {
          classes = {};
          for (const c in byClass) classes[c] = pick(byClass[c]);
        }
        this.set(startBin + j, i, pick(m), pick(d), classes);
      }
    }
  }

  /** A `/state` body for one bin: into the ring when it fits there, else into the side cache. */
  applyBinState(state) {
    const bin = state?.bin?.index;
    if (!Number.isInteger(bin)) return;
    const fits = bin > this.lastBin - this.cap;
    if (fits) {
      for (const n of state.nodes ?? []) this.set(bin, this.node(n.id, n.kind), n.metrics, n.derived, n.byClass);
      return;
    }
    const m = new Map();
    for (const n of state.nodes ?? []) {
      const i = this.node(n.id, n.kind);
      if (n.byClass) this._classFields(i, n.byClass);
      m.set(n.id, { metrics: n.metrics ?? {}, derived: n.derived ?? {}, byClass: n.byClass ?? null });
    }
    this.extra.set(bin, m);
    while (this.extra.size > EXTRA_BINS) this.extra.delete(this.extra.keys().next().value);
  }

  /** Whether the values of `bin` are here (ring or side cache). */
  holds(bin) { return this.has(bin) || this.extra.has(bin); }

  /** Whether node i carries classes (has a byClass), and whether its `field` does. */
  hasClasses(i) { return this.classFieldsOf[i] != null; }

  perClass(i, field) { return this.classFieldsOf[i]?.has(field) ?? false; }

  /** The column of `field` for node i: class `cls`'s when the field carries classes, else the total's. */
  _column(field, i, cls) {
    return cls != null && this.perClass(i, field) ? this.classCols.get(cls)?.get(field) : this.fields.get(field);
  }

  /** A value at a bin: class `cls`'s when given and `field` carries classes on node i, else the node's. */
  value(field, i, bin, cls = null) {
    if (this.has(bin)) {
      const a = this._column(field, i, cls);
      if (!a) return null;
      const v = a[i * this.cap + (bin % this.cap)];
      return Number.isNaN(v) ? null : v;
    }
    const e = this.extra.get(bin)?.get(this.ids[i]);
    const v = cls != null && this.perClass(i, field) ? e?.byClass?.[cls]?.[field] : e?.metrics?.[field] ?? e?.derived?.[field];
    return typeof v === "number" ? v : null;
  }

  colorOf(i, bin) {
    if (this.has(bin)) {
      const at = i * this.cap + (bin % this.cap);
      return { color: COLORS[this.color[at]], reason: this.reasons[this.reason[at]] };
    }
    const d = this.extra.get(bin)?.get(this.ids[i])?.derived;
    return { color: typeof d?.color === "string" ? d.color : "gray", reason: d?.colorReason ?? null };
  }

  /** The node's values at `bin` as {metrics, derived} objects (the inspector's table); with a class,
   *  that class's value of each field that carries classes. */
  snapshot(i, bin, cls = null) {
    const metrics = {}, derived = {};
    for (const k of this.fields.keys()) {
      const v = this.value(k, i, bin, cls);
      if (v !== null) (this.groups.get(k) === "metrics" ? metrics : derived)[k] = v;
    }
    const c = this.colorOf(i, bin);
    derived.color = c.color;
    derived.colorReason = c.reason;
    return { metrics, derived };
  }

  /** [bins, values] of one field of one node over the ring's bins in order (null where missing);
   *  class `cls`'s when given and the field carries classes. */
  series(field, i, cls = null) {
    const a = this._column(field, i, cls);
    const first = this.firstBin(), last = this.lastBin;
    const bins = [], values = [];
    if (!a || last < 0) return { bins, values };
    for (let b = first; b <= last; b++) {
      if (!this.has(b)) continue;
      const v = a[i * this.cap + (b % this.cap)];
      bins.push(b);
      values.push(Number.isNaN(v) ? null : v);
    }
    return { bins, values };
  }

  fieldNames() { return [...this.fields.keys()]; }
}

