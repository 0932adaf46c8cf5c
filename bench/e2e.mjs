// End-to-end benchmarks against the real workerd under `wrangler dev` (local D1 and Queue),
// loaded from this process over 127.0.0.1 only, bounded in time and count.
import autocannon from "autocannon";
import { createHmac, randomUUID } from "node:crypto";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { freePort, startWorker } from "../scripts/local-gateway.mjs";

const root = new URL("..", import.meta.url).pathname;
const SECRET = "bench-seismic-current";
const sample = readFileSync(join(root, "test/fixtures/seismic-livesend-session-summary-v3.json"), "utf8");
const SAMPLE_ID = "e40bbaab-f86e-e62b-d3c9-5104734edb18";

/** A fresh, correctly signed Seismic event (5 KB livesend summary) per request. */
function signedEvent() {
  const body = sample.replace(SAMPLE_ID, randomUUID());
  return { body, signature: createHmac("sha256", SECRET).update(body).digest("hex") };
}

function load(url, connections, { duration, amount }) {
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url: `${url}/webhooks/seismic`,
        method: "POST",
        connections,
        ...(amount ? { amount } : { duration }),
        requests: [
          {
            setupRequest(request) {
              const { body, signature } = signedEvent();
              return { ...request, body, headers: { "content-type": "application/json", "x-seismic-signature": signature } };
            },
          },
        ],
      },
      (err, result) => (err ? reject(err) : resolve(result)),
    );
  });
}

const summary = (r) => ({
  rps: r.requests.average,
  p50: r.latency.p50,
  p99: r.latency.p99,
  max: r.latency.max,
  non2xx: r.non2xx + r.errors + r.timeouts,
  total: r.requests.total,
});

export async function runThroughput({ seconds = 8, levels = [1, 8, 32] } = {}) {
  const gateway = await startWorker({ vars: { SEISMIC_SIGNING_SECRET: SECRET, SEISMIC_SIGNING_SECRET_OLD: "bench-old", ADMIN_TOKEN: "bench", DESTINATIONS: [] } });
  const bare = await startWorker({ config: join(root, "bench/wrangler.bare.toml"), migrate: false });
  const rows = [];
  try {
    for (const connections of levels) {
      // Warm both up, then measure them back to back.
      await load(gateway.url, connections, { amount: 100 });
      await load(bare.url, connections, { amount: 100 });
      const ours = summary(await load(gateway.url, connections, { duration: seconds }));
      const floor = summary(await load(bare.url, connections, { duration: seconds }));
      rows.push({ connections, ours, bare: floor });
    }
  } finally {
    await gateway.stop();
    await bare.stop();
  }
  return rows;
}

/**
 * Resident memory of the gateway's workerd processes every 10,000 of `events` accepted events,
 * with the size of the local D1 database beside it (the local emulator keeps it in that process).
 */
export async function runMemory({ events = 50_000, step = 10_000 } = {}) {
  const gateway = await startWorker({ vars: { SEISMIC_SIGNING_SECRET: SECRET, ADMIN_TOKEN: "bench", DESTINATIONS: [] } });
  try {
    await load(gateway.url, 8, { amount: 1_000 }); // warm: JIT, caches, D1 pages
    const points = [{ events: 0, rssKiB: gateway.rssKiB(), dbKiB: sizeKiB(gateway.persistTo) }];
    const started = Date.now();
    let errors = 0;
    for (let sent = 0; sent < events; sent += step) {
      errors += summary(await load(gateway.url, 32, { amount: step })).non2xx;
      points.push({ events: sent + step, rssKiB: gateway.rssKiB(), dbKiB: sizeKiB(gateway.persistTo) });
    }
    return { events, points, seconds: (Date.now() - started) / 1000, errors };
  } finally {
    await gateway.stop();
  }
}

function sizeKiB(dir) {
  return Number(execFileSync("du", ["-sk", dir]).toString().split("\t")[0]);
}

/** 100 events into the gateway, forwarded to 3 destinations on a local receiver: forwards per second. */
export async function runDelivery({ events = 100 } = {}) {
  const port = await freePort();
  const received = new Map();
  let firstSent = 0;
  let done;
  const allDone = new Promise((resolve) => (done = resolve));
  const receiver = createServer((request, response) => {
    request.resume();
    request.on("end", () => {
      const id = `${request.url} ${request.headers["webhook-id"]}`;
      received.set(id, Date.now());
      response.end("ok");
      if (received.size === events * 3) done(Date.now());
    });
  }).listen(port, "127.0.0.1");
  const destinations = ["a", "b", "c"].map((name) => ({ name, url: `http://127.0.0.1:${port}/${name}` }));
  const gateway = await startWorker({ vars: { SEISMIC_SIGNING_SECRET: SECRET, ADMIN_TOKEN: "bench", DESTINATIONS: destinations } });
  try {
    firstSent = Date.now();
    await Promise.all(
      Array.from({ length: events }, async () => {
        const { body, signature } = signedEvent();
        const response = await fetch(`${gateway.url}/webhooks/seismic`, {
          method: "POST",
          headers: { "content-type": "application/json", "x-seismic-signature": signature },
          body,
        });
        await response.arrayBuffer();
      }),
    );
    const accepted = Date.now();
    const finished = await Promise.race([allDone, new Promise((resolve) => setTimeout(() => resolve(null), 60_000))]);
    return {
      events,
      destinations: 3,
      forwards: received.size,
      acceptSeconds: (accepted - firstSent) / 1000,
      deliverSeconds: finished ? (finished - firstSent) / 1000 : null,
    };
  } finally {
    await gateway.stop();
    receiver.close();
    receiver.closeAllConnections(); // workerd keeps connections alive; do not wait for them
  }
}
