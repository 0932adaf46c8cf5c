/**
 * Nothing stranded, nothing repeated, nothing leaked (#9): poison messages, a bad deploy, the
 * reconciliation sweep, configuration changes, bulk replay paging and the runtime's limits,
 * through the Worker's real queue, fetch and scheduled handlers with real D1.
 */
import { env } from "cloudflare:workers";
import { delay, http, HttpResponse } from "msw";
import { describe, expect, it, vi } from "vitest";
import type { Env } from "../src/env";
import {
  accept, admin, consume, deadLetters, deliveries, downstream, events, heldDownstream, makeDue, runCron, server, useDeliveryHarness,
} from "./delivery-harness";
import { breakingEventRows, faultyD1 } from "./faults";
import { countRows, hmacHex, seismicBody, webhookRequest, zuddlBody, zuddlRequest } from "./helpers";

useDeliveryHarness();

const ONLY_ALPHA = [{ name: "alpha", url: "https://alpha.test/hook" }];

async function eventView(key: string, extra: Partial<Env> = {}) {
  const response = await admin("GET", `/admin/events/${key}`, extra);
  expect(response.status).toBe(200);
  return ((await response.json()) as { event: { status: string; lastError: string | null; payload?: unknown; deliveries: { destination: string; status: string; lastError: string | null }[] } }).event;
}

