// `npm run bench:compare -- <checkout>`: end-to-end throughput of edgehook from this tree against
// edgehook from another checkout (an earlier commit, say), with the verify-only floor, in one run:
// the three take turns, round after round, so a change in the machine's load (which moves a single
// run's ratios by a fifth here) falls on all of them. The other checkout needs its own
// `npm ci` (or a link to a node_modules) and `npm run prepare`.
// `-- --smoke` compares this tree with itself, briefly, so CI proves the benchmark runs.
import { execFileSync } from "node:child_process";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { runThroughput } from "./e2e.mjs";
import { f } from "./format.mjs";
import { produced, reportSmoke, smoke } from "./smoke.mjs";

const root = new URL("..", import.meta.url).pathname;
const checkout = smoke ? root : process.argv.slice(2).find((arg) => !arg.startsWith("--"));
if (!checkout) {
  console.error("usage: npm run bench:compare -- <path of another checkout>  (or -- --smoke)");
  process.exit(2);
}
const dir = resolve(checkout);
const label = smoke ? "this tree" : execFileSync("git", ["-C", dir, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
const { startWorker } = await import(pathToFileURL(join(dir, "scripts/local-gateway.mjs")).href);
const here = execFileSync("git", ["-C", root, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();

const rounds = smoke ? 1 : 5;
const rows = await runThroughput({ seconds: smoke ? 1 : 3, rounds, levels: smoke ? [8] : [8, 32], against: { label, startWorker }, peers: ["verify only"] });
const other = `edgehook at ${label}`;
const at = (connections, name) => rows.find((r) => r.connections === connections && r.name === name);

console.log(`## End to end: edgehook at ${here} (this tree) against ${other}, with the verify-only floor, in one run`);
console.log(`Signed 5 KB Seismic events under wrangler dev; each figure the median of ${rounds} rounds, the three targets in turn.`);
console.log(`| connections | this ÷ ${label} | this ÷ verify only | ${label} ÷ verify only | req/s: this, ${label}, verify only | errors |`);
console.log("| ---: | ---: | ---: | ---: | --- | ---: |");
for (const connections of new Set(rows.map((r) => r.connections))) {
  const [ours, theirs, floor] = [at(connections, "edgehook"), at(connections, other), at(connections, "verify only")];
  produced(`compare at ${connections}`, { ours: ours.rps, theirs: theirs.rps, floor: floor.rps });
  console.log(`| ${connections} | **${f(ours.rps / theirs.rps, 2)}** | ${f(ours.rps / floor.rps, 2)} | ${f(theirs.rps / floor.rps, 2)} | ${f(ours.rps, 0)}, ${f(theirs.rps, 0)}, ${f(floor.rps, 0)} | ${ours.errors + theirs.errors} |`);
}
reportSmoke([...new Set(rows.map((r) => `compare at ${r.connections}`))]);
