/**
 * Durable, idempotent acknowledgement: D1 and the Queue fail at each step of the write
 * order, and the provider's retry always ends with exactly one stored, one enqueued event.
 */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import worker from "../src/index";
import { describe, expect, it } from "vitest";
import type { Env } from "../src/env";
import { faultyD1, faultyQueue, sleep } from "./faults";
import { countRows, errorOf, send, sendWith, seismicBody, seismicRequest, zuddlBody, zuddlRequest } from "./helpers";

interface Ack {
  id: string;
  status: string;
}

const eventIdOf = (body: string) => (JSON.parse(body) as { id: string }).id;
const storedCount = (eventId: string) => countRows("SELECT count(*) AS n FROM events WHERE event_id = ?", eventId);

/** Fails the first `times` calls that match, then lets everything through. */
function failing(times: number, matches: (sql: string) => boolean = () => true) {
  let left = times;
  return (sql = "") => {
    if (matches(sql) && left-- > 0) throw new Error("injected fault");
  };
}

describe("idempotency", () => {
  it("answers a redelivery with duplicate and does not enqueue it again", async () => {
    const body = seismicBody();
    const { queue, accepted } = faultyQueue(env.EVENTS_QUEUE, () => undefined);
    const first = (await (await sendWith(await seismicRequest(body), { EVENTS_QUEUE: queue })).json()) as Ack;
    const again = (await (await sendWith(await seismicRequest(body), { EVENTS_QUEUE: queue })).json()) as Ack;
    expect(first.status).toBe("accepted");
    expect(again).toEqual({ ...first, status: "duplicate" });
    expect(accepted).toEqual([{ eventKey: first.id }]);
    expect(await storedCount(eventIdOf(body))).toBe(1);
  });

  it("stores and enqueues once under concurrent redelivery of the same event", async () => {
    const body = zuddlBody();
    const { queue, accepted } = faultyQueue(env.EVENTS_QUEUE, () => undefined);
    const responses = await Promise.all(
      Array.from({ length: 12 }, async () => sendWith(await zuddlRequest(body), { EVENTS_QUEUE: queue })),
    );
    const statuses = await Promise.all(responses.map(async (r) => (r.status === 200 ? ((await r.json()) as Ack).status : (await errorOf(r)).code)));
    expect(statuses.filter((s) => s === "accepted")).toHaveLength(1);
    // The others either saw it done, or saw it in flight and were told to retry.
    for (const status of statuses) expect(["accepted", "duplicate", "in_progress"]).toContain(status);
    expect(accepted).toHaveLength(1);
    const actionId = (JSON.parse(body) as { actionId: string }).actionId;
    expect(await countRows("SELECT count(*) AS n FROM events WHERE event_id = ?", actionId)).toBe(1);
  });

  it("derives the event id from (provider, type, provider id): the same id after the row is gone", async () => {
    const body = seismicBody();
    const { id: eventId, version } = JSON.parse(body) as { id: string; version: string };
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(JSON.stringify(["seismic", version, eventId]))));
    const expected = `evt_${[...digest].map((b) => b.toString(16).padStart(2, "0")).join("").slice(0, 24)}`;
    const first = (await (await send(await seismicRequest(body))).json()) as Ack;
    expect(first.id).toBe(expected);
    // A purge, a restore or a new database: the provider's redelivery gets the same id.
    await env.DB.prepare("DELETE FROM events WHERE key = ?").bind(first.id).run();
    const again = (await (await send(await seismicRequest(body))).json()) as Ack;
    expect(again).toEqual({ ...first, status: "accepted" });
  });

  it("treats the same id under another type as a different event", async () => {
    const id = "shared-id-" + crypto.randomUUID();
    const a = (await (await send(await seismicRequest(seismicBody({ id, version: "livesend-session-summary-v3", data: { InteractionId: "i" } })))).json()) as Ack;
    const b = (await (await send(await seismicRequest(seismicBody({ id, version: "livesend-session-summary-enriched-v3", data: { InteractionId: "i" } })))).json()) as Ack;
    expect([a.status, b.status]).toEqual(["accepted", "accepted"]);
    expect(a.id).not.toBe(b.id);
  });
});

