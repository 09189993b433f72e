// The compare view: `POST /v1/compare {baseRunId, compareRunId}` (SPEC §12.14) — the run on display is
// the base, the chosen run the other side (an overlay of it, or any run on the same grid). Node cards
// show each field's % change of the total; the table lists every node's fields on both sides (totals
// of counts, means of the rest), the change and the MAE. Colours: worse (red), better (green), same within 0.5 % (gray), changed
// without a better or worse direction (blue).

import { FIELDS, deltaTone, num, percent, withUnit } from "./format.js";

export async function fetchCompare(post, baseRunId, compareRunId) {
  return post("/v1/compare", { baseRunId, compareRunId });
}

/** node id -> {field -> stats} from a compare body. */
export function deltasByNode(diff) {
  const out = new Map();
  for (const n of diff?.nodes ?? []) out.set(n.nodeId, n.metrics ?? {});
  return out;
}

export function renderCompareTable(root, diff, onSelect) {
  const head = document.createElement("h2");
  head.textContent = `Compare ${diff.baseRunId} → ${diff.compareRunId}`;
  const note = document.createElement("p");
  note.className = "muted";
  note.textContent = `${diff.bins} common bins · counts: totals over the run, other fields: means per bin · `
    + "change = (Σ other − Σ base) / |Σ base|";
  const table = document.createElement("table");
  table.className = "compare";
  const hr = table.createTHead().insertRow();
  for (const t of ["node", "field", "base", "other", "change", "MAE"]) {
    const th = document.createElement("th");
    th.textContent = t;
    hr.append(th);
  }
  const body = table.createTBody();
  for (const n of diff.nodes ?? []) {
    for (const [field, s] of Object.entries(n.metrics ?? {})) {
      if (!s || !s.bins) continue;
      const tr = body.insertRow();
      tr.dataset.nodeId = n.nodeId;
      tr.dataset.field = field;
      tr.dataset.tone = deltaTone(field, s.percentDelta);
      const node = tr.insertCell();
      node.textContent = n.nodeId;
      node.className = "link";
      node.addEventListener("click", () => onSelect(n.nodeId));
      tr.insertCell().textContent = FIELDS[field]?.label ?? field;
      const count = (FIELDS[field]?.kind ?? "count") === "count";
      for (const v of [s.sumBase, s.sumCompare]) {
        const c = tr.insertCell();
        c.className = "num";
        c.textContent = v == null ? "—" : withUnit(field, count ? v : v / s.bins);
      }
      const change = tr.insertCell();
      change.className = "num delta";
      change.dataset.value = s.percentDelta == null ? "" : String(s.percentDelta);
      change.textContent = percent(s.percentDelta);
      const mae = tr.insertCell();
      mae.className = "num";
      mae.textContent = s.mae == null ? "—" : num(field, s.mae);
    }
  }
  root.replaceChildren(head, note, table);
  root.hidden = false;
}
