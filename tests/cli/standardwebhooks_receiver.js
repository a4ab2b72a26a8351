// A webhook receiver that verifies with the npm `standardwebhooks` package (the
// Standard Webhooks reference implementation), not with our own code.
// Usage: node standardwebhooks_receiver.js <node_modules dir> <whsec_secret>
// Prints "listening http=127.0.0.1:PORT"; GET /stats answers {"verified":N,"failed":M}.
const path = require("path");
const http = require("http");
const { Webhook } = require(path.join(process.argv[2], "standardwebhooks"));
const wh = new Webhook(process.argv[3]);
let verified = 0, failed = 0;
const ids = new Set();
const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/stats") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ verified, failed, unique: ids.size }));
    return;
  }
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    try {
      const payload = wh.verify(body, req.headers);
      if (payload.event !== req.headers["x-webhook-event"]) throw new Error("X-Webhook-Event differs from the body");
      verified++;
      ids.add(req.headers["webhook-id"]);
      res.writeHead(204);
    } catch (e) {
      failed++;
      console.error("verification failed:", e.message);
      res.writeHead(401);
    }
    res.end();
  });
});
server.listen(0, "127.0.0.1", () => {
  console.log(`listening http=127.0.0.1:${server.address().port}`);
});
