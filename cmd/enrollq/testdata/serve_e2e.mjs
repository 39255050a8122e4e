// The end-to-end client of `enrollq serve`, in Node with its built-in
// fetch: serve_e2e_test.go runs it and reads one JSON line per request
// (step, status, Retry-After, body). PHASE=main drives the API with Redis
// up; PHASE=down after the test stopped Redis.
const env = process.env;
const api = env.API;

async function call(step, method, path, { token = env.ENQ, body, raw, contentType = "application/json" } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined || raw !== undefined) headers["Content-Type"] = contentType;
  const res = await fetch(api + path, { method, headers, body: raw ?? (body === undefined ? undefined : JSON.stringify(body)) });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  const line = { step, status: res.status, retry_after: res.headers.get("retry-after"), content_type: res.headers.get("content-type"), body: json };
  console.log(JSON.stringify(line));
  return line;
}

async function until(step, path, state) {
  const deadline = Date.now() + 20000;
  for (;;) {
    const r = await call(step, "GET", path, { token: env.READ });
    if ((r.status === 200 && r.body.state === state) || Date.now() > deadline) return r;
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

if (env.PHASE === "main") {
  await call("enqueue", "POST", "/v1/enrollments", { body: { session_id: env.S1, account_id: env.ACCOUNT } });
  await call("duplicate", "POST", "/v1/enrollments", { body: { session_id: env.S1, account_id: env.ACCOUNT } });
  await call("other-account", "POST", "/v1/enrollments", { body: { session_id: env.S1, account_id: "someone-else" } });
  await call("invalid", "POST", "/v1/enrollments", { body: { session_id: "not-a-uuid", account_id: env.ACCOUNT } });
  await call("wrong-type", "POST", "/v1/enrollments", { body: { session_id: env.S3, account_id: 42 } });
  await call("to-dead", "POST", "/v1/enrollments", { body: { session_id: env.S2, account_id: env.DEAD_ACCOUNT } });
  await until("dead-status", `/v1/enrollments/${env.S2}`, "dead");
  await call("dead-lettered", "POST", "/v1/enrollments", { body: { session_id: env.S2, account_id: env.DEAD_ACCOUNT } });
  await call("batch", "POST", "/v1/enrollments/batch?queue=signup", {
    body: [
      { session_id: env.S3, account_id: env.ACCOUNT },
      { session_id: env.S3, account_id: env.ACCOUNT },
      { session_id: "nope", account_id: env.ACCOUNT },
      { session_id: env.S1, account_id: "someone-else" },
      { session_id: env.S2, account_id: env.DEAD_ACCOUNT },
      { session_id: env.S4, account_id: env.ACCOUNT, created_at: "2026-01-01T00:00:00Z", future_field: true },
    ],
  });
  await call("ndjson", "POST", "/v1/enrollments/batch", {
    raw: `{"session_id":"${env.S5}","account_id":"${env.ACCOUNT}"}\n{not json\n`,
    contentType: "application/x-ndjson",
  });
  await until("enrolled", `/v1/enrollments/${env.S1}`, "enrolled");
  await call("by-account", "GET", `/v1/enrollments?account_id=${env.ACCOUNT}`, { token: env.READ });
  await call("unknown", "GET", `/v1/enrollments/${env.S6}`, { token: env.READ });
  await call("bad-token", "POST", "/v1/enrollments", { token: "not-a-token-at-all-0000", body: { session_id: env.S6, account_id: env.ACCOUNT } });
  await call("read-scope-posts", "POST", "/v1/enrollments", { token: env.READ, body: { session_id: env.S6, account_id: env.ACCOUNT } });
} else {
  await call("redis-down", "POST", "/v1/enrollments", { body: { session_id: env.S6, account_id: env.ACCOUNT } });
  await call("readyz-down", "GET", "/readyz", { token: "" });
}
