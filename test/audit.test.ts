/**
 * The audit log, through the Worker's real fetch and cron with real migrations: every operator
 * action recorded with who, what, from where and its result, a viewer's refusal included; an
 * action whose record cannot be written refused and not done; GET /admin/audit and the console's
 * page; never a payload or a secret in a record; retention.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Env } from "../src/env";
import { accessTeam, assertion, OPERATOR, VIEWER } from "./access-harness";
import { accept, bindings, consume, DESTINATIONS, downstream, events, runCron, server, useDeliveryHarness } from "./delivery-harness";
import { faultyD1 } from "./faults";
import { ADMIN, errorOf, hmacHex, seismicBody, seismicRequest, sendWith, uniqueId, webhookRequest } from "./helpers";

useDeliveryHarness();

const BASE = "https://edgehook.test";
const DAY_MS = 86_400_000;

interface AuditRecord {
  id: number;
  at: string;
  actor: string;
  via: string;
  role: string;
  address: string | null;
  action: string;
  target: string | null;
  detail: Record<string, unknown> | null;
  result: string;
  status: number | null;
}

/** An address of the test's own: its records are told apart from every other test's by it. */
const newAddress = () => `2001:db8::${crypto.randomUUID().slice(0, 4)}:${crypto.randomUUID().slice(0, 4)}`;

const call = (method: string, path: string, headers: Record<string, string>, extra: Partial<Env> = {}, body?: BodyInit) =>
  sendWith(new Request(`${BASE}${path}`, { method, headers, body, redirect: "manual" }), { ...bindings, ...extra });

/** The records made from `address`, oldest first, as GET /admin/audit shows them. */
async function recordsFrom(address: string): Promise<AuditRecord[]> {
  const { results } = await env.DB.prepare("SELECT id FROM audit_log WHERE address = ?1 ORDER BY id").bind(address).all<{ id: number }>();
  const response = await call("GET", "/admin/audit?limit=200", ADMIN);
  const { records } = (await response.json()) as { records: AuditRecord[] };
  const ids = results.map((r) => r.id);
  return records.filter((r) => ids.includes(r.id)).sort((a, b) => a.id - b.id);
}

async function quarantinedId(): Promise<number> {
  const body = seismicBody({ id: uniqueId("seismic"), version: "livesend-session-summary-v3", data: { InteractionId: 7 } });
  const request = webhookRequest("seismic", body, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, body) });
  expect((await sendWith(request, bindings)).status).toBe(422);
  return (await env.DB.prepare("SELECT max(id) AS id FROM quarantine").first<{ id: number }>())!.id;
}

