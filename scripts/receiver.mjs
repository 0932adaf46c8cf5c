#!/usr/bin/env node
// A tiny downstream for local development: prints every forward it gets and checks its
// Standard Webhooks signature with the `standardwebhooks` library.
//   node scripts/receiver.mjs                         # http://127.0.0.1:8788/hook
//   RECEIVER_PORT=9001 RECEIVER_SECRET=whsec_... node scripts/receiver.mjs
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { Webhook } from "standardwebhooks";

const port = Number(process.env.RECEIVER_PORT ?? 8788);

function secretFromDevVars() {
  for (const file of [".dev.vars", "scripts/local.dev.vars"]) {
    try {
      const match = /^LOCAL_RECEIVER_SECRET=(.+)$/m.exec(readFileSync(new URL(`../${file}`, import.meta.url), "utf8"));
      if (match) return match[1].trim();
    } catch {
      // try the next file
    }
  }
  return undefined;
}

const secret = process.env.RECEIVER_SECRET ?? secretFromDevVars();
const verifier = secret ? new Webhook(secret) : null;

createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8");
    let verdict = "unsigned";
    if (verifier && request.headers["webhook-signature"]) {
      try {
        verifier.verify(body, request.headers);
        verdict = "signature OK";
      } catch (err) {
        verdict = `signature INVALID (${err.message})`;
      }
    }
    const { "webhook-id": id, "x-edgehook-provider": provider, "x-edgehook-event-type": type } = request.headers;
    console.log(`[receiver] ${request.method} ${request.url} ${provider}/${type} webhook-id=${id} ${body.length} bytes, ${verdict}`);
    response.writeHead(verdict.startsWith("signature INVALID") ? 401 : 200, { "content-type": "application/json" });
    response.end('{"ok":true}');
  });
}).listen(port, "127.0.0.1", () => console.log(`[receiver] listening on http://127.0.0.1:${port}/hook`));
