/**
 * Hostile input, generated: whatever arrives, the gateway answers a 4xx with a JSON error
 * (never a 5xx, never an exception) and stores nothing that was not signed.
 */
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Struct } from "superstruct";
import { InteractionSessionSummary, SeismicEnvelope, SeismicLegacyEnvelope } from "../src/providers/seismic";
import { TimeSpentInSession, ZuddlAction } from "../src/providers/zuddl";
import enrichedLegacy from "./fixtures/seismic-interaction-session-summary-enriched.json?raw";
import livesendV3 from "./fixtures/seismic-livesend-session-summary-v3.json?raw";
import timeSpent from "./fixtures/zuddl-time-spent-in-session.json?raw";
import { countRows, hmacHex, send, sendWith, seismicBody, streamingRequest, webhookRequest } from "./helpers";

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

  it("a wrong type at any path of the samples is a 422 naming superstruct's failing path, or accepted where the schema allows it", async () => {
    const samples: [string, string, Struct<unknown, unknown>][] = [
      ["seismic", livesendV3, SeismicEnvelope as Struct<unknown, unknown>],
      ["seismic", enrichedLegacy, SeismicLegacyEnvelope as Struct<unknown, unknown>],
      ["zuddl", timeSpent, ZuddlAction as Struct<unknown, unknown>],
    ];
    let rejected = 0;
    let requests = 0;
    for (const [provider, text, envelope] of samples) {
      const doc = JSON.parse(text) as Json;
      for (const path of leafPaths(doc)) {
        const value = valueAt(doc, path);
        const wrong = typeof value === "string" ? 42 : typeof value === "number" ? "text" : typeof value === "boolean" ? "text" : 42;
        const mutated = setAt(structuredClone(doc), path, wrong);
        const body = JSON.stringify(mutated).replace(/"(Id|id|actionId)":"[^"]+"/, `"$1":"${crypto.randomUUID()}"`);
        const secret = provider === "seismic" ? env.SEISMIC_SIGNING_SECRET! : env.ZUDDL_SIGNING_SECRET!;
        const header = provider === "seismic" ? "x-seismic-signature" : "x-webhook-signature";
        const response = await send(webhookRequest(provider, body, { [header]: await hmacHex(secret, body) }));
        requests++;
        // The oracle: superstruct itself, on the envelope and the payload schema of that type.
        const expected = expectedFailure(JSON.parse(body), envelope);
        if (expected === null) {
          expect(response.status, `${path.join(".")}`).toBe(200);
        } else {
          rejected++;
          expect(response.status, `${path.join(".")}`).toBe(422);
          expect(((await response.json()) as { error: { path: string } }).error.path).toBe(expected);
        }
      }
    }
    expect(requests).toBeGreaterThan(150);
    expect(rejected).toBeGreaterThan(100);
  }, 120_000);

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

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Path = (string | number)[];

function leafPaths(node: Json, path: Path = []): Path[] {
  if (node === null || typeof node !== "object") return [path];
  return Object.entries(node).flatMap(([key, child]) => leafPaths(child, [...path, Array.isArray(node) ? Number(key) : key]));
}

function valueAt(node: Json, path: Path): Json {
  return path.reduce<Json>((at, key) => (at as Record<string | number, Json>)[key]!, node);
}

function setAt(root: Json, path: Path, value: Json): Json {
  const parent = valueAt(root, path.slice(0, -1)) as Record<string | number, Json>;
  parent[path.at(-1)!] = value;
  return root;
}

const jsonPath = (base: string, path: readonly (string | number)[]) =>
  base + path.map((key) => (typeof key === "number" ? `[${key}]` : `.${key}`)).join("");

/** What superstruct says first: the envelope, then the payload schema its type names (as the providers do). */
function expectedFailure(doc: Record<string, unknown>, envelope: Struct<unknown, unknown>): string | null {
  const [envelopeError] = envelope.validate(doc);
  if (envelopeError) return jsonPath("$", envelopeError.failures()[0]!.path);
  if ("action" in doc) {
    const [error] = (TimeSpentInSession as Struct<unknown, unknown>).validate(doc);
    return error ? jsonPath("$", error.failures()[0]!.path) : null;
  }
  const legacy = "Data" in doc;
  const [error] = (InteractionSessionSummary as Struct<unknown, unknown>).validate(legacy ? doc.Data : doc.data);
  return error ? jsonPath(legacy ? "$.Data" : "$.data", error.failures()[0]!.path) : null;
}