describe("the audit log records every operator action", () => {
  it("records pause, resume, replay, bulk replay, release and preview with who, what, from where and the result", async () => {
    downstream("https://alpha.test/hook");
    const since = Date.now();
    const only = { DESTINATIONS: [DESTINATIONS[0]!] };
    const key = await accept(await seismicRequest(seismicBody()));
    await consume(events.accepted.splice(0), only);
    const quarantined = await quarantinedId();
    const address = newAddress();
    const headers = { ...ADMIN, "cf-connecting-ip": address };

    expect((await call("POST", "/admin/destinations/alpha/pause", headers, only)).status).toBe(200);
    expect((await call("POST", "/admin/destinations/alpha/resume", headers, only)).status).toBe(200);
    expect((await call("POST", "/admin/destinations/nope/pause", headers, only)).status).toBe(404);
    // The bulk replay first: the event's own replay makes its delivery pending again.
    expect((await call("POST", `/admin/replay?status=delivered&destination=alpha&since=${since}`, headers, only)).status).toBe(202);
    expect((await call("POST", `/admin/events/${key}/replay?destination=alpha`, headers, only)).status).toBe(202);
    expect((await call("POST", `/admin/quarantine/${quarantined}/release?force=true`, headers, only)).status).toBe(200);
    expect((await call("POST", "/admin/destinations/alpha/preview", headers, only, JSON.stringify({ eventId: key }))).status).toBe(400);

    const who = { actor: "admin-token", via: "token", role: "operator", address };
    expect(await recordsFrom(address)).toEqual([
      expect.objectContaining({ ...who, action: "pause", target: "alpha", result: "ok", status: 200, detail: null }),
      expect.objectContaining({ ...who, action: "resume", target: "alpha", result: "ok", status: 200 }),
      expect.objectContaining({ ...who, action: "pause", target: "nope", result: "unknown_destination", status: 404 }),
      expect.objectContaining({
        ...who, action: "bulk_replay", target: "alpha", result: "ok", status: 202,
        detail: { filter: { status: "delivered", destination: "alpha", since: String(since) }, continued: false, count: 1, events: 1, more: false },
      }),
      expect.objectContaining({ ...who, action: "replay", target: key, result: "ok", status: 202, detail: { destination: "alpha", destinations: ["alpha"] } }),
      expect.objectContaining({ ...who, action: "release", target: String(quarantined), result: "ok", status: 200, detail: expect.objectContaining({ force: true, released: "accepted" }) }),
      expect.objectContaining({ ...who, action: "preview", target: "alpha", result: "no_transform", status: 400, detail: { eventId: key } }),
    ]);
  });

  it("cuts what a request sent to 200 characters before it is noted: text pasted into a preview's eventId never lands whole", async () => {
    const address = "203.0.113.77";
    const pasted = `evt_${"s3cr3t-or-payload-".repeat(200)}`;
    const response = await call("POST", "/admin/destinations/alpha/preview", { ...ADMIN, "cf-connecting-ip": address }, { DESTINATIONS: [{ name: "alpha", url: "https://alpha.test/hook" }] }, JSON.stringify({ eventId: pasted }));
    expect(response.status).toBeGreaterThanOrEqual(400);
    const [record] = await recordsFrom(address);
    const noted = (record!.detail as { eventId: string }).eventId;
    expect(noted.length).toBe(200);
    expect(pasted.startsWith(noted)).toBe(true);
  });

  it("records a viewer's refused pause with 403, and pauses nothing; a request without identity (401) is not recorded", async () => {
    const team = await accessTeam(server);
    const address = newAddress();
    const refused = await call("POST", "/admin/destinations/alpha/pause", { ...assertion(await team.token(VIEWER)), "cf-connecting-ip": address }, team.bindings);
    expect(refused.status).toBe(403);
    expect(await env.DB.prepare("SELECT count(*) AS n FROM destination_state WHERE destination = 'alpha' AND paused_at IS NOT NULL").first("n")).toBe(0);
    expect((await call("POST", "/admin/destinations/alpha/pause", { "cf-connecting-ip": address }, team.bindings)).status).toBe(401);
    expect(await recordsFrom(address)).toEqual([
      expect.objectContaining({ actor: VIEWER, via: "access", role: "viewer", action: "pause", target: "alpha", result: "forbidden", status: 403 }),
    ]);
  });

  it("refuses an action whose record cannot be written with 503 audit_unavailable, and does nothing", async () => {
    const auditDown = faultyD1(env.DB, (sql) => {
      if (sql.includes("audit_log")) throw new Error("injected: audit log unwritable");
    });
    const address = newAddress();
    const paused = await call("POST", "/admin/destinations/beta/pause", { ...ADMIN, "cf-connecting-ip": address }, { DB: auditDown });
    expect(paused.status).toBe(503);
    expect(await errorOf(paused)).toMatchObject({ code: "audit_unavailable" });
    expect(await env.DB.prepare("SELECT count(*) AS n FROM destination_state WHERE destination = 'beta' AND paused_at IS NOT NULL").first("n")).toBe(0);
    const replay = await call("POST", "/admin/replay?status=dead", { ...ADMIN, "cf-connecting-ip": address }, { DB: auditDown });
    expect(replay.status).toBe(503);
    expect(events.accepted).toEqual([]);
    expect(await recordsFrom(address)).toEqual([]);
  });
});

