/**
 * Bodies in R2, D1 as the index, through the Worker's real handlers: every writer puts the body
 * before the row (R2 refusing a write stores nothing and the message or the sender retries), every
 * reader reads R2 (R2 refusing a read fails that round or that request only, and nothing is lost),
 * a stalled R2 answers 503 before the providers' deadline, retention deletes both, and the cron
 * moves bodies stored in D1 before this into R2, byte for byte.
 */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Env } from "../src/env";
import worker from "../src/index";
import { MAX_QUEUE_MESSAGE_BYTES } from "../src/receive/webhook";
import { admin, bindings, consume, deliveries, downstream, events, makeDue, runCron, useDeliveryHarness } from "./delivery-harness";
import { faultyR2, sleep, type R2Operation } from "./faults";
import { countRows, errorOf, quarantinedRow, sendWith, seismicBody, seismicRequest, storedEvent } from "./helpers";

useDeliveryHarness();

const ALPHA = [{ name: "alpha", url: "https://alpha.test/hook" }];
const DAY_MS = 86_400_000;
const refusing = (operations: R2Operation[]) => faultyR2(env.BODIES, (operation) => {
  if (operations.includes(operation)) throw new Error(`injected: R2 refuses ${operation}`);
});
const objectOf = (key: string) => env.BODIES.get(`events/${key}`);

async function post(body: string, extra: Partial<Env> = {}): Promise<Response> {
  return sendWith(await seismicRequest(body), { ...bindings, ...extra });
}

async function accepted(body: string): Promise<string> {
  const response = await post(body);
  expect(response.status).toBe(200);
  return ((await response.json()) as { id: string }).id;
}

describe("writing bodies", () => {
  it("R2 refusing the consumer's write: no row is stored, the message is retried with its body, and once R2 is back it is stored and delivered once", async () => {
    const key = await accepted(seismicBody());
    const hits = downstream("https://alpha.test/hook");
    const down = refusing(["put"]);
    const first = await consume(events.accepted, { DESTINATIONS: ALPHA, BODIES: down.bucket });
    expect(first.retried.map((r) => r.msgId)).toEqual(["msg-0"]);
    expect(down.calls.put).toBeGreaterThan(0);
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key = ?", key)).toBe(0);
    expect(hits).toHaveLength(0);

    const second = await consume(events.accepted, { DESTINATIONS: ALPHA });
    expect(second.acked).toEqual(["msg-0"]);
    expect(await storedEvent(key)).toMatchObject({ status: "delivered", body_in_r2: 1, body: (events.accepted[0]!.event!).body });
    expect(hits).toHaveLength(1);
  });

  it("a body too large for a message, with R2 refusing: 503 storage_unavailable and nothing in D1; the sender's retry is stored", async () => {
    const body = seismicBody({ data: { contentId: "x".repeat(MAX_QUEUE_MESSAGE_BYTES), teamSiteId: "1" } });
    const refused = await post(body, { BODIES: refusing(["put"]).bucket });
    expect(refused.status).toBe(503);
    expect(await errorOf(refused)).toMatchObject({ code: "storage_unavailable" });
    expect(events.accepted).toHaveLength(0);
    expect(await countRows("SELECT count(*) AS n FROM events WHERE event_id = ?", (JSON.parse(body) as { id: string }).id)).toBe(0);
    const key = await accepted(body);
    expect(events.accepted).toEqual([{ eventKey: key }]);
    expect(await (await objectOf(key))!.text()).toBe(body);
  });

  it("a body too large for a message, with R2 stalled: 503 storage_timeout within the storage budget, before the providers' 3 s", async () => {
    const body = seismicBody({ data: { contentId: "x".repeat(MAX_QUEUE_MESSAGE_BYTES), teamSiteId: "1" } });
    const stalled = faultyR2(env.BODIES, async (operation) => {
      if (operation === "put") await sleep(2_000);
    });
    const ctx = createExecutionContext();
    const started = Date.now();
    const response = await worker.fetch(await seismicRequest(body), { ...env, ...bindings, BODIES: stalled.bucket, STORAGE_BUDGET_MS: "300" } as Env, ctx);
    expect(Date.now() - started).toBeLessThan(3_000); // the providers' deadline, not a speed target
    expect(response.status).toBe(503);
    expect(await errorOf(response)).toMatchObject({ code: "storage_timeout" });
    await waitOnExecutionContext(ctx);
  }, 15_000);

  it("a quarantined payload goes to R2 first: R2 refusing it answers 503 quarantine_unavailable, so the provider retries", async () => {
    const body = seismicBody({ version: "livesend-session-summary-v3", data: { InteractionId: 7 } });
    const refused = await post(body, { BODIES: refusing(["put"]).bucket });
    expect(refused.status).toBe(503);
    expect(await errorOf(refused)).toMatchObject({ code: "quarantine_unavailable" });
    expect(await quarantinedRow(body)).toBeNull();
    expect((await post(body)).status).toBe(422);
    expect(await quarantinedRow(body)).toMatchObject({ body: new TextEncoder().encode(body), body_in_r2: 1 });
  });
});

