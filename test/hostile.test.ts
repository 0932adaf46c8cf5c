/**
 * Hostile input, generated: whatever arrives, the gateway answers a 4xx with a JSON error
 * (never a 5xx, never an exception) and stores nothing that was not signed.
 */
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { countRows, hmacHex, send, sendWith, seismicBody, streamingRequest, webhookRequest, zuddlBody } from "./helpers";

const utf8 = new TextEncoder();

async function expectClientError(response: Response) {
  expect(response.status).toBeGreaterThanOrEqual(400);
  expect(response.status).toBeLessThan(500);
  expect(response.headers.get("content-type")).toMatch(/application\/json/);
  const body = (await response.json()) as { error?: { code?: unknown; message?: unknown } };
  expect(typeof body.error?.code).toBe("string");
  expect(typeof body.error?.message).toBe("string");
}

const eventsBefore = () => countRows("SELECT count(*) AS n FROM events");
const quarantinedBefore = () => countRows("SELECT count(*) AS n FROM quarantine");

/** JSON-ish text: valid documents, truncated ones, odd keys, deep nesting, huge numbers. */
const jsonish = fc.oneof(
  fc.json({ depthSize: "large" }),
  fc.json().map((text) => text.slice(0, Math.max(0, text.length - 1))),
  fc.string({ unit: "binary", maxLength: 200 }),
  fc.constantFrom(
    '{"__proto__":{"polluted":true},"id":"x"}',
    '{"constructor":{"prototype":{"polluted":true}}}',
    '{"id":"a","id":"b","version":"v","occurredAt":"x","tenantId":"t","data":{}}',
    `${"[".repeat(5000)}${"]".repeat(5000)}`,
    `{"id":"${"x".repeat(100_000)}"}`,
    '{"n":1e999999,"m":-0,"k":123456789012345678901234567890}',
    "\uFEFF{}",
    "null",
    "",
  ),
);

