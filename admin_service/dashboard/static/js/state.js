/* What several modules share, owned here and changed only through these functions: the
 * signed-in token (api, stream, session) and the stored events handled so far (the stream
 * remembers them; the alert banner skips those it has already shown). Everything else is
 * kept by the one module that uses it. */

const SEEN_MAX = 2000;

let token = null;
let lastEventId = null; // the newest stored event's id: where a new stream resumes
const seen = new Set(); // ids of stored events handled (a replay can overlap what arrived)

export function currentToken() {
  return token;
}

export function startSession(newToken) {
  token = newToken;
}

/** Sign-out: forget the token and every event seen with it. */
export function endSession() {
  token = null;
  lastEventId = null;
  seen.clear();
}

export function resumeFrom() {
  return lastEventId;
}

/** Track the id of a stored event; false for one already handled. */
export function remember(id) {
  if (!id) return true;
  if (Number(id) > Number(lastEventId || 0)) lastEventId = id;
  if (seen.has(id)) return false;
  seen.add(id);
  if (seen.size > SEEN_MAX) seen.delete(seen.values().next().value);
  return true;
}
