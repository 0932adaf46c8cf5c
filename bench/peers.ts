/**
 * The end-to-end benchmark's peers (bench/e2e.mjs): what a webhook receiver on the same runtime
 * costs with less work than edgehook, chosen by the PEER var. Each checks the Seismic signature
 * (one HMAC-SHA256 of the raw body, constant time) and parses the JSON, then:
 *   verify  answers 200 (the floor);
 *   queue   sends one Queue message carrying the body, then answers;
 *   naive   inserts the body into D1, sends one Queue message, then answers.
 * Not the gateway: no schemas, no second secret, no budget, no quarantine, no copies told apart.
 */
interface PeerEnv {
  PEER: "verify" | "queue" | "naive";
  SEISMIC_SIGNING_SECRET: string;
  DB: D1Database;
  QUEUE: Queue<{ id: string; body: string }>;
}

let key: Promise<CryptoKey> | null = null;

function hmacKey(secret: string): Promise<CryptoKey> {
  key ??= crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["verify"]);
  return key;
}

function hexBytes(hex: string): Uint8Array | null {
  if (!/^[0-9a-f]{64}$/i.test(hex)) return null;
  return Uint8Array.from(hex.match(/../g)!, (byte) => parseInt(byte, 16));
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/healthz") return new Response("ok");
    if (request.method !== "POST" || !url.pathname.startsWith("/webhooks/")) return new Response("not found", { status: 404 });
    const body = new Uint8Array(await request.arrayBuffer());
    const signature = hexBytes(request.headers.get("x-seismic-signature") ?? "");
    if (!signature || !(await crypto.subtle.verify("HMAC", await hmacKey(env.SEISMIC_SIGNING_SECRET), signature, body))) {
      return Response.json({ error: "invalid_signature" }, { status: 401 });
    }
    const text = new TextDecoder().decode(body);
    const { id } = JSON.parse(text) as { id: string };
    if (env.PEER === "naive") {
      await env.DB.prepare("INSERT INTO events (id, body, received_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING").bind(id, text, Date.now()).run();
    }
    if (env.PEER !== "verify") await env.QUEUE.send({ id, body: text }, { contentType: "json" });
    return Response.json({ id, status: "accepted" });
  },
  /** The peers' queue is consumed too (as edgehook's is), and simply acknowledged. */
  async queue(batch) {
    batch.ackAll();
  },
} satisfies ExportedHandler<PeerEnv, { id: string; body: string }>;
