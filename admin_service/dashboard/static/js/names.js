/* The names the service declares once (admin_service/names.py): the page's template writes
 * them into a JSON block (data, never executed, so the CSP allows it), read here once. */

const declared = JSON.parse(document.getElementById("dashboard-names").textContent);

/** Live event names: { stats: "job-stats", update: "job-update", alert: "job-alert",
 * alertNew: "alert:new", alertUpdate: "alert:update" }. */
export const EVENTS = Object.freeze(declared.events);

/** Table-wide alert rules: raised once per episode, shown until resolved. */
export const EPISODE_RULES = Object.freeze(declared.episodeRules);
