/* admin-service live dashboard.
 *
 * Plain browser JavaScript, no build step and no dependencies. Everything comes from the
 * service's own API with the admin token: REST with an Authorization header, the live
 * stream (SSE, EventSource) with the `access_token` query parameter. The DOM is built with
 * createElement/textContent only (the page's CSP enforces Trusted Types: no HTML strings).
 */
(function () {
  "use strict";

  const TOKEN_KEY = "admin-service.dashboard.token";
  const FEED_MAX = 50;
  const SEEN_MAX = 2000;
  const RECONNECT_MAX_MS = 30000;
  const EPISODE_RULES = ["high_failure_rate", "queue_overflow", "processing_timeout"];
  const STATUS_ICON = { queued: "◷", processing: "▶", completed: "✓", failed: "✕", cancelled: "⊘" };
  const SVG_NS = "http://www.w3.org/2000/svg";
  const API = document.body.dataset.apiBase || "/admin";

  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat("en-US");
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const compactFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });

  const state = {
    token: null,
    expiryTimer: null,
    source: null,
    connected: false, // an EventSource has opened at least once since sign-in
    reconnectTimer: null,
    reconnectDelay: 1000,
    reconnecting: false, // a new EventSource replaces one the browser gave up on
    lastEventId: null,
    seen: new Set(),
    query: { page: 1, limit: 25, sort_by: "created_at", sort_order: "DESC" },
    filters: {},
    listSeq: 0,
    visibleJobs: new Map(), // row id -> <tr>
    newJobs: 0,
    feedPaused: false,
    feedPending: [],
    dailyKey: "",
    daily: [],
    alerts: new Map(), // key -> element
    dismissed: new Set(), // event ids of alerts the user dismissed: a refresh does not bring them back
    openJob: null,
    opener: null,
    openJobTimer: null,
  };

  // --- small helpers -------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.setAttribute("class", value);
      else if (key === "text") node.textContent = value;
      else if (key === "onclick") node.addEventListener("click", value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function fmtNumber(value) {
    return typeof value === "number" && Number.isFinite(value) ? numberFormat.format(value) : "—";
  }

  function fmtPercent(value) {
    return typeof value === "number" && Number.isFinite(value) ? `${value.toFixed(1)}%` : "—";
  }

  function fmtDuration(seconds) {
    if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "—";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
    if (seconds < 3600) {
      const m = Math.floor(seconds / 60);
      const s = Math.floor(seconds % 60);
      return s ? `${m} min ${s} s` : `${m} min`;
    }
    if (seconds < 86400) {
      const h = Math.floor(seconds / 3600);
      const m = Math.floor((seconds % 3600) / 60);
      return m ? `${h} h ${m} min` : `${h} h`;
    }
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    return h ? `${d} d ${h} h` : `${d} d`;
  }

  function parseDate(value) {
    if (!value) return null;
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function timeEl(value, format) {
    const date = parseDate(value);
    if (!date) return el("span", { class: "muted", text: "—" });
    return el("time", { datetime: date.toISOString(), title: date.toISOString(), text: (format || dateTimeFormat).format(date) });
  }

  function statusBadge(status) {
    const name = STATUS_ICON[status] ? status : "unknown";
    return el(
      "span",
      { class: `badge status-${name}` },
      el("span", { class: "badge-icon", "aria-hidden": "true", text: STATUS_ICON[status] || "?" }),
      el("span", { text: status || "unknown" }),
    );
  }

  function shortId(value) {
    const text = String(value || "");
    return text.length > 20 ? `${text.slice(0, 14)}…` : text;
  }

  // --- the API ---------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details || [];
    }
  }

  async function api(path, params, token) {
    const url = new URL(API + path, window.location.origin);
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== "" && value !== null && value !== undefined) url.searchParams.set(key, value);
    }
    let response;
    try {
      response = await fetch(url, {
        headers: { Authorization: `Bearer ${token || state.token}`, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
      });
    } catch (_) {
      throw new ApiError(0, "NETWORK", "The service cannot be reached.");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (response.ok && body && body.success) return body.data;
    const error = (body && body.error) || {};
    throw new ApiError(response.status, error.code || `HTTP_${response.status}`, error.message || response.statusText, error.details);
  }

  function explain(error) {
    switch (error.status) {
      case 401:
        return "This token was refused: it is invalid or has expired. Get a new admin token and sign in again.";
      case 403:
        return "This token is valid, but its user is not an active admin.";
      case 429:
        return "Too many requests: wait a moment and try again.";
      case 503:
        return "The service cannot reach its database or auth service right now. Try again shortly.";
      case 0:
        return "The service cannot be reached. Check the connection and try again.";
      default:
        return `The service answered ${error.status} ${error.code}: ${error.message}`;
    }
  }

  /** Any API failure during use: a refused token ends the session, the rest is reported where it happened. */
  function failed(error) {
    if (error instanceof ApiError && error.status === 401) {
      signOut("Your session ended: the token was refused (expired or revoked). Sign in again with a valid admin token.");
      return true;
    }
    return false;
  }

  // --- sign-in ----------------------------------------------------------------------------

  function tokenClaims(token) {
    const parts = token.split(".");
    if (parts.length !== 3) return null;
    try {
      const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(parts[1].length / 4) * 4, "="));
      return JSON.parse(json);
    } catch (_) {
      return null;
    }
  }

  function showSignIn(message) {
    show($("main"), false);
    show($("refresh"), false);
    show($("sign-out"), false);
    show($("sign-in"), true);
    const error = $("sign-in-error");
    error.textContent = message || "";
    show(error, Boolean(message));
    const input = $("token-input");
    input.setAttribute("aria-invalid", message ? "true" : "false");
    input.focus();
  }

  async function signIn(token) {
    token = token.trim();
    const button = $("sign-in-button");
    if (!token) {
      showSignIn("Paste an admin token first.");
      return;
    }
    if (!tokenClaims(token)) {
      showSignIn("That is not a token: an admin token is a JWT, three parts separated by dots.");
      return;
    }
    button.disabled = true;
    button.textContent = "Signing in…";
    setConnection("connecting", "Checking the token…");
    let stats;
    try {
      stats = await api("/jobs/stats", {}, token);
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      setConnection("offline", "Not connected");
      showSignIn(explain(error));
      return;
    } finally {
      button.disabled = false;
      button.textContent = "Sign in";
    }
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    show($("sign-in"), false);
    show($("main"), true);
    show($("refresh"), true);
    show($("sign-out"), true);
    scheduleExpiry(token);
    renderStats(stats);
    loadJobs();
    loadAlerts();
    connect();
  }

  function scheduleExpiry(token) {
    clearTimeout(state.expiryTimer);
    const claims = tokenClaims(token);
    if (!claims || typeof claims.exp !== "number") return;
    const left = claims.exp * 1000 - Date.now();
    const expired = () =>
      signOut(`Your token expired at ${dateTimeFormat.format(new Date(claims.exp * 1000))}. Sign in with a new admin token.`);
    if (left <= 0) expired();
    else state.expiryTimer = setTimeout(expired, Math.min(left, 2 ** 31 - 1));
  }

  function signOut(message) {
    clearTimeout(state.expiryTimer);
    disconnect();
    state.token = null;
    state.connected = false;
    state.lastEventId = null;
    state.seen.clear();
    state.dismissed.clear();
    sessionStorage.removeItem(TOKEN_KEY);
    clearAlerts();
    $("feed").replaceChildren();
    $("feed-note").textContent = "Waiting for job updates…";
    if ($("job-dialog").open) $("job-dialog").close();
    setConnection("offline", "Not connected");
    showSignIn(message || "");
  }

  // --- the live stream -----------------------------------------------------------------

  function setConnection(stateName, text) {
    const node = $("connection");
    node.dataset.state = stateName;
    $("connection-text").textContent = text;
  }

  function disconnect() {
    clearTimeout(state.reconnectTimer);
    if (state.source) {
      state.source.close();
      state.source = null;
    }
  }

  function connect() {
    disconnect();
    const url = new URL(`${API}/jobs/stream`, window.location.origin);
    url.searchParams.set("access_token", state.token);
    // A new EventSource does not carry the old one's Last-Event-ID: say it in the query.
    if (state.lastEventId) url.searchParams.set("last_event_id", state.lastEventId);
    const source = new EventSource(url);
    state.source = source;
    let dropped = false; // this EventSource lost its connection at least once
    if (state.connected) setConnection("reconnecting", "Reconnecting…");
    else setConnection("connecting", "Connecting…");

    source.addEventListener("open", () => {
      const resuming = state.connected && (dropped || state.reconnecting);
      state.connected = true;
      state.reconnecting = false;
      state.reconnectDelay = 1000;
      if (!resuming) {
        setConnection("live", "Live");
      } else if (state.lastEventId) {
        setConnection("resumed", `Live · resumed at ${timeFormat.format(new Date())} after event ${state.lastEventId}`);
      } else {
        // Nothing with an id had arrived yet: there is nothing to resume from; refetch instead.
        setConnection("resumed", `Live · reconnected at ${timeFormat.format(new Date())}, refreshed`);
        refreshAll(false);
      }
    });
    source.addEventListener("job-stats", (event) => renderStats(JSON.parse(event.data)));
    source.addEventListener("job-update", (event) => {
      if (remember(event)) onJobUpdate(JSON.parse(event.data));
    });
    source.addEventListener("job-alert", (event) => {
      if (remember(event)) onAlert(JSON.parse(event.data), event.lastEventId);
    });
    source.addEventListener("reset", () => {
      // The gap was longer than the server keeps: what was missed cannot be replayed.
      addFeedNote("Some updates were missed while disconnected (older than the server keeps); figures and jobs were refreshed.");
      refreshAll(false);
    });
    source.addEventListener("error", (event) => {
      if (source !== state.source) return;
      if (event instanceof MessageEvent && event.data) {
        // A named `error` event sent by the server, not a connection failure.
        let info = {};
        try {
          info = JSON.parse(event.data);
        } catch (_) {
          info = {};
        }
        if (info.code === "TOKEN_EXPIRED") {
          signOut("Your token expired. Sign in with a new admin token.");
        }
        return; // SLOW_CONSUMER and others: the browser reconnects with Last-Event-ID
      }
      dropped = true;
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (a non-stream answer such as 401, 429 or 503): find out why.
        source.close();
        setConnection("reconnecting", "Reconnecting…");
        state.reconnecting = true;
        checkThenReconnect();
      } else {
        setConnection("reconnecting", "Reconnecting…");
      }
    });
  }

  async function checkThenReconnect() {
    try {
      await api("/jobs/stats");
    } catch (error) {
      if (failed(error)) return;
    }
    const delay = state.reconnectDelay;
    state.reconnectDelay = Math.min(state.reconnectDelay * 2, RECONNECT_MAX_MS);
    state.reconnectTimer = setTimeout(() => {
      if (state.token) connect();
    }, delay);
  }

  /** Track ids of stored events; false for one already handled (a replay can overlap). */
  function remember(event) {
    const id = event.lastEventId;
    if (!id) return true;
    if (Number(id) > Number(state.lastEventId || 0)) state.lastEventId = id;
    if (state.seen.has(id)) return false;
    state.seen.add(id);
    if (state.seen.size > SEEN_MAX) state.seen.delete(state.seen.values().next().value);
    return true;
  }

  // --- status cards ----------------------------------------------------------------------

  function setCard(id, value, text) {
    const node = $(id);
    node.textContent = text;
    node.dataset.value = value === null || value === undefined ? "" : String(value);
  }

  function renderStats(stats) {
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
    renderDaily(stats.dailyMetrics || []);
  }

  // --- the 7-day chart (inline SVG) --------------------------------------------------------

  /** Whole-number gridlines: a 1/2/5 x 10^k step giving at most 5 intervals up to the top. */
  function axisScale(value) {
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

  function renderDaily(days) {
    const key = JSON.stringify(days);
    if (key === state.dailyKey) return;
    state.dailyKey = key;
    state.daily = days;
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
    const days = state.daily;
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

  // --- live feed -------------------------------------------------------------------------

  const VERB = { created: "created", updated: "updated", completed: "completed", failed: "failed", cancelled: "cancelled" };

  function onJobUpdate(update) {
    const job = update.job || {};
    updateVisibleRow(job);
    if (update.event === "created") noteNewJob();
    if (state.openJob && (state.openJob === job.id || state.openJob === job.job_id)) refreshOpenJob();
    if (state.feedPaused) {
      state.feedPending.push(update);
      $("feed-pause").textContent = `Resume (${state.feedPending.length} new)`;
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

  function addFeedNote(text) {
    const feed = $("feed");
    feed.prepend(el("li", { class: "feed-item feed-note" }, text));
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  }

  function toggleFeed() {
    state.feedPaused = !state.feedPaused;
    const button = $("feed-pause");
    button.setAttribute("aria-pressed", String(state.feedPaused));
    if (!state.feedPaused) {
      for (const update of state.feedPending.splice(0)) addFeedItem(update);
      button.textContent = "Pause";
    } else {
      button.textContent = "Resume";
    }
  }

  // --- alerts ---------------------------------------------------------------------------

  function onAlert(alert, id) {
    const resolved = Boolean(alert.data && alert.data.resolved);
    if (resolved || EPISODE_RULES.includes(alert.type)) {
      const active = state.alerts.get(`active:${alert.type}`);
      if (active) {
        active.remove();
        state.alerts.delete(`active:${alert.type}`);
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
      el("span", { class: "alert-message", text: alert.message || alert.type }),
      timeEl(alert.timestamp, timeFormat),
      el("button", {
        type: "button",
        class: "button button-small",
        "aria-label": `Dismiss alert: ${alert.message || alert.type}`,
        onclick: () => {
          item.remove();
          state.alerts.delete(key);
          if (id) state.dismissed.add(String(id));
        },
        text: "Dismiss",
      }),
    );
    const host = $("alerts");
    host.prepend(item);
    state.alerts.set(key, item);
    while (host.children.length > 5) {
      const last = host.lastElementChild;
      for (const [k, v] of state.alerts) if (v === last) state.alerts.delete(k);
      last.remove();
    }
  }

  function clearAlerts() {
    $("alerts").replaceChildren();
    state.alerts.clear();
  }

  /** Alerts raised before the page opened and still active: the newest event of each rule, if not a resolution. */
  async function loadAlerts() {
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
      if (state.alerts.has(key) || state.seen.has(String(event.id)) || state.dismissed.has(String(event.id))) continue;
      if (event.payload && !(event.payload.data && event.payload.data.resolved)) showAlert(key, event.payload, event.id, false);
    }
  }

  // --- the jobs table -----------------------------------------------------------------------

  function readFilters() {
    return {
      status: $("f-status").value,
      assessment_name: $("f-assessment").value.trim(),
      user_email: $("f-email").value.trim(),
      date_from: $("f-from").value,
      date_to: $("f-to").value,
    };
  }

  async function loadJobs() {
    const seq = ++state.listSeq;
    const params = { ...state.filters, ...state.query };
    const summary = $("jobs-summary");
    summary.textContent = "Loading jobs…";
    $("jobs-table").setAttribute("aria-busy", "true");
    let data;
    try {
      data = await api("/jobs", params);
    } catch (error) {
      if (seq !== state.listSeq || failed(error)) return;
      $("jobs-table").removeAttribute("aria-busy");
      if (error.status === 400 && error.details.length) {
        const box = $("filters-error");
        box.textContent = error.details.map((d) => `${d.field}: ${d.message}`).join(" ");
        show(box, true);
        summary.textContent = "Fix the filters to see jobs.";
      } else {
        summary.textContent = explain(error);
      }
      return;
    }
    if (seq !== state.listSeq) return; // a newer request has been made
    $("jobs-table").removeAttribute("aria-busy");
    show($("filters-error"), false);
    state.newJobs = 0;
    show($("jobs-new"), false);
    renderJobs(data);
  }

  function renderJobs(data) {
    const body = $("jobs-body");
    state.visibleJobs.clear();
    const rows = data.jobs.map((job) => {
      const row = el(
        "tr",
        { "data-job-id": job.id, "data-status": job.status, role: "row" },
        el("td", { class: "cell-job", role: "cell" }, el("button", { type: "button", class: "link", title: job.job_id, onclick: () => openJob(job.id) }, shortId(job.job_id))),
        el("td", { class: "cell-status", role: "cell" }, statusBadge(job.status)),
        el("td", { class: "cell-assessment", role: "cell", text: job.assessment_name || "—" }),
        el("td", { class: "cell-user", role: "cell", title: job.user ? job.user.email : null, text: job.user ? job.user.email : "(unknown user)" }),
        el("td", { class: "cell-priority col-optional num", role: "cell", text: job.priority ?? "—" }),
        el("td", { class: "cell-created", role: "cell" }, timeEl(job.created_at, compactFormat)),
        el("td", { class: "cell-updated col-optional", role: "cell" }, timeEl(job.updated_at, compactFormat)),
        el("td", { class: "cell-completed col-optional", role: "cell" }, timeEl(job.completed_at, compactFormat)),
      );
      state.visibleJobs.set(job.id, row);
      return row;
    });
    if (!rows.length) {
      rows.push(el("tr", { role: "row" }, el("td", { colspan: 8, class: "empty", role: "cell", text: "No jobs match these filters." })));
    }
    body.replaceChildren(...rows);
    const p = data.pagination;
    const total = p.total === null || p.total === undefined ? "?" : fmtNumber(p.total);
    const pages = p.totalPages ? fmtNumber(p.totalPages) : "1";
    $("page-info").textContent = `Page ${fmtNumber(p.page || state.query.page)} of ${pages}`;
    $("jobs-summary").textContent = `${total} ${p.total === 1 ? "job" : "jobs"} · sorted by ${sortDescription()}`;
    $("jobs-summary").dataset.total = p.total ?? "";
    $("page-prev").disabled = !p.hasPrev;
    $("page-next").disabled = !p.hasNext;
    for (const th of document.querySelectorAll("th[data-sort]")) {
      const active = th.dataset.sort === state.query.sort_by;
      th.setAttribute("aria-sort", active ? (state.query.sort_order === "ASC" ? "ascending" : "descending") : "none");
    }
  }

  function sortDescription() {
    const { sort_by: field, sort_order: order } = state.query;
    const asc = order === "ASC";
    if (field === "status") return `status, ${asc ? "A to Z" : "Z to A"}`;
    if (field === "priority") return `priority, ${asc ? "lowest first" : "highest first"}`;
    return `${field.replace("_at", "").replace("_", " ")} time, ${asc ? "oldest first" : "newest first"}`;
  }

  function updateVisibleRow(job) {
    const row = state.visibleJobs.get(job.id);
    if (!row) return;
    row.dataset.status = job.status;
    row.querySelector(".cell-status").replaceChildren(statusBadge(job.status));
    row.querySelector(".cell-updated").replaceChildren(timeEl(job.updated_at, compactFormat));
    row.querySelector(".cell-completed").replaceChildren(timeEl(job.completed_at, compactFormat));
    row.classList.remove("flash");
    void row.offsetWidth; // restart the highlight
    row.classList.add("flash");
  }

  function noteNewJob() {
    state.newJobs += 1;
    const button = $("jobs-new");
    button.textContent = `${fmtNumber(state.newJobs)} new ${state.newJobs === 1 ? "job" : "jobs"} · show`;
    show(button, true);
  }

  function applyFilters() {
    state.filters = readFilters();
    state.query.page = 1;
    loadJobs();
  }

  function sortBy(field) {
    if (state.query.sort_by === field) {
      state.query.sort_order = state.query.sort_order === "DESC" ? "ASC" : "DESC";
    } else {
      state.query.sort_by = field;
      state.query.sort_order = field === "status" ? "ASC" : "DESC";
    }
    state.query.page = 1;
    loadJobs();
  }

  // --- job details dialog ------------------------------------------------------------------

  function detailList(pairs) {
    return el(
      "dl",
      { class: "details" },
      pairs.map(([term, value]) => el("div", { class: "details-row" }, el("dt", { text: term }), el("dd", {}, value))),
    );
  }

  async function openJob(ref) {
    const dialog = $("job-dialog");
    state.openJob = ref;
    state.opener = document.activeElement;
    $("job-dialog-title").textContent = "Job";
    $("job-dialog-body").replaceChildren(el("p", { class: "muted", text: "Loading…" }));
    if (!dialog.open) dialog.showModal();
    await renderOpenJob(ref);
  }

  function refreshOpenJob() {
    clearTimeout(state.openJobTimer);
    state.openJobTimer = setTimeout(() => {
      if (state.openJob && $("job-dialog").open) renderOpenJob(state.openJob);
    }, 250);
  }

  async function renderOpenJob(ref) {
    const enc = encodeURIComponent(ref);
    const [job, timeline, result] = await Promise.allSettled([
      api(`/jobs/${enc}`),
      api(`/jobs/${enc}/events`),
      api(`/jobs/${enc}/results`),
    ]);
    if (state.openJob !== ref) return;
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
    sections.push(el("h3", { text: "Timeline" }));
    if (timeline.status === "fulfilled" && timeline.value.events.length) {
      sections.push(
        el(
          "ol",
          { class: "timeline" },
          timeline.value.events.map((event) =>
            el(
              "li",
              {},
              timeEl(event.occurred_at),
              " ",
              event.event === "job-alert"
                ? el("span", { class: "badge badge-alert", text: `⚠ alert: ${event.kind}` })
                : statusBadge((event.payload.job || {}).status || event.kind),
              " ",
              el("span", { text: event.event === "job-alert" ? event.payload.message : event.kind }),
            ),
          ),
        ),
      );
    } else if (timeline.status === "fulfilled") {
      sections.push(el("p", { class: "muted", text: "No events logged for this job yet (events are kept from when the service first saw it)." }));
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

  // --- refresh -----------------------------------------------------------------------------

  async function refreshAll(fresh) {
    try {
      renderStats(await api("/jobs/stats", fresh ? { fresh: "true" } : {}));
    } catch (error) {
      if (failed(error)) return;
    }
    loadJobs();
    loadAlerts();
  }

  // --- wiring -----------------------------------------------------------------------------

  function init() {
    $("sign-in-form").addEventListener("submit", (event) => {
      event.preventDefault();
      signIn($("token-input").value);
    });
    $("sign-out").addEventListener("click", () => signOut("Signed out."));
    $("refresh").addEventListener("click", () => refreshAll(true));
    $("feed-pause").addEventListener("click", toggleFeed);
    $("jobs-new").addEventListener("click", () => {
      state.query.page = 1;
      loadJobs();
    });
    $("filters").addEventListener("submit", (event) => {
      event.preventDefault();
      applyFilters();
    });
    $("filters").addEventListener("change", (event) => {
      if (event.target.matches("select, input[type=date]")) applyFilters();
    });
    $("filters-clear").addEventListener("click", () => {
      $("filters").reset();
      applyFilters();
    });
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.querySelector("button").addEventListener("click", () => sortBy(th.dataset.sort));
    }
    $("page-prev").addEventListener("click", () => {
      state.query.page = Math.max(1, state.query.page - 1);
      loadJobs();
    });
    $("page-next").addEventListener("click", () => {
      state.query.page += 1;
      loadJobs();
    });
    $("page-size").addEventListener("change", (event) => {
      state.query.limit = Number(event.target.value);
      state.query.page = 1;
      loadJobs();
    });
    const dialog = $("job-dialog");
    $("job-dialog-close").addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      // Back to where the user was; the table may have been redrawn meanwhile (live updates).
      const ref = state.openJob;
      state.openJob = null;
      let target = state.opener && state.opener.isConnected ? state.opener : null;
      if (!target && ref) target = document.querySelector(`#jobs-body tr[data-job-id="${CSS.escape(ref)}"] .cell-job button`);
      if (target) target.focus();
      state.opener = null;
    });
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close(); // a click on the backdrop
    });
    if (typeof ResizeObserver === "function") {
      let lastWidth = 0;
      new ResizeObserver((entries) => {
        const width = Math.round(entries[0].contentRect.width);
        if (width !== lastWidth && state.daily.length) {
          lastWidth = width;
          drawChart();
        }
      }).observe($("chart"));
    }

    // A token handed over in the URL fragment (#token=..., never sent to any server) wins,
    // and is removed from the address bar and history at once.
    let token = null;
    const fragment = new URLSearchParams(window.location.hash.slice(1));
    if (fragment.get("token")) {
      token = fragment.get("token");
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    token = token || sessionStorage.getItem(TOKEN_KEY);
    if (token) signIn(token);
    else showSignIn("");
  }

  init();
})();
