// A webhook receiver that verifies with the npm `standardwebhooks` package (the
// Standard Webhooks reference implementation), not with our own code.
// Every order.* (but the shop's own order.checkout_initiated) and job.* body's
// `data` is also validated with ajv against docs/schemas/ (the original
// design's OrderStatusWebhook and WorkerStatusWebhook).
// Usage: node standardwebhooks_receiver.js <node_modules dir> <whsec_secret> [schemas dir]
// Prints "listening http=127.0.0.1:PORT"; GET /stats answers
// {"verified":N,"failed":M,"validated":V,"invalid":I}.
const path = require("path");
const http = require("http");
const { Webhook } = require(path.join(process.argv[2], "standardwebhooks"));
const wh = new Webhook(process.argv[3]);
let verified = 0, failed = 0, validated = 0, invalid = 0;
let validators = null;
if (process.argv[4]) {
  const Ajv = require(path.join(process.argv[2], "ajv"));
  const addFormats = require(path.join(process.argv[2], "ajv-formats"));
  const ajv = new Ajv({ allErrors: true });
  addFormats(ajv);
  const load = (f) => ajv.compile(JSON.parse(require("fs").readFileSync(path.join(process.argv[4], f))));
  validators = { order: load("order-status-webhook.schema.json"), job: load("worker-status-webhook.schema.json") };
}
const ids = new Set();
const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/stats") {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ verified, failed, validated, invalid, unique: ids.size }));
    return;
  }
  let body = "";
  req.on("data", (c) => (body += c));
  req.on("end", () => {
    try {
      const payload = wh.verify(body, req.headers);
      if (payload.event !== req.headers["x-webhook-event"]) throw new Error("X-Webhook-Event differs from the body");
      verified++;
      if (validators) {
        const kind = payload.event.startsWith("job.") ? "job"
          : payload.event.startsWith("order.") && payload.event !== "order.checkout_initiated" ? "order" : null;
        if (kind) {
          if (validators[kind](payload.data)) {
            validated++;
          } else {
            invalid++;
            console.error(`schema: ${payload.event} invalid:`, JSON.stringify(validators[kind].errors), JSON.stringify(payload.data));
          }
        }
      }
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
