import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import demoEvent from "./fixtures/seismic-demo-event-v1.json?raw";
import enrichedLegacy from "./fixtures/seismic-interaction-session-summary-enriched.json?raw";
import livesendV3 from "./fixtures/seismic-livesend-session-summary-v3.json?raw";
import timeSpent from "./fixtures/zuddl-time-spent-in-session.json?raw";
import {
  ADMIN, adminGet, countRows, errorOf, hmacHex, send, sendAndConsume, sendWith, seismicBody, seismicRequest,
  quarantinedRow, storedEvent, streamingRequest, uniqueId, webhookRequest, zuddlBody, zuddlRequest,
} from "./helpers";

interface Accepted {
  id: string;
  eventId: string;
  type: string;
  knownType: boolean;
  status: string;
}

/** The docs' event ids, which each test replaces so tests stay independent. */
const SAMPLE_IDS = {
  livesend: "e40bbaab-f86e-e62b-d3c9-5104734edb18",
  demo: "26a6d425-d0f1-4002-b7ca-ee3c1f64c431",
  zuddl: "a912a64f-8865-4289-9024-9a120792c3d8",
};
function withFreshId(sample: string, sampleId: string): string {
  expect(sample.split(sampleId)).toHaveLength(2); // the id appears exactly once
  return sample.replace(sampleId, uniqueId());
}

describe("provider samples from the docs", () => {
  const cases = [
    ["seismic", "livesend-session-summary-v3 (v2 envelope)", withFreshId(livesendV3, SAMPLE_IDS.livesend), "livesend-session-summary-v3", true],
    ["seismic", "interaction session summary enriched (legacy PascalCase)", withFreshId(enrichedLegacy, SAMPLE_IDS.livesend), "livesend-session-summary-enriched-v3", true],
    ["seismic", "filter demo event (duplicate JSON key, unknown type)", withFreshId(demoEvent, SAMPLE_IDS.demo), "DemoEventV1", false],
    ["zuddl", "TIME_SPENT_IN_SESSION", withFreshId(timeSpent, SAMPLE_IDS.zuddl), "TIME_SPENT_IN_SESSION", true],
  ] as const;

  for (const [provider, name, body, type, knownType] of cases) {
    it(`accepts ${provider} ${name} and stores it verbatim`, async () => {
      const request = provider === "seismic" ? await seismicRequest(body) : await zuddlRequest(body);
      const response = await sendAndConsume(request);
      expect(response.status).toBe(200);
      const accepted = (await response.json()) as Accepted;
      expect(accepted).toMatchObject({ status: "accepted", type, knownType });
      expect(accepted.id).toMatch(/^evt_[0-9a-f]{24}$/);

      // Verbatim in R2, byte for byte; D1 keeps the index.
      expect(await storedEvent(accepted.id)).toMatchObject({ body, provider, verified_with: "current", body_in_r2: 1 });
      expect(new Uint8Array(await (await env.BODIES.get(`events/${accepted.id}`))!.arrayBuffer())).toEqual(new TextEncoder().encode(body));
    });
  }

  it("keeps the quirky dates and obfuscated emails exactly as sent", async () => {
    const body = withFreshId(enrichedLegacy, SAMPLE_IDS.livesend);
    const accepted = (await (await sendAndConsume(await seismicRequest(body))).json()) as Accepted;
    const { event } = await adminGet<{ event: { payload: { Data: Record<string, unknown> }; tenant: string } }>(`/admin/events/${accepted.id}`);
    expect(event.payload.Data.SessionEndedAt).toBe("07/14/2024 14:03:45");
    expect(event.payload.Data.InteractionOccurredAt).toBe("0001-01-01T00:00:00");
    expect(event.tenant).toBe("79caac86-4242-401f-bf63-4505f609dd22");
  });
});

