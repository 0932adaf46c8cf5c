// Storage and cost per event, measured: signed 5 KB Seismic events through the real gateway under
// `wrangler dev` (the counting entry, bench/counting-worker.ts), forwarded to destinations on a
// local receiver, until every forward is answered and every queue message acknowledged. Then the
// local D1 file's pages by table (SQLite's dbstat, before and after), the bodies' bytes in R2, and
// the bindings' billable operations (bench/usage.ts), per event, priced by bench/cost.mjs.
// `node bench/storage.mjs [--smoke]` runs it alone; `npm run bench` runs it with the rest.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { pathToFileURL } from "node:url";
import { startWorker } from "../scripts/local-gateway.mjs";
import { costLines, totalDollars } from "./cost.mjs";
import { GATEWAY_VARS, sendEvents, startReceiver } from "./e2e.mjs";
import { f, goal } from "./format.mjs";

/** The tables reported on their own; every other table and index is "other". */
const REPORTED_TABLES = ["events", "deliveries", "delivery_attempts", "events_search"];
/** The reported table a table or index belongs to: the search index is FTS5's shadow tables, events_search_*. */
const reportedAs = (table) => (table.startsWith("events_search") ? "events_search" : REPORTED_TABLES.includes(table) ? table : "other");
/** Events sent at once: enough to fill the consumer's batches without a storm of connections. */
const SEND_CONCURRENCY = 32;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The local D1 database's SQLite file in a `wrangler dev` state folder. */
function d1File(stateDir) {
  const dir = join(stateDir, "v3/d1/miniflare-D1DatabaseObject");
  const [file] = readdirSync(dir).filter((name) => name.endsWith(".sqlite") && name !== "metadata.sqlite");
  return join(dir, file);
}

/**
 * Bytes of the D1 file's pages by reported table, each with its indexes (and, for the search
 * index, FTS5's shadow tables), and the whole file (page_count × page_size).
 */
function d1Bytes(stateDir) {
  // Read-write (nothing is written): a workerd killed mid-write leaves a WAL that only a writer may
  // recover; one just stopped may hold the lock for a moment, so wait for it.
  const db = new DatabaseSync(d1File(stateDir), { timeout: 15_000 });
  try {
    const tableOf = new Map(db.prepare("SELECT name, tbl_name FROM sqlite_schema").all().map((row) => [row.name, row.tbl_name]));
    const byTable = Object.fromEntries([...REPORTED_TABLES, "other"].map((table) => [table, 0]));
    const byName = {};
    for (const { name, bytes } of db.prepare("SELECT name, sum(pgsize) AS bytes FROM dbstat GROUP BY name").all()) {
      byTable[reportedAs(tableOf.get(name) ?? name)] += bytes;
      byName[name] = bytes;
    }
    const { file } = db.prepare("SELECT (SELECT page_count FROM pragma_page_count) * (SELECT page_size FROM pragma_page_size) AS file").get();
    return { byTable, byName, file };
  } finally {
    db.close();
  }
}

const usageOf = async (gateway) => (await fetch(`${gateway.url}/__usage`)).json();

/** Resolves once `check()` holds (polled every 250 ms); throws with `what` after `timeoutMs`. */
async function until(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`storage benchmark: ${what} not done after ${timeoutMs} ms`);
    await sleep(250);
  }
}

/**
 * `events` events forwarded to `destinations` destinations on a local receiver (`flaky`: each
 * forward fails once with 500, then succeeds), search index on or off. Returns the figures per
 * accepted event: D1 bytes by table, R2 bytes, operations by binding, process CPU.
 */
