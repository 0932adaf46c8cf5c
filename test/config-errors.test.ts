/**
 * Configuration errors name the field and the rule, never the value (#9.6): a secret pasted into
 * any field of DESTINATIONS must not come back from /healthz, the operator API, the console or
 * a log line, and /healthz (unauthenticated) only counts the errors.
 */
import { createExecutionContext, createMessageBatch, getQueueResult } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { loadDestinations } from "../src/deliver/destinations";
import type { Env, QueuedEvent } from "../src/env";
import worker from "../src/index";
import { ADMIN, expectNoLogLineWith, send, sendWith } from "./helpers";

/** The entry point as the runtime sees it (our handlers ignore the execution context). */
const handlers: ExportedHandler<Env, QueuedEvent> = worker;

/** Every value below that must never be echoed contains "Canary"; names that pass the name rule do not. */
const CANARY = "Canary";
const LEAKY: unknown[] = [
  { name: "whsec_NameCanary+QkFEMDEyMzQ1Njc4OQ==", url: "https://a.test/hook" },
  { name: "leaky-url", url: "http://example.com/hook?key=whsec_UrlCanaryQkFEMDEy" },
  { name: "leaky-not-a-url", url: "whsec_UrlCanaryQkFEMDEyMzQ1" },
  { name: "leaky-secret", url: "https://a.test/hook", secret: "whsec_SecretCanaryQkFEMDEyMzQ1Njc4OQ==" },
  { name: "leaky-filter", url: "https://a.test/hook", filter: "$.data[?(@.x == 'whsec_FilterCanaryQkFE')" },
  { name: "leaky-filter-text", url: "https://a.test/hook", filter: "$.data whsec_FilterCanaryQkFE" },
  { name: "leaky-types", url: "https://a.test/hook", types: ["ok", "whsec_Types*CanaryQkFE*"] },
  { name: "leaky-providers", url: "https://a.test/hook", providers: "whsec_ProvidersCanaryQkFE" },
  { name: "leaky-timeout", url: "https://a.test/hook", timeout_ms: "whsec_TimeoutCanaryQkFE" },
  { name: "leaky-extra", url: "https://a.test/hook", notes: "whsec_ExtraValueCanaryQkFE" },
  { name: "leaky-key", url: "https://a.test/hook", "whsec_ExtraKeyCanary+QkFE=": true },
  { name: "leaky-binding", url: "https://a.test/hook", secret: "LEAKY_BINDING" },
  "whsec_EntryCanaryQkFEMDEyMzQ1Njc4OQ==",
];
const BINDINGS = { DESTINATIONS: LEAKY, LEAKY_BINDING: "sk_live_BindingCanaryQkFE" } as Partial<Env>;

/** What each error must say instead: where, which field, which rule. */
const EXPECTED_ERRORS = [
  "DESTINATIONS[0].name: must be 1-64 letters, digits or ._- starting with a letter or digit",
  "DESTINATIONS[1] (leaky-url).url: must be https (or http to 127.0.0.1/localhost)",
  "DESTINATIONS[2] (leaky-not-a-url).url: must be https (or http to 127.0.0.1/localhost)",
  "DESTINATIONS[3] (leaky-secret).secret: must be the name of a secret binding (A-Z, 0-9, _), not the secret itself",
  'DESTINATIONS[4] (leaky-filter).filter: expected "]" at position 41',
  "DESTINATIONS[5] (leaky-filter-text).filter: unexpected character at position 7",
  "DESTINATIONS[6] (leaky-types).types.1: must be a list of 1-100 exact types or prefixes ending in *",
  "DESTINATIONS[7] (leaky-providers).providers: must be a list of 1-20 non-empty provider names",
  "DESTINATIONS[8] (leaky-timeout).timeout_ms: must be an integer from 100 to 30000",
  "DESTINATIONS[9] (leaky-extra).notes: is not a known field",
  "DESTINATIONS[10] (leaky-key): has a field that is not a known field (its name is not shown)",
  "DESTINATIONS[11] (leaky-binding).secret: the binding it names is missing or not whsec_<base64> (16+ bytes)",
  "DESTINATIONS[12]: must be a table with at least name and url",
];

