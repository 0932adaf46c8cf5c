// `npm run bench:compare -- <checkout>`: end-to-end throughput of edgehook from this tree against
// edgehook from another checkout (an earlier commit, say), with the verify-only floor, in one run:
// the three take turns, round after round, so a change in the machine's load (which moves a single
// run's ratios by a fifth here) falls on all of them. The other checkout needs its own
// `npm ci` (or a link to a node_modules) and `npm run prepare`.
// Its smoke run is part of `npm run bench -- --smoke`, which compares this tree with itself.
import { execFileSync } from "node:child_process";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { runThroughput } from "./e2e.mjs";
import { f } from "./format.mjs";
import { produced } from "./smoke.mjs";

const root = new URL("..", import.meta.url).pathname;

/** The other checkout as runThroughput's `against`: its commit as the label, its own way of starting wrangler dev. */
export async function checkoutTarget(dir) {
  const label = dir === root ? "this tree" : execFileSync("git", ["-C", dir, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
  const { startWorker } = await import(pathToFileURL(join(dir, "scripts/local-gateway.mjs")).href);
  return { label, startWorker };
}

/** The comparison table of runThroughput's rows, one line each (`rounds`: what each figure is the median of). */
export function compareTable(rows, against, rounds) {
  const here = execFileSync("git", ["-C", root, "rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
  const { label } = against;
  const other = `edgehook at ${label}`;
  const at = (connections, name) => rows.find((r) => r.connections === connections && r.name === name);
  const lines = [
    `## End to end: edgehook at ${here} (this tree) against ${other}, with the verify-only floor, in one run`,
    `Signed 5 KB Seismic events under wrangler dev; each figure the median of ${rounds} rounds, the targets in turn.`,
    `| connections | this ÷ ${label} | this ÷ verify only | ${label} ÷ verify only | req/s: this, ${label}, verify only | errors |`,
    "| ---: | ---: | ---: | ---: | --- | ---: |",
  ];
  for (const connections of new Set(rows.map((r) => r.connections))) {
    const [ours, theirs, floor] = [at(connections, "edgehook"), at(connections, other), at(connections, "verify only")];
    produced(`compare at ${connections}`, { ours: ours.rps, theirs: theirs.rps, floor: floor.rps });
    lines.push(`| ${connections} | **${f(ours.rps / theirs.rps, 2)}** | ${f(ours.rps / floor.rps, 2)} | ${f(theirs.rps / floor.rps, 2)} | ${f(ours.rps, 0)}, ${f(theirs.rps, 0)}, ${f(floor.rps, 0)} | ${ours.errors + theirs.errors} |`);
  }
  return lines;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const checkout = process.argv.slice(2).find((arg) => !arg.startsWith("--"));
  if (!checkout) {
    console.error("usage: npm run bench:compare -- <path of another checkout>");
    process.exit(2);
  }
  const against = await checkoutTarget(resolve(checkout));
  const rounds = 5;
  const rows = await runThroughput({ seconds: 3, rounds, levels: [8, 32], against, peers: ["verify only"] });
  for (const line of compareTable(rows, against, rounds)) console.log(line);
}
