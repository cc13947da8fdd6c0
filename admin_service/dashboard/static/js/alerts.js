/* The alert banners: one per alert episode, live from alert:new / alert:update, and on load the
 * episodes still open. Each shows its state (active; acknowledged by whom, when; resolved), an
 * Acknowledge button for operators while it is active, and Dismiss. A resolved banner stays for
 * RESOLVED_KEEP_MS, then goes. At most 5 are shown; a dismissed one stays dismissed until
 * sign-out (unless it is resolved: that news is shown). */

import { api, explain, failed, post } from "./api.js";
import { $, el } from "./dom.js";
import { dateTimeFormat, fmtDuration, humanize, timeEl } from "./format.js";

const SHOWN_MAX = 5;
export const RESOLVED_KEEP_MS = 60000;

const shown = new Map(); // episode id -> element
const dismissed = new Set(); // episode ids the user dismissed
let mayAct = null; // whether this session's user is an operator (GET /session), asked once per sign-in

async function operator() {
  if (mayAct === null) {
    try {
      const session = await api("/session");
      mayAct = Boolean(session.permissions && session.permissions.act);
    } catch (error) {
      failed(error);
      return false;
    }
  }
  return mayAct;
}

function stateText(alert) {
  if (alert.status === "acknowledged") {
    const at = alert.acknowledgedAt ? ` at ${dateTimeFormat.format(new Date(alert.acknowledgedAt))}` : "";
    return `Acknowledged by ${alert.acknowledgedBy || "an operator"}${at}`;
  }
  if (alert.status === "resolved") {
    const lasted = (Date.parse(alert.resolvedAt) - Date.parse(alert.createdAt)) / 1000;
    const after = Number.isFinite(lasted) ? ` after ${fmtDuration(Math.max(0, lasted))}` : "";
    return alert.resolvedBy ? `Resolved by ${alert.resolvedBy}${after}` : `Cleared by itself${after}`;
  }
  return "Active";
}

function build(alert, announce, canAct) {
  const resolved = alert.status === "resolved";
  const severity = resolved ? "resolved" : ["low", "medium", "high", "critical"].includes(alert.severity) ? alert.severity : "medium";
  const label = resolved ? "Resolved" : severity[0].toUpperCase() + severity.slice(1);
  const id = String(alert.id);
  const state = el("span", { class: "alert-state", text: stateText(alert) });
  const buttons = [];
  if (canAct && alert.status === "active") {
    const button = el("button", {
      type: "button",
      class: "button button-small",
      "aria-label": `Acknowledge alert: ${alert.message || alert.type}`,
      text: "Acknowledge",
    });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        show(await post(`/jobs/alerts/${encodeURIComponent(id)}/acknowledge`, {}), false);
      } catch (error) {
        if (failed(error)) return;
        button.disabled = false;
        state.textContent = explain(error);
      }
    });
    buttons.push(button);
  }
  const item = el(
    "div",
    {
      class: `alert alert-${severity}`,
      role: announce ? "alert" : null,
      "data-type": alert.type || "",
      "data-alert-id": id,
      "data-status": alert.status || "",
    },
    el("span", { class: "alert-severity" }, el("span", { "aria-hidden": "true", text: resolved ? "✓ " : "⚠ " }), label),
    el("span", { class: "alert-message", text: humanize(alert.message || alert.type) }),
    state,
    timeEl(alert.createdAt || alert.timestamp, dateTimeFormat),
    ...buttons,
    el("button", {
      type: "button",
      class: "button button-small",
      "aria-label": `Dismiss alert: ${alert.message || alert.type}`,
      onclick: () => {
        item.remove();
        shown.delete(id);
        dismissed.add(id);
      },
      text: "Dismiss",
    }),
  );
  return item;
}

async function show(alert, announce) {
  const id = String(alert.id);
  if (dismissed.has(id) && alert.status !== "resolved") return;
  const canAct = await operator();
  const item = build(alert, announce, canAct);
  const host = $("alerts");
  const old = shown.get(id);
  if (old && old.isConnected) old.replaceWith(item);
  else host.prepend(item);
  shown.set(id, item);
  if (alert.status === "resolved") {
    setTimeout(() => {
      if (shown.get(id) === item) {
        item.remove();
        shown.delete(id);
      }
    }, RESOLVED_KEEP_MS);
  }
  while (host.children.length > SHOWN_MAX) {
    const last = host.lastElementChild;
    for (const [k, v] of shown) if (v === last) shown.delete(k);
    last.remove();
  }
}

/** An episode raised or changed (alert:new / alert:update). */
export function onAlert(alert) {
  if (alert && alert.id !== undefined) show(alert, true);
}

/** Sign-out: no alerts shown, none remembered as dismissed, the role asked again. */
export function clearAlerts() {
  $("alerts").replaceChildren();
  shown.clear();
  dismissed.clear();
  mayAct = null;
}

/** The episodes still open (active or acknowledged), raised before the page opened or while it was away. */
export async function loadAlerts() {
  let data;
  try {
    data = await api("/jobs/alerts", { status: "active,acknowledged", limit: 100 });
  } catch (error) {
    failed(error);
    return;
  }
  const open = new Set(data.alerts.map((alert) => String(alert.id)));
  // Shown as open but no longer open: resolved while the page was away.
  for (const [id, item] of shown) {
    if (!open.has(id) && item.dataset.status !== "resolved") {
      item.remove();
      shown.delete(id);
    }
  }
  for (const alert of [...data.alerts].reverse()) {
    if (!dismissed.has(String(alert.id))) await show(alert, false);
  }
}
