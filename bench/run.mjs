// `npm run bench`: every benchmark, one table each, ratios first. Offline, loopback only,
// about 17 minutes on a 2-core machine. Writes bench/results/latest.md as well.
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { checkoutTarget, compareTable } from "./compare.mjs";
import { runDelivery, runLargeBody, runSustained, runThroughput, runTransformCost } from "./e2e.mjs";
import { f, goal } from "./format.mjs";
import { combineIsolation, ISOLATION_ROWS, isolationTable, runIsolation } from "./isolation.mjs";
import { runBreakdown, runMicro } from "./micro.mjs";
import { produced, reportSmoke, smoke } from "./smoke.mjs";
import { runStorageMain, runStorageVariants, storageTables, variantTable } from "./storage.mjs";

const quick = process.argv.includes("--quick") || smoke;
const lines = [];
const out = (line = "") => {
  console.log(line);
  lines.push(line);
};

out(`# edgehook benchmarks, ${new Date().toISOString().slice(0, 10)}`);
out(`Machine: ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB; Node ${process.version}. Command: npm run bench${smoke ? " -- --smoke" : quick ? " -- --quick" : ""}`);
out();

out("## Request-path CPU per event vs the floor (one HMAC-SHA256 + one JSON.parse, same bytes, same process)");
out("| payload | bytes | ours/floor | ours µs | floor µs |");
out("| --- | ---: | ---: | ---: | ---: |");
for (const r of await runMicro({ budgetMs: smoke ? 60 : quick ? 600 : 800 })) {
  produced(`micro: ${r.payload}`, { oursUs: r.oursUs, floorUs: r.floorUs });
  out(`| ${r.payload} | ${r.bytes} | **${f(r.oursUs / r.floorUs, 2)}** | ${f(r.oursUs)} | ${f(r.floorUs)} |`);
}
out();

const breakdown = await runBreakdown({ budgetMs: smoke ? 70 : quick ? 1_000 : 3_000 });
produced("micro: breakdown", Object.fromEntries(breakdown.rows.map((r, i) => [`step${i}`, r.us])));
out(`## Where the request path's CPU goes: ${breakdown.payload} (${breakdown.bytes} bytes), each step on its own, same process`);
out("| step | µs per event | ÷ floor |");
out("| --- | ---: | ---: |");
for (const r of breakdown.rows) out(`| ${r.step} | ${f(r.us)} | ${f(r.us / breakdown.rows[0].us, 2)} |`);
out();

out("## End to end under wrangler dev (workerd, local D1 + Queue): edgehook and three peers on the same runtime, signed 5 KB Seismic events");
out("Peers (bench/peers.ts): *verify only* (HMAC check, JSON.parse, 200), *one Queue send* (that plus one Queue send), *naive gateway* (that plus one D1 INSERT before the send). Each figure is the median of 3 rounds taken in turn.");
out("CPU per event: CPU time of every process of the worker's `wrangler dev` (workerd and wrangler's Node) over the round and, for those with a queue consumer (all but verify only), the 1.5 s after it (the consumer storing or acknowledging what it accepted; nothing polls meanwhile), divided by the events accepted.");
out("| connections | worker | req/s ÷ verify only | req/s ÷ naive | p99 ÷ verify-only p99 | req/s | p50 / p99 / max ms | CPU ms per event | errors |");
out("| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |");
// The smoke run also proves `npm run bench:compare` works: this tree against itself, as a fifth target.
const against = smoke ? await checkoutTarget(new URL("..", import.meta.url).pathname) : undefined;
const throughput = await runThroughput({ seconds: smoke ? 1 : quick ? 2 : 3, rounds: quick ? 1 : 3, against });
for (const r of throughput) produced(`end to end: ${r.name} at ${r.connections}`, { rps: r.rps, p99: r.p99, cpu: r.cpuMsPerEvent });
const at = (connections, name) => throughput.find((r) => r.connections === connections && r.name === name);
for (const r of throughput) {
  const floor = at(r.connections, "verify only");
  const naive = at(r.connections, "naive gateway");
  out(`| ${r.connections} | ${r.name} | **${f(r.rps / floor.rps, 2)}** | ${f(r.rps / naive.rps, 2)} | ${f(r.p99 / floor.p99, 2)} | ${f(r.rps, 0)} | ${r.p50} / ${r.p99} / ${r.max} | ${f(r.cpuMsPerEvent, 1)} | ${r.errors} |`);
}
const ours = (c) => at(c, "edgehook");
out(`Goals: ≥ 0.6× verify only at 8 and 32 connections (${f(ours(8).rps / at(8, "verify only").rps, 2)}, ${f(ours(32).rps / at(32, "verify only").rps, 2)}): ${goal(ours(8).rps >= 0.6 * at(8, "verify only").rps && ours(32).rps >= 0.6 * at(32, "verify only").rps)}; ` +
  `≥ 3× naive (${[1, 8, 32].map((c) => f(ours(c).rps / at(c, "naive gateway").rps, 2)).join(", ")}): ${goal([1, 8, 32].every((c) => ours(c).rps >= 3 * at(c, "naive gateway").rps))}; ` +
  `p99 at 32 ≤ 2× verify only's (${f(ours(32).p99 / at(32, "verify only").p99, 2)}): ${goal(ours(32).p99 <= 2 * at(32, "verify only").p99)}; ` +
  `errors (${throughput.filter((r) => r.name === "edgehook").reduce((s, r) => s + r.errors, 0)}): ${goal(throughput.every((r) => r.name !== "edgehook" || r.errors === 0))}.`);
