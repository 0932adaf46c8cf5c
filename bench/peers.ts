/**
 * The end-to-end benchmark's peers (bench/e2e.mjs): what a webhook receiver on the same runtime
 * costs with less work than edgehook, chosen by the PEER var. Each checks the Seismic signature
 * (one HMAC-SHA256 of the raw body, constant time) and parses the JSON, then:
 *   verify  answers 200 (the floor);
 *   queue   sends one Queue message carrying the body, then answers;
 *   naive   inserts the body into D1, sends one Queue message, then answers;
 *   deliver answers as `queue` does, and its queue consumer forwards each message to every URL in
 *           FORWARD_TO, at most 6 at a time (the Workers connection limit), storing nothing: the
 *           delivery benchmark's peer. A forward that fails retries the whole message. With
 *           BODIES_IN_R2 "on" it first puts each message's body in R2 (the BODIES bucket, one
 *           object per event id, the batch's puts at once), as edgehook stores every body before
 *           it forwards: the same peer with that one storage step, to show what R2 costs.
 * Not the gateway: no schemas, no second secret, no budget, no quarantine, no copies told apart,
 * no delivery state, no signatures on forwards.
 */
interface PeerEnv {
  PEER: "verify" | "queue" | "naive" | "deliver";
  SEISMIC_SIGNING_SECRET: string;
  /** JSON text: the URLs the `deliver` peer forwards every message to. */
  FORWARD_TO?: string;
  /** "on": the `deliver` peer puts each body in BODIES before it forwards. */
  BODIES_IN_R2?: string;
  BODIES: R2Bucket;
  DB: D1Database;
  QUEUE: Queue<{ id: string; body: string }>;
}

const MAX_OPEN_FORWARDS = 6;

/** At most `limit` calls of `work` at once, first come, first served. */
function limited(limit: number) {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async <T>(work: () => Promise<T>): Promise<T> => {
    if (running >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      return await work();
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
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
  /** The peers' queue is consumed too (as edgehook's is): acknowledged, or (deliver) forwarded first. */
  async queue(batch, env) {
    if (env.PEER !== "deliver") return batch.ackAll();
    const urls = JSON.parse(env.FORWARD_TO ?? "[]") as string[];
    const slot = limited(MAX_OPEN_FORWARDS);
    if (env.BODIES_IN_R2 === "on") {
      const stored = await Promise.allSettled(batch.messages.map((message) => env.BODIES.put(`events/${message.body.id}`, message.body.body)));
      if (stored.some((result) => result.status === "rejected")) return batch.retryAll();
    }
    await Promise.all(
      batch.messages.map(async (message) => {
        const results = await Promise.all(
          urls.map((url) =>
            slot(async () => {
              const response = await fetch(url, {
                method: "POST",
                headers: { "content-type": "application/json", "webhook-id": message.body.id },
                body: message.body.body,
              }).catch(() => null);
              await response?.body?.cancel();
              return response?.ok === true;
            }),
          ),
        );
        if (results.every(Boolean)) message.ack();
        else message.retry();
      }),
    );
  },
} satisfies ExportedHandler<PeerEnv, { id: string; body: string }>;
