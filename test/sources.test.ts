/**
 * Sources: one provider served at several paths, each with its own secrets, through the Worker's
 * real handlers. SOURCES validation (field and rule, never a value), the built-ins unchanged,
 * every event recording its source (admin, console, metrics, quarantine), idempotency per
 * provider across sources, and destinations routing on sources.
 */
import { env } from "cloudflare:workers";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { describe, expect, it } from "vitest";
import { loadDestinations, route } from "../src/deliver/destinations";
import type { Env } from "../src/env";
import { loadSources } from "../src/sources";
import { accept, bindings, consume, downstream, events, useDeliveryHarness } from "./delivery-harness";
import { ADMIN, adminGet, countRows, errorOf, expectNoLogLineWith, hmacHex, quarantinedRow, send, sendAndConsume, sendWith, seismicBody, seismicRequest, webhookRequest, zuddlBody } from "./helpers";
import { select } from "./html";

useDeliveryHarness();

const BASE = "https://edgehook.test";

const SOURCES = [
  { name: "seismic-sandbox", provider: "seismic", secret: "SANDBOX_SECRET", secret_old: "SANDBOX_SECRET_OLD" },
  { name: "seismic-emea", provider: "seismic", secret: "EMEA_SECRET" },
  { name: "zuddl-summit", provider: "zuddl", secret: "SUMMIT_SECRET", token: "SUMMIT_TOKEN" },
];
const SECRETS = {
  SANDBOX_SECRET: "sandbox-current", SANDBOX_SECRET_OLD: "sandbox-old", EMEA_SECRET: "emea-current",
  SUMMIT_SECRET: "summit-secret", SUMMIT_TOKEN: "summit-token",
};
const WITH_SOURCES = { SOURCES, ...SECRETS } as Partial<Env>;

/** A Seismic body signed for a path with `secret` (in `header`). */
async function seismicTo(source: string, body: string, secret: string, header = "x-seismic-signature"): Promise<Request> {
  return webhookRequest(source, body, { [header]: await hmacHex(secret, body) });
}

const post = (request: Request, extra: Partial<Env> = {}) => sendWith(request, { ...WITH_SOURCES, ...extra });

interface Listed {
  id: string;
  source: string;
  provider: string;
  verifiedWith: string;
}

