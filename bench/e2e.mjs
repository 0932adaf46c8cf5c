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
const ADMIN = "bench-admin-token-0123456789abcdef";
const sample = readFileSync(join(root, "test/fixtures/seismic-livesend-session-summary-v3.json"), "utf8");
const SAMPLE_ID = "e40bbaab-f86e-e62b-d3c9-5104734edb18";
export const GATEWAY_VARS = { SEISMIC_SIGNING_SECRET: SECRET, SEISMIC_SIGNING_SECRET_OLD: "bench-old", ADMIN_TOKEN: ADMIN, DESTINATIONS: [] };

/** A fresh, correctly signed Seismic event (5 KB livesend summary) per request. */
function signedEvent(body = sample.replace(SAMPLE_ID, randomUUID())) {
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
  ok: r["2xx"],
});

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

export async function adminJson(gateway, path) {
  const response = await fetch(`${gateway.url}${path}`, { headers: { authorization: `Bearer ${ADMIN}` } });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

/** Events edgehook has stored since `since` (admin stats). */
async function storedSince(gateway, since) {
  const stats = await adminJson(gateway, `/admin/stats?since=${since}`);
  return stats.events.reduce((sum, row) => sum + row.count, 0);
}

/** Waits until `count` events are stored; returns when the last was seen (polled every `everyMs`). */
async function storedAll(gateway, since, count, { everyMs = 250, timeoutMs = 600_000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if ((await storedSince(gateway, since)) >= count) return Date.now();
    if (Date.now() > deadline) throw new Error(`only part of ${count} events stored after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** The peers of bench/peers.ts an end-to-end run can start, by name; `consumer`: a queue consumer still works after a round. */
const PEERS = [
  { name: "verify only", PEER: "verify", consumer: false },
  { name: "one Queue send", PEER: "queue", consumer: true },
  { name: "naive gateway", PEER: "naive", consumer: true },
];

/** A gateway as a target: its consumer stores what it acknowledged after the answer; let it finish before anyone else is measured. */
function gatewayTarget(name, gateway, since) {
  let accepted = 0;
  return {
    name,
    ...gateway,
    consumer: true,
    settle: async (result) => {
      accepted += result.ok;
      await storedAll(gateway, since, accepted, { everyMs: 100, timeoutMs: 120_000 });
    },
  };
}

/**
 * edgehook, `against` (edgehook from another checkout: { label, startWorker }, optional) and the
 * peers named (bench/peers.ts), each its own `wrangler dev`, started at once (a start spends much
 * of its time waiting; nothing is measured until all answer).
 */
async function startTargets({ against, peers }) {
  const chosen = PEERS.filter((p) => peers.includes(p.name));
  const peer = (PEER) => startWorker({ config: join(root, "bench/wrangler.peers.toml"), vars: { PEER, SEISMIC_SIGNING_SECRET: SECRET } });
  const since = Date.now();
  const started = await Promise.allSettled([
    startWorker({ vars: GATEWAY_VARS }),
    ...(against ? [against.startWorker({ vars: GATEWAY_VARS })] : []),
    ...chosen.map((p) => peer(p.PEER)),
  ]);
  const failed = started.find((s) => s.status === "rejected");
  if (failed) {
    await Promise.all(started.filter((s) => s.status === "fulfilled").map((s) => s.value.stop()));
    throw failed.reason;
  }
  const [gateway, ...rest] = started.map((s) => s.value);
  const other = against ? [gatewayTarget(`edgehook at ${against.label}`, rest.shift(), since)] : [];
  return [gatewayTarget("edgehook", gateway, since), ...other, ...rest.map((worker, i) => ({ name: chosen[i].name, ...worker, consumer: chosen[i].consumer }))];
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** After a round: time for every worker's consumer to finish what the round sent it, before its CPU is read. */
const CONSUMER_SETTLE_MS = 1_500;

/**
 * Requests per second and latency of edgehook and its peers at each concurrency. The targets
 * take turns, `rounds` times, in a rotating order, so a change in the machine's load falls on
 * all of them; each figure is the median round.
 */
export async function runThroughput({ seconds = 3, rounds = 3, levels = [1, 8, 32], against, peers = PEERS.map((p) => p.name) } = {}) {
  const targets = await startTargets({ against, peers });
  const rows = [];
  try {
    for (const connections of levels) {
      const runs = new Map(targets.map((t) => [t.name, []]));
      for (const target of targets) await target.settle?.(summary(await load(target.url, connections, { amount: 200 })));
      for (let round = 0; round < rounds; round++) {
        for (let i = 0; i < targets.length; i++) {
          const target = targets[(i + round) % targets.length];
          const cpuBefore = target.cpuMs();
          const result = summary(await load(target.url, connections, { duration: seconds }));
          // Every process of its `wrangler dev`, given the same time for its consumer to store (edgehook) or
          // acknowledge what it accepted (a batch waits up to 1 s); nothing polls it meanwhile. Verify only
          // has no consumer: nothing of the round is left to count.
          if (target.consumer) await sleep(CONSUMER_SETTLE_MS);
          result.cpuMsPerEvent = (target.cpuMs() - cpuBefore) / Math.max(1, result.ok);
          await target.settle?.(result);
          runs.get(target.name).push(result);
        }
      }
      for (const [name, results] of runs) {
        rows.push({
          connections,
          name,
          rps: median(results.map((r) => r.rps)),
          p50: median(results.map((r) => r.p50)),
          p99: median(results.map((r) => r.p99)),
          max: Math.max(...results.map((r) => r.max)),
          cpuMsPerEvent: median(results.map((r) => r.cpuMsPerEvent)),
          errors: results.reduce((sum, r) => sum + r.non2xx, 0),
        });
      }
    }
  } finally {
    await Promise.all(targets.map((target) => target.stop()));
  }
  return rows;
}

/**
 * The gateway accepting `events` events at 32 connections through the counting entry
 * (bench/counting-worker.ts): resident memory and local D1 size every `step`, the consumer's lag
 * (last acknowledgement to last row stored), and D1 transactions per accepted event, counted.
 */
export async function runSustained({ events = 50_000, step = 10_000 } = {}) {
  const gateway = await startWorker({ script: "bench/counting-worker.ts", vars: GATEWAY_VARS });
  try {
    const since = Date.now();
    const warm = summary(await load(gateway.url, 8, { amount: 1_000 })); // JIT, caches, D1 pages
    await storedAll(gateway, since, warm.ok);
    const before = await (await fetch(`${gateway.url}/__d1`)).json();
    const points = [{ events: 0, rssKiB: gateway.rssKiB(), dbKiB: d1SizeKiB(gateway.persistTo) }];
    const started = Date.now();
    let errors = 0;
    let accepted = 0;
    for (let sent = 0; sent < events; sent += step) {
      const result = summary(await load(gateway.url, 32, { amount: step }));
      errors += result.non2xx;
      accepted += result.ok;
      points.push({ events: sent + step, rssKiB: gateway.rssKiB(), dbKiB: d1SizeKiB(gateway.persistTo) });
    }
    const lastAck = Date.now();
    const seconds = (lastAck - started) / 1000;
    const backlog = accepted + warm.ok - (await storedSince(gateway, since));
    const lastStored = await storedAll(gateway, since, accepted + warm.ok);
    const after = await (await fetch(`${gateway.url}/__d1`)).json();
    return {
      events, accepted, errors, seconds, points,
      stored: (await storedSince(gateway, since)) - warm.ok,
      backlogAtLastAck: backlog,
      lagSeconds: (lastStored - lastAck) / 1000,
      acceptTransactions: after.accept - before.accept,
      consumerTransactions: after.consumer - before.consumer,
      /** Milliseconds the consumer spent, in all and in its D1 round trips by kind (see bench/counting-worker.ts). */
      consumerMs: Object.fromEntries(Object.entries(after.consumerMs).map(([kind, ms]) => [kind, ms - before.consumerMs[kind]])),
    };
  } finally {
    await gateway.stop();
  }
}

/** Local D1's files on disk (its directory only: R2's blob store renames files under du, which then fails). */
function d1SizeKiB(dir) {
  return Number(execFileSync("du", ["-sk", join(dir, "v3", "d1")]).toString().split("\t")[0]);
}

/** A signed Seismic event of about `bytes` (the 5 KB sample with a long extra field). */
function largeEvent(bytes) {
  const event = JSON.parse(sample.replace(SAMPLE_ID, randomUUID()));
  event.data.Notes = "x".repeat(bytes - sample.length - 20);
  return signedEvent(JSON.stringify(event));
}

/** Time to acknowledge a body at the 1 MiB limit (stored in D1 before the answer), one at a time. */
export async function runLargeBody({ bytes = 1024 * 1024 - 1024, samples = 5 } = {}) {
  const gateway = await startWorker({ vars: GATEWAY_VARS });
  try {
    const times = [];
    let errors = 0;
    for (let i = 0; i <= samples; i++) {
      const { body, signature } = largeEvent(bytes);
      const started = performance.now();
      const response = await fetch(`${gateway.url}/webhooks/seismic`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-seismic-signature": signature },
        body,
      });
      await response.arrayBuffer();
      if (response.status !== 200) errors++;
      if (i > 0) times.push(performance.now() - started); // the first one warms up
    }
    return { bytes, samples, medianMs: median(times), maxMs: Math.max(...times), errors };
  } finally {
    await gateway.stop();
  }
}

/**
 * A receiver on 127.0.0.1 for the forwards, by the path's first word: /slow answers after
 * `slowMs`, /hang never answers (the gateway's timeout ends the request), /fail answers 500,
 * /flaky answers 500 the first time it sees a (path, webhook-id) and 200 after, anything else 200 at once. Counts the distinct (path, webhook-id) answered 200, the repeats of
 * one, and every request.
 */
export async function startReceiver({ slowMs = 1_000 } = {}) {
  const port = await freePort();
  const received = new Map();
  const repeats = new Map();
  const requests = new Map();
  const failedOnce = new Set();
  const waiters = [];
  const changed = () => {
    for (const waiter of waiters) waiter();
  };
  const server = createServer((request, response) => {
    request.resume();
    request.on("end", () => {
      requests.set(request.url, [...(requests.get(request.url) ?? []), Date.now()]);
      changed();
      const key = `${request.url} ${request.headers["webhook-id"]}`;
      const answer = () => {
        if (received.has(key)) repeats.set(request.url, (repeats.get(request.url) ?? 0) + 1);
        else received.set(key, Date.now());
        response.end("ok");
        changed();
      };
      if (request.url.startsWith("/slow")) setTimeout(answer, slowMs);
      else if (request.url.startsWith("/fail")) response.writeHead(500).end();
      else if (request.url.startsWith("/flaky") && !failedOnce.has(key)) {
        failedOnce.add(key);
        response.writeHead(500).end();
      } else if (!request.url.startsWith("/hang")) answer();
    });
  }).listen(port, "127.0.0.1");
  const under = (map, prefix) => [...map].filter(([key]) => key.startsWith(`/${prefix}`));
  return {
    url: (path) => `http://127.0.0.1:${port}/${path}`,
    /** Forwards answered 200 on paths starting with `prefix`, one per (path, webhook-id), and the time the last arrived. */
    count: (prefix) => under(received, prefix).length,
    lastAt: (prefix) => Math.max(0, ...under(received, prefix).map(([, at]) => at)),
    /** Forwards answered 200 again for a (path, webhook-id) that had been answered already. */
    repeats: (prefix) => under(repeats, prefix).reduce((sum, [, n]) => sum + n, 0),
    /** Every request on paths starting with `prefix`, answered or not, and the time the first arrived. */
    requests: (prefix) => under(requests, prefix).reduce((sum, [, times]) => sum + times.length, 0),
    firstRequestAt: (prefix) => Math.min(Infinity, ...under(requests, prefix).map(([, times]) => times[0])),
    /** Resolves once `check()` holds, or after `timeoutMs` (false). */
    until: (check, timeoutMs) =>
      new Promise((resolve) => {
        if (check()) return resolve(true);
        const timer = setTimeout(() => resolve(false), timeoutMs);
        waiters.push(() => {
          if (check()) {
            clearTimeout(timer);
            resolve(true);
          }
        });
      }),
    close() {
      server.close();
      server.closeAllConnections(); // workerd keeps connections alive; do not wait for them
    },
  };
}

/** Sends `events` fresh signed events at once; resolves to how many were answered 200. */
export async function sendEvents(url, events) {
  const answers = await Promise.all(
    Array.from({ length: events }, async () => {
      const { body, signature } = signedEvent();
      const response = await fetch(`${url}/webhooks/seismic`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-seismic-signature": signature },
        body,
      });
      await response.arrayBuffer();
      return response.status;
    }),
  );
  return answers.filter((status) => status === 200).length;
}

/**
 * `events` events sent at once, forwarded to `destinations` fast destinations on a local receiver,
 * by edgehook at its default configuration or by the delivery peer (bench/peers.ts, PEER=deliver;
 * worker "peer-r2": the peer putting each body in R2 first): forwards per second, from the first
 * send to the last forward.
 */
export async function runDelivery({ events = 100, destinations = 3, worker = "edgehook" } = {}) {
  const receiver = await startReceiver();
  const fast = Array.from({ length: destinations }, (_, i) => ({ name: `fast-${i}`, url: receiver.url(`fast-${i}`) }));
  const target = worker === "edgehook"
    ? await startWorker({ vars: { ...GATEWAY_VARS, DESTINATIONS: fast } })
    : await startWorker({
      config: join(root, "bench/wrangler.peers.toml"),
      vars: { PEER: "deliver", SEISMIC_SIGNING_SECRET: SECRET, FORWARD_TO: fast.map((d) => d.url), BODIES_IN_R2: worker === "peer-r2" ? "on" : "off" },
    });
  try {
    // One event first, so the measured run starts warm (isolate, D1 pages, connections).
    await sendEvents(target.url, 1);
    await receiver.until(() => receiver.count("fast") >= destinations, 30_000);
    const before = receiver.count("fast");
    const firstSent = Date.now();
    await sendEvents(target.url, events);
    const acceptSeconds = (Date.now() - firstSent) / 1000;
    const done = await receiver.until(() => receiver.count("fast") - before >= events * destinations, 120_000);
    const forwards = receiver.count("fast") - before;
    const deliverSeconds = done ? (receiver.lastAt("fast") - firstSent) / 1000 : null;
    return { worker, events, destinations, forwards, acceptSeconds, deliverSeconds, forwardsPerSecond: deliverSeconds ? forwards / deliverSeconds : null };
  } finally {
    await target.stop();
    receiver.close();
  }
}

/**
 * What a transform adds per forward (bench/transform-worker.ts, inside the Worker): the Zuddl
 * sample forwarded to a local receiver as it is, and through transforms/crm-contact.js, cold (code
 * no isolate has run) and warm, `samples` times each; medians in ms.
 */
export async function runTransformCost({ samples = 20 } = {}) {
  const receiver = await startReceiver();
  const destinations = [
    { name: "plain", url: receiver.url("plain") },
    { name: "shaped", url: receiver.url("shaped"), transform: "crm-contact" },
  ];
  const gateway = await startWorker({ script: "bench/transform-worker.ts", vars: { ...GATEWAY_VARS, DESTINATIONS: destinations } });
  try {
    const response = await fetch(`${gateway.url}/__transform-cost?samples=${samples}`);
    if (!response.ok) throw new Error(`transform cost: ${response.status} ${await response.text()}`);
    const figures = await response.json();
    return { samples, ...Object.fromEntries(Object.entries(figures).map(([key, values]) => [key, median(values)])) };
  } finally {
    await gateway.stop();
    receiver.close();
  }
}
