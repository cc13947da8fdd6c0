// A dashboard's Socket.IO client, as the existing admin dashboard connects (socket.io-client v4).
//
//   node client.js URL [TOKEN] [TRANSPORTS] [ALSO]
//
// Connects with exactly the dashboard's options (TRANSPORTS, a comma list, replaces the
// dashboard's "websocket,polling": "polling" is a polling-only client), emits subscribe:jobs once connected
// (and each event of ALSO, a comma list such as "subscribe:alerts", as the old dashboard does), and
// prints one JSON object per line for everything that happens:
//   {"type":"connect","id":...,"transport":"websocket"|"polling"}
//   {"type":"connect_error","message":...,"data":...}   (then exits with code 2)
//   {"type":"ack","event":"subscribe:jobs","data":...}
//   {"type":"event","name":...,"data":...}
//   {"type":"disconnect","reason":...}
// It exits when its stdin closes (the test is done with it), or after 120 s at most.
"use strict";

const { io } = require("socket.io-client");

const [url, token, transports, also] = process.argv.slice(2);
if (!url) {
  process.stderr.write("usage: node client.js URL [TOKEN] [TRANSPORTS]\n");
  process.exit(64);
}

function out(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

// The dashboard's options, verbatim (an empty TOKEN argument means "no token").
const socket = io(url, {
  path: "/admin/socket.io",
  auth: { token: token || undefined },
  transports: transports ? transports.split(",") : ["websocket", "polling"],
});

socket.on("connect", () => {
  out({ type: "connect", id: socket.id, transport: socket.io.engine.transport.name });
  for (const event of ["subscribe:jobs", ...(also ? also.split(",") : [])]) {
    socket.emit(event, (ack) => out({ type: "ack", event, data: ack }));
  }
});

socket.on("connect_error", (err) => {
  out({ type: "connect_error", message: err.message, data: err.data === undefined ? null : err.data });
  socket.close();
  process.exitCode = 2;
  setTimeout(() => process.exit(2), 100);
});

socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));

socket.onAny((name, ...args) => out({ type: "event", name, data: args.length ? args[0] : null }));

function finish() {
  socket.close();
  setTimeout(() => process.exit(process.exitCode || 0), 100);
}

process.stdin.on("end", finish);
process.stdin.resume();
setTimeout(finish, 120_000).unref();