describe("one poison message", () => {
  it("affects only itself: a BOM body is routed and forwarded byte for byte, a failing message is recorded and retried alone", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const bomBody = `\uFEFF${seismicBody()}`;
    const bomRequest = webhookRequest("seismic", bomBody, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, bomBody) });
    const first = await accept(await zuddlRequest(zuddlBody()));
    const bom = await accept(bomRequest);
    const poisoned = await accept(await zuddlRequest(zuddlBody()));
    const last = await accept(await zuddlRequest(zuddlBody()));
    const messages = events.accepted;

    const round = await consume(messages, { DESTINATIONS: ONLY_ALPHA, DB: breakingEventRows(env.DB, (key) => key === poisoned) });
    expect(round.acked.sort()).toEqual(["msg-0", "msg-1", "msg-3"]);
    expect(round.retried.map((m: { msgId: string }) => m.msgId)).toEqual(["msg-2"]);
    expect(alpha.map((r) => r.headers.get("webhook-id")).sort()).toEqual([first, bom, last].sort());
    const forwardedBom = alpha.find((r) => r.headers.get("webhook-id") === bom)!;
    expect(forwardedBom.body).toBe(bomBody);
    expect(forwardedBom.body.charCodeAt(0)).toBe(0xfeff);

    // The failure is on the event for the operator; the BOM event reads back as JSON.
    expect((await eventView(poisoned)).lastError).toBe("delivery round failed: TypeError");
    expect((await eventView(bom)).payload).toEqual(JSON.parse(bomBody.slice(1)));

    // The whole batch comes back (a queue redelivery): only the poisoned event is forwarded now.
    const again = await consume(messages, { DESTINATIONS: ONLY_ALPHA });
    expect(again.acked.sort()).toEqual(["msg-0", "msg-1", "msg-2", "msg-3"]);
    expect(alpha).toHaveLength(4);
    expect(alpha[3]!.headers.get("webhook-id")).toBe(poisoned);
    expect(await eventView(poisoned)).toMatchObject({ status: "delivered", lastError: null });
  });

  it("counts failed rounds, not deliveries: a failure on a message's tenth delivery is retried; 10 failed rounds in a row make the event dead everywhere", async () => {
    const alpha = downstream("https://alpha.test/hook", [500, 500, 200]);
    const kept = await accept(await zuddlRequest(zuddlBody()));
    const purged = await accept(await zuddlRequest(zuddlBody()));
    // A first round runs: alpha fails, both deliveries are `failed`.
    await consume(events.accepted, { DESTINATIONS: ONLY_ALPHA });
    for (const key of [kept, purged]) await makeDue(key);
    const deadBefore = await countRows("SELECT value AS n FROM metric_counters WHERE name = 'edgehook_deliveries_total' AND labels = ?", JSON.stringify({ destination: "alpha", status: "dead" }));
    const broken = { DESTINATIONS: ONLY_ALPHA, DB: breakingEventRows(env.DB, (k) => k === kept || k === purged) };

    // One transient failure on the messages' tenth queue delivery is retried, not fatal.
    expect((await consume(events.accepted, broken, { attempts: 10 })).retried).toHaveLength(2);
    expect(await eventView(kept)).toMatchObject({ status: "failed", lastError: "delivery round failed: TypeError" });
    for (let attempts = 11; attempts <= 18; attempts++) expect((await consume(events.accepted, broken, { attempts })).retried).toHaveLength(2);
    // The tenth failed round in a row: acked, and the event is dead everywhere.
    expect((await consume(events.accepted, broken, { attempts: 19 })).acked).toEqual(["msg-0", "msg-1"]);
    const dead = await eventView(kept);
    expect(dead).toMatchObject({ status: "dead", lastError: "delivery round failed 10 times in a row (TypeError); the event is dead until replayed" });
    expect(dead.deliveries).toEqual([expect.objectContaining({ destination: "alpha", status: "dead" })]);
    expect(deadLetters.accepted).toEqual(expect.arrayContaining([{ eventKey: kept, destinations: ["alpha"] }, { eventKey: purged, destinations: ["alpha"] }]));
    expect(await countRows("SELECT value AS n FROM metric_counters WHERE name = 'edgehook_deliveries_total' AND labels = ?", JSON.stringify({ destination: "alpha", status: "dead" }))).toBe(deadBefore + 2);
    const metrics = await (await admin("GET", "/admin/metrics")).text();
    expect(Number(/^edgehook_dead (\d+)$/m.exec(metrics)![1])).toBeGreaterThanOrEqual(2);
    const { deliveries: listed } = (await (await admin("GET", "/admin/deliveries?status=dead&destination=alpha&limit=200")).json()) as { deliveries: { eventId: string }[] };
    expect(listed.map((d) => d.eventId)).toEqual(expect.arrayContaining([kept, purged]));

    // The sweep leaves it; a replay brings it back and delivers it.
    const sent = events.accepted.length;
    await runCron(new Date(Date.now() + 3_600_000), { DESTINATIONS: ONLY_ALPHA, RECONCILE_AFTER_SECONDS: "60" });
    expect(events.accepted.slice(sent)).toEqual([]);
    expect((await admin("POST", `/admin/events/${kept}/replay`, { DESTINATIONS: ONLY_ALPHA })).status).toBe(202);
    await consume(events.accepted.slice(sent), { DESTINATIONS: ONLY_ALPHA }, { ids: ["replay"] });
    expect(await eventView(kept)).toMatchObject({ status: "delivered", lastError: null });
    expect(alpha.filter((r) => r.headers.get("webhook-id") === kept).at(-1)).toBeDefined();

    // Retention purges the other, dead, event like any dead one.
    await runCron(new Date(Date.now() + 2 * 86_400_000), { DESTINATIONS: ONLY_ALPHA, RETENTION_DAYS: "1" });
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key = ?", purged)).toBe(0);
  });

  it("a batch whose write fails as a whole is recorded message by message, and those are acked, not forwarded again", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const good = await accept(await zuddlRequest(zuddlBody()));
    const unwritable = await accept(await zuddlRequest(zuddlBody()));
    // D1 refuses the batch's write as a whole (both rounds), then takes each round alone.
    let refused = 0;
    const failing = faultyD1(env.DB, (sql) => {
      if (sql.includes("lease_by = CASE WHEN events.lease_by") && refused++ === 0) throw new Error("injected D1 fault");
    });
    const result = await consume(events.accepted, { DESTINATIONS: ONLY_ALPHA, DB: failing });
    expect(refused).toBe(3);
    expect(result.acked.sort()).toEqual(["msg-0", "msg-1"]);
    expect(alpha).toHaveLength(2);
    for (const key of [good, unwritable]) expect((await deliveries(key)).alpha).toMatchObject({ status: "delivered" });
  });
});