describe("fuzzed bodies and headers", () => {
  it("unsigned or wrongly signed requests of any shape are refused with a JSON 4xx and store nothing", async () => {
    const stored = await eventsBefore();
    const quarantined = await quarantinedBefore();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("seismic", "zuddl"),
        fc.oneof(jsonish, fc.uint8Array({ maxLength: 300 })),
        fc.oneof(
          fc.constant({}),
          fc.record({ "x-seismic-signature": fc.string({ maxLength: 80 }) }),
          fc.record({ "x-seismic-signature": fc.stringMatching(/^[0-9a-fA-F]{0,70}$/), "x-seismic-signature-old": fc.string({ maxLength: 70 }) }),
          fc.record({ "x-webhook-signature": fc.oneof(fc.string({ maxLength: 80 }), fc.stringMatching(/^sha256=[0-9a-f]{60,68}$/)) }),
        ),
        fc.constantFrom("application/json", "text/plain", "application/json; charset=latin1", "application/x-www-form-urlencoded"),
        async (provider, body, signatureHeaders, contentType) => {
          const headers = Object.fromEntries(Object.entries(signatureHeaders).filter(([, v]) => /^[\t\x20-\x7e]*$/.test(v as string)));
          const response = await send(webhookRequest(provider, body, { ...headers, "content-type": contentType }));
          if (response.status === 200) {
            // Only an unsigned URL-verification challenge may be answered without a signature.
            expect(response.headers.get("content-type")).not.toMatch(/json/);
            return;
          }
          await expectClientError(response);
        },
      ),
      { numRuns: 300 },
    );
    expect(await eventsBefore()).toBe(stored);
    expect(await quarantinedBefore()).toBe(quarantined);
  }, 120_000);

  it("signed bodies of any shape get a JSON 4xx or are accepted, never a 5xx", async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom("seismic", "zuddl"), fc.oneof(jsonish, fc.uint8Array({ maxLength: 300 })), async (provider, body) => {
        const bytes = typeof body === "string" ? utf8.encode(body) : body;
        const secret = provider === "seismic" ? env.SEISMIC_SIGNING_SECRET! : env.ZUDDL_SIGNING_SECRET!;
        const header = provider === "seismic" ? "x-seismic-signature" : "x-webhook-signature";
        const response = await send(webhookRequest(provider, bytes, { [header]: await hmacHex(secret, bytes) }));
        if (response.status === 200) return;
        await expectClientError(response);
      }),
      { numRuns: 200 },
    );
  }, 120_000);

  it("wrong types at every schema path are a 422 naming that path", async () => {
    const seismic = JSON.parse(seismicBody({ version: "livesend-session-summary-v3", data: { InteractionId: "i", ClientDetails: { City: "x" }, Participants: [{ Email: "e" }] } }));
    const zuddl = JSON.parse(zuddlBody());
    const paths: [string, Record<string, unknown>, string[]][] = [
      ["seismic", seismic, ["id"]],
      ["seismic", seismic, ["occurredAt"]],
      ["seismic", seismic, ["tenantId"]],
      ["seismic", seismic, ["data", "InteractionId"]],
      ["seismic", seismic, ["data", "ClientDetails", "City"]],
      ["seismic", seismic, ["data", "Participants", "0", "Email"]],
      ["zuddl", zuddl, ["actionId"]],
      ["zuddl", zuddl, ["actor", "id"]],
      ["zuddl", zuddl, ["session", "id"]],
      ["zuddl", zuddl, ["timeSpentInMinutes"]],
    ];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...paths), fc.constantFrom<unknown>(42, true, [], { a: 1 }, 1.5), async ([provider, doc, path], wrong) => {
        const copy = structuredClone(doc);
        let node = copy as Record<string, unknown>;
        for (const key of path.slice(0, -1)) node = node[key] as Record<string, unknown>;
        const last = path.at(-1)!;
        // timeSpentInMinutes is a number: give it a string instead of another number.
        node[last] = typeof node[last] === "number" && typeof wrong === "number" ? "text" : wrong;
        const body = JSON.stringify(copy);
        const secret = provider === "seismic" ? env.SEISMIC_SIGNING_SECRET! : env.ZUDDL_SIGNING_SECRET!;
        const header = provider === "seismic" ? "x-seismic-signature" : "x-webhook-signature";
        const response = await send(webhookRequest(provider, body, { [header]: await hmacHex(secret, body) }));
        expect(response.status).toBe(422);
        const { error } = (await response.json()) as { error: { path: string } };
        expect(error.path).toBe(`$.${path.join(".").replace(/\.(\d+)(\.|$)/g, "[$1]$2")}`);
      }),
      { numRuns: 60 },
    );
  }, 60_000);

  it("prototype keys in a signed payload pollute nothing", async () => {
    const body = seismicBody({ data: JSON.parse('{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}') });
    const raw = body.replace('"data":{}', '"data":{"__proto__":{"polluted":true}}');
    const response = await send(webhookRequest("seismic", raw, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, raw) }));
    expect(response.status).toBe(200);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe("slow and oversized bodies", () => {
  it("cuts off a body trickled slower than BODY_TIMEOUT_MS with 408", async () => {
    let timer: ReturnType<typeof setInterval> | null = null;
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(utf8.encode('{"id":'));
        timer = setInterval(() => {
          try {
            controller.enqueue(utf8.encode(" "));
          } catch {
            clearInterval(timer);
          }
        }, 50);
      },
      cancel() {
        clearInterval(timer);
      },
    });
    const response = await sendWith(streamingRequest(stream), { BODY_TIMEOUT_MS: "300" });
    clearInterval(timer);
    expect(response.status).toBe(408);
    expect((await response.json()) as unknown).toMatchObject({ error: { code: "body_timeout" } });
  });
});

describe("admin API", () => {
  it("refuses every way of presenting a wrong token, and no answer carries a secret", async () => {
    const token = env.ADMIN_TOKEN!;
    const attempts: [string, Record<string, string>][] = [
      ["/admin/events", {}],
      ["/admin/events", { authorization: "Bearer" }],
      ["/admin/events", { authorization: "Bearer wrong" }],
      ["/admin/events", { authorization: `Bearer ${token.slice(0, -1)}` }],
      ["/admin/events", { authorization: `Bearer ${token}${token}` }],
      ["/admin/events", { authorization: `Basic ${btoa(`admin:${token}`)}` }],
      [`/admin/events?token=${token}`, {}],
      [`/admin/events?access_token=${token}`, {}],
      ["/admin/stats", { "x-admin-token": token }],
      ["/admin/replay", { cookie: `token=${token}` }],
    ];
    for (const [path, headers] of attempts) {
      const response = await send(new Request(`https://edgehook.test${path}`, { method: path.includes("replay") ? "POST" : "GET", headers }));
      expect(response.status, `${path} ${JSON.stringify(headers)}`).toBe(401);
    }
    const secrets = [env.SEISMIC_SIGNING_SECRET!, env.SEISMIC_SIGNING_SECRET_OLD!, env.ZUDDL_SIGNING_SECRET!, env.ZUDDL_SIGNING_SECRET_OLD!, token];
    for (const path of ["/admin/events?limit=200", "/admin/stats", "/admin/destinations", "/admin/deliveries", "/healthz"]) {
      const response = await send(new Request(`https://edgehook.test${path}`, { headers: { authorization: `Bearer ${token}` } }));
      const text = await response.text();
      for (const secret of secrets) expect(text, path).not.toContain(secret);
    }
  });
});
