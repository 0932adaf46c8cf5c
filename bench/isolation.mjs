// Isolation: one fast destination's forwards/s beside healthy neighbours, and beside a slow, a
// hanging and a failing one; the slow one's own rate; and what became of every event at each.
import { startWorker } from "../scripts/local-gateway.mjs";
import { adminJson, GATEWAY_VARS, sendEvents, startReceiver } from "./e2e.mjs";
import { f, goal } from "./format.mjs";

/** The slow receiver answers after this long. */
export const SLOW_MS = 1_000;
/** The hanging receiver never answers: its destination gives up after this long. */
export const HANG_TIMEOUT_MS = 3_000;
/** Open connections a Worker invocation may have: what the slow destination can use at once. */
export const CONNECTIONS = 6;

/** Each neighbour kind: its receiver path and its destination's settings beyond name and url. */
const KINDS = {
  healthy: { path: "healthy" },
  slow: { path: "slow" },
  hanging: { path: "hang", settings: { timeout_ms: HANG_TIMEOUT_MS } },
  failing: { path: "fail" },
};
/** Kinds whose forwards never succeed: their events must stay in the gateway (retried, held or dead), none lost. */
const NEVER_DELIVERED = new Set(["hanging", "failing"]);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Deliveries recorded in D1 for `destination`, by status (admin stats over the whole run). */
async function deliveriesOf(gateway, destination) {
  const stats = await adminJson(gateway, "/admin/stats?since=0");
  return Object.fromEntries(stats.deliveries.filter((d) => d.destination === destination).map((d) => [d.status, d.count]));
}

const total = (byStatus) => Object.values(byStatus).reduce((sum, n) => sum + n, 0);

/**
 * `events` events sent at once to a gateway (fresh state, default configuration) with one fast
 * destination and the `neighbours` given (kinds of KINDS). One warm-up event first, and the
 * measured run starts only once every destination has had its warm-up forward attempted (the
 * hanging one's timed out), so each row starts from the same state. The fast destination's
 * forwards/s run from the first send to its last forward; the slow one's likewise to its last.
 * Every destination that answers 200 must get each event once; the hanging and failing ones must
 * have a delivery recorded for each event (any status), so none is lost.
 */
export async function runIsolation({ events, neighbours, deadlineMs = 300_000 }) {
  const receiver = await startReceiver({ slowMs: SLOW_MS });
  const others = neighbours.map((kind, i) => ({ kind, name: `${KINDS[kind].path}-${i}`, ...KINDS[kind].settings }));
  const destinations = [{ name: "fast", url: receiver.url("fast") }, ...others.map(({ kind, ...d }) => ({ ...d, url: receiver.url(d.name) }))];
  const gateway = await startWorker({ vars: { ...GATEWAY_VARS, DESTINATIONS: destinations } });
  try {
    await sendEvents(gateway.url, 1);
    const attempted = await receiver.until(() => destinations.every((d) => receiver.requests(d.name) >= 1), 60_000);
    if (!attempted) throw new Error("the warm-up event did not reach every destination within 60 s");
    if (neighbours.includes("hanging")) {
      const hanging = others.filter((d) => d.kind === "hanging").map((d) => receiver.firstRequestAt(d.name));
      await sleep(Math.max(...hanging) + HANG_TIMEOUT_MS + 500 - Date.now());
    }
    const answered = new Set(["fast", ...others.filter((d) => !NEVER_DELIVERED.has(d.kind)).map((d) => d.name)]);
    await receiver.until(() => [...answered].every((name) => receiver.count(name) >= 1), 30_000);

    const firstSent = Date.now();
    const accepted = await sendEvents(gateway.url, events);
    const expected = accepted + 1;
    const fastDone = await receiver.until(() => receiver.count("fast") >= expected, deadlineMs);
    const fastSeconds = fastDone ? (receiver.lastAt("fast") - firstSent) / 1000 : null;
    // Everyone that answers 200 gets everything (the slow one last), then the gateway has recorded every forward it tried.
    await receiver.until(() => [...answered].every((name) => receiver.count(name) >= expected), deadlineMs);
    const slow = others.find((d) => d.kind === "slow");
    const slowSeconds = slow && receiver.count(slow.name) >= expected ? (receiver.lastAt(slow.name) - firstSent) / 1000 : null;
    const kept = {};
    for (const d of others.filter((o) => NEVER_DELIVERED.has(o.kind))) {
      const deadline = Date.now() + 120_000;
      let byStatus = await deliveriesOf(gateway, d.name);
      while (total(byStatus) < expected && Date.now() < deadline) {
        await sleep(500);
        byStatus = await deliveriesOf(gateway, d.name);
      }
      kept[d.kind] = { byStatus, lost: expected - total(byStatus), attempts: receiver.requests(d.name) };
    }
    const delivered = [...answered].map((name) => ({ name, distinct: receiver.count(name), repeats: receiver.repeats(name) }));
    return {
      events,
      accepted,
      fastSeconds,
      fastPerSecond: fastSeconds ? events / fastSeconds : null,
      slowSeconds,
      slowPerSecond: slowSeconds ? events / slowSeconds : null,
      /** Events (the warm-up's included) that each destination answering 200 should have got once. */
      expected,
      missing: delivered.reduce((sum, d) => sum + Math.max(0, expected - d.distinct), 0),
      repeats: delivered.reduce((sum, d) => sum + d.repeats, 0),
      kept,
    };
  } finally {
    await gateway.stop();
    receiver.close();
  }
}