describe("GET /admin/audit", () => {
  it("pages newest first and filters by who, what and time; a viewer may read it", async () => {
    const team = await accessTeam(server);
    const someone = `ops-${crypto.randomUUID().slice(0, 8)}@example.com`;
    const other = `ops-${crypto.randomUUID().slice(0, 8)}@example.com`;
    const access = { ...team.bindings, OPERATORS: "*@example.com" };
    const as = async (who: string) => assertion(await team.token(who));
    for (const path of ["/admin/destinations/alpha/pause", "/admin/destinations/alpha/resume", "/admin/destinations/beta/pause"]) {
      expect((await call("POST", path, await as(someone), access)).status).toBe(200);
    }
    const between = Date.now() + 1;
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect((await call("POST", "/admin/destinations/beta/resume", await as(other), access)).status).toBe(200);
    const viewer = await as(VIEWER);
    const read = async (query: string) => {
      const response = await call("GET", `/admin/audit?${query}`, viewer, access);
      expect(response.status, query).toBe(200);
      return (await response.json()) as { records: AuditRecord[]; nextCursor: string | null };
    };

    const first = await read(`actor=${someone}&limit=2`);
    expect(first.records.map((r) => [r.action, r.target])).toEqual([["pause", "beta"], ["resume", "alpha"]]);
    const second = await read(`actor=${someone}&limit=2&cursor=${encodeURIComponent(first.nextCursor!)}`);
    expect(second.records.map((r) => [r.action, r.target])).toEqual([["pause", "alpha"]]);
    expect(second.nextCursor).toBeNull();

    expect((await read(`actor=${someone}&action=resume`)).records.map((r) => r.target)).toEqual(["alpha"]);
    expect((await read(`actor=${someone}&target=beta`)).records.map((r) => r.action)).toEqual(["pause"]);
    expect((await read(`since=${between}&action=resume&target=beta`)).records.map((r) => r.actor)).toEqual([other]);
    expect((await read(`until=${between}&actor=${other}`)).records).toEqual([]);
    expect(await errorOf(await call("GET", "/admin/audit?cursor=nonsense", viewer, access))).toMatchObject({ code: "invalid_cursor" });
    expect(await errorOf(await call("GET", "/admin/audit?action=bogus", viewer, access))).toMatchObject({ code: "invalid_action" });
  });
});

describe("the console", () => {
  const SAME_ORIGIN = { origin: BASE };

  it("records sign-in, actions and sign-out of a token session, and lists them on the Audit log page", async () => {
    const address = newAddress();
    const signIn = await call("POST", "/console/login", { ...SAME_ORIGIN, "cf-connecting-ip": address }, {}, new URLSearchParams({ token: env.ADMIN_TOKEN! }));
    expect(signIn.status).toBe(303);
    const cookie = signIn.headers.get("set-cookie")!.split(";")[0]!;
    const headers = { ...SAME_ORIGIN, cookie, "cf-connecting-ip": address };
    expect((await call("POST", "/console/destinations/alpha/pause", headers)).status).toBe(303);
    expect((await call("POST", "/console/replay", headers, {}, new URLSearchParams({ status: "dead", destination: "gamma" }))).status).toBe(303);
    // A wrong token identifies nobody: not recorded.
    expect((await call("POST", "/console/login", { ...SAME_ORIGIN, "cf-connecting-ip": address }, {}, new URLSearchParams({ token: "wrong" }))).status).toBe(401);

    const page = await call("GET", "/console/audit?action=pause", { cookie });
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('href="/console/audit"');
    expect(html).toContain(address);
    expect((await call("POST", "/console/logout", headers)).status).toBe(303);

    const who = { actor: "admin-token", via: "session", role: "operator", address };
    expect(await recordsFrom(address)).toEqual([
      expect.objectContaining({ ...who, action: "sign_in", result: "ok", status: 303 }),
      expect.objectContaining({ ...who, action: "pause", target: "alpha", result: "ok", status: 303 }),
      expect.objectContaining({ ...who, action: "bulk_replay", target: "gamma", detail: expect.objectContaining({ filter: { status: "dead", destination: "gamma" }, count: 0 }) }),
      expect.objectContaining({ ...who, action: "sign_out", result: "ok", status: 303 }),
    ]);
  });

  it("refuses a sign-in that cannot be recorded, with no session", async () => {
    const auditDown = faultyD1(env.DB, (sql) => {
      if (sql.includes("audit_log")) throw new Error("injected: audit log unwritable");
    });
    const response = await call("POST", "/console/login", SAME_ORIGIN, { DB: auditDown }, new URLSearchParams({ token: env.ADMIN_TOKEN! }));
    expect(response.status).toBe(503);
    expect(response.headers.get("set-cookie")).toBeNull();
  });

  it("shows a viewer the page and records the viewer's refused pause", async () => {
    const team = await accessTeam(server);
    const address = newAddress();
    const headers = { ...assertion(await team.token(VIEWER)), ...SAME_ORIGIN, "cf-connecting-ip": address };
    expect((await call("POST", "/console/destinations/alpha/pause", headers, team.bindings)).status).toBe(403);
    const page = await call("GET", "/console/audit", headers, team.bindings);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain(VIEWER);
    expect(await recordsFrom(address)).toEqual([expect.objectContaining({ actor: VIEWER, via: "access", role: "viewer", action: "pause", result: "forbidden", status: 403 })]);
  });
});

