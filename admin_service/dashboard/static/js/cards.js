/* The status and performance cards (from /jobs/stats and the live job-stats event). */

import { $ } from "./dom.js";
import { dateTimeFormat, fmtDuration, fmtNumber, fmtPercent, parseDate, timeFormat } from "./format.js";

function setCard(id, value, text) {
  const node = $(id);
  node.textContent = text;
  node.dataset.value = value === null || value === undefined ? "" : String(value);
}

export function renderCards(stats) {
  const overview = stats.overview || {};
  const today = stats.today || {};
  const performance = stats.performance || {};
  const processing = performance.processingTimeSeconds || {};
  for (const name of ["queued", "processing", "completed", "failed", "cancelled"]) {
    setCard(`card-${name}`, overview[name], fmtNumber(overview[name]));
  }
  $("card-completed-sub").textContent = `${fmtNumber(today.completed)} of today's ${fmtNumber(today.total)}`;
  $("card-failed-sub").textContent = `${fmtNumber(today.failed)} of today's jobs`;
  $("card-queued-sub").textContent = `of ${fmtNumber(overview.total)} jobs in all`;
  $("card-processing-sub").textContent = "running now";
  $("card-cancelled-sub").textContent = "all time";
  setCard("card-success-rate", overview.successRate, fmtPercent(overview.successRate));
  const avg = processing.avg ?? performance.avgProcessingTimeSeconds;
  setCard("card-avg-processing", avg, fmtDuration(avg));
  const window_ = performance.window ? `last ${performance.window.hours} h` : "recent";
  $("card-avg-processing-sub").textContent = `${window_} · ${fmtNumber(performance.sampleSize)} jobs`;
  setCard("card-p95-processing", processing.p95, fmtDuration(processing.p95));
  $("card-p95-processing-sub").textContent = `p50 ${fmtDuration(processing.p50)} · p99 ${fmtDuration(processing.p99)}`;
  const oldest = performance.oldestQueuedJobAgeSeconds;
  setCard("card-oldest-queued", oldest, oldest === null || oldest === undefined ? "none" : fmtDuration(oldest));
  const since = parseDate(performance.oldestQueuedJobCreatedAt);
  $("card-oldest-queued-sub").textContent = since ? `waiting since ${dateTimeFormat.format(since)}` : "nothing is waiting";
  const computed = parseDate(stats.computedAt);
  $("computed-at").textContent = computed ? `Figures computed at ${timeFormat.format(computed)}` : "";
}
