// Micro benchmark: CPU per event of the request path's own work (both signatures checked with
// both secrets configured, UTF-8 decode, JSON.parse, schema validation, the event's id, the
// queue message and its size check) against the floor on the same bytes in the same process:
// one HMAC-SHA256 plus one JSON.parse. Runs our real modules (bundled with esbuild) on Node's
// WebCrypto, with the Queue and D1 bindings replaced by ones that do nothing (their I/O is what
// the end-to-end benchmark measures).
import { build } from "esbuild";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const root = new URL("..", import.meta.url);

async function loadRequestPath() {
  const outfile = join(await mkdtemp(join(tmpdir(), "edgehook-bench-")), "request-path.mjs");
  await build({
    stdin: {
      contents: `
        export { acceptEvent, verify, readSigned } from "./src/receive/webhook.ts";
        export { builtInSources, sourceSecrets } from "./src/sources.ts";
        export { eventKey } from "./src/store/events.ts";
        export { app } from "./src/app.ts";`,
      resolveDir: root.pathname,
      loader: "ts",
    },
    bundle: true,
    format: "esm",
    platform: "neutral",
    mainFields: ["module", "main"],
    conditions: ["workerd", "worker", "import"],
    outfile,
    logLevel: "error",
  });
  return import(pathToFileURL(outfile).href);
}

const fixture = (name) => readFileSync(new URL(`test/fixtures/${name}`, root), "utf8");

/** A Seismic livesend summary padded with content sessions to about `bytes`. */
function syntheticSeismic(bytes) {
  const base = JSON.parse(fixture("seismic-livesend-session-summary-v3.json"));
  const session = base.data.ContentSessions[0];
  const sessions = [];
  let size = JSON.stringify(base).length;
  const step = JSON.stringify(session).length + 1;
  while (size + step < bytes) {
    sessions.push({ ...session, Id: `${sessions.length}-${session.Id}` });
    size += step;
  }
  base.data.ContentSessions = sessions;
  return JSON.stringify(base);
}

export const SECRETS = {
  SEISMIC_SIGNING_SECRET: "bench-seismic-current",
  SEISMIC_SIGNING_SECRET_OLD: "bench-seismic-old",
  ZUDDL_SIGNING_SECRET: "bench-zuddl-current",
  ZUDDL_SIGNING_SECRET_OLD: "bench-zuddl-old",
};

function samples() {
  return [
    ["seismic", "livesend-session-summary-v3", fixture("seismic-livesend-session-summary-v3.json")],
    ["seismic", "session-summary-enriched (legacy)", fixture("seismic-interaction-session-summary-enriched.json")],
    ["seismic", "DemoEventV1 (filter doc)", fixture("seismic-demo-event-v1.json")],
    ["zuddl", "TIME_SPENT_IN_SESSION", fixture("zuddl-time-spent-in-session.json")],
    ["seismic", "synthetic 100 KB", syntheticSeismic(100 * 1024)],
    ["seismic", "synthetic 1 MB", syntheticSeismic(1000 * 1024)],
  ];
}

/** Headers as the provider sends them during a rotation: both signatures, new secret first. */
function signedHeaders(provider, body) {
  const sign = (secret) => createHmac("sha256", secret).update(body).digest("hex");
  return provider === "seismic"
    ? new Headers({ "x-seismic-signature": sign(SECRETS.SEISMIC_SIGNING_SECRET), "x-seismic-signature-old": sign(SECRETS.SEISMIC_SIGNING_SECRET_OLD) })
    : new Headers({ "x-webhook-signature": `sha256=${sign(SECRETS.ZUDDL_SIGNING_SECRET)}` });
}

/** CPU microseconds per call (user + system, all threads), over enough calls to last ~budgetMs. */
async function cpuPerCall(fn, budgetMs) {
  // Warm up until the JIT has settled (the first payload measured would otherwise pay for it).
  const warmUntil = performance.now() + 300;
  while (performance.now() < warmUntil) await fn();
  let iterations = 0;
  const wallStart = performance.now();
  const start = process.cpuUsage();
  while (performance.now() - wallStart < budgetMs) {
    for (let i = 0; i < 10; i++) await fn();
    iterations += 10;
  }
  const used = process.cpuUsage(start);
  return (used.user + used.system) / iterations;
}