/** The rows of the isolation table: the fast destination's three neighbours in each. */
export const ISOLATION_ROWS = [
  { name: "beside 3 healthy destinations (baseline)", neighbours: ["healthy", "healthy", "healthy"] },
  { name: "beside a slow one (answers after 1 s) and 2 healthy", neighbours: ["slow", "healthy", "healthy"] },
  { name: "beside a hanging one (never answers; timeout_ms 3000) and 2 healthy", neighbours: ["hanging", "healthy", "healthy"] },
  { name: "beside a failing one (500 to everything) and 2 healthy", neighbours: ["failing", "healthy", "healthy"] },
  { name: "beside the slow, the hanging and the failing one", neighbours: ["slow", "hanging", "failing"] },
];

/**
 * One row's runs as one result: rates are the mean of the runs' rates, events missing or repeated
 * add up, and what became of the hanging and failing ones' events is the last run's (each run is a
 * fresh gateway), with the events lost in any run added up.
 */
export function combineIsolation(runs) {
  const mean = (pick) => (runs.every((r) => pick(r) !== null) ? runs.reduce((sum, r) => sum + pick(r), 0) / runs.length : null);
  const last = runs.at(-1);
  return {
    ...last,
    fastPerSecond: mean((r) => r.fastPerSecond),
    fastSeconds: mean((r) => r.fastSeconds),
    slowPerSecond: mean((r) => r.slowPerSecond),
    missing: runs.reduce((sum, r) => sum + r.missing, 0),
    repeats: runs.reduce((sum, r) => sum + r.repeats, 0),
    kept: Object.fromEntries(Object.entries(last.kept).map(([kind, k]) => [kind, { ...k, lost: runs.reduce((sum, r) => sum + (r.kept[kind]?.lost ?? 0), 0) }])),
  };
}

/** The isolation table's lines for `results`, one per row of `table` (rows of ISOLATION_ROWS, the first the baseline), each the mean of `passes` runs, and its goals. */
export function isolationTable(events, table, results, passes = 1) {
  const slowGoal = CONNECTIONS / (SLOW_MS / 1000);
  const rows = table.map((row, i) => ({ row, result: results[i], ratio: results[i].fastPerSecond / results[0].fastPerSecond, slowRatio: results[i].slowPerSecond / slowGoal }));
  const lines = [
    `## Isolation: ${events} events to one fast destination beside 3 others (4 destinations in every row), each row a fresh gateway at its default configuration (a failed forward retried after 10 s, doubling; a circuit that opens after 10 failed attempts in a row and holds that destination's deliveries)`,
    `${passes > 1 ? `Every row run ${passes} times (all rows in turn, then in reverse order), each figure the mean of its runs. ` : ""}Before each row's run, one warm-up event, and the run starts only once every destination has had its warm-up forward attempted (the hanging one's timed out). The fast destination's forwards/s: from the first send to its last forward. The slow one's: from the first send to its last forward, against what its ${CONNECTIONS} connections at ${SLOW_MS / 1000} s each allow (${slowGoal}/s). Every destination that answers 200 must get each event once; the hanging and failing ones must keep each event (its delivery recorded: retried, held by the circuit, or dead).`,
    `| fast destination | fast forwards/s ÷ baseline | goal ≥ 0.8× | fast forwards/s | all fast forwards in s | slow forwards/s ÷ (${CONNECTIONS} ÷ ${SLOW_MS / 1000} s) | goal ≥ 0.8× | slow forwards/s | answering 200: events missing / repeated | hanging, failing: deliveries recorded per status (events lost), attempts |`,
    "| --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | --- |",
  ];
  for (const [i, { row, result, ratio, slowRatio }] of rows.entries()) {
    const kept = Object.entries(result.kept).map(([kind, k]) => `${kind}: ${Object.entries(k.byStatus).map(([status, n]) => `${status} ${n}`).join(", ")} (${k.lost} lost), ${k.attempts} attempts`).join("; ");
    const slowCells = row.neighbours.includes("slow") ? [`**${f(slowRatio, 2)}**`, goal(slowRatio >= 0.8), f(result.slowPerSecond, 1)] : ["–", "–", "–"];
    lines.push(`| ${row.name} | **${f(ratio, 2)}** | ${i === 0 ? "(baseline)" : goal(ratio >= 0.8)} | ${f(result.fastPerSecond, 0)} | ${f(result.fastSeconds, 2)} | ${slowCells.join(" | ")} | ${result.missing} / ${result.repeats} | ${kept || "–"} |`);
  }
  const troubled = rows.slice(1);
  const withSlow = rows.filter((r) => r.row.neighbours.includes("slow"));
  const lost = results.reduce((sum, r) => sum + Object.values(r.kept).reduce((a, k) => a + k.lost, 0), 0);
  const missing = results.reduce((sum, r) => sum + r.missing, 0);
  const repeats = results.reduce((sum, r) => sum + r.repeats, 0);
  lines.push(
    `Goals: the fast destination ≥ 0.8× its baseline forwards/s beside each troubled neighbour (${troubled.map((r) => f(r.ratio, 2)).join(", ")}): ${goal(troubled.every((r) => r.ratio >= 0.8))}; ` +
      `the slow one ≥ 0.8× its connections ÷ its latency (${withSlow.map((r) => f(r.slowRatio, 2)).join(", ")}): ${goal(withSlow.every((r) => r.slowRatio >= 0.8))}; ` +
      `every event once at every destination that answers 200, and kept at the hanging and failing ones (missing ${missing}, repeated ${repeats}, lost ${lost}): ${goal(missing === 0 && repeats === 0 && lost === 0)}.`,
  );
  return lines;
}