export async function runStorage({ events, destinations = 3, flaky = false, search = false }) {
  const receiver = await startReceiver();
  const kind = flaky ? "flaky" : "fast";
  // A flaky destination's circuit stays closed (at most 1,000 failures in a row): every forward is retried, none held.
  const targets = Array.from({ length: destinations }, (_, i) => ({ name: `${kind}-${i}`, url: receiver.url(`${kind}-${i}`), ...(flaky && { circuit_failures: 1_000 }) }));
  // Retries after 1 s instead of 10: the same operations, sooner.
  const gateway = await startWorker({
    script: "bench/counting-worker.ts",
    vars: { ...GATEWAY_VARS, DESTINATIONS: targets, SEARCH: search ? "on" : "off", RETRY_BASE_SECONDS: "1" },
  });
  let stopped = false;
  try {
    // The cron turns the search index on (when SEARCH is "on"); then nothing runs until the events arrive.
    if (search) await fetch(`${gateway.url}/__scheduled`, { method: "POST" }).then((r) => r.arrayBuffer());
    const d1Before = d1Bytes(gateway.persistTo);
    const before = await usageOf(gateway);
    const cpuBefore = gateway.cpuMs();
    let accepted = 0;
    for (let sent = 0; sent < events; sent += SEND_CONCURRENCY) accepted += await sendEvents(gateway.url, Math.min(SEND_CONCURRENCY, events - sent));
    const timeoutMs = 120_000 + events * destinations * 20;
    await until(() => receiver.count(kind) >= accepted * destinations, timeoutMs, "forwarding");
    // Every message written (events, retries' redeliveries, dead letters) acknowledged, and nothing moving for a second.
    let last = "";
    await until(async () => {
      const now = await usageOf(gateway);
      const settled = now.queues.messagesAcked - before.queues.messagesAcked === now.queues.messagesWritten - before.queues.messagesWritten;
      const same = JSON.stringify(now) === last;
      last = JSON.stringify(now);
      if (!settled || !same) await sleep(750);
      return settled && same;
    }, timeoutMs, "acknowledging");
    const after = await usageOf(gateway);
    const cpuMs = gateway.cpuMs() - cpuBefore;
    await gateway.stop();
    stopped = true;
    const d1After = d1Bytes(gateway.persistTo);
    const per = (n) => n / accepted;
    const delta = (pick) => per(pick(after) - pick(before));
    const d1ByTable = Object.fromEntries(Object.keys(d1After.byTable).map((table) => [table, per(d1After.byTable[table] - d1Before.byTable[table])]));
    return {
      events, accepted, destinations, flaky, search,
      forwards: receiver.count(kind),
      forwardRequests: receiver.requests(kind),
      d1ByTable,
      /** D1 bytes per event by table or index (SQLite's names: sqlite_autoindex_* are primary keys and UNIQUE constraints), most first. */
      d1ByName: Object.entries(d1After.byName)
        .map(([name, bytes]) => ({ name, bytes: per(bytes - (d1Before.byName[name] ?? 0)) }))
        .filter((n) => n.bytes > 0)
        .sort((a, b) => b.bytes - a.bytes),
      /** D1 rows written per event by statement, most first. */
      rowsWrittenBySql: Object.entries(after.d1RowsWrittenBySql)
        .map(([sql, rows]) => ({ sql, rows: per(rows - (before.d1RowsWrittenBySql[sql] ?? 0)) }))
        .filter((s) => s.rows > 0)
        .sort((a, b) => b.rows - a.rows),
      perEvent: {
        d1Bytes: Object.values(d1ByTable).reduce((sum, bytes) => sum + bytes, 0),
        d1FileBytes: per(d1After.file - d1Before.file),
        r2Bytes: per(after.bodies.bytes - before.bodies.bytes),
        r2Objects: per(after.bodies.objects - before.bodies.objects),
        invocations: delta((u) => u.invocations.webhooks + u.invocations.queue + u.invocations.scheduled),
        webhookInvocations: delta((u) => u.invocations.webhooks),
        queueInvocations: delta((u) => u.invocations.queue),
        invocationMs: delta((u) => u.invocationMs),
        cpuMs: per(cpuMs),
        queueMessagesWritten: delta((u) => u.queues.messagesWritten),
        queueMessagesRead: delta((u) => u.queues.messagesRead),
        queueMessagesRetried: delta((u) => u.queues.messagesRetried),
        queueOperations: delta((u) => u.queues.unitsWritten + u.queues.unitsRead + u.queues.unitsAcked),
        d1Statements: delta((u) => u.d1.statements),
        d1RowsRead: delta((u) => u.d1.rowsRead),
        d1RowsWritten: delta((u) => u.d1.rowsWritten),
        r2ClassA: delta((u) => u.r2.classA),
        r2ClassB: delta((u) => u.r2.classB),
        r2Deletes: delta((u) => u.r2.deletes),
        durableObjectRequests: delta((u) => u.durableObjects.requests),
        analyticsDataPoints: delta((u) => u.analyticsEngine.dataPoints),
      },
    };
  } finally {
    if (!stopped) await gateway.stop();
    receiver.close();
  }
}