describe("a bad deploy, the dead-letter queue and the reconciliation sweep", () => {
  const INVALID = [{ name: "bad", url: "ftp://nope.test" }];

  it("events accepted while DESTINATIONS is invalid are delivered once it is fixed and the cron runs", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const keys = [await accept(await zuddlRequest(zuddlBody())), await accept(await zuddlRequest(zuddlBody()))];
    const held = await consume(events.accepted, { DESTINATIONS: INVALID });
    expect(held.acked.sort()).toEqual(["msg-0", "msg-1"]); // stored; no queue retry is used while waiting for the fix
    expect(alpha).toHaveLength(0);
    const sent = events.accepted.length;

    // Still invalid, however long they wait: the sweep leaves them be, instead of sending the same
    // events round every window.
    await runCron(new Date(Date.now() + 3_600_000), { DESTINATIONS: INVALID, RECONCILE_AFTER_SECONDS: "60" });
    expect(events.accepted.slice(sent)).toEqual([]);

    // Not yet idle for RECONCILE_AFTER_SECONDS: the sweep leaves them be.
    await runCron(new Date(), { DESTINATIONS: ONLY_ALPHA, RECONCILE_AFTER_SECONDS: "60" });
    expect(events.accepted.slice(sent).map((m) => m.eventKey)).not.toContain(keys[0]);

    // The fix is deployed; a minute later the sweep finds them and enqueues them again.
    await runCron(new Date(Date.now() + 61_000), { DESTINATIONS: ONLY_ALPHA, RECONCILE_AFTER_SECONDS: "60" });
    const requeued = events.accepted.slice(sent).filter((m) => keys.includes(m.eventKey));
    // Oldest first; two events received in the same millisecond may come in either order.
    expect(requeued.sort((a, b) => a.eventKey.localeCompare(b.eventKey))).toEqual([...keys].sort().map((eventKey) => ({ eventKey })));
    await consume(requeued, { DESTINATIONS: ONLY_ALPHA });
    expect(alpha.map((r) => r.headers.get("webhook-id")).sort()).toEqual([...keys].sort());
    for (const key of keys) expect(await eventView(key, { DESTINATIONS: ONLY_ALPHA })).toMatchObject({ status: "delivered", lastError: null });

    // Just handled: the next sweep does not send them again.
    const after = events.accepted.length;
    await runCron(new Date(Date.now() + 30_000), { DESTINATIONS: ONLY_ALPHA, RECONCILE_AFTER_SECONDS: "60" });
    expect(events.accepted.slice(after).filter((m) => keys.includes(m.eventKey))).toEqual([]);
  });

  it("finds an event whose message was lost, but never one waiting out a scheduled retry", async () => {
    downstream("https://alpha.test/hook", [500]);
    const lost = await accept(await zuddlRequest(zuddlBody()));
    const waiting = await accept(await zuddlRequest(zuddlBody()));
    // Both are stored and fail once; `lost` is due again in seconds, but its message never comes back.
    await consume(events.accepted.slice(0, 1), { DESTINATIONS: ONLY_ALPHA, RETRY_BASE_SECONDS: "1", RETRY_MAX_SECONDS: "2" });
    await consume(events.accepted.slice(1, 2), { DESTINATIONS: ONLY_ALPHA, RETRY_BASE_SECONDS: "3600", RETRY_MAX_SECONDS: "7200" });
    expect((await deliveries(waiting)).alpha).toMatchObject({ status: "failed" });
    const sent = events.accepted.length;
    await runCron(new Date(Date.now() + 120_000), { DESTINATIONS: ONLY_ALPHA, RECONCILE_AFTER_SECONDS: "60" });
    const swept = events.accepted.slice(sent).map((m) => m.eventKey);
    expect(swept).toContain(lost);
    expect(swept).not.toContain(waiting);
  });

  it("records everything the dead-letter queue delivers, once per message, and lists it", async () => {
    const key = await accept(await zuddlRequest(zuddlBody()));
    // An event message that used up its retries (it carries the event), and our notice of a dead delivery.
    const letters = [events.accepted[0]!, { eventKey: key, destinations: ["alpha"] }];
    const first = await consume(letters, {}, { queue: "edgehook-dead-letters" });
    expect(first.acked).toEqual(["msg-0", "msg-1"]);
    await consume(letters, {}, { queue: "edgehook-dead-letters" }); // the same messages delivered again
    const { deadLetters } = (await (await admin("GET", "/admin/dead-letters?limit=200")).json()) as {
      deadLetters: { messageId: string; eventId: string; destinations: string[] | null }[];
    };
    const mine = deadLetters.filter((d) => d.eventId === key);
    expect(mine.map((d) => d.destinations)).toEqual(expect.arrayContaining([null, ["alpha"]]));
    expect(mine).toHaveLength(2);
    // The event it carried is stored, unfinished, where the sweep finds it.
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key = ? AND status = 'received'", key)).toBe(1);
  });

  it("the dead-letter queue has a consumer in wrangler.toml", async () => {
    const { default: config } = await import("../wrangler.toml?raw");
    const { DEFAULT_DEAD_LETTER_QUEUE_NAME: DEAD_LETTER_QUEUE_NAME } = await import("../src/deliver/dead-letters");
    expect(config).toContain(`DEAD_LETTER_QUEUE_NAME = "${DEAD_LETTER_QUEUE_NAME}"`);
    expect(config).toMatch(new RegExp(`\\[\\[queues\\.consumers\\]\\]\\s*\\nqueue = "${DEAD_LETTER_QUEUE_NAME}"`));
    expect(config).toContain(`dead_letter_queue = "${DEAD_LETTER_QUEUE_NAME}"`);
  });
});

