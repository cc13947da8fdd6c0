/* Acting on jobs (operators only): the Retry button of the job dialog, "Retry the N failed jobs
 * that match" on the filtered table (a dry run, a typed confirmation and a reason, then a live
 * progress bar fed by job-action events), and the Actions panel (the audit log). What the
 * signed-in user may do comes from GET /session: a viewer sees the audit log and nothing to press. */

import { api, apiPost, explain, failed } from "./api.js";
import { $, el, show } from "./dom.js";
import { fmtNumber, timeEl } from "./format.js";

let session = null; // GET /session: role, permissions, whether a transport is configured
let filtersNow = () => ({}); // the table's applied filters (given by the wiring)
let tracked = null; // the bulk action whose progress bar is shown
let auditTimer = null;

const mayAct = () => Boolean(session && session.permissions.act);
const available = () => Boolean(session && session.actions.available);

/** Sign-in: learn the role, then show what it may do. */
export async function loadSession() {
  try {
    session = await api("/session");
  } catch (error) {
    if (failed(error)) return;
    session = null;
  }
  $("role").textContent = session ? `${session.user.email || session.user.id} · ${session.role}` : "";
  renderBulk();
  loadAudit();
}

export function clearActions() {
  session = null;
  tracked = null;
  $("role").textContent = "";
  $("bulk-retry").replaceChildren();
  show($("bulk-retry"), false);
  $("actions-body").replaceChildren();
}

/** The job dialog's part: a Retry button for a failed job (operators only), with its reason. */
export function jobActions(job, onDone) {
  if (!mayAct() || job.status !== "failed") return [];
  if (!available()) return [el("p", { class: "muted actions-unavailable", text: session.actions.message })];
  const reason = el("input", { id: "retry-reason", type: "text", maxlength: "1000", placeholder: "Why (kept in the audit log)", "aria-label": "Reason for the retry" });
  const status = el("p", { class: "small", role: "status", id: "retry-status" });
  const button = el("button", { type: "button", class: "button button-primary", id: "retry-job", text: "Retry this job" });
  button.addEventListener("click", async () => {
    if (!reason.value.trim()) {
      status.textContent = "Say why first: the reason is kept in the audit log.";
      reason.focus();
      return;
    }
    button.disabled = true;
    try {
      const action = await apiPost(`/jobs/${encodeURIComponent(job.id)}/retry`, { reason: reason.value.trim() }, { "Idempotency-Key": crypto.randomUUID() });
      status.textContent = `Retry requested (action ${action.id.slice(0, 8)}): handed to the platform; this job's timeline shows when it is picked up.`;
      loadAudit();
      onDone();
    } catch (error) {
      if (failed(error)) return;
      status.textContent = error.message || explain(error);
      button.disabled = false;
    }
  });
  return [el("h3", { text: "Actions" }), el("div", { class: "retry-row" }, reason, button), status];
}

/** The table's filters changed: offer a bulk retry of what they match. */
export function filtersChanged() {
  renderBulk();
}

function renderBulk() {
  const box = $("bulk-retry");
  if (!mayAct()) {
    show(box, false);
    return;
  }
  show(box, true);
  if (!available()) {
    box.replaceChildren(el("p", { class: "muted actions-unavailable", text: session.actions.message }));
    return;
  }
  const start = el("button", { type: "button", class: "button", id: "bulk-start", text: "Retry the failed jobs that match…" });
  start.addEventListener("click", dryRun);
  box.replaceChildren(start, tracked ? progressBar(tracked) : "");
}

