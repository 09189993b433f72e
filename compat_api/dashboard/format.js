// Numbers, units, colour rules and reasons (SPEC §3, §12.5) for the dashboard. No dependencies.

/** Every field the dashboard knows: where it lives, its label, unit and how to print it. */
export const FIELDS = {
  arrivals: { group: "metrics", label: "arrivals", short: "arr", unit: "/bin", kind: "count" },
  served: { group: "metrics", label: "served", short: "srv", unit: "/bin", kind: "count" },
  errors: { group: "metrics", label: "errors", short: "err", unit: "/bin", kind: "count" },
  queueDepth: { group: "metrics", label: "queue depth", short: "queue", unit: "items", kind: "count" },
  capacity: { group: "metrics", label: "capacity", short: "cap", unit: "/bin", kind: "count" },
  externalDemand: { group: "metrics", label: "external demand", short: "demand", unit: "/bin", kind: "count" },
  attempts: { group: "metrics", label: "attempts", short: "att", unit: "/bin", kind: "count" },
  utilization: { group: "derived", label: "utilization", short: "util", unit: "%", kind: "ratio" },
  latencyMinutes: { group: "derived", label: "latency", short: "lat", unit: "min", kind: "number" },
  queueTimeMs: { group: "derived", label: "queue time", short: "qtime", unit: "ms", kind: "ms" },
  serviceTimeMs: { group: "derived", label: "service time", short: "svc", unit: "ms", kind: "ms" },
  cycleTimeMs: { group: "derived", label: "cycle time", short: "cycle", unit: "ms", kind: "ms" },
  flowEfficiency: { group: "derived", label: "flow efficiency", short: "flow", unit: "%", kind: "ratio" },
  throughputRatio: { group: "derived", label: "throughput ratio", short: "thru", unit: "%", kind: "ratio" },
  retryTax: { group: "derived", label: "retry tax", short: "retry", unit: "%", kind: "ratio" },
  capacityInferred: { group: "derived", label: "inferred capacity", short: "capInf", unit: "/bin", kind: "count" },
};

/** The values a node card shows, in its two value rows. */
export const CARD_FIELDS = [["arrivals", "served"], ["queueDepth", "utilization"], ["latencyMinutes", "capacity"]];

/** Derived fields that are numbers (the rest are labels: colour, method, confidence, slaMet). */
export const NUMERIC_DERIVED = Object.keys(FIELDS).filter((k) => FIELDS[k].group === "derived");

export const COLORS = ["gray", "green", "yellow", "red", "dlq"];

/** The legend: SPEC §3 colour rules, as the operator reads them. */
export const LEGEND = [
  ["green", "service: utilization < 70 % · queue: latency ≤ SLA"],
  ["yellow", "service: utilization 70–90 % · queue: latency ≤ 1.5 × SLA"],
  ["red", "service: utilization ≥ 90 % · queue: latency > 1.5 × SLA"],
  ["gray", "no value to judge: no capacity or throughput, no SLA, or a data gap"],
  ["dlq", "dead-letter queue"],
];

const INT = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const ONE = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
const TWO = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

/** A value as text without its unit: 1,204 · 87.1 · 0.53; null → "—". */
export function num(field, v) {
  if (v == null || !Number.isFinite(v)) return "—";
  const kind = FIELDS[field]?.kind ?? "number";
  if (kind === "ratio") return ONE.format(v * 100);
  if (kind === "count") return Math.abs(v) >= 100 || Number.isInteger(v) ? INT.format(v) : TWO.format(v);
  if (kind === "ms") return Math.abs(v) >= 100 ? INT.format(v) : TWO.format(v);
  return Math.abs(v) >= 100 ? INT.format(v) : TWO.format(v);
}

/** A value with its unit: "1,204/bin", "87.1%", "12.5 min"; null → "—". */
export function withUnit(field, v) {
  const text = num(field, v);
  if (text === "—") return text;
  const unit = FIELDS[field]?.unit ?? "";
  if (!unit) return text;
  return unit === "%" || unit === "/bin" ? `${text}${unit}` : `${text} ${unit}`;
}

/** A short tick label for an axis. */
export function tick(field, v) {
  if (!Number.isFinite(v)) return "";
  const kind = FIELDS[field]?.kind ?? "number";
  const x = kind === "ratio" ? v * 100 : v;
  const a = Math.abs(x);
  if (a >= 1e6) return `${TWO.format(x / 1e6)}M`;
  if (a >= 1e4) return `${ONE.format(x / 1e3)}k`;
  return a >= 100 || Number.isInteger(x) ? INT.format(x) : TWO.format(x);
}

/** Why a node has its colour, with the number behind it (SPEC §3 thresholds). */
export function colorReasonText(color, reason, derived, slaMin) {
  const u = derived?.utilization, lat = derived?.latencyMinutes;
  switch (reason) {
    case "utilization":
      if (u == null) return "utilization unknown";
      return `utilization ${ONE.format(u * 100)} % (${u < 0.7 ? "< 70 %" : u < 0.9 ? "70–90 %" : "≥ 90 %"})`;
    case "latency":
      if (lat == null) return "latency unknown";
      return slaMin != null
        ? `latency ${TWO.format(lat)} min against an SLA of ${TWO.format(slaMin)} min`
        : `latency ${TWO.format(lat)} min`;
    case "no_capacity": return "no capacity: utilization cannot be computed";
    case "no_throughput": return "nothing served: latency cannot be computed";
    case "no_sla": return "no SLA (slaMin) to judge the latency against";
    case "data_gap": return "data gap: inputs of this bin were zero-filled";
    case "dlq": return "dead-letter queue";
    default: return reason ? String(reason) : color === "gray" ? "no value yet" : "";
  }
}

/** UTC time of a bin: "2025-10-07 13:05". */
export function binTime(startUtc, binMinutes, bin) {
  if (!startUtc || !binMinutes || bin == null || bin < 0) return "";
  const t = Date.parse(startUtc) + bin * binMinutes * 60000;
  if (!Number.isFinite(t)) return "";
  return new Date(t).toISOString().slice(0, 16).replace("T", " ");
}

/** How a change of a metric reads: "worse", "better" or "same" (neutral metrics: "changed"). */
const HIGHER_IS_WORSE = new Set(["queueDepth", "utilization", "latencyMinutes", "queueTimeMs", "cycleTimeMs",
                                  "errors", "retryTax", "serviceTimeMs"]);
const HIGHER_IS_BETTER = new Set(["served", "throughputRatio", "capacity", "flowEfficiency", "capacityInferred"]);
export const SAME_PERCENT = 0.5;

export function deltaTone(field, percentDelta) {
  if (percentDelta == null || !Number.isFinite(percentDelta)) return "none";
  if (Math.abs(percentDelta) < SAME_PERCENT) return "same";
  if (HIGHER_IS_WORSE.has(field)) return percentDelta > 0 ? "worse" : "better";
  if (HIGHER_IS_BETTER.has(field)) return percentDelta > 0 ? "better" : "worse";
  return "changed";
}

export function percent(v) {
  if (v == null || !Number.isFinite(v)) return "—";
  return `${v > 0 ? "+" : ""}${ONE.format(v)} %`;
}