describe("URL verification challenges", () => {
  it("answers the verification challenge in plain text, unsigned", async () => {
    const body = JSON.stringify({ type: "verification", challenge: "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" });
    const response = await send(webhookRequest("seismic", body));
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/plain/);
    expect(await response.text()).toBe("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P");
  });

  it("answers the WebhookChallengeV1 envelope with JSON", async () => {
    const body = JSON.stringify({ id: uniqueId(), version: "WebhookChallengeV1", occurredAt: "x", tenantId: "t", data: { challenge: "abc123" } });
    const response = await send(await seismicRequest(body));
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ challenge: "abc123" });
  });

  it("answers a signed challenge only when the signature verifies", async () => {
    const body = JSON.stringify({ type: "verification", challenge: "signed-one" });
    expect(await (await send(await seismicRequest(body))).text()).toBe("signed-one");
    const forged = await send(webhookRequest("seismic", body, { "x-seismic-signature": await hmacHex("not-our-secret", body) }));
    expect(forged.status).toBe(401);
  });

  it("answers challenges even before a secret is configured, but never stores them", async () => {
    const challenge = `unstored-${uniqueId()}`;
    const response = await sendWith(webhookRequest("seismic", JSON.stringify({ type: "verification", challenge })), {
      SEISMIC_SIGNING_SECRET: undefined,
      SEISMIC_SIGNING_SECRET_OLD: undefined,
    });
    expect(await response.text()).toBe(challenge);
    expect(await countRows("SELECT count(*) AS n FROM events WHERE instr(body, ?) > 0", challenge)).toBe(0);
    expect(await quarantinedRow(JSON.stringify({ type: "verification", challenge }))).toBeNull();
  });

  it("answers a signed challenge before a secret is configured (the URL is registered first), storing nothing", async () => {
    const challenge = `signed-unconfigured-${uniqueId()}`;
    for (const body of [
      JSON.stringify({ type: "verification", challenge }),
      JSON.stringify({ id: uniqueId(), version: "WebhookChallengeV1", occurredAt: "x", tenantId: "t", data: { challenge } }),
    ]) {
      const headers = { "x-seismic-signature": await hmacHex("a secret we do not have yet", body) };
      const response = await sendWith(webhookRequest("seismic", body, headers), { SEISMIC_SIGNING_SECRET: undefined, SEISMIC_SIGNING_SECRET_OLD: undefined });
      expect(response.status).toBe(200);
      expect(await response.text()).toContain(challenge);
    }
    expect(await countRows("SELECT count(*) AS n FROM events WHERE instr(body, ?) > 0", challenge)).toBe(0);
    // Once a secret is set, the same signed challenge must verify again.
    const body = JSON.stringify({ type: "verification", challenge });
    const forged = await send(webhookRequest("seismic", body, { "x-seismic-signature": await hmacHex("a secret we do not have yet", body) }));
    expect(forged.status).toBe(401);
  });

  it("rejects a verification without a challenge value with 422", async () => {
    const response = await send(webhookRequest("seismic", JSON.stringify({ type: "verification" })));
    expect(response.status).toBe(422);
    expect(await errorOf(response)).toMatchObject({ code: "schema_mismatch", path: "$.challenge" });
  });
});