describe("faults at each step, then the provider's retry", () => {
  it("step 1: D1 write fails → 503 with Retry-After, nothing stored; retry accepts", async () => {
    const body = seismicBody();
    const { queue, accepted } = faultyQueue(env.EVENTS_QUEUE, () => undefined);
    const db = faultyD1(env.DB, failing(1));
    const failed = await sendWith(await seismicRequest(body), { DB: db, EVENTS_QUEUE: queue });
    expect(failed.status).toBe(503);
    expect(failed.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(await errorOf(failed)).toMatchObject({ code: "storage_unavailable" });
    expect(await storedCount(eventIdOf(body))).toBe(0);

    const retried = (await (await sendWith(await seismicRequest(body), { DB: db, EVENTS_QUEUE: queue })).json()) as Ack;
    expect(retried.status).toBe("accepted");
    expect(await storedCount(eventIdOf(body))).toBe(1);
    expect(accepted).toHaveLength(1);
  });

  it("step 2: Queue send fails → 503, stored but not enqueued; retry enqueues once", async () => {
    const body = seismicBody();
    const failQueue = failing(1);
    const { queue, accepted } = faultyQueue(env.EVENTS_QUEUE, () => failQueue());
    const failed = await sendWith(await seismicRequest(body), { EVENTS_QUEUE: queue });
    expect(await errorOf(failed)).toMatchObject({ code: "queue_unavailable" });
    expect(await storedCount(eventIdOf(body))).toBe(1);
    expect(accepted).toHaveLength(0);

    const retried = (await (await sendWith(await seismicRequest(body), { EVENTS_QUEUE: queue })).json()) as Ack;
    expect(retried.status).toBe("accepted");
    const again = (await (await sendWith(await seismicRequest(body), { EVENTS_QUEUE: queue })).json()) as Ack;
    expect(again.status).toBe("duplicate");
    expect(accepted).toEqual([{ eventKey: retried.id }]);
    expect(await storedCount(eventIdOf(body))).toBe(1);
  });

  it("step 2 with the claim release failing too: the claim lapses and a later retry enqueues", async () => {
    const body = seismicBody();
    const failQueue = failing(1);
    const { queue, accepted } = faultyQueue(env.EVENTS_QUEUE, () => failQueue());
    const db = faultyD1(env.DB, failing(1, (sql) => sql.includes("SET claimed_at = NULL")));
    expect((await sendWith(await seismicRequest(body), { DB: db, EVENTS_QUEUE: queue })).status).toBe(503);
    // A retry inside the lease is told to come back; nothing is enqueued twice.
    expect(await errorOf(await sendWith(await seismicRequest(body), { EVENTS_QUEUE: queue }))).toMatchObject({ code: "in_progress" });
    // Age the claim past its lease, as time would.
    await env.DB.prepare("UPDATE events SET claimed_at = claimed_at - 60000 WHERE event_id = ?").bind(eventIdOf(body)).run();
    const retried = (await (await sendWith(await seismicRequest(body), { EVENTS_QUEUE: queue })).json()) as Ack;
    expect(retried.status).toBe("accepted");
    expect(accepted).toHaveLength(1);
  });

  it("step 3: marking enqueued fails → still 200 (stored and queued); the consumer repairs the mark", async () => {
    const body = zuddlBody();
    const { queue, accepted } = faultyQueue(env.EVENTS_QUEUE, () => undefined);
    const db = faultyD1(env.DB, failing(1, (sql) => sql.includes("SET enqueued_at")));
    const first = (await (await sendWith(await zuddlRequest(body), { DB: db, EVENTS_QUEUE: queue })).json()) as Ack;
    expect(first.status).toBe("accepted");
    // The real consumer (declared in wrangler.toml) receives the message and records it as enqueued.
    await expect.poll(() => countRows("SELECT count(*) AS n FROM events WHERE key = ? AND enqueued_at IS NOT NULL", first.id), { timeout: 10_000 }).toBe(1);
    const again = (await (await sendWith(await zuddlRequest(body), { EVENTS_QUEUE: queue })).json()) as Ack;
    expect(again.status).toBe("duplicate");
    expect(accepted).toHaveLength(1);
  });

  it("quarantine write fails → 503 so the signed payload is retried, not lost", async () => {
    const body = '{"not": "an envelope"';
    const db = faultyD1(env.DB, failing(1, (sql) => sql.includes("INSERT INTO quarantine")));
    const response = await sendWith(await seismicRequest(body), { DB: db });
    expect(await errorOf(response)).toMatchObject({ code: "quarantine_unavailable" });
  });

  it("answers 503 within the storage budget when D1 stalls, instead of timing out", async () => {
    const body = seismicBody();
    let stalled = false;
    const db = faultyD1(env.DB, async () => {
      if (!stalled) await sleep(2_500);
      stalled = true;
    });
    const ctx = createExecutionContext();
    const started = Date.now();
    const response = await worker.fetch(await seismicRequest(body), { ...env, DB: db, STORAGE_BUDGET_MS: "300" } as Env, ctx);
    expect(Date.now() - started).toBeLessThan(3_000); // the providers' deadline, not a speed target
    expect(await errorOf(response)).toMatchObject({ code: "storage_timeout" });

    // The stalled writes finish in the background; the provider's retry then finds the event complete.
    await waitOnExecutionContext(ctx);
    const retried = (await (await send(await seismicRequest(body))).json()) as Ack;
    expect(retried.status).toBe("duplicate");
    expect(await storedCount(eventIdOf(body))).toBe(1);
  }, 15_000);
});