describe("configuration changes", () => {
  it("cancels unfinished deliveries to a destination that was removed or no longer routes, and the event can finish", async () => {
    downstream("https://alpha.test/hook", [500]);
    downstream("https://beta.test/hook", [500, 200]);
    const filtered = { name: "filtered", url: "https://beta.test/hook", filter: "$..[?(@.timeSpentInMinutes > 100)]" };
    const before = [...ONLY_ALPHA, filtered];
    const key = await accept(await zuddlRequest(zuddlBody({ timeSpentInMinutes: 123 })));
    await consume(events.accepted, { DESTINATIONS: before });
    expect(await deliveries(key)).toMatchObject({ alpha: { status: "failed" }, filtered: { status: "failed" } });

    // alpha is removed; filtered's filter changes so it no longer selects the event.
    const after = [{ ...filtered, filter: "$..[?(@.timeSpentInMinutes > 500)]" }, { name: "gamma", url: "https://gamma.test/hook", providers: ["seismic"] }];
    await makeDue(key);
    const result = await consume(events.accepted, { DESTINATIONS: after });
    expect(result.acked).toEqual(["msg-0"]);
    const event = await eventView(key, { DESTINATIONS: after });
    expect(event.status).toBe("delivered");
    expect(event.deliveries).toEqual([
      expect.objectContaining({ destination: "alpha", status: "cancelled", lastError: expect.stringContaining("no destination by this name") }),
      expect.objectContaining({ destination: "filtered", status: "cancelled", lastError: expect.stringContaining("no longer routes this event") }),
    ]);

    // Retention can now purge it.
    await env.DB.prepare("UPDATE events SET received_at = ? WHERE key = ?").bind(Date.now() - 40 * 86_400_000, key).run();
    await runCron(new Date(), { DESTINATIONS: after });
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key = ?", key)).toBe(0);
  });

  it("a replay pinned to a destination is delivered even where routing would not send it", async () => {
    const gamma = downstream("https://gamma.test/hook");
    const destinations = [...ONLY_ALPHA, { name: "gamma", url: "https://gamma.test/hook", providers: ["seismic"] }];
    downstream("https://alpha.test/hook");
    const key = await accept(await zuddlRequest(zuddlBody()));
    await consume(events.accepted, { DESTINATIONS: destinations });
    expect(gamma).toHaveLength(0);
    expect((await admin("POST", `/admin/events/${key}/replay?destination=gamma`, { DESTINATIONS: destinations })).status).toBe(202);
    await consume(events.accepted.slice(-1), { DESTINATIONS: destinations });
    expect(gamma).toHaveLength(1);
    expect((await deliveries(key)).gamma).toMatchObject({ status: "delivered", pinned: 1 });
  });

  it("a replay to a destination that does not exist is a 404, in one or in bulk", async () => {
    const key = await accept(await zuddlRequest(zuddlBody()));
    await consume(events.accepted, { DESTINATIONS: [] });
    for (const path of [`/admin/events/${key}/replay?destination=ghost`, "/admin/replay?status=dead&destination=ghost"]) {
      const response = await admin("POST", path);
      expect(response.status).toBe(404);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe("unknown_destination");
    }
    expect(await countRows("SELECT count(*) AS n FROM deliveries WHERE destination = 'ghost'")).toBe(0);
  });
});

