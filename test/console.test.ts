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
    expect(html).toContain('aria-label="Last hour, 5-minute buckets');
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

  it("signs out", async () => {
    const cookie = await session();
    const out = await page("/console/logout", cookie, { method: "POST" });
    expect(out.status).toBe(303);
    expect(out.headers.get("set-cookie")).toMatch(/edgehook_console=;|Max-Age=0/);
  });
});