describe("bad input gets a precise status and JSON error", () => {
  async function expectError(response: Response, status: number, code: string) {
    expect(response.status).toBe(status);
    expect(response.headers.get("content-type")).toMatch(/application\/json/);
    expect((await errorOf(response)).code).toBe(code);
  }

  it("401 for a missing signature", async () => {
    await expectError(await send(webhookRequest("seismic", seismicBody())), 401, "missing_signature");
    await expectError(await send(webhookRequest("zuddl", zuddlBody())), 401, "missing_signature");
  });

  it("401 for malformed signatures of every shape", async () => {
    const body = seismicBody();
    const good = await hmacHex(env.SEISMIC_SIGNING_SECRET!, body);
    for (const bad of ["", "zz", good.slice(2), `${good}00`, `sha1=${good}`, "g".repeat(64), good.replace(/./, "-")]) {
      const response = await send(webhookRequest("seismic", body, { "x-seismic-signature": bad }));
      expect(response.status, `signature "${bad}"`).toBe(401);
    }
  });

  it("401 for a wrong signature, and nothing is stored", async () => {
    const body = seismicBody();
    const { id } = JSON.parse(body) as { id: string };
    await expectError(await send(webhookRequest("seismic", body, { "x-seismic-signature": await hmacHex("wrong", body) })), 401, "invalid_signature");
    expect(await countRows("SELECT count(*) AS n FROM events WHERE event_id = ?", id)).toBe(0);
  });

  it("401 for a body changed after signing", async () => {
    const body = seismicBody();
    const signature = await hmacHex(env.SEISMIC_SIGNING_SECRET!, body);
    const tampered = body.replace('"teamSiteId":"1"', '"teamSiteId":"2"');
    await expectError(await send(webhookRequest("seismic", tampered, { "x-seismic-signature": signature })), 401, "invalid_signature");
  });

  it("503 when the provider's secret is not configured (the provider retries)", async () => {
    const body = seismicBody();
    const response = await sendWith(await seismicRequest(body), { SEISMIC_SIGNING_SECRET: undefined, SEISMIC_SIGNING_SECRET_OLD: undefined });
    await expectError(response, 503, "provider_not_configured");
  });

  it("400 for malformed JSON, kept in quarantine", async () => {
    const body = `{"id": "${uniqueId()}", "version": `;
    await expectError(await send(await seismicRequest(body)), 400, "malformed_json");
    const row = await quarantinedRow(body);
    expect({ reason: row?.reason, body: new TextDecoder().decode(row?.body) }).toEqual({ reason: "malformed_json", body });
  });

  it("400 for invalid UTF-8, kept in quarantine byte for byte", async () => {
    const bytes = new Uint8Array([...new TextEncoder().encode(`{"id":"${uniqueId()}","x":"`), 0xff, 0xfe, ...new TextEncoder().encode('"}')]);
    const response = await send(webhookRequest("seismic", bytes, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, bytes) }));
    await expectError(response, 400, "invalid_utf8");
    // In R2, byte for byte; the row says where.
    expect(await quarantinedRow(bytes)).toMatchObject({ reason: "invalid_utf8", body: bytes, body_in_r2: 1 });
  });

  it("400 for an empty body", async () => {
    await expectError(await send(await seismicRequest("")), 400, "empty_body");
  });

  it("415 for a non-JSON content type", async () => {
    const body = seismicBody();
    const request = await seismicRequest(body);
    const headers = new Headers(request.headers);
    headers.set("content-type", "application/x-www-form-urlencoded");
    await expectError(await send(new Request(request, { headers })), 415, "unsupported_content_type");
  });

  it("accepts JSON media types with parameters or a +json suffix", async () => {
    for (const contentType of ["application/json; charset=utf-8", "application/cloudevents+json"]) {
      const body = seismicBody();
      const signature = await hmacHex(env.SEISMIC_SIGNING_SECRET!, body);
      const response = await send(webhookRequest("seismic", body, { "content-type": contentType, "x-seismic-signature": signature }));
      expect(response.status).toBe(200);
    }
  });

  it("413 for a declared oversized body, before reading it", async () => {
    const response = await sendWith(await seismicRequest(seismicBody({ data: { blob: "x".repeat(2048) } })), { MAX_BODY_BYTES: "1024" });
    await expectError(response, 413, "body_too_large");
  });

  it("413 for an oversized streamed body without Content-Length", async () => {
    const chunk = new TextEncoder().encode("x".repeat(64 * 1024));
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        sent++;
        if (sent > 64) controller.close(); // 4 MiB at most, far past the limit
        else controller.enqueue(chunk);
      },
    });
    const request = streamingRequest(stream);
    expect(request.headers.get("content-length")).toBeNull();
    // Straight into the handler: across a service binding the sender's pipe would report the cut.
    await expectError(await sendWith(request, {}), 413, "body_too_large");
    expect(sent).toBeLessThan(64); // stopped reading soon after the limit
  });

  it("422 with the failing path for a signed body that fails its schema, kept in quarantine", async () => {
    const body = seismicBody({ version: "livesend-session-summary-v3", data: { InteractionId: "i", TotalDurationSeconds: "966" } });
    const response = await send(await seismicRequest(body));
    await expectError(response, 422, "schema_mismatch");
    expect((await errorOf(await send(await seismicRequest(body)))).path).toBe("$.data.TotalDurationSeconds");
    const row = await env.DB.prepare("SELECT path, attempts FROM quarantine WHERE id = ?").bind((await quarantinedRow(body))?.id).first();
    expect(row).toEqual({ path: "$.data.TotalDurationSeconds", attempts: 2 }); // one row, redelivery counted
  });

  it("422 for envelope problems in either case convention", async () => {
    const missingId = JSON.parse(seismicBody()) as Record<string, unknown>;
    delete missingId.id;
    const response = await send(await seismicRequest(JSON.stringify(missingId)));
    expect(await errorOf(response)).toMatchObject({ code: "schema_mismatch", path: "$.id" });

    const legacy = JSON.parse(withFreshId(enrichedLegacy, SAMPLE_IDS.livesend)) as { Data: Record<string, unknown> };
    legacy.Data.Participants = [{ Email: 42 }];
    const legacyResponse = await send(await seismicRequest(JSON.stringify(legacy)));
    expect(await errorOf(legacyResponse)).toMatchObject({ path: "$.Data.Participants[0].Email" });

    const zuddl = await send(await zuddlRequest(zuddlBody({ timeSpentInMinutes: "lots" })));
    expect(await errorOf(zuddl)).toMatchObject({ code: "schema_mismatch", path: "$.timeSpentInMinutes" });
    const notObject = await send(await zuddlRequest("[1,2,3]"));
    expect(notObject.status).toBe(422);
  });

  it("404 JSON for an unknown provider or route", async () => {
    await expectError(await send(webhookRequest("stripe", "{}")), 404, "unknown_provider");
    await expectError(await exports.default.fetch("https://edgehook.test/nope"), 404, "not_found");
  });
});