describe("bulk replay", () => {
  it("requires an explicit, known status", async () => {
    for (const query of ["", "?status=", "?status=bogus", "?status=pending"]) {
      const response = await admin("POST", `/admin/replay${query}`);
      expect(response.status).toBe(400);
      const { error } = (await response.json()) as { error: { code: string; message: string } };
      expect(error).toEqual({ code: "invalid_status", message: "status is required for a replay: one of dead, failed, gone, delivered, cancelled, transform_failed" });
    }
    const tooMany = await admin("POST", "/admin/replay?status=dead&limit=150");
    expect(tooMany.status).toBe(400);
    expect(await tooMany.json()).toEqual({ error: { code: "invalid_limit", message: "limit must be an integer from 1 to 100" } });
  });

  it("pages through a set fixed at the first call, never selecting a delivery twice", async () => {
    const name = `paged-${crypto.randomUUID()}`;
    const destinations = [{ name, url: "https://paged.test/hook" }];
    const keys = [];
    for (let i = 0; i < 3; i++) keys.push(await accept(await zuddlRequest(zuddlBody())));
    const now = Date.now();
    for (const [i, key] of keys.entries()) {
      await env.DB.prepare("INSERT INTO deliveries (event_key, destination, status, attempts, updated_at) VALUES (?, ?, 'dead', 3, ?)").bind(key, name, now - 1000 + i).run();
    }
    const page = async (cursor?: string) => {
      const response = await admin("POST", `/admin/replay?status=dead&destination=${name}&limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`, { DESTINATIONS: destinations });
      expect(response.status).toBe(202);
      return (await response.json()) as { replayed: number; more: boolean; nextCursor: string | null };
    };
    const sent = events.accepted.length;
    const first = await page();
    expect(first).toMatchObject({ replayed: 2, more: true });
    const firstKeys = events.accepted.slice(sent).map((m) => m.eventKey);
    // Those deliveries die again before the next page is asked for.
    await env.DB.prepare("UPDATE deliveries SET status = 'dead', updated_at = ? WHERE destination = ? AND event_key IN (SELECT value FROM json_each(?))")
      .bind(Date.now() + 5, name, JSON.stringify(firstKeys)).run();
    const second = await page(first.nextCursor!);
    expect(second).toEqual({ replayed: 1, events: 1, more: false, nextCursor: null });
    const secondKeys = events.accepted.slice(sent + firstKeys.length).map((m) => m.eventKey);
    expect([...firstKeys, ...secondKeys].sort()).toEqual([...keys].sort());

    // A cursor is only good with its own replay's filter.
    const mismatch = await admin("POST", `/admin/replay?status=failed&destination=${name}&cursor=${encodeURIComponent(first.nextCursor!)}`, { DESTINATIONS: destinations });
    expect(mismatch.status).toBe(400);
  });
});