describe("reading bodies", () => {
  it("R2 refusing reads: a replay's round fails and is retried (nothing forwarded), the event page answers 503, and both work once R2 is back", async () => {
    const hits = downstream("https://alpha.test/hook");
    const key = await accepted(seismicBody());
    await consume(events.accepted, { DESTINATIONS: ALPHA });
    expect(hits).toHaveLength(1);
    const down = refusing(["get"]);
    expect((await admin("POST", `/admin/events/${key}/replay`, { DESTINATIONS: ALPHA })).status).toBe(202);
    const replay = events.accepted.slice(1);
    expect(replay.map((m) => m.eventKey)).toEqual([key]);

    // Ten times over, as an hour of R2 refusing would: a passing fault, never counted against the event.
    for (let attempt = 1; attempt <= 10; attempt++) {
      const failed = await consume(replay, { DESTINATIONS: ALPHA, BODIES: down.bucket }, { ids: ["replay"], attempts: attempt });
      expect(failed.retried.map((r) => r.msgId)).toEqual(["replay"]);
    }
    expect(hits).toHaveLength(1);
    expect(await storedEvent(key)).toMatchObject({ failed_rounds: 0 });
    expect((await deliveries(key)).alpha).toMatchObject({ status: "pending" });
    const page = await admin("GET", `/admin/events/${key}`, { BODIES: down.bucket });
    expect(page.status).toBe(503);
    expect(await errorOf(page)).toMatchObject({ code: "body_unavailable" });

    const again = await consume(replay, { DESTINATIONS: ALPHA }, { ids: ["replay"], attempts: 11 });
    expect(again.acked).toEqual(["replay"]);
    expect(hits.map((r) => r.body)).toEqual([hits[0]!.body, hits[0]!.body]);
    expect((await deliveries(key)).alpha).toMatchObject({ status: "delivered" });
    expect((await admin("GET", `/admin/events/${key}`)).status).toBe(200);
  });
});

