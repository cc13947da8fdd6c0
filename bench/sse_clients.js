// N Server-Sent-Events streams in one Node process (a load generator apart from the service),
// for bench/live.py and bench/soak.py. Node's HTTP parser is native: cheaper per event than a
// Python client.
//
//   node bench/sse_clients.js URL TOKEN N [--events=job-update,job-alert] [--count]
//
// Opens N streams of GET /admin/jobs/stream?events=... (default job-update; 200 handshakes in
// flight), prints {"ready": n, "failed": k, "seconds": s} once all answered, then on a line
// "report" on stdin prints a report; exits on EOF.
//
// Default (latency) mode: notes when each job-update arrives on each stream (Date.now() / 1000);
// the report is {"arrivals": {job_id: [t, ...]}, "open": streams still open}, and starts afresh.
//
// --count (soak) mode: every stream counts the stored events (those with an `id:`) it receives,
// checks their ids only ever grow, and resumes with Last-Event-ID when the server ends it (a
// real client does; every end is counted). The report is cumulative:
// {"open", "streams": [{base, first, last, count, disorder, ends, failed_resumes, errors, resets}],
//  "lag_ms": {ms: n}} where base is the id the server declared on connecting (events after it
// are owed to the stream) and lag_ms the arrival time minus the event's `timestamp` (the job's
// updated_at, the database's clock on this machine), per whole millisecond.
"use strict";

const http = require("http");

const argv = process.argv.slice(2);
const [url, token, count] = argv.filter((a) => !a.startsWith("--"));
const flags = Object.fromEntries(argv.filter((a) => a.startsWith("--")).map((a) => {
  const [key, value] = a.slice(2).split("=");
  return [key, value === undefined ? true : value];
}));
const events = flags.events || "job-update";
const counting = Boolean(flags.count);
const total = Number(count);
const target = new URL(url);
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const JOB_ID = /"job":\{[^{}]*?"id":"([0-9a-f-]{36})"/;
const STAMP = '"timestamp":"';
const started = Date.now();
let ready = 0;
let failed = 0;
let open = 0;
let next = 0;
let closing = false;
let arrivals = {};
const lag = {};
const streams = [];
const requests = new Set();

function settled() {
  if (ready + failed === total) console.log(JSON.stringify({ ready, failed, seconds: (Date.now() - started) / 1000 }));
}

// One block (the text between blank lines) of a counting stream.
function countBlock(st, block, at) {
  let id = null;
  let name = null;
  let data = null;
  for (const line of block.split("\n")) {
    if (line.startsWith("id: ")) id = Number(line.slice(4));
    else if (line.startsWith("event: ")) name = line.slice(7);
    else if (line.startsWith("data: ")) data = line.slice(6);
  }
  if (name === null) {
    // An id without data: where the server says this stream starts (first connection only).
    if (id !== null && st.base === null && st.count === 0) st.base = id;
    return;
  }
  if (name === "error") st.errors += 1;
  if (name === "reset") st.resets += 1;
  if (id === null) return;
  const floor = st.last !== null ? st.last : st.base;
  if (floor !== null && id <= floor) { st.disorder += 1; return; }
  if (st.first === null) st.first = id;
  st.last = id;
  st.count += 1;
  const i = data === null ? -1 : data.lastIndexOf(STAMP);
  if (i >= 0) {
    const stamp = Date.parse(data.slice(i + STAMP.length, data.indexOf('"', i + STAMP.length)));
    if (!Number.isNaN(stamp)) {
      const ms = Math.max(0, Math.round(at - stamp));
      lag[ms] = (lag[ms] || 0) + 1;
    }
  }
}

function noteArrival(block, at) {
  if (block.includes("event: job-update")) {
    const m = JOB_ID.exec(block);
    if (m) (arrivals[m[1]] = arrivals[m[1]] || []).push(at / 1000);
  }
}

// Opens stream `st` (a first connection when onSettled is given, else a resume).
function connect(st, onSettled) {
  let done = false;
  const finish = (ok) => {
    if (done) return;
    done = true;
    if (onSettled) onSettled(ok);
    else if (!ok) { st.failed_resumes += 1; resumeLater(st); }
  };
  const headers = { Authorization: `Bearer ${token}`, Accept: "text/event-stream" };
  const resumeFrom = st.last !== null ? st.last : st.base;
  if (!onSettled && resumeFrom !== null) headers["Last-Event-ID"] = String(resumeFrom);
  const req = http.get({
    host: target.hostname, port: target.port, path: `/admin/jobs/stream?events=${events}`, agent, headers, timeout: 60000,
  }, (res) => {
    if (res.statusCode !== 200) { res.resume(); finish(false); return; }
    open += 1;
    finish(true);
    req.setTimeout(0);
    res.setEncoding("utf8");
    let buf = "";
    res.on("data", (chunk) => {
      const at = Date.now();
      buf += chunk;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        if (counting) countBlock(st, block, at); else noteArrival(block, at);
      }
    });
    res.on("close", () => {
      open -= 1;
      requests.delete(req);
      if (counting && !closing) { st.ends += 1; resumeLater(st); }
    });
  });
  req.on("timeout", () => { if (!done) req.destroy(new Error("timeout")); });
  req.on("error", () => { requests.delete(req); finish(false); });
  requests.add(req);
}

function resumeLater(st) {
  if (!closing) setTimeout(() => { if (!closing) connect(st, null); }, 1000);
}

function openOne() {
  if (next >= total) return;
  next += 1;
  const st = { base: null, first: null, last: null, count: 0, disorder: 0, ends: 0, failed_resumes: 0, errors: 0, resets: 0 };
  streams.push(st);
  connect(st, (ok) => {
    if (ok) ready += 1; else failed += 1;
    settled();
    openOne();
  });
}

for (let i = 0; i < Math.min(200, total); i++) openOne();

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  input += chunk;
  let nl;
  while ((nl = input.indexOf("\n")) >= 0) {
    const line = input.slice(0, nl).trim();
    input = input.slice(nl + 1);
    if (line === "report" && counting) {
      console.log(JSON.stringify({ open, streams, lag_ms: lag }));
    } else if (line === "report") {
      const out = arrivals;
      arrivals = {};
      console.log(JSON.stringify({ arrivals: out, open }));
    }
  }
});
process.stdin.on("end", () => {
  closing = true;
  for (const r of requests) r.destroy();
  process.exit(0);
});
