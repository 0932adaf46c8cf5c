import autocannon from "autocannon";
import { createHmac, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { startWorker } from "../scripts/local-gateway.mjs";
const sample = readFileSync("test/fixtures/seismic-livesend-session-summary-v3.json", "utf8");
const mode = process.argv[2];
const run = (url, amount, sign) => new Promise((res, rej) => autocannon({ url: url + (mode === "bare" ? "/webhooks/x" : "/webhooks/seismic"), method: "POST", connections: 16, amount, requests: [{ setupRequest(r) { const body = sample.replace("e40bbaab-f86e-e62b-d3c9-5104734edb18", randomUUID()); return { ...r, body, headers: { "content-type": "application/json", "x-seismic-signature": sign ? createHmac("sha256", "s").update(body).digest("hex") : "0".repeat(64) } }; } }] }, (e, r) => e ? rej(e) : res(r)));
const gw = await startWorker(mode === "bare" ? { config: "bench/wrangler.bare.toml", migrate: false } : { vars: { SEISMIC_SIGNING_SECRET: "s", ADMIN_TOKEN: "a", DESTINATIONS: [] } });
const { execSync } = await import("node:child_process");
const show = (label) => console.log(label, Math.round(gw.rssKiB() / 1024), "MiB", execSync("ps -o pid,rss,args -C workerd --no-headers").toString().split("\n").map(l => l.slice(0, 60)).join(" / "));
show("start");
for (let i = 0; i < 4; i++) { await run(gw.url, 5000, mode !== "badsig"); show(`after ${(i + 1) * 5000}`); }
await new Promise((r) => setTimeout(r, 5000)); show("after 5s idle");
await gw.stop();
