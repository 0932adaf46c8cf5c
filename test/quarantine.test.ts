/**
 * Quarantine through the operator API (#9.5): list, inspect, release after a schema fix, force
 * one through as it is. Every quarantined payload here comes from a signed but invalid body sent
 * through the real webhook.
 */
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { QueuedEvent } from "../src/env";
import { schemaMismatch } from "../src/providers/provider";
import { seismic } from "../src/providers/seismic";
import { faultyQueue, recordingQueue } from "./faults";
import { ADMIN, adminGet, consumeAll, countRows, errorOf, hmacHex, send, sendAndConsume, sendWith, seismicBody, seismicRequest, quarantinedRow, storedEvent, uniqueId, webhookRequest } from "./helpers";

const BASE = "https://edgehook.test";

interface Listed {
  id: number;
  provider: string;
  reason: string;
  path: string | null;
  attempts: number;
  firstReceivedAt: string;
  lastReceivedAt: string;
  released: { at: string; event: string; forced: boolean } | null;
}
interface Detail extends Listed {
  payloadFormat: "json" | "text" | "base64";
  payload: unknown;
  sha256: string;
}
interface Release {
  id: string;
  quarantineId: number;
  forced: boolean;
  releasedAt: string;
  status: string;
}
interface EventView {
  id: string;
  eventId: string;
  type: string;
  knownType: boolean;
  status: string;
  forced: boolean;
  payloadFormat: string;
  payload: unknown;
}

/** A body the Seismic schema rejects at $.data.InteractionId (a number where a string belongs). */
const invalidBody = (id = uniqueId("seismic")) => seismicBody({ id, version: "livesend-session-summary-v3", data: { InteractionId: 7 } });

/** Sends a signed body through the webhook and returns the id of the quarantine row it landed in. */
async function quarantined(body: string | Uint8Array, expectedStatus = 422): Promise<number> {
  const request = webhookRequest("seismic", body, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, body) });
  expect((await send(request)).status).toBe(expectedStatus);
  return (await quarantinedRow(body))!.id;
}

/** Our id for an event, computed here independently of src/store/events.ts. */
async function expectedKey(provider: string, type: string, eventId: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(JSON.stringify([provider, type, eventId]))));
  return `evt_${[...digest].map((b) => b.toString(16).padStart(2, "0")).join("").slice(0, 24)}`;
}

/** POSTs a release with the queue recorded, then runs the consumer on what it enqueued; `queued`: their event ids. */
async function release(id: number | string, query = "") {
  const events = recordingQueue<QueuedEvent>();
  const response = await sendWith(new Request(`${BASE}/admin/quarantine/${id}/release${query}`, { method: "POST", headers: ADMIN }), { EVENTS_QUEUE: events.queue });
  await consumeAll(events.accepted);
  return { response, queued: events.accepted.map((message) => message.eventKey) };
}

const eventRow = async (key: string) => {
  const row = await storedEvent(key);
  return row && { status: row.status, forced: row.forced, body: row.body };
};

afterEach(() => {
  vi.restoreAllMocks();
});

describe("listing and inspecting", () => {
  it("lists newest first with reason, path, attempts and first/last received, page by page", async () => {
    const first = await quarantined(invalidBody());
    const second = await quarantined(seismicBody({ id: uniqueId(), version: "livesend-session-summary-v3", data: { InteractionId: [] } }));
    const repeated = invalidBody();
    const third = await quarantined(repeated);
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(await quarantined(repeated)).toBe(third); // the provider's redelivery: same row, one more attempt

    const seen: Listed[] = [];
    let path: string | null = "/admin/quarantine?provider=seismic&released=false&limit=2";
    while (path && seen.filter((q) => [first, second, third].includes(q.id)).length < 3) {
      const page: { quarantined: Listed[]; nextCursor: string | null } = await adminGet(path);
      expect(page.quarantined.length).toBeLessThanOrEqual(2);
      seen.push(...page.quarantined);
      path = page.nextCursor ? `/admin/quarantine?provider=seismic&released=false&limit=2&cursor=${encodeURIComponent(page.nextCursor)}` : null;
    }
    const ours = seen.filter((q) => [first, second, third].includes(q.id));
    expect(ours.map((q) => q.id)).toEqual([third, second, first]);
    const times = seen.map((q) => Date.parse(q.lastReceivedAt));
    expect(times).toEqual([...times].sort((a, b) => b - a));
    expect(ours[0]).toMatchObject({ provider: "seismic", reason: "schema_mismatch", path: "$.data.InteractionId", attempts: 2, released: null });
    expect(Date.parse(ours[0]!.lastReceivedAt)).toBeGreaterThan(Date.parse(ours[0]!.firstReceivedAt));
    expect(ours[1]).toMatchObject({ attempts: 1, path: "$.data.InteractionId" });
  });

  it("shows one with its payload, parsed when it is JSON and as text when it is not", async () => {
    const body = invalidBody();
    const id = await quarantined(body);
    const { quarantined: detail } = await adminGet<{ quarantined: Detail }>(`/admin/quarantine/${id}`);
    expect(detail).toMatchObject({ id, reason: "schema_mismatch", path: "$.data.InteractionId", payloadFormat: "json", payload: JSON.parse(body), released: null });

    const text = `{"id":"${uniqueId()}", not json`;
    const textId = await quarantined(text, 400);
    expect((await adminGet<{ quarantined: Detail }>(`/admin/quarantine/${textId}`)).quarantined).toMatchObject({ reason: "malformed_json", payloadFormat: "text", payload: text });
  });

  it("answers bad input precisely: unknown id 404, bad limit, cursor or flag 400, no token 401", async () => {
    const get = (path: string, headers: Record<string, string> = ADMIN) => send(new Request(`${BASE}${path}`, { headers }));
    for (const path of ["/admin/quarantine/999999999", "/admin/quarantine/abc", "/admin/quarantine/0"]) {
      const response = await get(path);
      expect(response.status, path).toBe(404);
      expect(await errorOf(response)).toMatchObject({ code: "quarantine_not_found" });
    }
    expect((await release(999999999)).response.status).toBe(404);
    expect(await errorOf(await get("/admin/quarantine?limit=0"))).toMatchObject({ code: "invalid_limit" });
    expect(await errorOf(await get("/admin/quarantine?cursor=nonsense"))).toMatchObject({ code: "invalid_cursor" });
    expect(await errorOf(await get("/admin/quarantine?released=yes"))).toMatchObject({ code: "invalid_released" });
    const id = await quarantined(invalidBody());
    const badForce = (await release(id, "?force=1")).response;
    expect(badForce.status).toBe(400);
    expect(await errorOf(badForce)).toMatchObject({ code: "invalid_force" });
    expect((await get("/admin/quarantine", {})).status).toBe(401);
    expect((await send(new Request(`${BASE}/admin/quarantine/${id}/release`, { method: "POST" }))).status).toBe(401);
  });
});

