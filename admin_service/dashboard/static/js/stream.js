/* The live stream: one EventSource on /jobs/stream, resumed from the last event id after a
 * lost connection, and the connection state shown in the top bar. What the events mean is
 * the handlers' business (given by the wiring). */

import { api, API, failed } from "./api.js";
import { $ } from "./dom.js";
import { timeFormat } from "./format.js";
import { EVENTS } from "./names.js";
import { currentToken, remember, resumeFrom } from "./state.js";

const RECONNECT_MAX_MS = 30000;

let handlers = null;
let source = null;
let connected = false; // an EventSource has opened at least once since sign-in
let reconnectTimer = null;
let reconnectDelay = 1000;
let reconnecting = false; // a new EventSource replaces one the browser gave up on

export function setConnection(stateName, text) {
  const node = $("connection");
  node.dataset.state = stateName;
  $("connection-text").textContent = text;
}

/**
 * What the events mean, set once by the wiring: stats(data), jobUpdate(update), alert(alert) (an
 * episode raised or changed: alert:new / alert:update; the job-alert beside each is not needed),
 * reset() (the gap was longer than the server keeps), reconnected() (back after a drop with no
 * event id to resume from), tokenExpired().
 */
export function handleEvents(given) {
  handlers = given;
}

/** A new EventSource, resuming after the last event id seen (if any). */
export function connect() {
  disconnect();
  const url = new URL(`${API}/jobs/stream`, window.location.origin);
  url.searchParams.set("access_token", currentToken());
  // A new EventSource does not carry the old one's Last-Event-ID: say it in the query.
  const lastEventId = resumeFrom();
  if (lastEventId) url.searchParams.set("last_event_id", lastEventId);
  const current = new EventSource(url);
  source = current;
  let dropped = false; // this EventSource lost its connection at least once
  if (connected) setConnection("reconnecting", "Reconnecting…");
  else setConnection("connecting", "Connecting…");

  current.addEventListener("open", () => {
    const resuming = connected && (dropped || reconnecting);
    connected = true;
    reconnecting = false;
    reconnectDelay = 1000;
    if (!resuming) {
      setConnection("live", "Live");
    } else if (resumeFrom()) {
      setConnection("resumed", `Live · resumed at ${timeFormat.format(new Date())} after event ${resumeFrom()}`);
    } else {
      // Nothing with an id had arrived yet: there is nothing to resume from; refetch instead.
      setConnection("resumed", `Live · reconnected at ${timeFormat.format(new Date())}, refreshed`);
      handlers.reconnected();
    }
  });
  current.addEventListener(EVENTS.stats, (event) => handlers.stats(JSON.parse(event.data)));
  current.addEventListener(EVENTS.update, (event) => {
    if (remember(event.lastEventId)) handlers.jobUpdate(JSON.parse(event.data));
  });
  current.addEventListener(EVENTS.action, (event) => {
    if (remember(event.lastEventId) && handlers.jobAction) handlers.jobAction(JSON.parse(event.data));
  });
  for (const name of [EVENTS.alertNew, EVENTS.alertUpdate]) {
    current.addEventListener(name, (event) => {
      if (remember(event.lastEventId)) handlers.alert(JSON.parse(event.data));
    });
  }
  current.addEventListener("reset", () => handlers.reset());
  current.addEventListener("error", (event) => {
    if (current !== source) return;
    if (event instanceof MessageEvent && event.data) {
      // A named `error` event sent by the server, not a connection failure.
      let info = {};
      try {
        info = JSON.parse(event.data);
      } catch (_) {
        info = {};
      }
      if (info.code === "TOKEN_EXPIRED") handlers.tokenExpired();
      return; // SLOW_CONSUMER and others: the browser reconnects with Last-Event-ID
    }
    dropped = true;
    if (current.readyState === EventSource.CLOSED) {
      // The browser gave up (a non-stream answer such as 401, 429 or 503): find out why.
      current.close();
      setConnection("reconnecting", "Reconnecting…");
      reconnecting = true;
      checkThenReconnect();
    } else {
      setConnection("reconnecting", "Reconnecting…");
    }
  });
}

export function disconnect() {
  clearTimeout(reconnectTimer);
  if (source) {
    source.close();
    source = null;
  }
}

/** Sign-out: the next sign-in connects afresh, not as a resume. */
export function stop() {
  disconnect();
  connected = false;
}

async function checkThenReconnect() {
  try {
    await api("/jobs/stats");
  } catch (error) {
    if (failed(error)) return;
  }
  const delay = reconnectDelay;
  reconnectDelay = Math.min(reconnectDelay * 2, RECONNECT_MAX_MS);
  reconnectTimer = setTimeout(() => {
    if (currentToken()) connect();
  }, delay);
}