describe("what a record holds", () => {
  it("never a payload or a secret", async () => {
    const team = await accessTeam(server);
    const marker = `payload-marker-${crypto.randomUUID()}`;
    const transforming = { DESTINATIONS: [...DESTINATIONS, { name: "shaped", url: "https://shaped.test/hook", transform: "test-echo" }] };
    const address = newAddress();
    const payload = JSON.parse(seismicBody({ id: marker })) as unknown;
    const preview = await call("POST", "/admin/destinations/shaped/preview", { ...ADMIN, "cf-connecting-ip": address }, transforming, JSON.stringify({ provider: "seismic", payload }));
    expect(preview.status).toBe(200);
    const jwt = await team.token(OPERATOR);
    expect((await call("POST", "/admin/destinations/alpha/pause", { ...assertion(jwt), "cf-connecting-ip": address }, team.bindings)).status).toBe(200);
    const records = await recordsFrom(address);
    expect(records.map((r) => r.action)).toEqual(["preview", "pause"]);
    expect(records[0]!.detail).toEqual({ provider: "seismic" });
    const { results } = await env.DB.prepare("SELECT * FROM audit_log").all();
    const stored = JSON.stringify(results);
    for (const secret of [marker, env.ADMIN_TOKEN!, jwt, "eyJ", env.SEISMIC_SIGNING_SECRET!]) expect(stored).not.toContain(secret);
  });
});

describe("retention", () => {
  it("purges records older than AUDIT_RETENTION_DAYS, by default RETENTION_DAYS", async () => {
    const now = Date.now();
    const insert = (daysAgo: number, target: string) =>
      env.DB.prepare("INSERT INTO audit_log (at, actor, via, role, address, action, target, detail, result, status) VALUES (?1, 'admin-token', 'token', 'operator', NULL, 'pause', ?2, NULL, 'ok', 200)")
        .bind(now - daysAgo * DAY_MS, target).run();
    const target = (age: string) => `retention-${age}-${crypto.randomUUID()}`;
    const [recent, month, year] = [target("recent"), target("month"), target("year")];
    await insert(1, recent);
    await insert(45, month);
    await insert(400, year);
    const kept = async () => {
      const { results } = await env.DB.prepare("SELECT target FROM audit_log WHERE target IN (?1, ?2, ?3)").bind(recent, month, year).all<{ target: string }>();
      return results.map((r) => r.target).sort();
    };
    await runCron(new Date(now), { RETENTION_DAYS: "30", AUDIT_RETENTION_DAYS: "365" });
    expect(await kept()).toEqual([month, recent].sort());
    await runCron(new Date(now), { RETENTION_DAYS: "30" });
    expect(await kept()).toEqual([recent]);
  });
});
