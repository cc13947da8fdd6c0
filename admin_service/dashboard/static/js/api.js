/* The service's REST API: fetch with the admin token, the response envelope, and what an
 * error means for the person reading the page. */

import { currentToken } from "./state.js";

export const API = document.body.dataset.apiBase || "/admin";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || [];
  }
}

/** The `data` of a successful answer; an ApiError otherwise. `token` defaults to the session's. */
export async function api(path, params, token) {
  const url = new URL(API + path, window.location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== "" && value !== null && value !== undefined) url.searchParams.set(key, value);
  }
  return request(url, { headers: { Authorization: `Bearer ${token || currentToken()}`, Accept: "application/json" } });
}

/** POST a JSON body (an operator's action); the `data` of the answer, an ApiError otherwise. */
export async function post(path, body) {
  const url = new URL(API + path, window.location.origin);
  return request(url, {
    method: "POST",
    headers: { Authorization: `Bearer ${currentToken()}`, Accept: "application/json", "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
  });
}

async function request(url, init) {
  let response;
  try {
    response = await fetch(url, { ...init, cache: "no-store", credentials: "omit" });
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

/** POST a JSON body; the `data` of a successful answer, an ApiError otherwise. */
export async function apiPost(path, body, headers) {
  let response;
  try {
    response = await fetch(new URL(API + path, window.location.origin), {
      method: "POST",
      headers: { Authorization: `Bearer ${currentToken()}`, Accept: "application/json", "Content-Type": "application/json", ...(headers || {}) },
      body: JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (_) {
    throw new ApiError(0, "NETWORK", "The service cannot be reached.");
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch (_) {
    answer = null;
  }
  if (response.ok && answer && answer.success) return answer.data;
  const error = (answer && answer.error) || {};
  throw new ApiError(response.status, error.code || `HTTP_${response.status}`, error.message || response.statusText, error.details);
}

export function explain(error) {
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

// Set by the wiring (the session ends): the modules that call the API do not import the session.
let whenRefused = () => {};

export function onRefused(handler) {
  whenRefused = handler;
}

/** Any API failure during use: a refused token ends the session (true); the rest is the caller's to report. */
export function failed(error) {
  if (error instanceof ApiError && error.status === 401) {
    whenRefused();
    return true;
  }
  return false;
}
