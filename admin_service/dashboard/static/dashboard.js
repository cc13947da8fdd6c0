/* admin-service live dashboard: the entry module, wiring the others (in js/) together.
 *
 * Plain browser JavaScript as ES modules, no build step and no dependencies. Everything comes
 * from the service's own API with the admin token: REST with an Authorization header, the live
 * stream (SSE, EventSource) with the `access_token` query parameter. The DOM is built with
 * createElement/textContent only (the page's CSP enforces Trusted Types: no HTML strings).
 *
 * Each module keeps its own state; what several share (the token, the events seen) is in
 * js/state.js. A module that must set off another concern (the stream's events, a refused
 * token ending the session) is handed a function from here instead of importing it, so the
 * imports have no cycle.
 */

import { clearActions, filtersChanged, initActions, loadSession, onJobAction } from "./js/actions.js";
import { clearAlerts, loadAlerts, onAlert } from "./js/alerts.js";
import { api, failed, onRefused } from "./js/api.js";
import { loadAssessmentNames } from "./js/assessments.js";
import { renderCards } from "./js/cards.js";
import { initChart, renderDaily } from "./js/chart.js";
import { clearFailures, initFailures, loadFailures } from "./js/failures.js";
import { closeDialog, initDialog, refreshIfOpen } from "./js/dialog.js";
import { $ } from "./js/dom.js";
import { addFeedNote, addUpdate, clearFeed, initFeed } from "./js/feed.js";
import { initSession, signOut } from "./js/session.js";
import { initExport } from "./js/export.js";
import { connect, handleEvents, stop } from "./js/stream.js";
import { currentFilters, filterJobs, initTable, listParams, loadJobs, noteNewJob, updateRow } from "./js/table.js";
import { clearTrends, initTrends, loadTrends, rangeParams } from "./js/trends.js";

// Failure triage and trends: the range picker drives the charts and the failures panel; a
// failure group filters the jobs table.
function loadTriage() {
  loadTrends();
  loadFailures(rangeParams());
}

function renderStats(stats) {
  renderCards(stats);
  renderDaily(stats.dailyMetrics || []);
}

function onJobUpdate(update) {
  const job = update.job || {};
  updateRow(job);
  if (update.event === "created") noteNewJob();
  refreshIfOpen(job);
  addUpdate(update);
}

async function refreshAll(fresh) {
  try {
    renderStats(await api("/jobs/stats", fresh ? { fresh: "true" } : {}));
  } catch (error) {
    if (failed(error)) return;
  }
  loadJobs();
  loadAlerts();
  loadTriage();
}

handleEvents({
  stats: renderStats,
  jobUpdate: onJobUpdate,
  alert: onAlert,
  jobAction: onJobAction,
  reset: () => {
    addFeedNote("Some updates were missed while disconnected (older than the server keeps); figures and jobs were refreshed.");
    refreshAll(false);
  },
  reconnected: () => refreshAll(false),
  tokenExpired: () => signOut("Your token expired. Sign in with a new admin token."),
});
onRefused(() => signOut("Your session ended: the token was refused (expired or revoked). Sign in again with a valid admin token."));

$("refresh").addEventListener("click", () => refreshAll(true));
initFeed();
initTable();
initExport(listParams);
initDialog();
initChart();
initTrends(loadFailures);
initFailures(filterJobs);
initActions(currentFilters);
for (const kind of ["submit", "change"]) $("filters").addEventListener(kind, () => setTimeout(filtersChanged));
initSession({
  signedIn(stats) {
    renderStats(stats);
    loadJobs();
    loadAlerts();
    loadAssessmentNames();
    loadTriage();
    loadSession();
    connect();
  },
  signedOut() {
    stop();
    clearAlerts();
    clearFeed();
    clearActions();
    closeDialog();
    clearTrends();
    clearFailures();
  },
});