describe("unknown event types", () => {
  it("accepts a valid envelope of an unknown type and marks it unknown", async () => {
    const response = await send(await seismicRequest(seismicBody({ version: "SomethingNewV9" })));
    expect(await response.json()).toMatchObject({ status: "accepted", type: "SomethingNewV9", knownType: false });
    const zuddl = await send(await zuddlRequest(zuddlBody({ action: "REGISTERED", session: undefined })));
    expect(await zuddl.json()).toMatchObject({ status: "accepted", type: "REGISTERED", knownType: false });
  });
});

describe("Zuddl static auth header", () => {
  const token = "zuddl-static-token";
  it("requires X-Webhook-Token when ZUDDL_AUTH_TOKEN is set", async () => {
    const body = zuddlBody();
    const request = async (extra: Record<string, string>) =>
      webhookRequest("zuddl", body, { "x-webhook-signature": await hmacHex(env.ZUDDL_SIGNING_SECRET!, body), ...extra });
    expect((await sendWith(await request({}), { ZUDDL_AUTH_TOKEN: token })).status).toBe(401);
    expect(await errorOf(await sendWith(await request({ "x-webhook-token": "nope" }), { ZUDDL_AUTH_TOKEN: token }))).toMatchObject({ code: "invalid_token" });
    expect((await sendWith(await request({ "x-webhook-token": token }), { ZUDDL_AUTH_TOKEN: token })).status).toBe(200);
  });
});

describe("health and admin read API", () => {
  it("reports health without secrets", async () => {
    const response = await exports.default.fetch("https://edgehook.test/healthz");
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(JSON.parse(text)).toMatchObject({ status: "ok", providers: { seismic: { configured: true }, zuddl: { configured: true } } });
    for (const secret of [env.SEISMIC_SIGNING_SECRET!, env.ZUDDL_SIGNING_SECRET!, env.ADMIN_TOKEN!]) expect(text).not.toContain(secret);
  });

  it("refuses the admin API without the right bearer token", async () => {
    for (const headers of [{} as Record<string, string>, { authorization: "Bearer wrong" }, { authorization: `Bearer ${env.ADMIN_TOKEN}x` }, { authorization: env.ADMIN_TOKEN! }]) {
      const response = await send(new Request("https://edgehook.test/admin/events", { headers }));
      expect(response.status).toBe(401);
    }
    const inQuery = await send(new Request(`https://edgehook.test/admin/events?token=${env.ADMIN_TOKEN}`));
    expect(inQuery.status).toBe(401);
  });

  it("shows one event with its payload", async () => {
    const body = zuddlBody();
    const { id } = (await (await sendAndConsume(await zuddlRequest(body))).json()) as Accepted;
    const { event } = await adminGet<{ event: Record<string, unknown> }>(`/admin/events/${id}`);
    expect(event).toMatchObject({ id, provider: "zuddl", type: "TIME_SPENT_IN_SESSION", tenant: "org-1", verifiedWith: "current", payload: JSON.parse(body) });
    expect(event.status).toMatch(/received|queued|delivered/);
    expect(await send(new Request("https://edgehook.test/admin/events/evt_missing", { headers: ADMIN }))).toHaveProperty("status", 404);
  });

  it("lists events newest first with filters and a cursor", async () => {
    const type = `PagedTypeV${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const { id } = (await (await sendAndConsume(await seismicRequest(seismicBody({ version: type })))).json()) as Accepted;
      ids.push(id);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: { events: { id: string; type: string }[]; nextCursor: string | null } = await adminGet(
        `/admin/events?provider=seismic&type=${type}&limit=2${cursor ? `&cursor=${cursor}` : ""}`,
      );
      expect(page.events.length).toBeLessThanOrEqual(2);
      seen.push(...page.events.map((e) => e.id));
      cursor = page.nextCursor;
    } while (cursor);
    expect(new Set(seen)).toEqual(new Set(ids));
    expect(seen).toHaveLength(5);
    const bad = await send(new Request("https://edgehook.test/admin/events?limit=0", { headers: ADMIN }));
    expect(bad.status).toBe(400);
  });
});
