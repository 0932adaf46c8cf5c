// `npm run bench:search`: what payload search (#12, migrations/0008_event_search.sql) costs, in
// one run of the gateway under `wrangler dev` (local D1, SEARCH on), with the bench entry
// bench/search-worker.ts.
//   1. seeds 100,000 events (Seismic and Zuddl samples with generated ids, emails, titles);
//   2. write cost in three modes, in alternating blocks (ABC CBA: the machine's drift hits all
//      alike): the triggers dropped (the schema before 0008), idle (SEARCH off), indexing (on);
//      events stored one at a time as the request path stores them, and 25-event transactions
//      (a queue batch);
//   3. builds the index from scratch as the cron does when SEARCH is turned on;
//   4. search times through listEvents in the Worker and GET /admin/events over HTTP;
//   5. retention purge cost in the three modes.
// Times of D1 work come from inside the Worker. Offline, 127.0.0.1 only, about 3 minutes on
// 2 cores. `-- --quick`: 10,000 events, fewer blocks. Writes bench/results/search.md.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { startWorker } from "../scripts/local-gateway.mjs";
import { produced, reportSmoke, smoke } from "./smoke.mjs";

const root = new URL("..", import.meta.url).pathname;
const quick = process.argv.includes("--quick") || smoke;
const EVENTS = smoke ? 1_000 : quick ? 10_000 : 100_000;
const SEED_SLICE = 5_000; // events per seed request
const BATCH = 100; // events per transaction: the queue's max_batch_size
const BLOCKS = smoke ? 2 : quick ? 4 : 12; // per mode
const WRITES_PER_BLOCK = 40;
const BATCHED_PER_BLOCK = 300;
const PURGE_PER_BLOCK = 200;
const RUNS = smoke ? 2 : quick ? 5 : 15;
const TOKEN = "bench-admin-token-0123456789abcdef";

const fixture = (name) => readFileSync(join(root, "test/fixtures", name), "utf8");
const replaceAll = (text, pairs) => pairs.reduce((t, [from, to]) => t.replaceAll(from, to), text);
const livesend = fixture("seismic-livesend-session-summary-v3.json");
/** The seed's templates: the provider samples with the values that identify an event made placeholders. */
const templates = {
  seismic: replaceAll(livesend, [
    ["e40bbaab-f86e-e62b-d3c9-5104734edb18", "__EVENT_ID__"],
    ["dec49f1b-f423-48d8-9b33-23a9c79e8abd", "__CONTENT_ID__"],
    ["3c7327f5-a699-42fc-823e-7e4bf6eef271", "__SESSION_ID__"],
    ["[email protected]", "__EMAIL__"],
    ['"Name": "Demo Content"', '"Name": "__TITLE__"'],
  ]),
  zuddl: replaceAll(fixture("zuddl-time-spent-in-session.json"), [
    ["a912a64f-8865-4289-9024-9a120792c3d8", "__EVENT_ID__"],
    ["d5e31ba5-2d1e-4918-bb60-dd1514b4b397", "__SESSION_ID__"],
    ["jane.smith@example.com", "__EMAIL__"],
    ['"title": "Session 1"', '"title": "__TITLE__"'],
  ]),
};
/** What the request path stores: the 5 KB livesend sample with a fresh id each time. */
const writeTemplate = livesend.replaceAll("e40bbaab-f86e-e62b-d3c9-5104734edb18", "__EVENT_ID__");

async function json(gateway, path, init = {}) {
  const response = await fetch(`${gateway.url}${path}`, { ...init, headers: { authorization: `Bearer ${TOKEN}` } });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}
const post = (gateway, path, body = "") => json(gateway, path, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body) });
const query = (params) => new URLSearchParams(params).toString();

const sorted = (values) => [...values].sort((a, b) => a - b);
const median = (values) => sorted(values)[Math.floor(values.length / 2)];
const f = (n, digits = 1) => (n === null || n === undefined ? "–" : Number(n).toFixed(digits));

/** The three modes compared, in the order of a block. */
const MODES = ["dropped", "idle", "indexing"];

/** Puts the index's triggers in a mode: dropped (keeping their SQL to create them again), idle (flag 0) or indexing (flag 1). */
function modeSwitch(gateway) {
  let dropped = null;
  return async (mode) => {
    if (mode === "dropped") {
      dropped ??= await post(gateway, "/__bench/triggers/drop");
      return;
    }
    if (dropped) await post(gateway, "/__bench/triggers/create", dropped);
    dropped = null;
    await post(gateway, `/__bench/enabled?value=${mode === "indexing" ? 1 : 0}`);
  };
}

