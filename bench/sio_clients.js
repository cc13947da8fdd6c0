// N socket.io-client (v4, what the existing dashboards use) websocket sockets in one Node
// process, for bench/live.py.
//
//   node bench/sio_clients.js URL TOKEN N
//
// Connects N sockets (transports: websocket), each emits subscribe:jobs; prints
// {"ready": n, "failed": k, "seconds": s} when all are subscribed, then notes when each
// job-update arrives on each socket (Date.now() / 1000). On a line "report" on stdin it prints
// {"arrivals": {job_id: [t, ...]}, "open": connected sockets} and starts afresh; exits on EOF.
"use strict";

const path = require("path");
let io;
try {
  ({ io } = require(path.join(__dirname, "node_modules", "socket.io-client")));
} catch (e) {
  ({ io } = require(path.join(__dirname, "..", "tests", "node", "node_modules", "socket.io-client")));
}

const [url, token, count] = process.argv.slice(2);
const total = Number(count);
const started = Date.now();
let ready = 0;
let failed = 0;
let open = 0;
let arrivals = {};
let next = 0;
const sockets = [];

function settled() {
  if (ready + failed === total) {
    console.log(JSON.stringify({ ready, failed, seconds: (Date.now() - started) / 1000 }));
  }
}

function connectOne() {
  if (next >= total) return;
  next += 1;
  const socket = io(url, {
    path: "/admin/socket.io", auth: { token }, transports: ["websocket"], reconnection: false, timeout: 60000,
  });
  sockets.push(socket);
  let done = false;
  socket.on("connect", () => {
    open += 1;
    socket.emit("subscribe:jobs", () => {
      if (!done) { done = true; ready += 1; settled(); connectOne(); }
    });
  });
  socket.on("disconnect", () => { open -= 1; });
  socket.on("job-update", (update) => {
    const at = Date.now() / 1000;
    const id = update && update.job && update.job.id;
    if (id) (arrivals[id] = arrivals[id] || []).push(at);
  });
  socket.on("connect_error", (err) => {
    if (!done) { done = true; failed += 1; console.error(`connect_error: ${err.message}`); settled(); connectOne(); }
  });
}

// 100 handshakes in flight at a time.
for (let i = 0; i < Math.min(100, total); i++) connectOne();

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
  for (const s of sockets) s.close();
  process.exit(0);
});
