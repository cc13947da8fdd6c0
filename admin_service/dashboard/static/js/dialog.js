/* The job details dialog: a job's details, its timeline from the event log and its result,
 * redrawn while it is open when a live update concerns that job. */

import { jobActions } from "./actions.js";
import { api, explain, failed } from "./api.js";
import { $, el } from "./dom.js";
import { fmtDuration, statusBadge, timeEl } from "./format.js";
import { EVENTS } from "./names.js";

let openRef = null; // the row id or job id of the job shown
let opener = null; // the element focused before the dialog opened: focus goes back there
let refreshTimer = null;

function detailList(pairs) {
  return el(
    "dl",
    { class: "details" },
    pairs.map(([term, value]) => el("div", { class: "details-row" }, el("dt", { text: term }), el("dd", {}, value))),
  );
}

export async function openJob(ref) {
  const dialog = $("job-dialog");
  openRef = ref;
  opener = document.activeElement;
  $("job-dialog-title").textContent = "Job";
  $("job-dialog-body").replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  if (!dialog.open) dialog.showModal();
  await renderOpenJob(ref);
}

/** A live update of this job: redraw the open dialog (once for a burst of updates). */
export function refreshIfOpen(job) {
  if (!openRef || (openRef !== job.id && openRef !== job.job_id)) return;
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    if (openRef && $("job-dialog").open) renderOpenJob(openRef);
  }, 250);
}

export function closeDialog() {
  if ($("job-dialog").open) $("job-dialog").close();
}

async function renderOpenJob(ref) {
  const enc = encodeURIComponent(ref);
  const [job, timeline, result] = await Promise.allSettled([
    api(`/jobs/${enc}`),
    api(`/jobs/${enc}/events`),
    api(`/jobs/${enc}/results`),
  ]);
  if (openRef !== ref) return;
  for (const settled of [job, timeline, result]) {
    if (settled.status === "rejected" && failed(settled.reason)) return;
  }
  const body = $("job-dialog-body");
  if (job.status === "rejected") {
    body.replaceChildren(el("p", { class: "form-error", text: job.reason.status === 404 ? "This job no longer exists." : explain(job.reason) }));
    return;
  }
  const j = job.value;
  $("job-dialog-title").textContent = `Job ${j.job_id}`;
  const sections = [
    el("h3", { text: "Details" }),
    detailList([
      ["Status", statusBadge(j.status)],
      ["Row id", el("code", { text: j.id })],
      ["Job id", el("code", { text: j.job_id })],
      ["Assessment", j.assessment_name || "—"],
      ["User", j.user ? `${j.user.email}${j.user.username ? ` (${j.user.username})` : ""}` : "(unknown user)"],
      ["Priority", String(j.priority ?? "—")],
      ["Retries", `${j.retry_count ?? 0} of ${j.max_retries ?? "?"}`],
      ["Created", timeEl(j.created_at)],
      ["Processing started", timeEl(j.processing_started_at)],
      ["Completed", timeEl(j.completed_at)],
      ["Updated", timeEl(j.updated_at)],
      ["Queue wait", fmtDuration(j.queueWaitSeconds)],
      ["Processing time", fmtDuration(j.processingTimeSeconds)],
    ]),
  ];
  if (j.error_message) sections.push(el("h3", { text: "Error" }), el("pre", { class: "code error-text", text: j.error_message }));
  sections.push(...jobActions(j, () => renderOpenJob(ref)));
  sections.push(el("h3", { text: "Timeline" }));
  if (timeline.status === "fulfilled" && timeline.value.events.length) {
    sections.push(el("ol", { class: "timeline" }, timeline.value.events.map(timelineItem)));
  } else if (timeline.status === "fulfilled") {
    sections.push(el("p", { class: "muted", text: "No events for this job." }));
  } else {
    sections.push(el("p", { class: "form-error", text: explain(timeline.reason) }));
  }
  sections.push(el("h3", { text: "Result" }));
  if (result.status === "fulfilled") {
    sections.push(el("pre", { class: "code result-json", tabindex: 0, text: JSON.stringify(result.value.result, null, 2) }));
  } else if (result.reason.code === "RESULT_NOT_FOUND") {
    sections.push(el("p", { class: "muted no-result", text: "No result for this job (yet)." }));
  } else {
    sections.push(el("p", { class: "form-error", text: explain(result.reason) }));
  }
  body.replaceChildren(...sections);
}

/** One step of a job's timeline: a logged event, or a step its row proves (derived: the job is
 * older than the event log, or polling merged that change with the next one). */
function timelineItem(event) {
  if (event.event === EVENTS.action) {
    const p = event.payload;
    const who = p.requested_by.email || p.requested_by.id;
    return el("li", { class: "logged action-entry" }, timeEl(event.occurred_at), " ", el("span", { class: "badge", text: `↻ ${event.kind}` }), " ", el("span", { text: `by ${who}: “${p.reason}” — ${p.item.state.replace("_", " ")}` }));
  }
  const badge =
    event.event === EVENTS.alert
      ? el("span", { class: "badge badge-alert", text: `⚠ alert: ${event.kind}` })
      : statusBadge(event.status || (event.payload.job || {}).status || event.kind);
  const parts = [timeEl(event.occurred_at), " ", badge, " ", el("span", { text: event.event === EVENTS.alert ? event.payload.message : event.kind })];
  if (event.derived) {
    const retries = event.payload.retry_count ? `, after ${event.payload.retry_count} retr${event.payload.retry_count === 1 ? "y" : "ies"}` : "";
    parts.push(" ", el("span", { class: "muted derived-note", text: `(from the job's ${event.source}${retries}; not in the event log)` }));
  }
  return el("li", { class: event.derived ? "derived" : "logged" }, ...parts);
}

export function initDialog() {
  const dialog = $("job-dialog");
  $("job-dialog-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => {
    // Back to where the user was; the table may have been redrawn meanwhile (live updates).
    const ref = openRef;
    openRef = null;
    let target = opener && opener.isConnected ? opener : null;
    if (!target && ref) target = document.querySelector(`#jobs-body tr[data-job-id="${CSS.escape(ref)}"] .cell-job button`);
    if (target) target.focus();
    opener = null;
  });
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
}
