/* The alert banner: live job-alert events, and on load the episodes still active. A
 * table-wide rule (an episode) shows once until resolved; each per-job alert shows on its own;
 * at most 5 are shown, and a dismissed one stays dismissed until sign-out. */

import { api, failed } from "./api.js";
import { $, el } from "./dom.js";
import { dateTimeFormat, humanize, timeEl } from "./format.js";
import { EPISODE_RULES } from "./names.js";
import { wasSeen } from "./state.js";

const SHOWN_MAX = 5;

const shown = new Map(); // key ("active:<rule>" or "event:<id>") -> element
const dismissed = new Set(); // event ids of alerts the user dismissed: a refresh does not bring them back

export function onAlert(alert, id) {
  const resolved = Boolean(alert.data && alert.data.resolved);
  if (resolved || EPISODE_RULES.includes(alert.type)) {
    const active = shown.get(`active:${alert.type}`);
    if (active) {
      active.remove();
      shown.delete(`active:${alert.type}`);
    }
  }
  const key = EPISODE_RULES.includes(alert.type) && !resolved ? `active:${alert.type}` : `event:${id || Math.random()}`;
  showAlert(key, alert, id, true);
}

function showAlert(key, alert, id, announce) {
  const resolved = Boolean(alert.data && alert.data.resolved);
  const severity = resolved ? "resolved" : ["low", "medium", "high", "critical"].includes(alert.severity) ? alert.severity : "medium";
  const label = resolved ? "Resolved" : severity[0].toUpperCase() + severity.slice(1);
  const item = el(
    "div",
    { class: `alert alert-${severity}`, role: announce ? "alert" : null, "data-type": alert.type || "" },
    el("span", { class: "alert-severity" }, el("span", { "aria-hidden": "true", text: resolved ? "✓ " : "⚠ " }), label),
    el("span", { class: "alert-message", text: humanize(alert.message || alert.type) }),
    timeEl(alert.timestamp, dateTimeFormat),
    el("button", {
      type: "button",
      class: "button button-small",
      "aria-label": `Dismiss alert: ${alert.message || alert.type}`,
      onclick: () => {
        item.remove();
        shown.delete(key);
        if (id) dismissed.add(String(id));
      },
      text: "Dismiss",
    }),
  );
  const host = $("alerts");
  host.prepend(item);
  shown.set(key, item);
  while (host.children.length > SHOWN_MAX) {
    const last = host.lastElementChild;
    for (const [k, v] of shown) if (v === last) shown.delete(k);
    last.remove();
  }
}

/** Sign-out: no alerts shown, none remembered as dismissed. */
export function clearAlerts() {
  $("alerts").replaceChildren();
  shown.clear();
  dismissed.clear();
}

/** Alerts raised before the page opened and still active: the newest event of each rule, if not a resolution. */
export async function loadAlerts() {
  let data;
  try {
    data = await api("/jobs/alerts", { limit: 100 });
  } catch (error) {
    failed(error);
    return;
  }
  const newest = new Map();
  for (const event of data.events) {
    if (EPISODE_RULES.includes(event.kind) && !newest.has(event.kind)) newest.set(event.kind, event);
  }
  for (const [rule, event] of newest) {
    const key = `active:${rule}`;
    if (shown.has(key) || wasSeen(String(event.id)) || dismissed.has(String(event.id))) continue;
    if (event.payload && !(event.payload.data && event.payload.data.resolved)) showAlert(key, event.payload, event.id, false);
  }
}
