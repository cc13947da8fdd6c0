/* The last 7 days: an inline SVG bar chart (total, completed, failed per day) and the same
 * figures as a table. Redrawn when the figures or the chart's width change. */

import { $, el, svg } from "./dom.js";
import { fmtNumber } from "./format.js";

let dailyKey = ""; // the figures drawn, as JSON: the same figures are not drawn again
let daily = [];

/** Whole-number gridlines: a 1/2/5 x 10^k step giving at most 5 intervals up to the top. */
export function axisScale(value) {
  const rough = Math.max(value, 1) / 5;
  const power = 10 ** Math.floor(Math.log10(rough));
  let step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  step = Math.max(1, step);
  return { step, max: Math.max(step, Math.ceil(value / step) * step) };
}

function dayLabel(isoDate) {
  const [y, m, d] = isoDate.split("-").map(Number);
  const date = new Date(Date.UTC(y, m - 1, d));
  return {
    short: new Intl.DateTimeFormat(undefined, { weekday: "short", timeZone: "UTC" }).format(date),
    date: new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", timeZone: "UTC" }).format(date),
    long: new Intl.DateTimeFormat(undefined, { weekday: "long", day: "numeric", month: "long", timeZone: "UTC" }).format(date),
  };
}

export function renderDaily(days) {
  const key = JSON.stringify(days);
  if (key === dailyKey) return;
  dailyKey = key;
  daily = days;
  drawChart();
  $("chart-table").replaceChildren(
    ...days.map((day) =>
      el(
        "tr",
        {},
        el("th", { scope: "row", text: dayLabel(day.date).long }),
        el("td", { text: fmtNumber(day.total) }),
        el("td", { text: fmtNumber(day.completed) }),
        el("td", { text: fmtNumber(day.failed) }),
        el("td", { text: fmtNumber(day.cancelled) }),
      ),
    ),
  );
}

function drawChart() {
  const host = $("chart");
  const days = daily;
  const width = Math.max(280, Math.round(host.clientWidth || 600));
  const height = width < 480 ? 220 : 260;
  const margin = { top: 16, right: 8, bottom: 40, left: 48 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const scale = axisScale(Math.max(0, ...days.map((d) => d.total)));
  const max = scale.max;
  const y = (v) => margin.top + plotH - (v / max) * plotH;
  const totals = days.reduce(
    (acc, d) => ({ total: acc.total + d.total, completed: acc.completed + d.completed, failed: acc.failed + d.failed }),
    { total: 0, completed: 0, failed: 0 },
  );
  const summary =
    `Jobs per day over the last ${days.length} days: ${fmtNumber(totals.total)} in total, ` +
    `${fmtNumber(totals.completed)} completed, ${fmtNumber(totals.failed)} failed.`;
  const chart = svg(
    "svg",
    { class: "chart-svg", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-labelledby": "chart-svg-title" },
    svg("title", { id: "chart-svg-title" }, summary),
    svg(
      "defs",
      {},
      svg(
        "pattern",
        { id: "hatch-failed", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
        svg("rect", { class: "hatch-bg", width: 6, height: 6 }),
        svg("line", { class: "hatch-line", x1: 0, y1: 0, x2: 0, y2: 6 }),
      ),
    ),
  );
  for (let value = 0; value <= max; value += scale.step) {
    const yy = y(value);
    chart.append(
      svg("line", { class: "grid", x1: margin.left, x2: width - margin.right, y1: yy, y2: yy }),
      svg("text", { class: "axis-label", x: margin.left - 6, y: yy + 4, "text-anchor": "end" }, fmtNumber(value)),
    );
  }
  const group = plotW / Math.max(days.length, 1);
  const bar = Math.max(3, Math.min(22, (group * 0.78) / 3));
  days.forEach((day, index) => {
    const left = margin.left + group * index + (group - bar * 3) / 2;
    const label = dayLabel(day.date);
    const series = [
      ["total", day.total],
      ["completed", day.completed],
      ["failed", day.failed],
    ];
    series.forEach(([name, value], s) => {
      const top = y(value);
      chart.append(
        svg(
          "rect",
          { class: `bar bar-${name}`, x: left + s * bar, y: top, width: bar - 1, height: Math.max(0, margin.top + plotH - top), "data-day": day.date },
          svg("title", {}, `${label.long}: ${fmtNumber(value)} ${name}`),
        ),
      );
    });
    const cx = margin.left + group * index + group / 2;
    chart.append(
      svg("text", { class: "axis-label", x: cx, y: height - margin.bottom + 16, "text-anchor": "middle" }, label.short),
      svg("text", { class: "axis-label axis-sub", x: cx, y: height - margin.bottom + 30, "text-anchor": "middle" }, label.date),
    );
  });
  chart.append(svg("line", { class: "axis", x1: margin.left, x2: width - margin.right, y1: margin.top + plotH, y2: margin.top + plotH }));
  host.replaceChildren(chart);
}

/** Redraw at the chart's new width (the SVG is drawn in pixels, not scaled). */
export function initChart() {
  if (typeof ResizeObserver !== "function") return;
  let lastWidth = 0;
  new ResizeObserver((entries) => {
    const width = Math.round(entries[0].contentRect.width);
    if (width !== lastWidth && daily.length) {
      lastWidth = width;
      drawChart();
    }
  }).observe($("chart"));
}
