// N socket.io-client (v4) websocket sockets in one Node process, for bench/socketio_measure.py.
//
//   node bench/socketio_clients.js URL TOKEN N
//
// Prints {"ready": N} once every socket is connected and subscribed to jobs, then one line
// {"job": id, "at": epoch seconds} per job-update each socket receives.
"use strict";

const path = require("path");
const { io } = require(path.join(__dirname, "..", "tests", "node", "node_modules", "socket.io-client"));

const [url, token, count] = process.argv.slice(2);
const total = Number(count);
let ready = 0;
for (let i = 0; i < total; i++) {
  const socket = io(url, { path: "/admin/socket.io", auth: { token }, transports: ["websocket"] });
  socket.on("connect", () =>
    socket.emit("subscribe:jobs", () => {
      ready += 1;
      if (ready === total) console.log(JSON.stringify({ ready }));
    }),
  );
  socket.on("job-update", (update) => console.log(JSON.stringify({ job: update.job.id, at: Date.now() / 1000 })));
  socket.on("connect_error", (err) => {
    console.error(`connect_error: ${err.message}`);
    process.exit(2);
  });
}
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