/** `measure()` in BLOCKS blocks per mode, ABC CBA: the median of each mode's per-event ms. */
async function compare(setMode, measure) {
  const samples = Object.fromEntries(MODES.map((mode) => [mode, []]));
  for (let block = 0; block < BLOCKS; block++) {
    for (const mode of block % 2 ? [...MODES].reverse() : MODES) {
      await setMode(mode);
      samples[mode].push(await measure());
    }
  }
  await setMode("indexing");
  return { ...Object.fromEntries(MODES.map((mode) => [mode, median(samples[mode])])), samples };
}

async function searchTimes(gateway) {
  // Values the seed generated for two events (odd: Zuddl, even: Seismic), read back from their payloads.
  const sample = Math.floor(EVENTS * 0.3) + (Math.min(1337, Math.floor(EVENTS / 10)) | 1);
  const zuddl = await json(gateway, `/__bench/event?i=${sample}`);
  const seismic = await json(gateway, `/__bench/event?i=${sample + 1}`);
  const email = zuddl.registration.profile.email;
  const cases = [
    ["no search (the plain event list)", {}],
    ["a content id (UUID)", { q: seismic.data.LivesendSessionSummary.Link.Content[0].LibraryContent.Id }],
    ["an email", { q: email }],
    ["a session title (3 words)", { q: zuddl.session.title }],
    ["an email domain", { q: email.split("@")[1] }],
    ["a title word", { q: zuddl.session.title.split(" ")[0] }],
    ["a word in every event", { q: "states" }],
    ["provider=zuddl, no search (for the row below)", { provider: "zuddl" }],
    ["a word in every event, provider=zuddl", { q: "states", provider: "zuddl" }],
    ["a word in every event, tenant=tenant-7", { q: "states", tenant: "tenant-7" }],
    ["a word in no event", { q: "xylophone" }],
  ];
  // Ten pages down a word in every event.
  let deep = { q: "states" };
  for (let i = 0; i < 9; i++) deep = { ...deep, cursor: (await json(gateway, `/admin/events?${query(deep)}`)).nextCursor };
  cases.push(["a word in every event, 10th page", deep]);

  const rows = [];
  for (const [label, params] of cases) {
    const inWorker = await json(gateway, `/__bench/list?${query({ ...params, runs: RUNS })}`);
    const http = [];
    for (let i = 0; i < RUNS + 3; i++) {
      const started = performance.now();
      await json(gateway, `/admin/events?${query(params)}`);
      if (i >= 3) http.push(performance.now() - started);
    }
    const matches = params.q ? (await json(gateway, `/__bench/stats?${query({ q: params.q })}`)).matches : null;
    rows.push({ label, q: params.q ?? "", matches, returned: inWorker.returned, workerMs: inWorker.medianMs, httpMs: median(http) });
  }
  return rows;
}

const gateway = await startWorker({ script: join(root, "bench/search-worker.ts"), vars: { ADMIN_TOKEN: TOKEN, DESTINATIONS: [], SEARCH: "on" } });
let results;
try {
  const setMode = modeSwitch(gateway);
  await post(gateway, "/__bench/build"); // SEARCH on: what the cron does first
  await post(gateway, `/__bench/writes?count=50`, writeTemplate); // warm: JIT, D1 pages
  let seedMs = 0;
  for (let from = 1; from <= EVENTS; from += SEED_SLICE) {
    seedMs += (await post(gateway, `/__bench/seed?${query({ from, to: Math.min(from + SEED_SLICE - 1, EVENTS), perTransaction: BATCH })}`, templates)).ms;
  }
  const single = await compare(setMode, async () => (await post(gateway, `/__bench/writes?count=${WRITES_PER_BLOCK}`, writeTemplate)).ms / WRITES_PER_BLOCK);
  let next = EVENTS + 1;
  const batched = await compare(setMode, async () => {
    const from = next;
    next += BATCHED_PER_BLOCK;
    return (await post(gateway, `/__bench/seed?${query({ from, to: next - 1, perTransaction: BATCH })}`, templates)).ms / BATCHED_PER_BLOCK;
  });
  // Events written in the other modes are not indexed: building the index again covers every one.
  const build = await post(gateway, "/__bench/build");
  const stats = await json(gateway, "/__bench/stats");
  const searches = await searchTimes(gateway);
  const cutoff = Date.now() - 30 * 86_400_000;
  const purge = await compare(setMode, async () => {
    const { ms, result } = await post(gateway, `/__bench/purge?${query({ cutoff, batch: PURGE_PER_BLOCK })}`);
    return ms / result.events;
  });
  const diskKiB = Number(execFileSync("du", ["-sk", gateway.persistTo]).toString().split("\t")[0]);
  results = { seedMs, single, batched, build, stats, searches, purge, diskKiB };
} finally {
  await gateway.stop();
}