/** What a variant is, in words. */
const describe = (r) => `${r.destinations} destination${r.destinations === 1 ? "" : "s"}${r.flaky ? ", each forward failing once" : ""}${r.search ? ", SEARCH on" : ""}`;

/**
 * The benchmark's tables, as markdown lines (README "Storage and cost per event" has the same
 * shape): the run priced in full.
 */
export function storageTables(main) {
  const lines = [];
  const p = main.perEvent;
  lines.push(`## Storage per event: ${main.accepted} signed 5 KB Seismic events, ${describe(main)} that accept first time (bench/storage.mjs)`);
  lines.push("D1: the local database file's pages (SQLite dbstat) after minus before, by table with its indexes; R2: the bodies' objects.");
  lines.push("| D1 bytes per event | events | deliveries | delivery_attempts | events_search | other | D1 file growth per event | R2 bytes per event | events per 10 GB of D1 |");
  lines.push("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  const t = main.d1ByTable;
  lines.push(`| **${f(p.d1Bytes, 0)}** | ${f(t.events, 0)} | ${f(t.deliveries, 0)} | ${f(t.delivery_attempts, 0)} | ${f(t.events_search, 0)} | ${f(t.other, 0)} | ${f(p.d1FileBytes, 0)} | ${f(p.r2Bytes, 0)} | ${f(10e9 / p.d1Bytes / 1e6, 2)} M |`);
  lines.push(`Goal: ≥ 5,000,000 retained events per 10 GB D1 database (${f(10e9 / p.d1Bytes / 1e6, 2)} M): ${goal(10e9 / p.d1Bytes >= 5e6)}.`);
  lines.push("");
  lines.push("### Where D1's bytes go, per event, by table and index (SQLite's names; sqlite_autoindex_*: a primary key or UNIQUE constraint)");
  lines.push(`| ${main.d1ByName.map((n) => n.name).join(" | ")} |`);
  lines.push(`| ${main.d1ByName.map(() => "---:").join(" | ")} |`);
  lines.push(`| ${main.d1ByName.map((n) => f(n.bytes, 0)).join(" | ")} |`);
  lines.push("");
  lines.push("### Operations per event, counted on the bindings (bench/usage.ts through bench/counting-worker.ts)");
  lines.push("| Worker invocations (webhook + queue) | queue messages written / read / retried | D1 statements | D1 rows read | D1 rows written | R2 class A | R2 class B | R2 deletes | DO requests | AE data points | invocation wall ms | process CPU ms |");
  lines.push("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  lines.push(`| ${f(p.invocations, 3)} (${f(p.webhookInvocations, 2)} + ${f(p.queueInvocations, 3)}) | ${f(p.queueMessagesWritten, 2)} / ${f(p.queueMessagesRead, 2)} / ${f(p.queueMessagesRetried, 2)} | ${f(p.d1Statements, 2)} | ${f(p.d1RowsRead, 1)} | ${f(p.d1RowsWritten, 2)} | ${f(p.r2ClassA, 2)} | ${f(p.r2ClassB, 2)} | ${f(p.r2Deletes, 2)} | ${f(p.durableObjectRequests, 2)} | ${f(p.analyticsDataPoints, 2)} | ${f(p.invocationMs, 2)} | ${f(p.cpuMs, 2)} |`);
  lines.push("");
  lines.push("### Where D1's rows written go (an index entry counts as a row written), per event");
  lines.push("| statement | rows written per event |");
  lines.push("| --- | ---: |");
  for (const s of main.rowsWrittenBySql.slice(0, 8)) lines.push(`| \`${s.sql.replaceAll("|", "\\|")}\` | ${f(s.rows, 2)} |`);
  lines.push("");
  lines.push(`### What a million events cost: ${describe(main)} that accept first time, Cloudflare's paid-plan prices beyond the included allowances (bench/cost.mjs)`);
  lines.push(...costTable(costLines(p)));
  lines.push("Worker CPU is the CPU time of every process of `wrangler dev` (workerd, with local D1, R2 and Queues in it, and wrangler's Node) per event: more than the Worker alone uses. Storage: 1 M events a month kept 30 days (RETENTION_DAYS). Durable Object duration and the cron's own runs (every 5 minutes, whatever the traffic) are not counted.");
  lines.push("");
  return lines;
}

/** The variants' table: each priced as the main run is, against it. */
export function variantTable(main, variants) {
  if (!variants.length) return [];
  const base = totalDollars(costLines(main.perEvent));
  const lines = [
    "### What changes it: the same count with one thing changed, $ per million events",
    "| run | events | $ per million | ÷ the run above | D1 bytes per event | D1 rows written per event | queue operations per event | R2 class A per event |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of [main, ...variants]) {
    const total = totalDollars(costLines(r.perEvent));
    lines.push(`| ${describe(r)} | ${r.accepted} | ${f(total, 2)} | ${f(total / base, 2)} | ${f(r.perEvent.d1Bytes, 0)} | ${f(r.perEvent.d1RowsWritten, 2)} | ${f(r.perEvent.queueOperations, 2)} | ${f(r.perEvent.r2ClassA, 2)} |`);
  }
  const most = [...variants].sort((a, b) => totalDollars(costLines(b.perEvent)) - totalDollars(costLines(a.perEvent)))[0];
  lines.push(`Changes it most: ${describe(most)} (${f(totalDollars(costLines(most.perEvent)) / base, 2)}× the run above).`);
  lines.push("");
  return lines;
}

/** The cost lines as a markdown table with their total. */
export function costTable(lines) {
  const amount = (l) => (l.unit === "bytes" ? f(l.amount, 0) : l.amount < 0.01 && l.amount > 0 ? l.amount.toExponential(1) : f(l.amount, 3));
  return [
    "| resource | per event | $ per million events |",
    "| --- | ---: | ---: |",
    ...lines.map((l) => `| ${l.resource} | ${amount(l)} ${l.unit} | ${f(l.dollars, 3)} |`),
    `| **total** | | **${f(totalDollars(lines), 2)}** |`,
  ];
}

/** The main run `npm run bench` makes. */
export const runStorageMain = ({ smoke = false, quick = false } = {}) => runStorage({ events: smoke ? 200 : quick ? 2_000 : 20_000 });

/** The variants `npm run bench` runs after the main one: none in smoke mode. */
export async function runStorageVariants({ smoke = false, quick = false } = {}) {
  if (smoke) return [];
  const events = quick ? 200 : 500;
  const variants = [];
  for (const variant of [{ destinations: 1 }, { destinations: 10 }, { flaky: true }, { search: true }]) variants.push(await runStorage({ events, ...variant }));
  return variants;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const mode = { smoke: process.argv.includes("--smoke"), quick: process.argv.includes("--quick") };
  const started = Date.now();
  const main = await runStorageMain(mode);
  for (const line of storageTables(main)) console.log(line);
  console.log(`(main run: ${f((Date.now() - started) / 1000, 1)} s)`);
  const variants = await runStorageVariants(mode);
  for (const line of variantTable(main, variants)) console.log(line);
  console.log(`(${f((Date.now() - started) / 1000, 1)} s)`);
}
