// A WebSocket subscriber written with Node's `ws` package: connects, takes `count` events,
// subscribes to a second topic on the open connection, and prints what it received as
// JSON lines on stdout (the test publishes and checks). Exits when the server closes.
const WebSocket = require("ws");

const [url, count] = [process.argv[2], Number(process.argv[3])];
const ws = new WebSocket(url);
let events = 0;

ws.on("open", () => console.log(JSON.stringify({ open: true })));
ws.on("message", (data, isBinary) => {
  const message = JSON.parse(data.toString());
  console.log(JSON.stringify({ message, isBinary }));
  if (!("type" in message) && ++events === count) {
    ws.send(JSON.stringify({ type: "subscribe", topics: ["second"], ref: "s" }));
  }
});
ws.on("close", (code, reason) => {
  console.log(JSON.stringify({ close: code, reason: reason.toString() }));
  process.exit(0);
});
ws.on("error", (error) => {
  console.log(JSON.stringify({ error: String(error) }));
  process.exit(1);
});