describe("the runtime's limits", () => {
  const THREE = ["one", "two", "three"].map((name) => ({ name, url: `https://${name}.test/hook`, timeout_ms: 250 }));

  it("keeps at most 6 forwards in flight, each timed from its own start", async () => {
    let open = 0;
    let most = 0;
    for (const { url } of THREE) {
      server.use(http.post(url, async () => {
        most = Math.max(most, ++open);
        await delay(150);
        open--;
        return new HttpResponse(null, { status: 200 });
      }));
    }
    const keys = [];
    for (let i = 0; i < 6; i++) keys.push(await accept(await zuddlRequest(zuddlBody())));
    const result = await consume(events.accepted, { DESTINATIONS: THREE });
    expect(most).toBe(6);
    // 18 forwards of 150 ms through 6 slots take ~450 ms; none timed out at 250 ms while waiting for a slot.
    expect(result.acked).toHaveLength(6);
    for (const key of keys) expect(Object.values(await deliveries(key)).map((d) => d.status)).toEqual(["delivered", "delivered", "delivered"]);
  });

  it("a slow destination holding its forwards open leaves the fast one its share of the 6 connections", async () => {
    const destinations = [{ name: "slow", url: "https://slow.test/hook" }, { name: "fast", url: "https://fast.test/hook" }];
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let slowOpen = 0;
    const fast: string[] = [];
    let allFast!: () => void;
    const fastDone = new Promise<void>((resolve) => (allFast = resolve));
    server.use(
      http.post("https://slow.test/hook", async () => {
        slowOpen++;
        await gate; // answers only once every fast forward has been made
        return new HttpResponse(null, { status: 200 });
      }),
      http.post("https://fast.test/hook", ({ request }) => {
        fast.push(request.headers.get("webhook-id")!);
        if (fast.length === 12) allFast();
        return new HttpResponse(null, { status: 200 });
      }),
    );
    for (let i = 0; i < 12; i++) await accept(await zuddlRequest(zuddlBody()));
    const round = consume(events.accepted, { DESTINATIONS: destinations });
    // With the slots handed out first come, first served, the slow forwards would take all 6 and
    // the fast ones would wait for them: this would never resolve (the test would time out).
    await fastDone;
    expect(slowOpen).toBeLessThanOrEqual(5);
    release();
    const result = await round;
    expect(result.acked).toHaveLength(12);
  });

  it("starts no forward once the batch's start window (5 minutes) has passed: those wait for the next delivery, with no attempt used", async () => {
    const EIGHT = Array.from({ length: 8 }, (_, i) => ({ name: `d${i}`, url: `https://d${i}.test/hook` }));
    const realNow = Date.now.bind(Date);
    let calls = 0;
    for (const { url } of EIGHT) {
      server.use(http.post(url, async () => {
        // The first 6 forwards hold the connections; while they do, the batch's clock runs past its window.
        if (++calls === 6) vi.spyOn(Date, "now").mockImplementation(() => realNow() + 6 * 60_000);
        await delay(50);
        return new HttpResponse(null, { status: 200 });
      }));
    }
    const key = await accept(await zuddlRequest(zuddlBody()));
    const first = await consume(events.accepted, { DESTINATIONS: EIGHT });
    vi.restoreAllMocks();
    expect(calls).toBe(6);
    expect(first.retried).toHaveLength(1);
    const after = await deliveries(key);
    expect(Object.values(after).filter((d) => d.status === "delivered")).toHaveLength(6);
    expect(Object.values(after).every((d) => d.status === "delivered" || d.attempts === 0)).toBe(true);
    await consume(events.accepted, { DESTINATIONS: EIGHT }, { attempts: 2 });
    expect(calls).toBe(8);
    expect(Object.values(await deliveries(key)).map((d) => d.status)).toEqual(Array(8).fill("delivered"));
  });

  it("starts at most MAX_FORWARDS_PER_BATCH forwards; the rest wait for the next delivery without using an attempt", async () => {
    const received = THREE.map(({ url }) => downstream(url));
    const keys = [];
    for (let i = 0; i < 4; i++) keys.push(await accept(await zuddlRequest(zuddlBody())));
    const extra = { DESTINATIONS: THREE, MAX_FORWARDS_PER_BATCH: "5" };
    const total = () => received.reduce((sum, r) => sum + r.length, 0);
    const first = await consume(events.accepted, extra);
    expect(total()).toBe(5);
    expect(first.retried).toHaveLength(3); // the first message's 3 forwards fit; the others come back
    await consume(events.accepted, extra);
    expect(total()).toBe(10);
    await consume(events.accepted, extra);
    expect(total()).toBe(12);
    for (const key of keys) {
      for (const row of Object.values(await deliveries(key))) expect(row).toMatchObject({ status: "delivered", attempts: 1 });
    }
    // Every destination got every event exactly once.
    for (const r of received) expect(new Set(r.map((x) => x.headers.get("webhook-id"))).size).toBe(4);
  });
});

