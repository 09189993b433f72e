// The class selector (SPEC §14): "All classes" shows the totals; a class shows, on every class-bearing
// node, that class's value of each field whose series carries classes (`byClass`: arrivals, served,
// queue depth, …) and the node's own value of the rest — derived metrics (utilization, latency) and
// the colour stay per node, and are marked as the node's. Class-less nodes are dimmed and say so.
// The list comes from `/graph`'s `classes` and grows with any class seen in the data.

import { percent } from "./format.js";

/** The fields a card's class share is taken from (the first one the node carries per class). */
const SHARE_FIELDS = ["arrivals", "served", "queueDepth"];

/** The declared classes, then any other seen in the data, once each. */
export function classList(declared, seen) {
  return [...new Set([...(declared ?? []), ...(seen ?? [])])];
}

/** Fill the selector with "All classes" and each class; `chosen` stays selected (added if unknown). */
export function fillClassSelect(select, classes, chosen) {
  const ids = chosen && !classes.includes(chosen) ? [...classes, chosen] : classes;
  select.replaceChildren(new Option("All classes", ""), ...ids.map((c) => new Option(c, c)));
  select.value = chosen ?? "";
  select.disabled = ids.length === 0;
  select.title = ids.length ? "show one class's values (or all: the totals)" : "this run has no classes";
}

/** One card's class view, written into `out` (reused across cards: no allocation per card):
 *  tag "" (all classes) | "class" | "none" (a class-less node under a class), the label after the
 *  node's kind, the class's share of the node's flow (0..1 or null) and per card field its scope. */
export function cardClassView(out, store, i, bin, cls, fields) {
  out.share = null;
  if (cls == null || i === undefined) {
    out.tag = "";
    out.label = "";
    for (const k of fields) out.scopes[k] = "";
    return out;
  }
  const classed = store.hasClasses(i);
  out.tag = classed ? "class" : "none";
  for (const k of fields) out.scopes[k] = classed && store.perClass(i, k) ? "class" : "node";
  if (!classed) {
    out.label = "no classes";
    return out;
  }
  const f = SHARE_FIELDS.find((k) => store.perClass(i, k));
  if (f) {
    const part = store.value(f, i, bin, cls), total = store.value(f, i, bin);
    if (part != null && total != null && total > 0) out.share = Math.min(1, Math.max(0, part / total));
  }
  out.label = out.share == null ? cls : `${cls} ${percent(out.share * 100).replace("+", "")}`;
  return out;
}

/** The note under the legend while a class is selected. */
export function classNoteText(cls) {
  return cls == null ? ""
    : `Class ${cls}: values in bold are ${cls}'s; italic values (derived ones such as utilization and latency, `
      + "and fields without classes) and the colours are the node's; the bar under a card's kind is "
      + `${cls}'s share of its flow; dimmed cards carry no classes (their totals are shown).`;
}
