/** The console through the Worker's real handler: sign-in, pages, replay, and what it never leaks. */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { QueuedEvent } from "../src/env";
import { faultyQueue } from "./faults";
import { send, sendWith, seismicBody, seismicRequest } from "./helpers";

const BASE = "https://edgehook.test";

async function signIn(token = env.ADMIN_TOKEN!): Promise<Response> {
  return send(new Request(`${BASE}/console/login`, { method: "POST", body: new URLSearchParams({ token }), redirect: "manual" }));
}

async function session(): Promise<string> {
  const response = await signIn();
  expect(response.status).toBe(303);
  const cookie = response.headers.get("set-cookie")!;
  expect(cookie).toMatch(/HttpOnly/i);
  expect(cookie).toMatch(/SameSite=Strict/i);
  expect(cookie).toMatch(/Secure/i);
  expect(cookie).not.toContain(env.ADMIN_TOKEN!);
  return cookie.split(";")[0]!;
}

const page = (path: string, cookie: string, init: RequestInit = {}, bindings = {}) =>
  sendWith(new Request(`${BASE}${path}`, { ...init, headers: { cookie, ...(init.headers ?? {}) }, redirect: "manual" }), bindings);

describe("console", () => {
  it("sends a visitor without a session to the login form", async () => {
    const response = await send(new Request(`${BASE}/console`, { redirect: "manual" }));
    expect(response.status).toBe(303);
    expect(response.headers.get("location")).toBe("/console/login");
    const login = await send(new Request(`${BASE}/console/login`));
    const html = await login.text();
    expect(html).toContain('<label for="token">Admin token</label>');
    expect(html).toContain('id="token"');
  });

  it("refuses a wrong token and a forged cookie", async () => {
    const wrong = await signIn("not-the-token");
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get("set-cookie")).toBeNull();
    expect(await wrong.text()).toContain("That token is not right.");
    const forged = await page("/console", `edgehook_console=${Math.floor(Date.now() / 1000) + 3600}.AAAA`);
    expect(forged.status).toBe(303);
  });

  it("shows the event log, an event with its payload and which secret verified it, and replays it", async () => {
    const cookie = await session();
    const body = seismicBody({ version: "ConsoleTypeV1" });
    const { id } = (await (await send(await seismicRequest(body))).json()) as { id: string };

    const log = await page(`/console?type=ConsoleTypeV1`, cookie);
    expect(log.status).toBe(200);
    const html = await log.text();
    expect(html).toContain(`href="/console/events/${id}"`);
    expect(html).toMatch(/aria-label="Last hour, 5-minute buckets: [1-9]\d* events received/);
    expect(html).not.toContain(env.ADMIN_TOKEN!);

    const eventPage = await (await page(`/console/events/${id}`, cookie)).text();
    expect(eventPage).toContain("the current secret");
    expect(eventPage).toContain("ConsoleTypeV1");
    expect(eventPage).toContain('<label for="replay-destination">Replay to</label>');

    const events = faultyQueue<QueuedEvent>({ send: async () => undefined, sendBatch: async () => undefined } as unknown as Queue<QueuedEvent>, () => undefined);
    const destinations = [{ name: "alpha", url: "https://alpha.test/hook" }];
    const replay = await page(`/console/events/${id}/replay`, cookie, { method: "POST", body: new URLSearchParams({ destination: "alpha" }) }, { DESTINATIONS: destinations, EVENTS_QUEUE: events.queue });
    expect(replay.status).toBe(303);
    expect(replay.headers.get("location")).toBe(`/console/events/${id}?replayed=alpha`);
    expect(events.accepted).toEqual([{ eventKey: id, destinations: ["alpha"] }]);
  });

  it("lists dead letters, quarantine with the failing path, and destinations with their success rate", async () => {
    const cookie = await session();
    const bad = seismicBody({ version: "livesend-session-summary-v3", data: { InteractionId: 7 } });
    expect((await send(await seismicRequest(bad))).status).toBe(422);
    const dead = await (await page("/console/dead", cookie)).text();
    expect(dead).toContain("<code>$.data.InteractionId</code>");
    const destinations = await (await page("/console/destinations", cookie, {}, { DESTINATIONS: [{ name: "alpha", url: "https://alpha.test/hook" }] })).text();
    expect(destinations).toContain("https://alpha.test/hook");
    const counts = (await (await page("/console/stats.json", cookie)).json()) as Record<string, number>;
    expect(counts.hour).toBeGreaterThan(0);
  });

  it("keeps the event log on indexes with 100,000 events in D1", async () => {
    // 100,000 old events (2020), so the rest of this file's counts are untouched.
    await env.DB.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
       INSERT INTO events (key, provider, event_id, type, known_type, tenant, occurred_at, received_at, verified_with, content_type, body, status)
       SELECT 'evt_bulk' || i, CASE i % 2 WHEN 0 THEN 'seismic' ELSE 'zuddl' END, 'bulk-' || i, 'BulkTypeV' || (i % 20), 1,
              'tenant-' || (i % 50), NULL, 1577836800000 + i * 1000, 'current', 'application/json', '{}', 'delivered' FROM n`,
    ).run();
    const plan = async (where: string) => {
      const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN SELECT key FROM events ${where} ORDER BY received_at DESC, key DESC LIMIT 51`).all<{ detail: string }>();
      return results.map((r) => r.detail).join(" / ");
    };
    expect(await plan("")).toMatch(/USING (COVERING )?INDEX events_by_received/);
    expect(await plan("WHERE tenant = 'tenant-7'")).toMatch(/USING (COVERING )?INDEX events_by_tenant/);
    expect(await plan("WHERE provider = 'zuddl' AND type = 'BulkTypeV3'")).toMatch(/USING (COVERING )?INDEX events_by_provider_type/);
    expect(await plan("WHERE status = 'delivered'")).toMatch(/USING (COVERING )?INDEX events_by_status/);

    // Deep pages through the console keep working: follow the cursor ten pages down.
    const cookie = await session();
    let path = "/console?provider=zuddl&limit=200";
    for (let i = 0; i < 10; i++) {
      const html = await (await page(path, cookie)).text();
      const next = /href="(\/console\?[^"]*cursor=[^"]+)"/.exec(html);
      expect(next, `page ${i}`).not.toBeNull();
      path = next![1]!.replaceAll("&amp;", "&");
    }
  }, 60_000);

  it("signs out", async () => {
    const cookie = await session();
    const out = await page("/console/logout", cookie, { method: "POST" });
    expect(out.status).toBe(303);
    expect(out.headers.get("set-cookie")).toMatch(/edgehook_console=;|Max-Age=0/);
  });
});