async function dryRun() {
  const box = $("bulk-retry");
  const filter = withoutBlanks(filtersNow());
  let preview;
  try {
    preview = await apiPost("/jobs/actions", { kind: "retry", filter, dry_run: true });
  } catch (error) {
    if (failed(error)) return;
    box.replaceChildren(el("p", { class: "form-error", id: "bulk-error", text: error.message || explain(error) }), el("button", { type: "button", class: "button", text: "Back", onclick: renderBulk }));
    return;
  }
  const n = preview.retryable;
  if (preview.over_cap) {
    box.replaceChildren(
      el("p", { id: "bulk-summary", class: "form-error", text: `${fmtNumber(preview.count)} jobs match these filters, more than one action may cover (${fmtNumber(preview.cap)}): narrow the filters.` }),
      el("button", { type: "button", class: "button", text: "Back", onclick: renderBulk }),
    );
    return;
  }
  const typed = el("input", { id: "bulk-confirm-text", type: "text", autocomplete: "off", "aria-describedby": "bulk-summary" });
  const reason = el("input", { id: "bulk-reason", type: "text", maxlength: "1000", placeholder: "Why (kept in the audit log)", "aria-label": "Reason" });
  const go = el("button", { type: "button", class: "button button-primary", id: "bulk-confirm", text: `Retry the ${fmtNumber(n)} failed jobs that match`, disabled: true });
  const error = el("p", { class: "form-error", id: "bulk-error", role: "alert", hidden: true });
  const check = () => {
    go.disabled = !(typed.value.trim() === String(n) && reason.value.trim() && n > 0);
  };
  typed.addEventListener("input", check);
  reason.addEventListener("input", check);
  go.addEventListener("click", async () => {
    go.disabled = true;
    try {
      const action = await apiPost(
        "/jobs/actions",
        { kind: "retry", filter, reason: reason.value.trim(), confirmation_token: preview.confirmation_token },
        { "Idempotency-Key": crypto.randomUUID() },
      );
      tracked = action;
      renderBulk();
      loadAudit();
    } catch (e) {
      if (failed(e)) return;
      error.textContent = e.message || explain(e);
      show(error, true);
      go.disabled = false;
    }
  });
  const cancel = el("button", { type: "button", class: "button", text: "Cancel", onclick: renderBulk });
  box.replaceChildren(
    el("p", { id: "bulk-summary", text: `${fmtNumber(preview.count)} jobs match these filters; ${fmtNumber(n)} of them failed and would be retried (the others are skipped). Type ${n} to confirm.` }),
    el("div", { class: "retry-row" }, el("label", { for: "bulk-confirm-text", text: "Number of jobs" }), typed, reason, go, cancel),
    error,
  );
  typed.focus();
}

function withoutBlanks(filter) {
  return Object.fromEntries(Object.entries(filter).filter(([, value]) => value !== "" && value !== null && value !== undefined));
}

function progressBar(action) {
  const c = action.counts;
  const done = c.picked_up + c.failed + c.skipped;
  return el(
    "div",
    { class: "action-progress", id: "bulk-progress", "data-action-id": action.id },
    el("progress", { max: String(action.total), value: String(done), "aria-label": "Retry progress" }),
    el("p", { class: "small", id: "bulk-progress-text", text: progressText(action) }),
  );
}

function progressText(action) {
  const c = action.counts;
  return `${action.state}: ${c.picked_up} of ${action.total} picked up · ${c.sent} sent · ${c.pending} waiting · ${c.failed} failed · ${c.skipped} skipped${c.overdue ? ` · ${c.overdue} not picked up in time` : ""}`;
}

/** A job-action event: move the progress bar, refresh the audit log (once for a burst). */
export function onJobAction(event) {
  const action = event.action;
  if (tracked && action.id === tracked.id) {
    tracked = action;
    const bar = $("bulk-progress");
    if (bar) bar.replaceWith(progressBar(action));
  }
  clearTimeout(auditTimer);
  auditTimer = setTimeout(loadAudit, 300);
}

/** The Actions panel: the audit log, newest first. */
export async function loadAudit() {
  let page;
  try {
    page = await api("/jobs/actions", { limit: 20 });
  } catch (error) {
    if (failed(error)) return;
    $("actions-body").replaceChildren(el("tr", {}, el("td", { colspan: "6", class: "form-error", text: explain(error) })));
    return;
  }
  $("actions-summary").textContent = `${fmtNumber(page.total)} actions`;
  $("actions-body").replaceChildren(
    ...page.actions.map((a) =>
      el(
        "tr",
        { "data-action-id": a.id },
        el("td", {}, timeEl(a.created_at)),
        el("td", { text: a.requested_by.email || a.requested_by.id }),
        el("td", { text: a.kind }),
        el("td", { class: "action-reason", text: a.reason }),
        el("td", { class: "action-state", text: a.state }),
        el("td", { text: `${a.counts.picked_up}/${a.total} picked up${a.counts.failed ? `, ${a.counts.failed} failed` : ""}${a.counts.skipped ? `, ${a.counts.skipped} skipped` : ""}` }),
      ),
    ),
  );
}

export function initActions(currentFilters) {
  filtersNow = currentFilters;
}