describe("release", () => {
  it("delivers a payload the current schemas accept, as the webhook would have, once", async () => {
    // The schema of the day rejected it (drift); the fixed schema accepts the same bytes.
    vi.spyOn(seismic, "parse").mockImplementationOnce(() => {
      throw schemaMismatch("$.data.contentId must be number, got string", "$.data.contentId");
    });
    const body = seismicBody();
    const { id: eventId, version } = JSON.parse(body) as { id: string; version: string };
    expect((await sendWith(await seismicRequest(body), {})).status).toBe(422);
    const id = (await quarantinedRow(body))!.id;

    const { response, queued } = await release(id);
    expect(response.status).toBe(200);
    const released = (await response.json()) as Release;
    const key = await expectedKey("seismic", version, eventId);
    expect(released).toMatchObject({ id: key, quarantineId: id, forced: false, status: "accepted" });
    expect(queued).toEqual([key]);
    expect(await eventRow(key)).toEqual({ status: "delivered", forced: 0, body });
    const event = (await adminGet<{ event: EventView }>(`/admin/events/${key}`)).event;
    expect(event).toMatchObject({ eventId, type: version, knownType: true, forced: false, payloadFormat: "json" });

    // The row stays, saying where it went; a second release says the same and enqueues nothing.
    const { quarantined: detail } = await adminGet<{ quarantined: Detail }>(`/admin/quarantine/${id}`);
    expect(detail.released).toEqual({ at: released.releasedAt, event: key, forced: false });
    const again = await release(id, "?force=true");
    expect(again.response.status).toBe(200);
    expect(await again.response.json()).toEqual({ ...released, status: "already_released" });
    expect(again.queued).toEqual([]);
    // The provider sending the event again gets the released event's id, and it is stored once.
    expect(await (await sendAndConsume(await seismicRequest(body))).json()).toMatchObject({ id: key, status: "accepted" });
    expect(await countRows("SELECT count(*) AS n FROM events WHERE event_id = ?", eventId)).toBe(1);
  });

  it("keeps a payload that still fails: 422 at the failing path, nothing stored", async () => {
    const body = invalidBody();
    const id = await quarantined(body);
    const { response, queued } = await release(id);
    expect(response.status).toBe(422);
    expect(await errorOf(response)).toMatchObject({ code: "schema_mismatch", path: "$.data.InteractionId" });
    expect(queued).toEqual([]);
    expect((await adminGet<{ quarantined: Detail }>(`/admin/quarantine/${id}`)).quarantined.released).toBeNull();
    expect(await countRows("SELECT count(*) AS n FROM events WHERE event_id = ?", (JSON.parse(body) as { id: string }).id)).toBe(0);
  });

  it("force=true delivers it as it is, marked forced, under the id its envelope names", async () => {
    const body = invalidBody();
    const id = await quarantined(body);
    const { response, queued } = await release(id, "?force=true");
    expect(response.status).toBe(200);
    const key = await expectedKey("seismic", "livesend-session-summary-v3", (JSON.parse(body) as { id: string }).id);
    expect(await response.json()).toMatchObject({ id: key, quarantineId: id, forced: true, status: "accepted" });
    expect(queued).toEqual([key]);
    expect(await eventRow(key)).toEqual({ status: "delivered", forced: 1, body });
    expect((await adminGet<{ event: EventView }>(`/admin/events/${key}`)).event).toMatchObject({ forced: true, knownType: false, payload: JSON.parse(body) });
    expect((await adminGet<{ quarantined: Detail }>(`/admin/quarantine/${id}`)).quarantined.released).toMatchObject({ event: key, forced: true });
  });

  it("force=true on a body that is not JSON: id from its SHA-256, type unknown, shown and replayed as text", async () => {
    const text = `{"id":"${uniqueId()}", truncated`;
    const id = await quarantined(text, 400);
    const refused = await release(id);
    expect(refused.response.status).toBe(422);
    expect(await errorOf(refused.response)).toMatchObject({ code: "malformed_json" });

    const { response } = await release(id, "?force=true");
    const released = (await response.json()) as Release;
    const { quarantined: detail } = await adminGet<{ quarantined: Detail }>(`/admin/quarantine/${id}`);
    expect(released.id).toBe(await expectedKey("seismic", "unknown", `sha256:${detail.sha256}`));
    expect((await adminGet<{ event: EventView }>(`/admin/events/${released.id}`)).event).toMatchObject({
      eventId: `sha256:${detail.sha256}`, type: "unknown", knownType: false, forced: true, payloadFormat: "text", payload: text,
    });
    const events = recordingQueue<QueuedEvent>();
    const replay = await sendWith(new Request(`${BASE}/admin/events/${released.id}/replay`, { method: "POST", headers: ADMIN }), {
      EVENTS_QUEUE: events.queue,
      DESTINATIONS: [{ name: "all", url: "https://all.test/hook" }, { name: "filtered", url: "https://filtered.test/hook", filter: "$.data" }],
    });
    expect(replay.status).toBe(202);
    expect(await replay.json()).toEqual({ id: released.id, replayed: ["all"], roundInFlight: false });
  });

  it("refuses to release a body that is not UTF-8, even forced, and still shows it (base64)", async () => {
    const bytes = new Uint8Array([...new TextEncoder().encode(`{"id":"${uniqueId()}","x":"`), 0xff, 0xfe, ...new TextEncoder().encode('"}')]);
    const id = await quarantined(bytes, 400);
    const detail = (await adminGet<{ quarantined: Detail }>(`/admin/quarantine/${id}`)).quarantined;
    expect(detail).toMatchObject({ reason: "invalid_utf8", payloadFormat: "base64" });
    expect(Uint8Array.from(atob(detail.payload as string), (c) => c.charCodeAt(0))).toEqual(bytes);
    expect(await errorOf((await release(id)).response)).toMatchObject({ code: "invalid_utf8" });
    const forced = (await release(id, "?force=true")).response;
    expect(forced.status).toBe(422);
    expect(await errorOf(forced)).toMatchObject({ code: "not_releasable", message: expect.stringContaining("UTF-8") });
  });

  it("a failed enqueue leaves it held (503, nothing lost); releasing again delivers it", async () => {
    const id = await quarantined(invalidBody());
    const down = faultyQueue<QueuedEvent>(env.EVENTS_QUEUE, () => {
      throw new Error("injected fault");
    });
    const failed = await sendWith(new Request(`${BASE}/admin/quarantine/${id}/release?force=true`, { method: "POST", headers: ADMIN }), { EVENTS_QUEUE: down.queue });
    expect(failed.status).toBe(503);
    expect(await errorOf(failed)).toMatchObject({ code: "queue_unavailable" });
    expect((await adminGet<{ quarantined: Detail }>(`/admin/quarantine/${id}`)).quarantined.released).toBeNull();
    const { response, queued } = await release(id, "?force=true");
    const released = (await response.json()) as Release;
    expect(released).toMatchObject({ status: "accepted", forced: true });
    expect(queued).toEqual([released.id]);
    expect(await eventRow(released.id)).toMatchObject({ forced: 1 });
  });

  it("two releases at once make one event, under one id", async () => {
    const body = invalidBody();
    const id = await quarantined(body);
    const events = recordingQueue<QueuedEvent>();
    const post = () => sendWith(new Request(`${BASE}/admin/quarantine/${id}/release?force=true`, { method: "POST", headers: ADMIN }), { EVENTS_QUEUE: events.queue });
    const answers = await Promise.all([post(), post()]);
    const outcomes = await Promise.all(answers.map(async (r) => (await r.json()) as Release));
    // One release records and sends; the other finds it recorded: one message, the same event.
    expect(outcomes.map((o) => o.status).sort()).toEqual(["accepted", "already_released"]);
    const key = outcomes[0]!.id;
    expect(outcomes[1]!.id).toBe(key);
    expect(events.accepted.map((m) => m.eventKey)).toEqual([key]);
    await consumeAll(events.accepted);
    expect(await countRows("SELECT count(*) AS n FROM events WHERE event_id = ?", (JSON.parse(body) as { id: string }).id)).toBe(1);
    expect((await adminGet<{ quarantined: Detail }>(`/admin/quarantine/${id}`)).quarantined.released?.event).toBe(key);
  });
});