describe("several sources of one provider", () => {
  it("each Seismic source accepts its own secret's signature and refuses another's", async () => {
    const body = seismicBody();
    expect((await post(await seismicTo("seismic-sandbox", body, SECRETS.SANDBOX_SECRET))).status).toBe(200);
    expect((await post(await seismicTo("seismic-emea", body, SECRETS.EMEA_SECRET))).status).toBe(200);
    for (const [source, secret] of [
      ["seismic-sandbox", SECRETS.EMEA_SECRET],
      ["seismic-sandbox", env.SEISMIC_SIGNING_SECRET!],
      ["seismic-emea", SECRETS.SANDBOX_SECRET],
      ["seismic", SECRETS.SANDBOX_SECRET],
    ] as const) {
      const response = await post(await seismicTo(source, seismicBody(), secret));
      expect(response.status, `${source} signed with another source's secret`).toBe(401);
      expect((await errorOf(response)).code).toBe("invalid_signature");
    }
  });

  it("rotates each source's secret on its own: the old one verifies only where it is bound", async () => {
    const body = seismicBody();
    const response = await sendAndConsume(await seismicTo("seismic-sandbox", body, SECRETS.SANDBOX_SECRET_OLD, "x-seismic-signature-old"), WITH_SOURCES);
    expect(response.status).toBe(200);
    const { id } = (await response.json()) as { id: string };
    expect((await adminGet<{ event: Listed }>(`/admin/events/${id}`)).event).toMatchObject({ source: "seismic-sandbox", verifiedWith: "old" });
    expect((await post(await seismicTo("seismic-emea", seismicBody(), SECRETS.SANDBOX_SECRET_OLD, "x-seismic-signature-old"))).status).toBe(401);
    // The built-in's old secret does not open a declared source either.
    expect((await post(await seismicTo("seismic-sandbox", seismicBody(), env.SEISMIC_SIGNING_SECRET_OLD!))).status).toBe(401);
  });

  it("a Zuddl source requires its own token; the built-in Zuddl source keeps its own setting", async () => {
    const body = zuddlBody();
    const signature = { "x-webhook-signature": `sha256=${await hmacHex(SECRETS.SUMMIT_SECRET, body)}` };
    expect(await errorOf(await post(webhookRequest("zuddl-summit", body, signature)))).toMatchObject({ code: "missing_token" });
    expect(await errorOf(await post(webhookRequest("zuddl-summit", body, { ...signature, "x-webhook-token": "not-it" })))).toMatchObject({ code: "invalid_token" });
    expect((await post(webhookRequest("zuddl-summit", body, { ...signature, "x-webhook-token": SECRETS.SUMMIT_TOKEN }))).status).toBe(200);
    // The built-in (ZUDDL_AUTH_TOKEN empty in the tests) takes no token, and not the source's secret.
    const builtIn = zuddlBody();
    expect((await post(webhookRequest("zuddl", builtIn, { "x-webhook-signature": await hmacHex(env.ZUDDL_SIGNING_SECRET!, builtIn) }))).status).toBe(200);
    expect((await post(webhookRequest("zuddl", builtIn, signature))).status).toBe(401);
    // A declared token whose binding is not set refuses rather than let requests in without it.
    const untokened = await post(webhookRequest("zuddl-summit", body, { ...signature, "x-webhook-token": SECRETS.SUMMIT_TOKEN }), { SUMMIT_TOKEN: undefined });
    expect(untokened.status).toBe(503);
    expect((await errorOf(untokened)).code).toBe("provider_not_configured");
  });

  it("leaves the built-in sources as they were without SOURCES", async () => {
    expect(env.SOURCES).toEqual([]);
    const response = await sendAndConsume(await seismicRequest(seismicBody()));
    expect(response.status).toBe(200);
    const { id } = (await response.json()) as { id: string };
    expect((await adminGet<{ event: Listed }>(`/admin/events/${id}`)).event).toMatchObject({ source: "seismic", provider: "seismic" });
    const health = await send(new Request(`${BASE}/healthz`));
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: "ok", sources: { valid: true, errors: 0, unconfigured: 0 } });
    const listed = await send(new Request(`${BASE}/admin/sources`, { headers: ADMIN }));
    const text = await listed.text();
    expect(JSON.parse(text)).toEqual({
      valid: true,
      sources: [
        { name: "seismic", provider: "seismic", builtIn: true, configured: true, bindings: { secret: { name: "SEISMIC_SIGNING_SECRET", set: true }, secretOld: { name: "SEISMIC_SIGNING_SECRET_OLD", set: true }, token: null } },
        { name: "zuddl", provider: "zuddl", builtIn: true, configured: true, bindings: { secret: { name: "ZUDDL_SIGNING_SECRET", set: true }, secretOld: { name: "ZUDDL_SIGNING_SECRET_OLD", set: true }, token: { name: "ZUDDL_AUTH_TOKEN", set: false } } },
      ],
    });
    expect(text).not.toContain(env.SEISMIC_SIGNING_SECRET!);
  });

  it("lists declared sources with their binding names and whether each is set, never a value", async () => {
    const response = await sendWith(new Request(`${BASE}/admin/sources`, { headers: ADMIN }), { ...WITH_SOURCES, EMEA_SECRET: undefined });
    const text = await response.text();
    const { sources } = JSON.parse(text) as { sources: { name: string; configured: boolean; builtIn: boolean; bindings: unknown }[] };
    expect(sources.map((s) => s.name)).toEqual(["seismic", "zuddl", "seismic-sandbox", "seismic-emea", "zuddl-summit"]);
    expect(sources[3]).toEqual({ name: "seismic-emea", provider: "seismic", builtIn: false, configured: false, bindings: { secret: { name: "EMEA_SECRET", set: false }, secretOld: null, token: null } });
    expect(sources[4]).toMatchObject({ configured: true, bindings: { token: { name: "SUMMIT_TOKEN", set: true } } });
    for (const value of Object.values(SECRETS)) expect(text).not.toContain(value);
  });

  it("a declared source without its secret answers like a built-in without one, and the others keep working", async () => {
    const unset = { EMEA_SECRET: undefined };
    const refused = await post(await seismicTo("seismic-emea", seismicBody(), "anything"), unset);
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("60");
    expect((await errorOf(refused)).code).toBe("provider_not_configured");
    // The URL is registered before the secret exists: its challenge is answered.
    const challenge = await post(webhookRequest("seismic-emea", JSON.stringify({ type: "verification", challenge: "emea-hello" })), unset);
    expect(await challenge.text()).toBe("emea-hello");
    expect((await post(await seismicTo("seismic-sandbox", seismicBody(), SECRETS.SANDBOX_SECRET), unset)).status).toBe(200);
    const health = await post(new Request(`${BASE}/healthz`), unset);
    expect(health.status).toBe(200);
    const text = await health.text();
    expect(JSON.parse(text)).toMatchObject({ status: "ok", sources: { valid: true, errors: 0, unconfigured: 1 } });
    expect(text).not.toContain("emea");
  });

  it("takes SOURCES as JSON text too (.dev.vars, wrangler secret)", async () => {
    expect((await post(await seismicTo("seismic-emea", seismicBody(), SECRETS.EMEA_SECRET), { SOURCES: JSON.stringify(SOURCES) })).status).toBe(200);
  });
});

