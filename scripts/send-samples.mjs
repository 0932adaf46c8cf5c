#!/usr/bin/env node
// Signs the provider docs' sample payloads with the local secrets (.dev.vars) and posts them
// to a running gateway, then reads each event back through the admin API.
//   node scripts/send-samples.mjs            # to http://127.0.0.1:8787
//   node scripts/send-samples.mjs --fresh    # new event ids, so a second run makes new events (without it, the consumer keeps the first copy)
//   EDGEHOOK_URL=http://127.0.0.1:9000 node scripts/send-samples.mjs
import { createHmac, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";

const root = new URL("..", import.meta.url);
const base = process.env.EDGEHOOK_URL ?? "http://127.0.0.1:8787";
const fresh = process.argv.includes("--fresh");

/** Reads KEY=value lines (the format of .dev.vars). */
function readVars(file) {
  const vars = {};
  for (const line of readFileSync(new URL(file, root), "utf8").split("\n")) {
    const match = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (match) vars[match[1]] = match[2];
  }
  return vars;
}

let vars;
try {
  vars = readVars(".dev.vars");
} catch {
  vars = readVars("scripts/local.dev.vars");
}

// [provider, fixture, the event id it carries (appears once in the file)]
const samples = [
  ["seismic", "seismic-livesend-session-summary-v3.json", "e40bbaab-f86e-e62b-d3c9-5104734edb18"],
  ["seismic", "seismic-interaction-session-summary-enriched.json", "e40bbaab-f86e-e62b-d3c9-5104734edb18"],
  ["seismic", "seismic-demo-event-v1.json", "26a6d425-d0f1-4002-b7ca-ee3c1f64c431"],
  ["zuddl", "zuddl-time-spent-in-session.json", "a912a64f-8865-4289-9024-9a120792c3d8"],
];

function headersFor(provider, body) {
  const sign = (secret) => createHmac("sha256", secret).update(body).digest("hex");
  if (provider === "seismic") return { "x-seismic-signature": sign(vars.SEISMIC_SIGNING_SECRET) };
  const headers = { "x-webhook-signature": `sha256=${sign(vars.ZUDDL_SIGNING_SECRET)}` };
  if (vars.ZUDDL_AUTH_TOKEN) headers["x-webhook-token"] = vars.ZUDDL_AUTH_TOKEN;
  return headers;
}

for (const [provider, file, sampleId] of samples) {
  let body = readFileSync(new URL(`test/fixtures/${file}`, root), "utf8");
  if (fresh) body = body.replace(sampleId, randomUUID());
  const response = await fetch(`${base}/webhooks/${provider}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headersFor(provider, body) },
    body,
  });
  const ack = await response.json();
  console.log(`${provider.padEnd(8)} ${file.padEnd(52)} → ${response.status} ${JSON.stringify(ack)}`);
  if (!response.ok) continue;
  // Queue-first: the consumer stores the event about a second after the acknowledgement.
  let stored;
  for (let tries = 0; tries < 20; tries++) {
    stored = await fetch(`${base}/admin/events/${ack.id}`, { headers: { authorization: `Bearer ${vars.ADMIN_TOKEN}` } });
    if (stored.status !== 404) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  const { event } = await stored.json();
  console.log(`         stored: ${event.provider} ${event.type} tenant=${event.tenant} status=${event.status}`);
}
console.log(`\nList them: curl -H "Authorization: Bearer $ADMIN_TOKEN" ${base}/admin/events`);
