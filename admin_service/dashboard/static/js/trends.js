/* The time-range picker (last 24 h / 7 d / 30 d / 90 d / custom) and the trend charts it drives:
 * throughput stacked by status, failure rate, p95 processing time and p95 queue wait, per
 * bucket from GET /admin/jobs/trends, drawn as inline SVG like the 7-day chart. A new range
 * is also handed to the wiring (the failures panel follows it). */

import { api, explain, failed } from "./api.js";
import { axisScale } from "./chart.js";
import { $, show, svg } from "./dom.js";
import { fmtDuration, fmtNumber, fmtPercent } from "./format.js";

const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;
// Preset ranges: how far back, and the bucket that gives a readable number of points.
const PRESETS = {
  "24h": { span: DAY, bucket: "hour", text: "last 24 hours" },
  "7d": { span: 7 * DAY, bucket: "hour", text: "last 7 days" },
  "30d": { span: 30 * DAY, bucket: "day", text: "last 30 days" },
  "90d": { span: 90 * DAY, bucket: "day", text: "last 90 days" },
};
const STACK = [
  ["completed", "Completed"],
  ["failed", "Failed"],
  ["cancelled", "Cancelled"],
  ["open", "Queued or processing"],
];

let range = { key: "7d" };
let series = [];
let bucket = "hour";
let seq = 0;
let whenRange = () => {};

/** The API parameters of the current range (shared with the failures panel). */
export function rangeParams() {
  if (range.key === "custom") return { from: range.from, to: range.to, bucket: customBucket(range.from, range.to) };
  const preset = PRESETS[range.key];
  // Both ends from one clock reading: the range is exactly the preset's span (within the limits).
  const now = Date.now();
  return { from: new Date(now - preset.span).toISOString(), to: new Date(now).toISOString(), bucket: preset.bucket };
}

function customBucket(from, to) {
  const days = (Date.parse(to) - Date.parse(from)) / DAY + 1;
  if (days <= 3) return "hour";
  return days <= 90 ? "day" : "week";
}

function describeRange() {
  if (range.key === "custom") return `${range.from} to ${range.to}`;
  return PRESETS[range.key].text;
}

export async function loadTrends() {
  const mine = ++seq;
  const params = rangeParams();
  $("trends-summary").textContent = `Loading trends for the ${describeRange()}…`;
  let data;
  try {
    data = await api("/jobs/trends", params);
  } catch (error) {
    if (mine !== seq || failed(error)) return;
    const fields = error.details.map((d) => `${d.field}: ${d.message}`).join(" ");
    $("trends-summary").textContent = error.status === 400 && fields ? fields : explain(error);
    return;
  }
  if (mine !== seq) return;
  series = data.series;
  bucket = data.bucket;
  const created = series.reduce((sum, p) => sum + p.created, 0);
  const failedJobs = series.reduce((sum, p) => sum + p.failed, 0);
  $("trends-summary").textContent =
    `${fmtNumber(created)} jobs created, ${fmtNumber(failedJobs)} failed · ${describeRange()}, ` +
    `per ${data.bucket} (${data.timezone})`;
  $("trends").dataset.bucket = data.bucket;
  $("trends").dataset.points = String(series.length);
  drawAll();
}

function tickLabel(point) {
  const [, m, d] = point.label.slice(0, 10).split("-").map(Number);
  if (bucket !== "hour") return `${d}/${m}`;
  // Over more than a day an hour needs its date.
  return series.length > 25 ? `${d}/${m} ${point.label.slice(11, 13)}h` : point.label.slice(11, 16);
}

function frame(host, title, yMax, yStep, yFormat) {
  const width = Math.max(260, Math.round(host.clientWidth || 420));
  const height = 180;
  const margin = { top: 10, right: 8, bottom: 24, left: 60 };
  const plot = { w: width - margin.left - margin.right, h: height - margin.top - margin.bottom };
  const y = (v) => margin.top + plot.h - (v / yMax) * plot.h;
  const chart = svg(
    "svg",
    { class: "chart-svg trend-svg", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" },
    svg("title", {}, title),
  );
  for (let value = 0; value <= yMax + 1e-9; value += yStep) {
    chart.append(
      svg("line", { class: "grid", x1: margin.left, x2: width - margin.right, y1: y(value), y2: y(value) }),
      svg("text", { class: "axis-label", x: margin.left - 6, y: y(value) + 4, "text-anchor": "end" }, yFormat(value)),
    );
  }
  const slot = plot.w / Math.max(series.length, 1);
  const every = Math.max(1, Math.ceil(series.length / Math.max(1, Math.floor(plot.w / (bucket === "hour" && series.length > 25 ? 64 : 48)))));
  series.forEach((point, i) => {
    if (i % every) return;
    chart.append(svg("text", { class: "axis-label", x: margin.left + slot * (i + 0.5), y: height - 6, "text-anchor": "middle" }, tickLabel(point)));
  });
  chart.append(svg("line", { class: "axis", x1: margin.left, x2: width - margin.right, y1: y(0), y2: y(0) }));
  return { chart, y, slot, left: margin.left, base: y(0) };
}

function drawThroughput() {
  const host = $("trend-throughput");
  const scale = axisScale(Math.max(0, ...series.map((p) => p.created)));
  const total = series.reduce((sum, p) => sum + p.created, 0);
  const f = frame(host, `Jobs created per ${bucket}, by status: ${fmtNumber(total)} in total`, scale.max, scale.step, fmtNumber);
  const bar = Math.max(1, f.slot * 0.8);
  series.forEach((point, i) => {
    const values = { ...point, open: Math.max(0, point.created - point.completed - point.failed - point.cancelled) };
    let top = 0;
    for (const [name, text] of STACK) {
      const value = values[name];
      if (!value) continue;
      const y0 = f.y(top);
      const y1 = f.y(top + value);
      top += value;
      f.chart.append(
        svg(
          "rect",
          { class: `bar bar-stack-${name}`, x: f.left + f.slot * i + (f.slot - bar) / 2, y: y1, width: bar, height: Math.max(0, y0 - y1), "data-label": point.label },
          svg("title", {}, `${point.label}: ${fmtNumber(value)} ${text.toLowerCase()}`),
        ),
      );
    }
  });
  host.replaceChildren(f.chart);
}

// Gridline steps of a duration axis (seconds): each reads as a round figure ("30 s", "2 min", "1 h").
const DURATION_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400];