describe("an invalid SOURCES", () => {
  /** Every value that must never be echoed contains "Canary". */
  const CANARY = "Canary";
  const INVALID: unknown[] = [
    { name: "Seismic_Sandbox", provider: "seismic", secret: "S" },
    { name: "seismic", provider: "seismic", secret: "S" },
    { name: "zuddl", provider: "seismic", secret: "S" },
    { name: "twice", provider: "seismic", secret: "S" },
    { name: "twice", provider: "zuddl", secret: "S" },
    { name: "stripe-live", provider: "stripeCanary", secret: "S" },
    { name: "pasted", provider: "seismic", secret: "whsec_PastedCanary+QkFEMDEy" },
    { name: "pasted-old", provider: "seismic", secret: "S", secret_old: "pasted old Canary" },
    { name: "seismic-token", provider: "seismic", secret: "S", token: "T" },
    { name: "no-secret", provider: "zuddl" },
    { name: "extra", provider: "seismic", secret: "S", note: "noteCanary" },
    { name: "-dash", provider: "seismic", secret: "S" },
    "sk_live_EntryCanary",
  ];
  const EXPECTED = [
    "SOURCES[0].name: must be 1-63 lowercase letters, digits or - starting with a letter or digit",
    "SOURCES[1] (seismic).name: is the name of a built-in source (seismic, zuddl)",
    "SOURCES[2] (zuddl).name: is the name of a built-in source (seismic, zuddl)",
    "SOURCES[4] (twice).name: is used twice",
    "SOURCES[5] (stripe-live).provider: must be one of the providers: seismic, zuddl",
    "SOURCES[6] (pasted).secret: must be the name of a secret binding (A-Z, 0-9, _), not the secret itself",
    "SOURCES[7] (pasted-old).secret_old: must be the name of a secret binding (A-Z, 0-9, _), not the secret itself",
    "SOURCES[8] (seismic-token).token: only for a provider that takes a token (zuddl)",
    "SOURCES[9] (no-secret).secret: is required; must be the name of a secret binding (A-Z, 0-9, _), not the secret itself",
    "SOURCES[10] (extra).note: is not a known field",
    "SOURCES[11].name: must be 1-63 lowercase letters, digits or - starting with a letter or digit",
    "SOURCES[12]: must be a table with at least name, provider and secret",
  ];
  const BROKEN = { SOURCES: INVALID, S: "s", T: "t" } as Partial<Env>;

  expectNoLogLineWith(CANARY);

  it("names the entry, the field and the rule, never the value", () => {
    expect(loadSources({ ...env, ...BROKEN } as Env)).toEqual({ ok: false, errors: EXPECTED });
    expect(loadSources({ ...env, SOURCES: "not json" } as Env)).toEqual({ ok: false, errors: ["SOURCES must be an array of tables (or JSON text of one)"] });
  });

  it("is only counted by /healthz (503), and listed on /admin/sources and the console", async () => {
    const health = await sendWith(new Request(`${BASE}/healthz`), BROKEN);
    expect(health.status).toBe(503);
    const text = await health.text();
    expect(JSON.parse(text)).toMatchObject({ status: "degraded", sources: { valid: false, errors: EXPECTED.length } });
    expect(text).not.toContain("twice");

    const listed = await sendWith(new Request(`${BASE}/admin/sources`, { headers: ADMIN }), BROKEN);
    const body = (await listed.json()) as { valid: boolean; errors: string[]; sources: { name: string }[] };
    expect(body.valid).toBe(false);
    expect(body.errors).toEqual(EXPECTED);
    expect(body.sources.map((s) => s.name)).toEqual(["seismic", "zuddl"]);

    const html = await (await sendWith(new Request(`${BASE}/console/sources`, { headers: { cookie: await consoleSession() } }), BROKEN)).text();
    expect(html).toContain("SOURCES[8] (seismic-token).token: only for a provider that takes a token (zuddl)");
    expect(html).not.toContain(CANARY);
  });

  it("keeps the built-in sources; other paths answer 503 so the sender retries, or 404 once SOURCES is valid", async () => {
    expect((await sendWith(await seismicRequest(seismicBody()), BROKEN)).status).toBe(200);
    const held = await sendWith(await seismicTo("seismic-sandbox", seismicBody(), SECRETS.SANDBOX_SECRET), { ...BROKEN, ...SECRETS });
    expect(held.status).toBe(503);
    expect(held.headers.get("retry-after")).toBe("60");
    expect((await errorOf(held)).code).toBe("invalid_sources");
    const unknown = await post(await seismicTo("seismic-nowhere", seismicBody(), SECRETS.SANDBOX_SECRET));
    expect(unknown.status).toBe(404);
    expect((await errorOf(unknown)).code).toBe("unknown_provider");
  });
});