export async function runMicro({ budgetMs = 1500 } = {}) {
  const { acceptEvent, verify, readSigned, builtInSources, sourceSecrets } = await loadRequestPath();
  const statement = { bind: () => statement, run: async () => undefined };
  // A body too large for a queue message is stored first (its body in R2, then one D1 batch): these do nothing, fast.
  const env = {
    ...SECRETS,
    EVENTS_QUEUE: { send: async () => undefined },
    BODIES: { put: async () => null },
    DB: { prepare: () => statement, batch: async (statements) => statements.map(() => ({ results: [] })) },
  };
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const rows = [];
  for (const [providerName, name, text] of samples()) {
    const source = builtInSources.find((s) => s.name === providerName);
    const { provider } = source;
    const body = encoder.encode(text);
    const headers = signedHeaders(providerName, text);
    const floorKey = await crypto.subtle.importKey("raw", encoder.encode("floor-secret"), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);

    const ours = async () => {
      const verifiedWith = await verify(source, sourceSecrets(source, env), provider.signatures(headers), headers, body);
      const { event, text } = readSigned(provider, body);
      const arrival = { ...event, provider: provider.name, source: source.name, receivedAt: Date.now(), verifiedWith, contentType: "application/json", body: text, forced: false };
      return acceptEvent(env, arrival);
    };
    const floor = async () => {
      await crypto.subtle.sign("HMAC", floorKey, body);
      return JSON.parse(decoder.decode(body));
    };
    // Interleave to share any drift in machine load between the two.
    let oursUs = 0;
    let floorUs = 0;
    for (let round = 0; round < 3; round++) {
      floorUs += await cpuPerCall(floor, budgetMs / 6);
      oursUs += await cpuPerCall(ours, budgetMs / 6);
    }
    rows.push({ payload: `${providerName}: ${name}`, bytes: body.byteLength, oursUs: oursUs / 3, floorUs: floorUs / 3 });
  }
  return rows;
}

/**
 * Where the request path's CPU goes, step by step, for one payload (µs per event, same process):
 * each step on its own, then the whole request through the Hono app (routing, middleware, the
 * answer), against the floor.
 */
export async function runBreakdown({ budgetMs = 1500 } = {}) {
  const { acceptEvent, verify, readSigned, builtInSources, sourceSecrets, eventKey, app } = await loadRequestPath();
  const env = { ...SECRETS, EVENTS_QUEUE: { send: async () => undefined }, DESTINATIONS: [], SOURCES: [] };
  const ctx = { waitUntil: () => undefined, passThroughOnException: () => undefined, props: {} };
  const source = builtInSources.find((s) => s.name === "seismic");
  const { provider } = source;
  const text = fixture("seismic-livesend-session-summary-v3.json");
  const body = new TextEncoder().encode(text);
  const headers = signedHeaders("seismic", text);
  const decoder = new TextDecoder();
  const floorKey = await crypto.subtle.importKey("raw", new TextEncoder().encode("floor-secret"), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const { event } = readSigned(provider, body);
  const arrival = { ...event, provider: provider.name, source: source.name, receivedAt: Date.now(), verifiedWith: "current", contentType: "application/json", body: text, forced: false };
  const steps = [
    ["floor: one HMAC-SHA256 + JSON.parse", async () => {
      await crypto.subtle.sign("HMAC", floorKey, body);
      return JSON.parse(decoder.decode(body));
    }],
    ["verify: both signature headers against the current secret", () => verify(source, sourceSecrets(source, env), provider.signatures(headers), headers, body)],
    ["UTF-8 decode + JSON.parse", () => JSON.parse(decoder.decode(body))],
    ["decode + parse + schema check (readSigned)", () => readSigned(provider, body)],
    ["event id: SHA-256 of (provider, type, id)", () => eventKey(arrival.provider, arrival.type, arrival.eventId)],
    ["event id + queue message + size check + send (acceptEvent, send does nothing)", () => acceptEvent(env, arrival)],
    ["the whole request through the Hono app (app.fetch)", async () => {
      const response = await app.fetch(new Request("http://edgehook.test/webhooks/seismic", { method: "POST", headers: { "content-type": "application/json", ...Object.fromEntries(headers) }, body }), env, ctx);
      if (response.status !== 200) throw new Error(`app.fetch answered ${response.status}`);
      return response.arrayBuffer();
    }],
  ];
  // The app writes no line for an accepted event; anything else would land in this table's output.
  const rows = [];
  for (const [step, fn] of steps) rows.push({ step, us: await cpuPerCall(fn, budgetMs / steps.length) });
  return { payload: "seismic: livesend-session-summary-v3", bytes: body.byteLength, rows };
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const rows = await runMicro();
  console.table(rows.map((r) => ({ ...r, oursUs: r.oursUs.toFixed(1), floorUs: r.floorUs.toFixed(1), ratio: (r.oursUs / r.floorUs).toFixed(2) })));
}