describe("what is kept is the first copy, and a body that is gone", () => {
  it("a copy of an event with other bytes (the same provider id) leaves the stored body as the first copy sent it", async () => {
    downstream("https://alpha.test/hook");
    const first = seismicBody();
    const key = await accepted(first);
    await consume(events.accepted, { DESTINATIONS: ALPHA });
    // The same event id, other bytes (the provider reformatted its JSON), after it was stored.
    const reformatted = JSON.stringify(JSON.parse(first), null, 2);
    expect(await accepted(reformatted)).toBe(key);
    await consume(events.accepted.slice(1), { DESTINATIONS: ALPHA }, { ids: ["copy"] });
    expect(await (await objectOf(key))!.text()).toBe(first);
    expect(await storedEvent(key)).toMatchObject({ body: first });
  });

  it("two copies of an event with other bytes in one batch: the first is stored, and it is what retries forward too", async () => {
    const hits = downstream("https://alpha.test/hook", [500, 200]);
    const first = seismicBody();
    const key = await accepted(first);
    expect(await accepted(JSON.stringify(JSON.parse(first), null, 2))).toBe(key);
    await consume(events.accepted, { DESTINATIONS: ALPHA });
    expect(await (await objectOf(key))!.text()).toBe(first);
    await makeDue(key);
    await consume([{ eventKey: key }], { DESTINATIONS: ALPHA }, { ids: ["sweep"] });
    expect(hits.map((hit) => hit.body)).toEqual([first, first]);
  });

  it("a body R2 has no object for (gone for good) fails the round, so the event ends dead after its rounds instead of waiting for ever", async () => {
    const hits = downstream("https://alpha.test/hook");
    const key = await accepted(seismicBody());
    await consume(events.accepted, { DESTINATIONS: ALPHA });
    await env.BODIES.delete(`events/${key}`);
    await env.DB.prepare("UPDATE deliveries SET status = 'failed', next_attempt_at = 0 WHERE event_key = ?").bind(key).run();
    // The sweep's message, naming the event: its round reads the body.
    const failed = await consume([{ eventKey: key }], { DESTINATIONS: ALPHA }, { ids: ["sweep"] });
    expect(failed.retried.map((r) => r.msgId)).toEqual(["sweep"]);
    expect(await storedEvent(key)).toMatchObject({ failed_rounds: 1, last_error: "delivery round failed: BodyUnavailable" });
    expect(hits).toHaveLength(1);
  });
});

