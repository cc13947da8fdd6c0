/* Signing in and out: the admin token (checked against the API before it is kept, in this
 * tab's sessionStorage only), its expiry, and the sign-in form with its messages. What a
 * session starts and ends elsewhere on the page is the wiring's (signedIn / signedOut). */

import { api, explain } from "./api.js";
import { $, show } from "./dom.js";
import { dateTimeFormat } from "./format.js";
import { endSession, startSession } from "./state.js";
import { setConnection } from "./stream.js";

const TOKEN_KEY = "admin-service.dashboard.token";

let hooks = null;
let expiryTimer = null;

/** The token's claims, read without verifying (the service verifies); null when it is no JWT. */
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
  startSession(token);
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token-input").value = "";
  show($("sign-in"), false);
  show($("main"), true);
  show($("refresh"), true);
  show($("sign-out"), true);
  scheduleExpiry(token);
  hooks.signedIn(stats);
}

function scheduleExpiry(token) {
  clearTimeout(expiryTimer);
  const claims = tokenClaims(token);
  if (!claims || typeof claims.exp !== "number") return;
  const left = claims.exp * 1000 - Date.now();
  const expired = () =>
    signOut(`Your token expired at ${dateTimeFormat.format(new Date(claims.exp * 1000))}. Sign in with a new admin token.`);
  if (left <= 0) expired();
  else expiryTimer = setTimeout(expired, Math.min(left, 2 ** 31 - 1));
}

export function signOut(message) {
  clearTimeout(expiryTimer);
  hooks.signedOut();
  endSession();
  sessionStorage.removeItem(TOKEN_KEY);
  setConnection("offline", "Not connected");
  showSignIn(message || "");
}

/** Wire the form and sign in with a token handed over in the URL fragment or kept in this tab. */
export function initSession(given) {
  hooks = given;
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token-input").value);
  });
  $("sign-out").addEventListener("click", () => signOut("Signed out."));

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