const lines = [];
const out = (line = "") => {
  console.log(line);
  lines.push(line);
};
const { seedMs, single, batched, build, stats, searches, purge, diskKiB } = results;
out(`# edgehook payload search, ${new Date().toISOString().slice(0, 10)}`);
out(`Machine: ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB; Node ${process.version}. Command: npm run bench:search${smoke ? " -- --smoke" : quick ? " -- --quick" : ""}`);
out();
out(`## Write cost per event at ${EVENTS}+ events (ms inside the Worker, local D1; median of ${BLOCKS} blocks per mode, ABC CBA)`);
out("| write | no triggers (before 0008) ms | SEARCH off ms | SEARCH on ms | off / before | on / before |");
out("| --- | ---: | ---: | ---: | ---: | ---: |");
const row = (label, m, digits) => out(`| ${label} | ${f(m.dropped, digits)} | ${f(m.idle, digits)} | ${f(m.indexing, digits)} | **${f(m.idle / m.dropped, 2)}** | **${f(m.indexing / m.dropped, 2)}** |`);
row(`one event per transaction (\`storeEvent\`, 5 KB: a large body on the request path), blocks of ${WRITES_PER_BLOCK}`, single, 2);
row(`${BATCH} events per transaction (a queue batch; 5 KB and 1.7 KB payloads), blocks of ${BATCHED_PER_BLOCK}`, batched, 3);
row(`retention purge, ${PURGE_PER_BLOCK} events a block`, purge, 3);
out();
for (const [name, m] of [["one per transaction", single], [`${BATCH} per transaction`, batched], ["purge", purge]]) {
  out(`Blocks, ${name}: ${MODES.map((mode) => `${mode} ${m.samples[mode].map((v) => f(v, 3)).join(", ")}`).join("; ")}.`);
}
out();
out(`## Index size and build at ${stats.events} events`);
out("| | value |");
out("| --- | ---: |");
out(`| seeding ${EVENTS} events with SEARCH on, ${BATCH} per transaction | ${f(seedMs / 1000, 1)} s (${f(seedMs / EVENTS, 3)} ms per event) |`);
out(`| the index's data (\`events_search_data\`) | ${f(stats.indexBytes / 2 ** 20, 1)} MiB, ${f(stats.indexBytes / stats.events, 0)} bytes per event |`);
out(`| local D1 on disk, everything | ${f(diskKiB / 1024, 1)} MiB |`);
out(`| building the index as the cron does after SEARCH is turned on (2,000 events a statement) | ${f(build.ms / 1000, 1)} s in ${build.result} cron run(s) (${f((build.ms * 1000) / stats.events, 0)} µs per event) |`);
out();
out(`## Search at ${stats.events} events: 50 newest matches, median of ${RUNS}`);
out("| search | q | matching events | returned | listEvents in the Worker ms | GET /admin/events over HTTP ms |");
out("| --- | --- | ---: | ---: | ---: | ---: |");
for (const r of searches) out(`| ${r.label} | \`${r.q}\` | ${r.matches ?? "–"} | ${r.returned} | **${f(r.workerMs)}** | ${f(r.httpMs)} |`);

mkdirSync(new URL("results", import.meta.url), { recursive: true });
writeFileSync(new URL(smoke ? "results/search-smoke.md" : "results/search.md", import.meta.url), lines.join("\n") + "\n");
for (const [name, m] of [["search: one per transaction", single], ["search: batched", batched], ["search: purge", purge]]) produced(name, { dropped: m.dropped, idle: m.idle, indexing: m.indexing });
produced("search: index build", { ms: build.ms, indexBytes: stats.indexBytes });
for (const r of searches) produced(`search: ${r.label}`, { workerMs: r.workerMs, httpMs: r.httpMs });
reportSmoke(["search: one per transaction", "search: batched", "search: purge", "search: index build", ...searches.map((r) => `search: ${r.label}`)]);