out();

if (against) {
  for (const line of compareTable(throughput, against, 1)) out(line);
  out();
}

const sustained = await runSustained({ events: smoke ? 500 : quick ? 5_000 : 50_000, step: smoke ? 250 : quick ? 2_500 : 10_000 });
produced("sustained", { accepted: sustained.accepted, lagSeconds: sustained.lagSeconds, consumerTransactions: sustained.consumerTransactions });
out(`## Sustained: ${sustained.events} events at 32 connections, D1 transactions counted (bench/counting-worker.ts)`);
out("| D1 transactions per accepted event: accept path | consumer | accepted | stored | errors | events/s accepted | consumer lag: last ack → last row stored, s | backlog at last ack |");
out("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
out(`| **${f(sustained.acceptTransactions / sustained.accepted, 3)}** | ${f(sustained.consumerTransactions / sustained.accepted, 3)} | ${sustained.accepted} | ${sustained.stored} | ${sustained.errors} | ${f(sustained.accepted / sustained.seconds, 0)} | ${f(sustained.lagSeconds, 2)} | ${sustained.backlogAtLastAck} |`);
out();
const perEvent = (ms) => ms / sustained.accepted;
const { total, storeAndClaim, recordAndMetrics, otherD1, r2 } = sustained.consumerMs;
produced("sustained: consumer time", { total, storeAndClaim, recordAndMetrics, r2 });
out("### Where the consumer's time goes (same run): wall time, per event, of its invocations, of its D1 round trips and of its R2 calls (local D1 and R2 run in workerd's own process, so mostly CPU, plus any wait behind another invocation's)");
out("| consumer ms per event | D1: store and claim (insert, lease, read back) | D1: record rounds and metrics counters | D1: other | R2: its calls (here the bodies' puts, a batch's at once) | the rest (JavaScript, queue calls) |");
out("| ---: | ---: | ---: | ---: | ---: | ---: |");
out(`| **${f(perEvent(total), 3)}** | ${f(perEvent(storeAndClaim), 3)} | ${f(perEvent(recordAndMetrics), 3)} | ${f(perEvent(otherD1), 3)} | ${f(perEvent(r2), 3)} | ${f(perEvent(total - storeAndClaim - recordAndMetrics - otherD1 - r2), 3)} |`);
out();
const [first] = sustained.points;
const last = sustained.points.at(-1);
out(`## Memory: workerd RSS over the same run`);
out("| events | RSS MiB | RSS / start | local D1 on disk MiB |");
out("| ---: | ---: | ---: | ---: |");
for (const p of sustained.points) out(`| ${p.events} | ${f(p.rssKiB / 1024)} | ${f(p.rssKiB / first.rssKiB, 2)} | ${f(p.dbKiB / 1024)} |`);
out(`Growth: ${f((last.rssKiB - first.rssKiB) / 1024 / (sustained.events / 10_000))} MiB of RSS and ${f((last.dbKiB - first.dbKiB) / 1024 / (sustained.events / 10_000))} MiB of D1 data per 10,000 events.`);
out();

const large = await runLargeBody({ samples: smoke ? 1 : quick ? 2 : 5 });
produced("large body", { medianMs: large.medianMs, maxMs: large.maxMs });
out("## A body at the 1 MiB limit (too large for a queue message: stored in R2 and D1 before the answer)");
out("| answer time ÷ 3 s deadline | median ms | max ms | bytes | answered 200 |");
out("| ---: | ---: | ---: | ---: | ---: |");
out(`| **${f(large.maxMs / 3000, 2)}** | ${f(large.medianMs, 0)} | ${f(large.maxMs, 0)} | ${large.bytes} | ${large.samples - large.errors}/${large.samples} |`);
out();

const deliveryEvents = smoke ? 10 : 100;
// Smoke: one destination count (each is two wrangler dev starts); the full run has all three.
const destinationCounts = smoke ? [3] : [1, 3, 10];
out(`## Delivery: ${deliveryEvents} events forwarded to ${destinationCounts.join(", ")} destinations on a local receiver, edgehook (default configuration) and the delivery peer`);
// A round lasts about a second (a queue batch waits up to 1 s): one slow batch moves a single round by a
// third, so the full run takes the median of 3 rounds per side, taken in turn.
const deliveryRounds = smoke || quick ? 1 : 3;
out(`The peer (bench/peers.ts, PEER=deliver) is a queue consumer on the same runtime that forwards each message to every destination, 6 at a time, and stores nothing; *the peer with bodies in R2* is the same peer putting each message's body in a local R2 bucket first, as edgehook does before it forwards (not the goal's peer: it shows what that one step costs here). Forwards per second from the first send to the last forward${deliveryRounds > 1 ? `; each figure the median of ${deliveryRounds} rounds per side, edgehook and the two peers in turn, each round a fresh \`wrangler dev\`` : ""}.`);
out("| destinations | edgehook ÷ peer | edgehook ÷ peer with bodies in R2 | edgehook forwards/s | peer forwards/s | peer with bodies in R2 forwards/s | edgehook: all forwarded in s | peer: all forwarded in s | forwards (edgehook, peer, peer with R2) |");
out("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
const deliveryRows = [];
/** The round with the median forwards/s (its forwards and seconds with it). */
const medianRound = (rounds) => [...rounds].sort((a, b) => (a.forwardsPerSecond ?? 0) - (b.forwardsPerSecond ?? 0))[Math.floor(rounds.length / 2)];
for (const destinations of destinationCounts) {
  const rounds = { ours: [], peer: [], peerR2: [] };
  for (let round = 0; round < deliveryRounds; round++) {
    rounds.ours.push(await runDelivery({ events: deliveryEvents, destinations }));
    rounds.peer.push(await runDelivery({ events: deliveryEvents, destinations, worker: "peer" }));
    rounds.peerR2.push(await runDelivery({ events: deliveryEvents, destinations, worker: "peer-r2" }));
  }
  const ours = medianRound(rounds.ours);
  const peer = medianRound(rounds.peer);
  const peerR2 = medianRound(rounds.peerR2);
  produced(`delivery: ${destinations} destinations`, { ours: ours.forwardsPerSecond, peer: peer.forwardsPerSecond, peerR2: peerR2.forwardsPerSecond });
  deliveryRows.push({ destinations, ratio: ours.forwardsPerSecond / peer.forwardsPerSecond });
  out(`| ${destinations} | **${f(ours.forwardsPerSecond / peer.forwardsPerSecond, 2)}** | ${f(ours.forwardsPerSecond / peerR2.forwardsPerSecond, 2)} | ${f(ours.forwardsPerSecond, 0)} | ${f(peer.forwardsPerSecond, 0)} | ${f(peerR2.forwardsPerSecond, 0)} | ${f(ours.deliverSeconds, 2)} | ${f(peer.deliverSeconds, 2)} | ${ours.forwards}/${ours.events * destinations}, ${peer.forwards}/${peer.events * destinations}, ${peerR2.forwards}/${peerR2.events * destinations} |`);
}
out(`Goal: edgehook ≥ 0.7× the peer's forwards/s with ${destinationCounts.join(", ")} destinations (${deliveryRows.map((r) => f(r.ratio, 2)).join(", ")}): ${goal(deliveryRows.every((r) => r.ratio >= 0.7))}.`);
out();

const isolationEvents = smoke ? 20 : 300;
// Smoke: the baseline and the row with every troubled kind at once (each row is a wrangler dev start).
const isolationRows = smoke ? [ISOLATION_ROWS[0], ISOLATION_ROWS.at(-1)] : ISOLATION_ROWS;
// The full run takes every row twice, in turn and then in reverse, so a change in the machine's load falls on all rows alike.
const isolationPasses = smoke || quick ? 1 : 2;
const isolationRuns = isolationRows.map(() => []);
for (let pass = 0; pass < isolationPasses; pass++) {
  const order = isolationRows.map((_, i) => i);
  for (const i of pass % 2 ? order.reverse() : order) isolationRuns[i].push(await runIsolation({ events: isolationEvents, neighbours: isolationRows[i].neighbours }));
}
const isolation = isolationRuns.map(combineIsolation);
for (const [i, row] of isolationRows.entries()) {
  const result = isolation[i];
  produced(`isolation: ${row.name}`, {
    fast: result.fastPerSecond, ratio: result.fastPerSecond / isolation[0].fastPerSecond, missing: result.missing, repeats: result.repeats,
    ...(row.neighbours.includes("slow") && { slow: result.slowPerSecond }),
    ...Object.fromEntries(Object.entries(result.kept).map(([kind, k]) => [`${kind} lost`, k.lost])),
  });
}
for (const line of isolationTable(isolationEvents, isolationRows, isolation, isolationPasses)) out(line);
out();

const transformCost = await runTransformCost({ samples: smoke ? 2 : quick ? 10 : 50 });
produced("transform", { plainMs: transformCost.plainMs, shapedWarmMs: transformCost.shapedWarmMs, shapedColdMs: transformCost.shapedColdMs });
out(`## Transforms: one forward of the Zuddl sample (2 KB) with and without transforms/crm-contact.js, measured inside the Worker (bench/transform-worker.ts), median of ${transformCost.samples}`);
out("Cold: code no Worker Loader isolate has run yet (a deploy's first event per isolate); warm: the isolate for that code is loaded.");
out("| forward | ms | added by the transform, ms |");
out("| --- | ---: | ---: |");
out(`| original body | ${f(transformCost.plainMs, 2)} | – |`);
out(`| transformed, warm | ${f(transformCost.shapedWarmMs, 2)} | **${f(transformCost.shapedWarmMs - transformCost.plainMs, 2)}** |`);
out(`| transformed, cold | ${f(transformCost.shapedColdMs, 2)} | **${f(transformCost.shapedColdMs - transformCost.plainMs, 2)}** |`);
out(`| the transform alone, warm / cold | ${f(transformCost.transformWarmMs, 2)} / ${f(transformCost.transformColdMs, 2)} | |`);
out();

const storageMain = await runStorageMain({ smoke, quick });
const storageVariants = await runStorageVariants({ smoke, quick });
for (const run of [storageMain, ...storageVariants]) {
  const p = run.perEvent;
  produced(`storage: ${run.destinations} destinations${run.flaky ? ", flaky" : ""}${run.search ? ", search" : ""}`, {
    d1Bytes: p.d1Bytes, r2Bytes: p.r2Bytes, d1RowsWritten: p.d1RowsWritten, queueOperations: p.queueOperations, cpuMs: p.cpuMs,
  });
}
for (const line of [...storageTables(storageMain), ...variantTable(storageMain, storageVariants)]) out(line);

mkdirSync(new URL("results", import.meta.url), { recursive: true });
writeFileSync(new URL(smoke ? "results/smoke.md" : "results/latest.md", import.meta.url), lines.join("\n") + "\n");
reportSmoke([
  ...["livesend-session-summary-v3", "session-summary-enriched (legacy)", "DemoEventV1 (filter doc)", "TIME_SPENT_IN_SESSION", "synthetic 100 KB", "synthetic 1 MB"]
    .map((name) => `micro: ${name.startsWith("TIME") ? "zuddl" : "seismic"}: ${name}`),
  "micro: breakdown",
  ...throughput.map((r) => `end to end: ${r.name} at ${r.connections}`),
  ...(against ? [...new Set(throughput.map((r) => `compare at ${r.connections}`))] : []),
  "sustained", "sustained: consumer time", "large body", ...destinationCounts.map((n) => `delivery: ${n} destinations`),
  ...isolationRows.map((row) => `isolation: ${row.name}`),
  "transform",
  "storage: 3 destinations",
]);