function durationScale(value) {
  const step = DURATION_STEPS.find((s) => s * 5 >= value) || 86400 * Math.ceil(value / 86400 / 5);
  return { step, max: Math.max(step, Math.ceil(value / step) * step) };
}

function percentScale(value) {
  const step = [1, 2, 5, 10, 20, 25].find((s) => s * 5 >= value) || 25;
  return { step, max: Math.min(100, Math.max(step, Math.ceil(value / step) * step)) };
}

function drawLine(hostId, pick, format, what, scaleOf) {
  const host = $(hostId);
  const values = series.map(pick);
  const known = values.filter((v) => typeof v === "number");
  const top = Math.max(0, ...known);
  const scale = scaleOf(top);
  const f = frame(host, `${what}: ${known.length ? `highest ${format(top)}` : "no data in this range"}`, scale.max || 1, scale.step || 1, format);
  let path = "";
  values.forEach((value, i) => {
    if (typeof value !== "number") return;
    const x = f.left + f.slot * (i + 0.5);
    const yy = f.y(value);
    path += `${path && typeof values[i - 1] === "number" ? "L" : "M"}${x.toFixed(1)},${yy.toFixed(1)} `;
    f.chart.append(svg("circle", { class: "trend-dot", cx: x, cy: yy, r: 2.5, "data-label": series[i].label }, svg("title", {}, `${series[i].label}: ${format(value)}`)));
  });
  if (path) f.chart.prepend(svg("path", { class: "trend-line", d: path.trim() }));
  // The title stays first for assistive technology.
  f.chart.prepend(f.chart.querySelector("title"));
  host.replaceChildren(f.chart);
}

function drawAll() {
  drawThroughput();
  drawLine("trend-failure-rate", (p) => (p.failureRate === null ? null : p.failureRate * 100), fmtPercent, "Failure rate", percentScale);
  drawLine("trend-processing", (p) => p.processingTimeSeconds.p95, fmtDuration, "p95 processing time", durationScale);
  drawLine("trend-queue-wait", (p) => p.queueWaitSeconds.p95, fmtDuration, "p95 queue wait", durationScale);
}

function choose(key) {
  range = { key };
  for (const button of document.querySelectorAll("#range-picker button[data-range]")) {
    button.setAttribute("aria-pressed", String(button.dataset.range === key));
  }
  show($("range-custom"), key === "custom");
  if (key === "custom") {
    $("range-from").focus();
    return;
  }
  loadTrends();
  whenRange(rangeParams());
}

/** `onRange(params)` is called with each new range (the failures panel follows it). */
export function initTrends(onRange) {
  whenRange = onRange;
  for (const button of document.querySelectorAll("#range-picker button[data-range]")) {
    button.addEventListener("click", () => choose(button.dataset.range));
  }
  $("range-custom").addEventListener("submit", (event) => {
    event.preventDefault();
    const from = $("range-from").value;
    const to = $("range-to").value;
    const box = $("range-error");
    if (!from || !to || from > to) {
      box.textContent = "Choose a start date and an end date on or after it.";
      show(box, true);
      return;
    }
    show(box, false);
    range = { key: "custom", from, to };
    loadTrends();
    whenRange(rangeParams());
  });
  if (typeof ResizeObserver === "function") {
    let lastWidth = 0;
    new ResizeObserver((entries) => {
      const width = Math.round(entries[0].contentRect.width);
      if (width !== lastWidth && series.length) {
        lastWidth = width;
        drawAll();
      }
    }).observe($("trends"));
  }
}

/** Clears what a signed-out page must not keep showing. */
export function clearTrends() {
  series = [];
  for (const id of ["trend-throughput", "trend-failure-rate", "trend-processing", "trend-queue-wait"]) $(id).replaceChildren();
  $("trends-summary").textContent = "";
}