describe("leases and replays under concurrency", () => {
  it("two invocations of the same delivery of a message at once forward it once", async () => {
    const received: string[] = [];
    server.use(
      http.post("https://alpha.test/hook", async ({ request }) => {
        received.push(request.headers.get("webhook-id")!);
        await delay(50);
        return new HttpResponse(null, { status: 200 });
      }),
    );
    const key = await accept(await zuddlRequest(zuddlBody()));
    const [a, b] = await Promise.all([consume(events.accepted, { DESTINATIONS: ONLY_ALPHA }), consume(events.accepted, { DESTINATIONS: ONLY_ALPHA })]);
    expect(received).toEqual([key]);
    expect([...a.acked, ...b.acked]).toEqual(["msg-0"]);
    expect([...a.retried, ...b.retried].map((r) => r.msgId)).toEqual(["msg-0"]);
  });

  it("a replay made while a round is in flight wins: the round's outcome is not recorded, and the replay delivers", async () => {
    const alpha = heldDownstream("https://alpha.test/hook", 500);
    const key = await accept(await zuddlRequest(zuddlBody()));
    const inFlight = consume(events.accepted.slice(0, 1), { DESTINATIONS: ONLY_ALPHA });
    await alpha.waiting;
    const replay = await admin("POST", `/admin/events/${key}/replay`, { DESTINATIONS: ONLY_ALPHA });
    expect(replay.status).toBe(202);
    expect(await replay.json()).toEqual({ id: key, replayed: ["alpha"], roundInFlight: true });
    alpha.finish();
    await inFlight;
    // The round's failed attempt is history, but it did not overwrite the replay's reset.
    expect((await deliveries(key)).alpha).toMatchObject({ status: "pending", attempts: 0 });
    expect(await countRows("SELECT count(*) AS n FROM delivery_attempts WHERE event_key = ?", key)).toBe(1);
    expect(await eventView(key, { DESTINATIONS: ONLY_ALPHA })).toMatchObject({ status: "queued" });
    await consume(events.accepted.slice(1), { DESTINATIONS: ONLY_ALPHA }, { ids: ["replay"] });
    expect((await deliveries(key)).alpha).toMatchObject({ status: "delivered", attempts: 1 });
    expect(alpha.calls).toBe(2);
  });
});

describe("counters that count right", () => {
  it("a record batch that commits but loses its answer is not written again, so its counters count once", async () => {
    downstream("https://alpha.test/hook");
    const key = await accept(await zuddlRequest(zuddlBody()));
    const attempts = () =>
      countRows("SELECT value AS n FROM metric_counters WHERE name = 'edgehook_attempts_total' AND labels = ?", JSON.stringify({ destination: "alpha", result: "delivered" }));
    const before = await attempts();
    // The second D1 batch (the record) commits, then its answer is lost.
    let batches = 0;
    const losing = {
      prepare: (sql: string) => env.DB.prepare(sql),
      batch: async (statements: D1PreparedStatement[]) => {
        const results = await env.DB.batch(statements);
        if (++batches === 2) throw new Error("the answer was lost");
        return results;
      },
    } as unknown as D1Database;
    const result = await consume(events.accepted, { DESTINATIONS: ONLY_ALPHA, DB: losing });
    expect(result.acked).toEqual(["msg-0"]);
    expect(await attempts()).toBe(before + 1);
    expect((await deliveries(key)).alpha).toMatchObject({ status: "delivered", attempts: 1 });
  });
});