describe("every event records its source", () => {
  it("is shown and filtered by source= in the admin API and the console", async () => {
    const sandbox = (await (await sendAndConsume(await seismicTo("seismic-sandbox", seismicBody(), SECRETS.SANDBOX_SECRET), WITH_SOURCES)).json()) as { id: string };
    const emea = (await (await sendAndConsume(await seismicTo("seismic-emea", seismicBody(), SECRETS.EMEA_SECRET), WITH_SOURCES)).json()) as { id: string };
    const list = async (query: string) => (await adminGet<{ events: Listed[] }>(`/admin/events?${query}&limit=200`)).events;
    const sandboxOnly = await list("source=seismic-sandbox");
    expect(sandboxOnly.map((e) => e.id)).toContain(sandbox.id);
    expect(sandboxOnly.map((e) => e.id)).not.toContain(emea.id);
    expect(sandboxOnly.every((e) => e.source === "seismic-sandbox" && e.provider === "seismic")).toBe(true);
    expect((await list("provider=seismic")).map((e) => e.id)).toEqual(expect.arrayContaining([sandbox.id, emea.id]));

    const cookie = await consoleSession();
    const html = await (await sendWith(new Request(`${BASE}/console?source=seismic-sandbox&limit=200`, { headers: { cookie } }), WITH_SOURCES)).text();
    expect(html).toContain(`/console/events/${sandbox.id}`);
    expect(html).not.toContain(`/console/events/${emea.id}`);
    const { option } = await select(html, ["#f-source option"]).then((found) => ({ option: found["#f-source option"]! }));
    expect(option.map((o) => o.attributes.value)).toEqual(["", "seismic", "zuddl", "seismic-sandbox", "seismic-emea", "zuddl-summit"]);
    expect(option.find((o) => "selected" in o.attributes)?.attributes.value).toBe("seismic-sandbox");
    const eventPage = await (await sendWith(new Request(`${BASE}/console/events/${sandbox.id}`, { headers: { cookie } }), WITH_SOURCES)).text();
    expect(eventPage).toMatch(/<th scope="row">Source<\/th><td>seismic-sandbox<\/td>/);
  });

  it("the source= listing stays on an index", async () => {
    const { results } = await env.DB.prepare("EXPLAIN QUERY PLAN SELECT key FROM events WHERE source = 'seismic-sandbox' ORDER BY received_at DESC, key DESC LIMIT 51").all<{ detail: string }>();
    expect(results.map((r) => r.detail).join(" / ")).toMatch(/USING (COVERING )?INDEX events_by_source/);
  });

  it("one provider event arriving through two sources is one event; the first stored keeps its source", async () => {
    const body = seismicBody();
    const { id: eventId } = JSON.parse(body) as { id: string };
    const first = (await (await sendAndConsume(await seismicTo("seismic-emea", body, SECRETS.EMEA_SECRET), WITH_SOURCES)).json()) as { id: string };
    const second = (await (await sendAndConsume(await seismicTo("seismic-sandbox", body, SECRETS.SANDBOX_SECRET), WITH_SOURCES)).json()) as { id: string };
    expect(second.id).toBe(first.id);
    expect(await countRows("SELECT count(*) AS n FROM events WHERE event_id = ?", eventId)).toBe(1);
    expect((await adminGet<{ event: Listed }>(`/admin/events/${first.id}`)).event.source).toBe("seismic-emea");
  });

  it("labels edgehook_events_total with the source; a path that is not a source is `unknown`", async () => {
    // An unknown type is counted as `other` (a bounded label): counted by difference.
    const type = "other";
    const body = seismicBody({ version: `SourcedTypeV${crypto.randomUUID().slice(0, 8)}` });
    const scrape = async () => {
      const families = parsePrometheusTextFormat(await (await send(new Request(`${BASE}/admin/metrics`, { headers: ADMIN }))).text());
      return families.find((f) => f.name === "edgehook_events_total")!.metrics;
    };
    const countIn = (samples: Awaited<ReturnType<typeof scrape>>) => (labels: Record<string, string>) =>
      Number(samples.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))?.value ?? 0);
    const before = countIn(await scrape());
    await sendAndConsume(await seismicTo("seismic-sandbox", body, SECRETS.SANDBOX_SECRET), WITH_SOURCES);
    await sendAndConsume(await seismicTo("seismic-emea", body, SECRETS.EMEA_SECRET), WITH_SOURCES);
    await post(await seismicTo("seismic-emea", seismicBody(), "forged"));
    await post(await seismicTo("not-a-source", seismicBody(), "forged"));
    const samples = await scrape();
    const count = countIn(samples);
    const sandboxAccepted = { source: "seismic-sandbox", provider: "seismic", type, outcome: "accepted" };
    const emeaDuplicate = { source: "seismic-emea", provider: "seismic", type, outcome: "duplicate" };
    expect(count(sandboxAccepted) - before(sandboxAccepted)).toBe(1);
    expect(count(emeaDuplicate) - before(emeaDuplicate)).toBe(1);
    expect(count({ source: "seismic-emea", provider: "seismic", outcome: "refused" })).toBeGreaterThanOrEqual(1);
    expect(count({ source: "unknown", provider: "unknown", outcome: "refused" })).toBeGreaterThanOrEqual(1);
    expect(samples.some((m) => m.labels?.source === "not-a-source")).toBe(false);
  });

  it("a quarantined payload keeps its source, and its release into an event keeps it too", async () => {
    const body = seismicBody({ version: "livesend-session-summary-v3", data: { InteractionId: 7 } });
    expect((await post(await seismicTo("seismic-sandbox", body, SECRETS.SANDBOX_SECRET))).status).toBe(422);
    const row = (await env.DB.prepare("SELECT id, source FROM quarantine WHERE id = ?").bind((await quarantinedRow(body))?.id).first<{ id: number; source: string }>())!;
    expect(row.source).toBe("seismic-sandbox");
    expect((await adminGet<{ quarantined: { source: string } }>(`/admin/quarantine/${row.id}`)).quarantined.source).toBe("seismic-sandbox");
    const released = await sendWith(new Request(`${BASE}/admin/quarantine/${row.id}/release?force=true`, { method: "POST", headers: ADMIN }), { ...bindings, DESTINATIONS: [] });
    const { id } = (await released.json()) as { id: string };
    await consume(events.accepted, { DESTINATIONS: [] });
    expect((await adminGet<{ event: Listed }>(`/admin/events/${id}`)).event.source).toBe("seismic-sandbox");
  });
});