describe("a queue batch's bodies share one segment", () => {
  /** Three events of one batch, a BOM and characters of 2, 3 and 4 bytes among them (offsets are in bytes), and a copy of the first. */
  async function storedTogether(extra: Partial<Env> = {}) {
    const bodies = [`\uFEFF${seismicBody()}`, seismicBody({ data: { contentId: "Zürich ✓ 日本 🎉", teamSiteId: "1" } }), seismicBody()];
    const keys: string[] = [];
    for (const body of bodies) keys.push(await accepted(body));
    const messages = [...events.accepted, events.accepted[0]!];
    const round = await consume(messages, { DESTINATIONS: ALPHA, ...extra });
    return { bodies, keys, round };
  }
  const placeOf = (key: string) => env.DB.prepare("SELECT body, body_segment, body_offset, body_length FROM events WHERE key = ?").bind(key).first<{ body: string; body_segment: string; body_offset: number; body_length: number }>();

  it("one R2 write for the batch, each row pointing at its bytes in it: read back, forwarded and shown byte for byte, none with an object of its own", async () => {
    const hits = downstream("https://alpha.test/hook");
    const counted = faultyR2(env.BODIES);
    const { bodies, keys, round } = await storedTogether({ BODIES: counted.bucket });
    expect(round.acked.sort()).toEqual(["msg-0", "msg-1", "msg-2", "msg-3"]);
    expect(counted.calls.put).toBe(1);
    const places = await Promise.all(keys.map(placeOf));
    expect(new Set(places.map((place) => place!.body_segment)).size).toBe(1);
    const segment = await env.BODIES.get(`segments/${places[0]!.body_segment}`);
    const encoded = bodies.map((body) => new TextEncoder().encode(body));
    // The copy of the first event (msg-3) is placed once.
    expect(segment!.size).toBe(encoded.reduce((sum, bytes) => sum + bytes.byteLength, 0));
    for (const [i, key] of keys.entries()) {
      expect(places[i]).toMatchObject({ body: "", body_length: encoded[i]!.byteLength });
      expect(await objectOf(key)).toBeNull();
      expect(await storedEvent(key)).toMatchObject({ body: bodies[i] });
      expect(hits.find((hit) => hit.headers.get("webhook-id") === key)!.body).toBe(bodies[i]);
    }
    const payload = ((await (await admin("GET", `/admin/events/${keys[1]}`)).json()) as { event: { payload: unknown } }).event.payload;
    expect(payload).toEqual(JSON.parse(bodies[1]!));
  });

  it("a retry reads its body from the segment: the failed forward is sent again with the same bytes", async () => {
    const hits = downstream("https://alpha.test/hook", [500, 500, 500, 200]);
    const { bodies, keys } = await storedTogether();
    expect(hits).toHaveLength(3);
    await makeDue(keys[1]!);
    const retry = await consume([{ eventKey: keys[1]! }], { DESTINATIONS: ALPHA }, { ids: ["sweep"] });
    expect(retry.acked).toEqual(["sweep"]);
    expect(hits.at(-1)!.body).toBe(bodies[1]);
    expect(await deliveries(keys[1]!)).toMatchObject({ alpha: { status: "delivered" } });
  });

  const segmentRows = (...ids: string[]) =>
    env.DB.prepare("SELECT id, moved_at FROM body_segments WHERE id IN (SELECT value FROM json_each(?))").bind(JSON.stringify(ids)).all<{ id: string; moved_at: number | null }>().then((r) => r.results);

  it("retention: a segment whose events are all purged goes with them; one with an event kept (held) moves that body to its own object, and goes a run later", async () => {
    downstream("https://alpha.test/hook");
    const { bodies, keys } = await storedTogether();
    const { body_segment: segment } = (await placeOf(keys[0]!))!;
    expect(await segmentRows(segment)).toEqual([{ id: segment, moved_at: null }]);
    // Held for a paused destination: kept past retention, and its body with it, but not the others'.
    await env.DB.prepare("UPDATE deliveries SET status = 'held', held_order = 1 WHERE event_key = ?").bind(keys[2]).run();
    // An object of its name that no row reads (an earlier copy written alone, whose D1 write failed): the move writes over it.
    await env.BODIES.put(`events/${keys[2]}`, "a stale copy");
    const later = new Date(Date.now() + 31 * DAY_MS);
    await runCron(later, { DESTINATIONS: ALPHA });
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key IN (?, ?)", keys[0], keys[1])).toBe(0);
    expect(await placeOf(keys[2]!)).toMatchObject({ body_segment: null });
    expect(await (await objectOf(keys[2]!))!.text()).toBe(bodies[2]);
    expect(await storedEvent(keys[2]!)).toMatchObject({ body: bodies[2] });
    // Still there for a reader that read the row's place before the move, and still at once on the next run.
    expect(await env.BODIES.head(`segments/${segment}`)).not.toBeNull();
    await runCron(new Date(later.getTime() + 30_000), { DESTINATIONS: ALPHA });
    expect(await env.BODIES.head(`segments/${segment}`)).not.toBeNull();

    await runCron(new Date(later.getTime() + 5 * 60_000), { DESTINATIONS: ALPHA });
    expect(await env.BODIES.head(`segments/${segment}`)).toBeNull();
    expect(await segmentRows(segment)).toEqual([]);
    expect(await storedEvent(keys[2]!)).toMatchObject({ body: bodies[2] });

    // Once delivered, its own purge deletes its own object.
    await env.DB.batch([
      env.DB.prepare("UPDATE deliveries SET status = 'delivered' WHERE event_key = ?").bind(keys[2]),
      env.DB.prepare("UPDATE events SET status = 'delivered' WHERE key = ?").bind(keys[2]),
    ]);
    await runCron(later, { DESTINATIONS: ALPHA });
    expect(await objectOf(keys[2]!)).toBeNull();
    expect(await countRows("SELECT count(*) AS n FROM body_deletions")).toBe(0);
  });

  it("retention goes by a segment's oldest body: a redelivered message's copy makes its newer batch-mate's body move out when the copy's event passes the cutoff", async () => {
    downstream("https://alpha.test/hook");
    // The first delivery of msg-0 stores it in a segment with another event.
    const { keys } = await storedTogether();
    // msg-0 again (its own retry: a copy, its bytes in the new segment, unread) beside a new event received 2 days later.
    const newer = await accepted(seismicBody());
    const [, , , newerMessage] = events.accepted;
    newerMessage!.event!.receivedAt += 2 * DAY_MS;
    await env.DB.prepare("UPDATE events SET received_at = received_at + ?2 WHERE key = ?1").bind(newer, 2 * DAY_MS).run();
    await consume([events.accepted[0]!, newerMessage!], { DESTINATIONS: ALPHA }, { ids: ["msg-0", "newer"] });
    const { body_segment: second } = (await placeOf(newer))!;
    const { body_segment: first } = (await placeOf(keys[0]!))!;
    expect(second).not.toBe(first);
    expect((await env.BODIES.get(`segments/${second}`))!.size).toBeGreaterThan((await placeOf(newer))!.body_length);

    // Past the first batch's retention, not the newer event's: its body moves out, and both segments go.
    const later = new Date(Date.now() + 31 * DAY_MS);
    await runCron(later, { DESTINATIONS: ALPHA });
    await runCron(new Date(later.getTime() + 5 * 60_000), { DESTINATIONS: ALPHA });
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key IN (?, ?, ?)", ...keys)).toBe(0);
    expect(await env.BODIES.head(`segments/${first}`)).toBeNull();
    expect(await env.BODIES.head(`segments/${second}`)).toBeNull();
    expect(await storedEvent(newer)).toMatchObject({ body_segment: null, body: (newerMessage!.event!).body });
    expect(await segmentRows(first, second)).toEqual([]);
  });

  it("a provider's resend of a stored event, in a later batch, ages that batch's segment from when the event was first received", async () => {
    downstream("https://alpha.test/hook");
    const { bodies, keys } = await storedTogether();
    const { received_at: firstReceived } = (await env.DB.prepare("UPDATE events SET received_at = received_at - ?2 WHERE key = ?1 RETURNING received_at").bind(keys[1], 10 * DAY_MS).first<{ received_at: number }>())!;
    // A new request with the same bytes (received now), beside a new event.
    events.accepted.length = 0;
    await accepted(bodies[1]!);
    const newer = await accepted(seismicBody());
    await consume(events.accepted, { DESTINATIONS: ALPHA }, { ids: ["resend", "newer"] });
    const { body_segment: segment } = (await placeOf(newer))!;
    expect(await env.DB.prepare("SELECT oldest_received_at FROM body_segments WHERE id = ?").bind(segment).first()).toEqual({ oldest_received_at: firstReceived });
  });

  it("a segment R2 refuses to read stays, its rows readable, and holds up no other segment; the next run retires it", async () => {
    downstream("https://alpha.test/hook");
    const { bodies, keys } = await storedTogether();
    await env.DB.prepare("UPDATE deliveries SET status = 'held', held_order = 1 WHERE event_key = ?").bind(keys[2]).run();
    const later = new Date(Date.now() + 31 * DAY_MS);
    const { body_segment: segment } = (await placeOf(keys[2]!))!;
    await runCron(later, { DESTINATIONS: ALPHA, BODIES: refusing(["get"]).bucket });
    expect(await segmentRows(segment)).toMatchObject([{ moved_at: null }]);
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key IN (?, ?)", keys[0], keys[1])).toBe(0);
    expect(await storedEvent(keys[2]!)).toMatchObject({ body: bodies[2] });
    await runCron(later, { DESTINATIONS: ALPHA });
    expect(await segmentRows(segment)).toMatchObject([{ moved_at: expect.any(Number) }]);
    expect(await storedEvent(keys[2]!)).toMatchObject({ body_segment: null, body: bodies[2] });
  });

  it("R2 refusing the segment's write stores none of the batch; the redelivered batch is stored whole", async () => {
    const hits = downstream("https://alpha.test/hook");
    const { keys, round } = await storedTogether({ BODIES: refusing(["put"]).bucket });
    expect(round.retried).toHaveLength(4);
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key IN (?, ?, ?)", ...keys)).toBe(0);
    expect(hits).toHaveLength(0);
    const again = await consume([...events.accepted, events.accepted[0]!], { DESTINATIONS: ALPHA });
    expect(again.acked).toHaveLength(4);
    expect(hits).toHaveLength(3);
  });
});

