/* How figures, durations, times and statuses read on the page. */

import { el } from "./dom.js";

const STATUS_ICON = { queued: "◷", processing: "▶", completed: "✓", failed: "✕", cancelled: "⊘" };

const numberFormat = new Intl.NumberFormat("en-US");
export const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
export const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
export const compactFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });

export function fmtNumber(value) {
  return typeof value === "number" && Number.isFinite(value) ? numberFormat.format(value) : "—";
}

export function fmtPercent(value) {
  return typeof value === "number" && Number.isFinite(value) ? `${value.toFixed(1)}%` : "—";
}

export function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
  if (seconds < 3600) {
    const m = Math.floor(seconds / 60);
    const s = Math.floor(seconds % 60);
    return s ? `${m} min ${s} s` : `${m} min`;
  }
  if (seconds < 86400) {
    const h = Math.floor(seconds / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    return m ? `${h} h ${m} min` : `${h} h`;
  }
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  return h ? `${d} d ${h} h` : `${d} d`;
}

export function parseDate(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function timeEl(value, format) {
  const date = parseDate(value);
  if (!date) return el("span", { class: "muted", text: "—" });
  return el("time", { datetime: date.toISOString(), title: date.toISOString(), text: (format || dateTimeFormat).format(date) });
}

export function statusBadge(status) {
  const name = STATUS_ICON[status] ? status : "unknown";
  return el(
    "span",
    { class: `badge status-${name}` },
    el("span", { class: "badge-icon", "aria-hidden": "true", text: STATUS_ICON[status] || "?" }),
    el("span", { text: status || "unknown" }),
  );
}

export function shortId(value) {
  const text = String(value || "");
  return text.length > 20 ? `${text.slice(0, 14)}…` : text;
}

// What the service writes into alert messages: seconds ("waiting 1740s") and instants (ISO-8601).
const SECONDS = /\b(\d+(?:\.\d+)?)s\b/g;
const INSTANT = /\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})/g;

/** A message as a person reads it: "waiting 1740s" -> "waiting 29 min", an instant -> local date and time. */
export function humanize(text) {
  return String(text || "")
    .replace(INSTANT, (iso) => {
      const date = parseDate(iso);
      return date ? dateTimeFormat.format(date) : iso;
    })
    .replace(SECONDS, (_, seconds) => fmtDuration(Number(seconds)));
}
