/* The failures panel: failed jobs of the chosen range grouped by error signature
 * (GET /admin/jobs/failures), each with its count, share, a sparkline of its days (inline
 * SVG) and the assessments it hit. Choosing a group filters the jobs table by its signature
 * (the wiring hands in how). */

import { api, explain, failed } from "./api.js";
import { $, el, svg } from "./dom.js";
import { compactFormat, fmtNumber, timeEl } from "./format.js";

let seq = 0;
let whenPicked = () => {};

function sparkline(perDay) {
  const width = 120;
  const height = 28;
  const max = Math.max(1, ...perDay.map((d) => d.count));
  const step = perDay.length > 1 ? width / (perDay.length - 1) : width;
  const points = perDay.map((d, i) => `${(i * step).toFixed(1)},${(height - 2 - (d.count / max) * (height - 4)).toFixed(1)}`);
  const busiest = perDay.reduce((best, d) => (d.count > best.count ? d : best), perDay[0] || { date: "", count: 0 });
  return svg(
    "svg",
    { class: "sparkline", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" },
    svg("title", {}, `Per day, ${perDay[0]?.date} to ${perDay[perDay.length - 1]?.date}: most on ${busiest.date} (${fmtNumber(busiest.count)})`),
    svg("polyline", { class: "sparkline-line", points: points.join(" ") }),
  );
}

function groupItem(group) {
  const share = `${(group.share * 100).toFixed(1)}%`;
  return el(
    "li",
    { class: "failure", "data-signature": group.signature, "data-count": group.count },
    el(
      "button",
      {
        type: "button",
        class: "failure-pick",
        title: "Show these jobs in the table",
        "aria-label": `${fmtNumber(group.count)} failures, ${share}: ${group.signature}. Show these jobs in the table.`,
        onclick: () => whenPicked(group.filter),
      },
      el("span", { class: "failure-count", text: fmtNumber(group.count) }),
      el("span", { class: "failure-share muted", text: share }),
      el("code", { class: "failure-signature", text: group.signature }),
    ),
    sparkline(group.perDay),
    el(
      "p",
      { class: "failure-meta muted small" },
      `${group.assessments.join(", ") || "no assessment"} · last `,
      timeEl(group.lastSeen, compactFormat),
      " · e.g. ",
      el("span", { class: "failure-example", title: group.example || "", text: group.example || "(no error message)" }),
    ),
  );
}

/** `params`: the range (from, to) of the trends' picker. */
export async function loadFailures(params) {
  const mine = ++seq;
  const summary = $("failures-summary");
  summary.textContent = "Loading failures…";
  let data;
  try {
    data = await api("/jobs/failures", { from: params.from, to: params.to, limit: 10 });
  } catch (error) {
    if (mine !== seq || failed(error)) return;
    const fields = error.details.map((d) => `${d.field}: ${d.message}`).join(" ");
    summary.textContent = error.status === 400 && fields ? fields : explain(error);
    $("failures").replaceChildren();
    return;
  }
  if (mine !== seq) return;
  const { groups, pagination, range } = data;
  summary.textContent = data.totalFailures
    ? `${fmtNumber(data.totalFailures)} failed jobs in ${fmtNumber(pagination.total)} ${pagination.total === 1 ? "group" : "groups"}, ` +
      `${range.firstDay} to ${range.lastDay} (${range.timezone})` +
      (pagination.total > groups.length ? ` · the ${groups.length} largest shown` : "")
    : `No failed jobs from ${range.firstDay} to ${range.lastDay}.`;
  $("failures").replaceChildren(...groups.map(groupItem));
}

/** `onPick(filter)` gets the list filter of a chosen group. */
export function initFailures(onPick) {
  whenPicked = onPick;
}

export function clearFailures() {
  $("failures").replaceChildren();
  $("failures-summary").textContent = "";
}