describe("destinations routing on sources", () => {
  it("route() selects a destination only for events from its sources", () => {
    const loaded = loadDestinations({ ...env, ...WITH_SOURCES, DESTINATIONS: [{ name: "sandbox-only", url: "https://s.test/hook", sources: ["seismic-sandbox"] }, { name: "all", url: "https://a.test/hook" }] } as Env);
    if (!loaded.ok) throw new Error(loaded.errors.join("\n"));
    const names = (source: string) => route(loaded.destinations, { provider: "seismic", source, type: "X", envelope: {} }).destinations.map((d) => d.name);
    expect(names("seismic-sandbox")).toEqual(["sandbox-only", "all"]);
    expect(names("seismic")).toEqual(["all"]);
  });

  it("a destination naming a source that is not configured is a configuration error (not checked while SOURCES is invalid)", () => {
    const destinations = [{ name: "typo", url: "https://t.test/hook", sources: ["seismic", "seismic-sandbx"] }];
    expect(loadDestinations({ ...env, ...WITH_SOURCES, DESTINATIONS: destinations } as Env)).toEqual({ ok: false, errors: ["DESTINATIONS[0] (typo).sources.1: is not a configured source"] });
    expect(loadDestinations({ ...env, DESTINATIONS: [{ name: "bad", url: "https://t.test/hook", sources: ["Not A Name"] }] } as Env)).toEqual({
      ok: false, errors: ["DESTINATIONS[0] (bad).sources.0: must be a list of 1-50 source names (a-z, 0-9, -)"],
    });
    expect(loadDestinations({ ...env, SOURCES: "broken", DESTINATIONS: destinations } as Env).ok).toBe(true);
  });

  it("the consumer forwards an event only to the destinations of its source, and a replay routes the same way", async () => {
    const received = downstream("https://sandbox-only.test/hook");
    const routed = { ...WITH_SOURCES, DESTINATIONS: [{ name: "sandbox-only", url: "https://sandbox-only.test/hook", sources: ["seismic-sandbox"] }] };
    Object.assign(bindings, routed);
    const sandboxBody = seismicBody();
    const sandbox = await accept(await seismicTo("seismic-sandbox", sandboxBody, SECRETS.SANDBOX_SECRET));
    const builtIn = await accept(await seismicRequest(seismicBody()));
    await consume(events.accepted);
    expect(received.map((r) => r.body)).toEqual([sandboxBody]);
    const replay = async (key: string) => (await (await sendWith(new Request(`${BASE}/admin/events/${key}/replay`, { method: "POST", headers: ADMIN }), bindings)).json()) as { replayed: string[] };
    expect((await replay(sandbox)).replayed).toEqual(["sandbox-only"]);
    expect((await replay(builtIn)).replayed).toEqual([]);
  });
});

async function consoleSession(): Promise<string> {
  const response = await send(new Request(`${BASE}/console/login`, { method: "POST", headers: { origin: BASE }, body: new URLSearchParams({ token: env.ADMIN_TOKEN! }), redirect: "manual" }));
  return response.headers.get("set-cookie")!.split(";")[0]!;
}