describe("the search index takes R2 bodies' text", () => {
  const search = async (q: string) => ((await (await admin("GET", `/admin/events?q=${encodeURIComponent(q)}`)).json()) as { events: { id: string }[] }).events.map((e) => e.id);

  it("a payload with a 200,000-element array is stored and found (its text is walked without the call stack), and a 20-digit number keeps its digits", async () => {
    const tag = `wide${crypto.randomUUID().replaceAll("-", "")}`;
    const body = seismicBody({ data: { contentId: tag, teamSiteId: "1", bigId: 12345678901234567891, points: Array.from({ length: 200_000 }, () => 1) } }).replace("12345678901234567000", "12345678901234567891");
    const key = await accepted(body);
    await consume(events.accepted, { DESTINATIONS: ALPHA });
    downstream("https://alpha.test/hook");
    expect(await search(tag)).toEqual([key]);
    expect(await search("12345678901234567891")).toEqual([key]);
  });

  it("the cron's build indexes bodies in R2, one at a time, and one whose object is gone as no text instead of stopping", async () => {
    const [kept, gone] = [`kept${crypto.randomUUID().replaceAll("-", "")}`, `gone${crypto.randomUUID().replaceAll("-", "")}`];
    const keptKey = await accepted(seismicBody({ data: { contentId: kept, teamSiteId: "1" } }));
    await consume(events.accepted, { DESTINATIONS: [] });
    // Stored alone (a batch of one), so its own object can go while the other's stays.
    const goneKey = await accepted(seismicBody({ data: { contentId: gone, teamSiteId: "1" } }));
    await consume(events.accepted.slice(1), { DESTINATIONS: [] }, { ids: ["gone"] });
    await env.BODIES.delete(`events/${goneKey}`);
    // As if indexing had begun just before these were stored: the build covers them.
    await env.DB.prepare("DELETE FROM events_search WHERE rowid IN (SELECT rowid FROM events WHERE key IN (?1, ?2))").bind(keptKey, goneKey).run();
    const { id } = (await env.DB.prepare("SELECT max(rowid) AS id FROM events").first<{ id: number }>())!;
    await env.DB.prepare("UPDATE search_index SET build_below = ?").bind(id + 1).run();
    await runCron(new Date(), { DESTINATIONS: [] });
    expect(await env.DB.prepare("SELECT build_below FROM search_index").first()).toEqual({ build_below: null });
    expect(await search(kept)).toEqual([keptKey]);
    expect(await search(gone)).toEqual([]);
  });
});

