/* The live updates feed: job updates newest first (the last FEED_MAX kept), notes about
 * missed updates, and a pause that holds new items back until resumed. */

import { openJob } from "./dialog.js";
import { $, el } from "./dom.js";
import { shortId, statusBadge, timeEl, timeFormat } from "./format.js";

const FEED_MAX = 50;
const WAITING = "Waiting for job updates…";
const VERB = { created: "created", updated: "updated", completed: "completed", failed: "failed", cancelled: "cancelled" };

let paused = false;
const pending = []; // updates that arrived while paused

export function addUpdate(update) {
  if (paused) {
    pending.push(update);
    $("feed-pause").textContent = `Resume (${pending.length} new)`;
    return;
  }
  addFeedItem(update);
}

function addFeedItem(update) {
  const job = update.job || {};
  const user = job.user ? job.user.email : null;
  const item = el(
    "li",
    { class: `feed-item feed-${VERB[update.event] ? update.event : "updated"}`, "data-job-id": job.id || "" },
    el(
      "div",
      { class: "feed-line" },
      statusBadge(job.status),
      el("span", { class: "feed-verb", text: `${VERB[update.event] || update.event || "updated"}` }),
      el("button", { type: "button", class: "link", onclick: () => openJob(job.id || job.job_id), title: job.job_id }, shortId(job.job_id || job.id)),
    ),
    el(
      "div",
      { class: "feed-meta" },
      el("span", { text: [job.assessment_name, user].filter(Boolean).join(" · ") }),
      timeEl(update.timestamp || job.updated_at, timeFormat),
    ),
  );
  const feed = $("feed");
  feed.prepend(item);
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  $("feed-note").textContent = `Newest first, last ${FEED_MAX} kept.`;
}

export function addFeedNote(text) {
  const feed = $("feed");
  feed.prepend(el("li", { class: "feed-item feed-note" }, text));
  while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
}

/** Sign-out: an empty feed. */
export function clearFeed() {
  $("feed").replaceChildren();
  $("feed-note").textContent = WAITING;
}

function toggleFeed() {
  paused = !paused;
  const button = $("feed-pause");
  button.setAttribute("aria-pressed", String(paused));
  if (!paused) {
    for (const update of pending.splice(0)) addFeedItem(update);
    button.textContent = "Pause";
  } else {
    button.textContent = "Resume";
  }
}

export function initFeed() {
  $("feed-pause").addEventListener("click", toggleFeed);
}
