// `npm run bench`: every benchmark, one table each, ratios first. Offline, loopback only,
// about 3 minutes on a 2-core machine. Writes bench/results/latest.md as well.
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { runDelivery, runMemory, runThroughput } from "./e2e.mjs";
import { runMicro } from "./micro.mjs";

const quick = process.argv.includes("--quick");
const lines = [];
const out = (line = "") => {
  console.log(line);
  lines.push(line);
};
const f = (n, digits = 1) => (n === null || n === undefined ? "–" : Number(n).toFixed(digits));

out(`# edgehook benchmarks, ${new Date().toISOString().slice(0, 10)}`);
out(`Machine: ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB; Node ${process.version}. Command: npm run bench${quick ? " -- --quick" : ""}`);
out();

out("## Request-path CPU per event vs the floor (one HMAC-SHA256 + one JSON.parse, same bytes, same process)");
out("| payload | bytes | ours/floor | ours µs | floor µs |");
out("| --- | ---: | ---: | ---: | ---: |");
for (const r of await runMicro({ budgetMs: quick ? 600 : 800 })) {
  out(`| ${r.payload} | ${r.bytes} | **${f(r.oursUs / r.floorUs, 2)}** | ${f(r.oursUs)} | ${f(r.floorUs)} |`);
}
out();

out("## End to end under wrangler dev (workerd, local D1 + Queue) vs a bare Hono route, signed 5 KB events");
out("| connections | throughput ours/bare | ours req/s | bare req/s | ours p50 / p99 / max ms | bare p50 / p99 / max ms | errors |");
out("| ---: | ---: | ---: | ---: | --- | --- | ---: |");
for (const { connections, ours, bare } of await runThroughput({ seconds: quick ? 2 : 3 })) {
  out(`| ${connections} | **${f(ours.rps / bare.rps, 2)}** | ${f(ours.rps, 0)} | ${f(bare.rps, 0)} | ${ours.p50} / ${ours.p99} / ${ours.max} | ${bare.p50} / ${bare.p99} / ${bare.max} | ${ours.non2xx} |`);
}
out();

const memory = await runMemory({ events: quick ? 5_000 : 50_000, step: quick ? 2_500 : 10_000 });
const [first] = memory.points;
const last = memory.points.at(-1);
out(`## Memory: workerd RSS while the gateway accepts ${memory.events} events (${f(memory.events / memory.seconds, 0)} events/s, ${memory.errors} errors)`);
out("| events | RSS MiB | RSS / start | local D1 on disk MiB |");
out("| ---: | ---: | ---: | ---: |");
for (const p of memory.points) out(`| ${p.events} | ${f(p.rssKiB / 1024)} | ${f(p.rssKiB / first.rssKiB, 2)} | ${f(p.dbKiB / 1024)} |`);
out(`Growth: ${f((last.rssKiB - first.rssKiB) / 1024 / (memory.events / 10_000))} MiB of RSS and ${f((last.dbKiB - first.dbKiB) / 1024 / (memory.events / 10_000))} MiB of D1 data per 10,000 events.`);
out();

const delivery = await runDelivery({ events: 100 });
out("## Delivery: 100 events to 3 destinations on a local receiver");
out("| forwards | forwards/s (from first send) | events accepted in s | all forwarded in s |");
out("| ---: | ---: | ---: | ---: |");
out(`| ${delivery.forwards}/${delivery.events * delivery.destinations} | **${f(delivery.deliverSeconds ? delivery.forwards / delivery.deliverSeconds : null, 0)}** | ${f(delivery.acceptSeconds, 2)} | ${f(delivery.deliverSeconds, 2)} |`);

mkdirSync(new URL("results", import.meta.url), { recursive: true });
writeFileSync(new URL("results/latest.md", import.meta.url), lines.join("\n") + "\n");
