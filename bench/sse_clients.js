// N Server-Sent-Events streams in one Node process (a load generator apart from the service),
// for bench/live.py. Node's HTTP parser is native: cheaper per event than a Python client.
//
//   node bench/sse_clients.js URL TOKEN N
//
// Opens N streams of GET /admin/jobs/stream?events=job-update (200 handshakes in flight),
// prints {"ready": n, "failed": k, "seconds": s} once all answered, then notes when each
// job-update arrives on each stream (Date.now() / 1000). On a line "report" on stdin it prints
// {"arrivals": {job_id: [t, ...]}, "open": streams still open} and starts afresh; exits on EOF.
"use strict";

const http = require("http");

const [url, token, count] = process.argv.slice(2);
const total = Number(count);
const target = new URL(url);
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const JOB_ID = /"job":\{[^{}]*?"id":"([0-9a-f-]{36})"/;
const started = Date.now();
let ready = 0;
let failed = 0;
let open = 0;
let next = 0;
let arrivals = {};
const requests = [];

function settled() {
  if (ready + failed === total) console.log(JSON.stringify({ ready, failed, seconds: (Date.now() - started) / 1000 }));
}

function openOne() {
  if (next >= total) return;
  next += 1;
  let done = false;
  const finish = (ok) => {
    if (done) return;
    done = true;
    if (ok) ready += 1; else failed += 1;
    settled();
    openOne();
  };
  const req = http.get({
    host: target.hostname, port: target.port, path: "/admin/jobs/stream?events=job-update", agent,
    headers: { Authorization: `Bearer ${token}`, Accept: "text/event-stream" }, timeout: 60000,
  }, (res) => {
    if (res.statusCode !== 200) { res.resume(); finish(false); return; }
    open += 1;
    finish(true);
    res.setEncoding("utf8");
    let buf = "";
    res.on("data", (chunk) => {
      const at = Date.now() / 1000;
      buf += chunk;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        if (block.includes("event: job-update")) {
          const m = JOB_ID.exec(block);
          if (m) (arrivals[m[1]] = arrivals[m[1]] || []).push(at);
        }
      }
    });
    res.on("close", () => { open -= 1; });
  });
  req.on("timeout", () => { if (!done) req.destroy(new Error("timeout")); });
  req.on("error", () => finish(false));
  requests.push(req);
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
    if (line === "report") {
      const out = arrivals;
      arrivals = {};
      console.log(JSON.stringify({ arrivals: out, open }));
    }
  }
});
process.stdin.on("end", () => {
  for (const r of requests) r.destroy();
  process.exit(0);
});
