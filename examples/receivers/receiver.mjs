// A webhook receiver for enrollq: it verifies each delivery with the
// Standard Webhooks library (npm install standardwebhooks), answers 2xx
// only to verified ones, and deduplicates on the event id.
//
//   WEBHOOK_SECRET=whsec_... PORT=8000 node receiver.mjs
import http from "node:http";
import standardwebhooks from "standardwebhooks";

const wh = new standardwebhooks.Webhook(process.env.WEBHOOK_SECRET);
const seen = new Set(); // use your database in production

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    let event;
    try {
      // Checks the signature (any of several, during a rotation) and that
      // webhook-timestamp is within 5 minutes; throws otherwise.
      event = wh.verify(body, req.headers);
    } catch (err) {
      res.writeHead(400).end(`rejected: ${err.message}`);
      return;
    }
    if (!seen.has(event.id)) {
      seen.add(event.id);
      const d = event.data;
      switch (event.type) {
        case "enrollment.succeeded": // mark d.account_id enrolled
          break;
        case "enrollment.failed": // d.action: new_session_needed → ask the user to redo Face Match, …
          break;
        case "enrollment.requeued":
          break;
      }
      console.log(JSON.stringify(event)); // one line per new event
    }
    res.writeHead(204).end();
  });
});
server.listen(Number(process.env.PORT ?? 8000), "127.0.0.1", () => {
  console.error(`listening on ${server.address().port}`);
});