const logged = expectNoLogLineWith(CANARY);

const get = (path: string, headers: Record<string, string> = {}) => sendWith(new Request(`https://edgehook.test${path}`, { headers }), BINDINGS);

describe("configuration errors", () => {
  it("name the entry, the field and the rule, and never the rejected value", () => {
    const result = loadDestinations({ ...env, ...BINDINGS } as Env);
    expect(result).toEqual({ ok: false, errors: EXPECTED_ERRORS });
  });

  it("are only counted by the unauthenticated /healthz", async () => {
    const response = await get("/healthz");
    expect(response.status).toBe(503);
    const text = await response.text();
    expect(JSON.parse(text)).toEqual({
      status: "degraded",
      providers: { seismic: { configured: true }, zuddl: { configured: true } },
      destinations: { valid: false, errors: EXPECTED_ERRORS.length },
      sources: { valid: true, errors: 0, unconfigured: 0 },
      alerts: { configured: false, valid: true, errors: 0 },
      admin: { configured: true, valid: true },
      access: { configured: false, valid: true },
    });
    expect(text).not.toContain("leaky");
  });

  it("leave /healthz without destination names when the configuration is valid", async () => {
    const response = await sendWith(new Request("https://edgehook.test/healthz"), { DESTINATIONS: [{ name: "internal-crm", url: "https://crm.test/hook" }] });
    expect(response.status).toBe(200);
    const text = await response.text();
    expect(JSON.parse(text)).toMatchObject({ status: "ok", destinations: { valid: true, errors: 0 } });
    expect(text).not.toContain("internal-crm");
  });

  it("are listed, safely, on /admin/destinations behind the admin token", async () => {
    expect((await get("/admin/destinations")).status).toBe(401);
    const response = await get("/admin/destinations", ADMIN);
    expect(await response.json()).toEqual({ valid: false, errors: EXPECTED_ERRORS });
  });

  it("are quoted safely by the 503 a replay answers", async () => {
    const response = await sendWith(new Request("https://edgehook.test/admin/replay?status=dead", { method: "POST", headers: ADMIN }), BINDINGS);
    expect(response.status).toBe(503);
    const text = await response.text();
    expect(text).toContain("invalid_destinations");
    expect(text).toContain("DESTINATIONS[3] (leaky-secret).secret: must be the name of a secret binding");
    expect(text).not.toContain(CANARY);
  });

  it("are shown safely on the console's destinations page", async () => {
    const login = await send(new Request("https://edgehook.test/console/login", { method: "POST", headers: { origin: "https://edgehook.test" }, body: new URLSearchParams({ token: env.ADMIN_TOKEN! }), redirect: "manual" }));
    const cookie = login.headers.get("set-cookie")!.split(";")[0]!;
    const html = await (await get("/console/destinations", { cookie })).text();
    expect(html).toContain("DESTINATIONS[8] (leaky-timeout).timeout_ms: must be an integer from 100 to 30000");
    expect(html).not.toContain(CANARY);
  });

  it("are logged safely by the queue consumer, which acks the messages for the sweep to re-enqueue", async () => {
    const batch = createMessageBatch<QueuedEvent>("edgehook-events", [{ id: "m-1", timestamp: new Date(), attempts: 1, body: { eventKey: "k" } }]);
    const ctx = createExecutionContext();
    await handlers.queue!(batch, { ...env, ...BINDINGS } as Env, ctx);
    expect((await getQueueResult(batch, ctx)).explicitAcks).toEqual(["m-1"]);
    expect(logged().some((line) => line.includes("invalid_destinations") && line.includes("(leaky-types).types.1"))).toBe(true);
  });
});