describe("retention and older events", () => {
  it("the purge deletes the row and its body; a body R2 refused to delete is noted and deleted by the next run", async () => {
    downstream("https://alpha.test/hook");
    const key = await accepted(seismicBody());
    await consume(events.accepted, { DESTINATIONS: ALPHA });
    expect(await objectOf(key)).not.toBeNull();
    const later = new Date(Date.now() + 31 * DAY_MS);

    // The step fails (a failed cron run shows in the dashboard), after its D1 deletes.
    await expect(runCron(later, { DESTINATIONS: ALPHA, BODIES: refusing(["delete"]).bucket })).rejects.toThrow(/scheduled step failed/);
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key = ?", key)).toBe(0);
    expect(await objectOf(key)).not.toBeNull();
    expect(await countRows("SELECT count(*) AS n FROM body_deletions WHERE object = ?", `events/${key}`)).toBe(1);

    await runCron(later, { DESTINATIONS: ALPHA });
    expect(await objectOf(key)).toBeNull();
    expect(await countRows("SELECT count(*) AS n FROM body_deletions")).toBe(0);
  });

  it("a body noted for deletion whose event is stored again meanwhile is kept with it", async () => {
    downstream("https://alpha.test/hook");
    const body = seismicBody();
    const key = await accepted(body);
    await consume(events.accepted, { DESTINATIONS: ALPHA });
    await expect(runCron(new Date(Date.now() + 31 * DAY_MS), { DESTINATIONS: ALPHA, BODIES: refusing(["delete"]).bucket })).rejects.toThrow(/scheduled step failed/);
    // The provider sends it again after the purge: a new row, its body written again.
    await accepted(body);
    await consume(events.accepted.slice(1), { DESTINATIONS: ALPHA }, { ids: ["again"] });
    await runCron(new Date(), { DESTINATIONS: ALPHA });
    expect(await storedEvent(key)).toMatchObject({ body });
    expect(await countRows("SELECT count(*) AS n FROM body_deletions")).toBe(0);
  });

  it("an object past retention that no row points at (its row was never written) is deleted by the purge's walk through the bucket; one a row points at stays", async () => {
    downstream("https://alpha.test/hook");
    const key = await accepted(seismicBody());
    await consume(events.accepted, { DESTINATIONS: ALPHA });
    // Held for a paused destination: kept past retention, and its body with it.
    await env.DB.prepare("UPDATE deliveries SET status = 'held', held_order = 1 WHERE event_key = ?").bind(key).run();
    await env.BODIES.put("events/evt_orphan_written_no_row_000", "{}");
    await runCron(new Date(Date.now() + 31 * DAY_MS), { DESTINATIONS: ALPHA });
    expect(await env.BODIES.head("events/evt_orphan_written_no_row_000")).toBeNull();
    expect(await objectOf(key)).not.toBeNull();
  });

  it("the cron moves bodies stored in D1 before bodies moved to R2, byte for byte, in bounded batches; they stay readable before and after", async () => {
    const bom = `\uFEFF${seismicBody()}`;
    const plain = seismicBody();
    const rows = [["evt_legacy_bom_000000000000", bom], ["evt_legacy_plain_00000000000", plain]] as const;
    for (const [key, body] of rows) {
      await env.DB.prepare(
        `INSERT INTO events (key, provider, source, event_id, type, known_type, received_at, verified_with, content_type, body, status)
         VALUES (?1, 'seismic', 'seismic', ?1, 'ContentManagerCreateFileV1', 1, ?2, 'current', 'application/json', ?3, 'delivered')`,
      ).bind(key, Date.now(), body).run();
    }
    const payloadOf = async (key: string) => ((await (await admin("GET", `/admin/events/${key}`)).json()) as { event: { payload: unknown } }).event.payload;
    const before = await payloadOf(rows[1][0]);
    expect(before).toEqual(JSON.parse(plain));

    await runCron(new Date());
    for (const [key, body] of rows) {
      expect(await env.DB.prepare("SELECT body, body_in_r2 FROM events WHERE key = ?").bind(key).first()).toEqual({ body: "", body_in_r2: 1 });
      expect(new Uint8Array(await (await objectOf(key))!.arrayBuffer())).toEqual(new TextEncoder().encode(body));
    }
    expect(await payloadOf(rows[1][0])).toEqual(before);
    expect(await countRows("SELECT count(*) AS n FROM events WHERE body_in_r2 = 0")).toBe(0);
  });

  it("R2 refusing the move leaves the bodies in D1, readable, for a later run", async () => {
    const body = seismicBody();
    await env.DB.prepare(
      `INSERT INTO events (key, provider, source, event_id, type, known_type, received_at, verified_with, content_type, body, status)
       VALUES ('evt_legacy_refused_000000000', 'seismic', 'seismic', 'legacy-refused', 'ContentManagerCreateFileV1', 1, ?1, 'current', 'application/json', ?2, 'delivered')`,
    ).bind(Date.now(), body).run();
    await expect(runCron(new Date(), { BODIES: refusing(["put"]).bucket })).rejects.toThrow(/scheduled step failed/);
    expect(await storedEvent("evt_legacy_refused_000000000")).toMatchObject({ body, body_in_r2: 0 });
    await runCron(new Date());
    expect(await storedEvent("evt_legacy_refused_000000000")).toMatchObject({ body, body_in_r2: 1 });
  });
});
