/**
 * Queue-first ingest (#10): the request path answers after one Queue send, the consumer stores
 * and tells copies apart, and exactly one message owns each event's delivery. Faults at each
 * step, then the provider's or the queue's retry: one stored row, one forward, nothing lost.
 * Through the Worker's real fetch, queue and scheduled handlers with real D1.
 */
import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Env, QueuedEvent } from "../src/env";
import worker from "../src/index";
import { MAX_QUEUE_MESSAGE_BYTES } from "../src/receive/webhook";
import { consume, deadLetters, downstream, events, runCron, useDeliveryHarness } from "./delivery-harness";
import { crashingAfterCommit, faultyD1, faultyQueue, sleep } from "./faults";
import { countRows, errorOf, send, storedEvent, sendWith, seismicBody, seismicRequest, zuddlBody, zuddlRequest } from "./helpers";

useDeliveryHarness();

interface Ack {
  id: string;
  eventId: string;
  type: string;
  knownType: boolean;
  status: string;
}

const ALPHA = [{ name: "alpha", url: "https://alpha.test/hook" }];
const eventIdOf = (body: string) => (JSON.parse(body) as { id: string }).id;
const storedCount = (eventId: string) => countRows("SELECT count(*) AS n FROM events WHERE event_id = ?", eventId);
/** An event's row, with its body from R2 where it is kept (as the Worker reads it). */
const eventRow = (key: string) => storedEvent(key);

/** Posts through the real fetch handler with the harness's queues; the answer's JSON. */
async function post(request: Request, extra: Partial<Env> = {}): Promise<Ack> {
  const response = await sendWith(request, { EVENTS_QUEUE: events.queue, ...extra });
  expect(response.status).toBe(200);
  return (await response.json()) as Ack;
}

/** A Seismic body of about `bytes`, valid, with `filler` repeated in an extra field. */
const largeBody = (bytes: number, filler = "x") => seismicBody({ data: { contentId: "big", teamSiteId: "1", notes: filler.repeat(Math.ceil(bytes / filler.length)) } });

describe("the acknowledgement", () => {
  it("answers every copy accepted with the same id, derived from (provider, type, provider id); the consumer stores one row", async () => {
    const body = seismicBody();
    const { id: eventId, version } = JSON.parse(body) as { id: string; version: string };
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(JSON.stringify(["seismic", version, eventId]))));
    const expected = `evt_${[...digest].map((b) => b.toString(16).padStart(2, "0")).join("").slice(0, 24)}`;
    const first = await post(await seismicRequest(body));
    const again = await post(await seismicRequest(body));
    expect(first).toEqual({ id: expected, eventId, type: version, knownType: true, status: "accepted" });
    expect(again).toEqual(first);
    // Nothing is stored before the answer: the messages carry the event.
    expect(await storedCount(eventId)).toBe(0);
    expect(events.accepted).toHaveLength(2);
    for (const message of events.accepted) expect(message).toMatchObject({ eventKey: expected, event: { eventId, type: version, body, provider: "seismic", verifiedWith: "current" } });

    const result = await consume(events.accepted, { DESTINATIONS: [] });
    expect(result.acked.sort()).toEqual(["msg-0", "msg-1"]);
    expect(await storedCount(eventId)).toBe(1);
    expect(await eventRow(expected)).toMatchObject({ body, owner: "msg-0", status: "delivered", lease_by: null });
  });

  it("gives a purged or restored event the same id again", async () => {
    const body = seismicBody();
    const first = await post(await seismicRequest(body));
    await consume(events.accepted, { DESTINATIONS: [] });
    await env.DB.prepare("DELETE FROM events WHERE key = ?").bind(first.id).run();
    expect(await post(await seismicRequest(body))).toEqual(first);
    await consume(events.accepted.slice(-1), { DESTINATIONS: [] }, { ids: ["after-purge"] });
    expect(await eventRow(first.id)).toMatchObject({ owner: "after-purge" });
  });

  it("treats the same provider id under another type as a different event", async () => {
    const id = "shared-id-" + crypto.randomUUID();
    const a = await post(await seismicRequest(seismicBody({ id, version: "livesend-session-summary-v3", data: { InteractionId: "i" } })));
    const b = await post(await seismicRequest(seismicBody({ id, version: "livesend-session-summary-enriched-v3", data: { InteractionId: "i" } })));
    expect(a.id).not.toBe(b.id);
    await consume(events.accepted, { DESTINATIONS: [] });
    expect(await storedCount(id)).toBe(2);
  });

  it("shows the event in the admin API by the acknowledged id once the real queue's consumer has run (the batch window)", async () => {
    const body = zuddlBody();
    const response = await send(await zuddlRequest(body));
    const { id } = (await response.json()) as Ack;
    const started = Date.now();
    await expect.poll(async () => (await sendWith(new Request(`https://edgehook.test/admin/events/${id}`, { headers: { authorization: `Bearer ${env.ADMIN_TOKEN}` } }), {})).status, { timeout: 10_000, interval: 100 }).toBe(200);
    expect(Date.now() - started).toBeLessThan(5_000);
  }, 15_000);
});

describe("the owner protocol", () => {
  it("20 concurrent copies of one event: one row, one forward, 19 copies acked as duplicates", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const body = zuddlBody();
    const acks = await Promise.all(Array.from({ length: 20 }, async () => post(await zuddlRequest(body))));
    expect(new Set(acks.map((a) => JSON.stringify(a))).size).toBe(1);
    expect(events.accepted).toHaveLength(20);

    // The queue hands them to four consumers at once, five each.
    const ids = events.accepted.map((_, i) => `copy-${i}`);
    const results = await Promise.all([0, 5, 10, 15].map((from) => consume(events.accepted.slice(from, from + 5), { DESTINATIONS: ALPHA }, { ids: ids.slice(from, from + 5) })));
    expect(results.flatMap((r) => r.acked).sort()).toEqual([...ids].sort());
    expect(alpha).toHaveLength(1);
    const key = acks[0]!.id;
    expect(await countRows("SELECT count(*) AS n FROM events WHERE event_id = ?", (JSON.parse(body) as { actionId: string }).actionId)).toBe(1);
    const row = await eventRow(key);
    expect(ids).toContain(row!.owner);
    expect(row).toMatchObject({ status: "delivered", lease_by: null });

    // Every copy again, as a redelivering queue would: the owner finds nothing due, the rest are duplicates.
    await consume(events.accepted, { DESTINATIONS: ALPHA }, { ids });
    expect(alpha).toHaveLength(1);
  });

  it("a consumer crash after the insert and before the forward: the owner's retry delivers, a copy does not", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const body = seismicBody();
    const { id: key } = await post(await seismicRequest(body));
    await post(await seismicRequest(body)); // the provider's redelivery: a second message
    const [owner, copy] = events.accepted;

    const crashed = await consume([owner!], { DESTINATIONS: ALPHA, DB: crashingAfterCommit(env.DB) }, { ids: ["owner"] });
    expect(crashed.acked).toEqual([]);
    expect(crashed.retried).toHaveLength(1);
    expect(alpha).toHaveLength(0);
    expect(await eventRow(key)).toMatchObject({ owner: "owner", lease_by: expect.stringMatching(/^owner\|1\|/), status: "queued" });

    // The copy arrives first: acked as a duplicate, nothing forwarded.
    const duplicate = await consume([copy!], { DESTINATIONS: ALPHA }, { ids: ["copy"] });
    expect(duplicate.acked).toEqual(["copy"]);
    expect(alpha).toHaveLength(0);

    // The owner's retry (same message id) recognises itself, takes its own lease back and delivers.
    const retried = await consume([owner!], { DESTINATIONS: ALPHA }, { ids: ["owner"], attempts: 2 });
    expect(retried.acked).toEqual(["owner"]);
    expect(alpha).toHaveLength(1);
    expect(alpha[0]!.headers.get("webhook-id")).toBe(key);
    expect(await eventRow(key)).toMatchObject({ status: "delivered", lease_by: null, lease_until: null });
    expect(await storedCount(eventIdOf(body))).toBe(1);
  });

  it("the sweep leaves an event whose lease is held; once it lapses, the sweep's message and the owner's retry deliver it once", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const { id: key } = await post(await zuddlRequest(zuddlBody()));
    const [owner] = events.accepted;
    await consume([owner!], { DESTINATIONS: ALPHA, DB: crashingAfterCommit(env.DB) }, { ids: ["owner"] });

    // Idle long enough for the sweep, but a message holds the lease: the sweep leaves it be.
    const sweep = async () => {
      const sent = events.accepted.length;
      await runCron(new Date(Date.now() + 61_000), { DESTINATIONS: ALPHA, RECONCILE_AFTER_SECONDS: "60" });
      return events.accepted.slice(sent).filter((m) => m.eventKey === key);
    };
    expect(await sweep()).toEqual([]);

    // The lease lapses (as time would) while the owner's message is still alive, waiting for its retry.
    await env.DB.prepare("UPDATE events SET lease_until = ? WHERE key = ?").bind(Date.now() - 1, key).run();
    const swept = await sweep();
    expect(swept).toEqual([{ eventKey: key }]);

    // Both arrive in one batch: one takes the lease and delivers, the other waits for it.
    const both = await consume([owner!, swept[0]!], { DESTINATIONS: ALPHA }, { ids: ["owner", "sweep"], attempts: 2 });
    expect(both.acked).toEqual(["owner"]);
    expect(both.retried).toEqual([expect.objectContaining({ msgId: "sweep" })]);
    expect(alpha).toHaveLength(1);
    // The one that waited comes back: D1 says delivered, so nothing is sent.
    const later = await consume([swept[0]!], { DESTINATIONS: ALPHA }, { ids: ["sweep"], attempts: 2 });
    expect(later.acked).toEqual(["sweep"]);
    expect(alpha).toHaveLength(1);
  });

  it("a message naming a stored event takes a lease left by a message that died, once it lapses", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const { id: key } = await post(await zuddlRequest(zuddlBody()));
    await consume(events.accepted, { DESTINATIONS: ALPHA, DB: crashingAfterCommit(env.DB) }, { ids: ["lost"] });
    await env.DB.prepare("UPDATE events SET lease_until = ? WHERE key = ?").bind(Date.now() - 1, key).run();
    const result = await consume([{ eventKey: key }], { DESTINATIONS: ALPHA }, { ids: ["replay"] });
    expect(result.acked).toEqual(["replay"]);
    expect(alpha).toHaveLength(1);
  });
});

describe("faults at each step, then the retry", () => {
  it("Queue send fails → 503 with Retry-After and nothing stored; the provider's retry is accepted with the same id", async () => {
    const body = seismicBody();
    let fail = true;
    const flaky = faultyQueue(events.queue, () => {
      if (fail) throw new Error("injected fault");
    });
    const failed = await sendWith(await seismicRequest(body), { EVENTS_QUEUE: flaky.queue });
    expect(failed.status).toBe(503);
    expect(failed.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(await errorOf(failed)).toMatchObject({ code: "queue_unavailable" });
    expect(events.accepted).toHaveLength(0);
    fail = false;
    const retried = (await (await sendWith(await seismicRequest(body), { EVENTS_QUEUE: flaky.queue })).json()) as Ack;
    expect(retried.status).toBe("accepted");
    await consume(events.accepted, { DESTINATIONS: [] });
    expect(await storedCount(eventIdOf(body))).toBe(1);
    expect(await eventRow(retried.id)).toBeTruthy();
  });

  it("Queue send stalls → 503 within the storage budget, before the providers' deadline; the late send and the retry make one event", async () => {
    const body = seismicBody();
    let stall = true;
    const slow = faultyQueue(events.queue, async () => {
      if (stall) await sleep(2_000);
    });
    const ctx = createExecutionContext();
    const started = Date.now();
    const response = await worker.fetch(await seismicRequest(body), { ...env, EVENTS_QUEUE: slow.queue, STORAGE_BUDGET_MS: "300" } as Env, ctx);
    expect(Date.now() - started).toBeLessThan(3_000); // the providers' deadline, not a speed target
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(await errorOf(response)).toMatchObject({ code: "storage_timeout" });

    // The stalled send completes in the background; the provider's retry sends a second copy.
    await waitOnExecutionContext(ctx);
    stall = false;
    await sendWith(await seismicRequest(body), { EVENTS_QUEUE: slow.queue });
    expect(events.accepted).toHaveLength(2);
    const downstreamHits = downstream("https://alpha.test/hook");
    await consume(events.accepted, { DESTINATIONS: ALPHA });
    expect(await storedCount(eventIdOf(body))).toBe(1);
    expect(downstreamHits).toHaveLength(1);
  }, 15_000);

  it("the tests' storage budget outlasts a busy machine: a Queue send slower than the deployed budget is still accepted", async () => {
    // On a loaded CI machine a real send can take longer than the deployed budget; only a test
    // about the budget (the one above) may see storage_timeout.
    const { default: config } = await import("../wrangler.toml?raw");
    const deployedBudgetMs = Number(/^STORAGE_BUDGET_MS = "(\d+)"/m.exec(config)![1]);
    const slow = faultyQueue(events.queue, async () => {
      await sleep(deployedBudgetMs + 100);
    });
    const response = await sendWith(await seismicRequest(seismicBody()), { EVENTS_QUEUE: slow.queue });
    expect(response.status).toBe(200);
    expect(slow.accepted).toHaveLength(1);
  });

  it("D1 fails in the consumer's store step → the message is retried with its body; nothing is lost", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const body = zuddlBody();
    const { id: key } = await post(await zuddlRequest(body));
    const down = faultyD1(env.DB, () => {
      throw new Error("injected D1 fault");
    });
    const failed = await consume(events.accepted, { DESTINATIONS: ALPHA, DB: down });
    expect(failed.acked).toEqual([]);
    expect(failed.retried).toEqual([expect.objectContaining({ msgId: "msg-0" })]);
    expect(await eventRow(key)).toBeNull();
    expect(alpha).toHaveLength(0);

    // The queue redelivers the same message, body and all.
    const retried = await consume(events.accepted, { DESTINATIONS: ALPHA }, { attempts: 2 });
    expect(retried.acked).toEqual(["msg-0"]);
    expect(await eventRow(key)).toMatchObject({ body, status: "delivered" });
    expect(alpha).toHaveLength(1);
  });

  it("one message D1 cannot store does not hold up its batch-mates: it alone comes back", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const good = await post(await zuddlRequest(zuddlBody()));
    await post(await zuddlRequest(zuddlBody()));
    const [first, second] = events.accepted;
    // A message D1 refuses (a bug's shape: a required field missing), between two good ones.
    const poison = { ...second!, event: { ...second!.event!, verifiedWith: null } } as unknown as QueuedEvent;
    const last = await post(await zuddlRequest(zuddlBody()));
    const result = await consume([first!, poison, events.accepted[2]!], { DESTINATIONS: ALPHA });
    expect(result.acked.sort()).toEqual(["msg-0", "msg-2"]);
    expect(result.retried).toEqual([expect.objectContaining({ msgId: "msg-1" })]);
    expect(alpha.map((r) => r.headers.get("webhook-id")).sort()).toEqual([good.id, last.id].sort());
  });

  it("a message that cannot be read is logged and acked, without failing its batch", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const { id } = await post(await zuddlRequest(zuddlBody()));
    const result = await consume([{ nonsense: true } as unknown as QueuedEvent, events.accepted[0]!], { DESTINATIONS: ALPHA });
    expect(result.acked.sort()).toEqual(["msg-0", "msg-1"]);
    expect(alpha.map((r) => r.headers.get("webhook-id"))).toEqual([id]);
  });

  it("a message that used up its retries: the dead-letter consumer stores its event, body and all, and the sweep delivers it", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const body = seismicBody();
    const { id: key } = await post(await seismicRequest(body));
    const result = await consume(events.accepted, {}, { queue: "edgehook-dead-letters", ids: ["exhausted"], attempts: 1 });
    expect(result.ackAll || result.acked.includes("exhausted")).toBe(true);
    expect(await eventRow(key)).toMatchObject({ body, status: "received", owner: null });
    expect(await countRows("SELECT count(*) AS n FROM dead_letters WHERE message_id = 'exhausted' AND event_key = ?", key)).toBe(1);

    const sent = events.accepted.length;
    await runCron(new Date(Date.now() + 61_000), { DESTINATIONS: ALPHA, RECONCILE_AFTER_SECONDS: "60" });
    const swept = events.accepted.slice(sent);
    expect(swept).toEqual([{ eventKey: key }]);
    await consume(swept, { DESTINATIONS: ALPHA });
    expect(alpha).toHaveLength(1);
    expect(alpha[0]!.body).toBe(body);
    expect(deadLetters.accepted).toEqual([]);
  });

  it("an owner that used up its retries while holding the lease: the dead-letter consumer releases it, and the sweep delivers the event", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const { id: key } = await post(await zuddlRequest(zuddlBody()));
    await consume(events.accepted, { DESTINATIONS: ALPHA, DB: crashingAfterCommit(env.DB) }, { ids: ["owner"] });
    expect(await eventRow(key)).toMatchObject({ lease_by: expect.stringMatching(/^owner\|/) });
    await consume(events.accepted, {}, { queue: "edgehook-dead-letters", ids: ["owner"] });
    expect(await eventRow(key)).toMatchObject({ lease_by: null, lease_until: null, owner: "owner", status: "queued" });

    const sent = events.accepted.length;
    await runCron(new Date(Date.now() + 61_000), { DESTINATIONS: ALPHA, RECONCILE_AFTER_SECONDS: "60" });
    await consume(events.accepted.slice(sent), { DESTINATIONS: ALPHA });
    expect(alpha).toHaveLength(1);
  });

  it("quarantine write fails → 503 so the signed payload is retried, not lost", async () => {
    const body = '{"not": "an envelope"';
    const db = faultyD1(env.DB, (sql) => {
      if (sql.includes("INSERT INTO quarantine")) throw new Error("injected fault");
    });
    const response = await sendWith(await seismicRequest(body), { DB: db });
    expect(await errorOf(response)).toMatchObject({ code: "quarantine_unavailable" });
  });
});

describe("bodies too large for one queue message", () => {
  it("are stored in D1 before the answer and sent by key; 1 MiB is accepted, stored and forwarded byte for byte", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const body = largeBody(1_000_000);
    expect(new TextEncoder().encode(body).byteLength).toBeLessThanOrEqual(1024 * 1024);
    const ack = await post(await seismicRequest(body));
    expect(ack.status).toBe("accepted");
    expect(events.accepted).toEqual([{ eventKey: ack.id }]);
    expect(await eventRow(ack.id)).toMatchObject({ body, status: "received", owner: null });

    await consume(events.accepted, { DESTINATIONS: ALPHA });
    expect(alpha).toHaveLength(1);
    expect(alpha[0]!.body).toBe(body);
    expect(await eventRow(ack.id)).toMatchObject({ status: "delivered" });
  });

  it("are measured as the queue measures a message: the JSON text, escapes included", async () => {
    // Under the limit as a body, over it once its quotes are escaped again inside the message.
    const quoted = largeBody(MAX_QUEUE_MESSAGE_BYTES / 3, '"');
    expect(quoted.length).toBeLessThan(MAX_QUEUE_MESSAGE_BYTES);
    await post(await seismicRequest(quoted));
    expect(events.accepted.at(-1)).not.toHaveProperty("event");
    // Just under the limit: the message carries it.
    const fits = largeBody(MAX_QUEUE_MESSAGE_BYTES - 2_000);
    await post(await seismicRequest(fits));
    expect(events.accepted.at(-1)).toHaveProperty("event.body", fits);
  });

  it("D1 fails → 503 and nothing enqueued; the Queue fails after the insert → 503, and the retry delivers it once", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const body = largeBody(200_000);
    const down = faultyD1(env.DB, () => {
      throw new Error("injected D1 fault");
    });
    const failed = await sendWith(await seismicRequest(body), { DB: down, EVENTS_QUEUE: events.queue });
    expect(await errorOf(failed)).toMatchObject({ code: "storage_unavailable" });
    expect(events.accepted).toHaveLength(0);

    let fail = true;
    const flaky = faultyQueue(events.queue, () => {
      if (fail) throw new Error("injected fault");
    });
    const queueDown = await sendWith(await seismicRequest(body), { EVENTS_QUEUE: flaky.queue });
    expect(await errorOf(queueDown)).toMatchObject({ code: "queue_unavailable" });
    expect(await storedCount(eventIdOf(body))).toBe(1);
    fail = false;
    const ack = (await (await sendWith(await seismicRequest(body), { EVENTS_QUEUE: flaky.queue })).json()) as Ack;
    await consume(events.accepted, { DESTINATIONS: ALPHA });
    expect(alpha).toHaveLength(1);
    expect(await storedCount(eventIdOf(body))).toBe(1);
    expect(await eventRow(ack.id)).toMatchObject({ status: "delivered" });
  });
});

describe("D1's limit on one string", () => {
  it("a queue batch of large events is stored in statements under 2,000,000 bytes each, not refused as a batch", async () => {
    const ALPHA = [{ name: "alpha", url: "https://alpha.test/hook" }];
    downstream("https://alpha.test/hook");
    // 25 events of about 110 KB: each fits a queue message, together they are 2.7 MB.
    const pad = "x".repeat(110_000);
    for (let i = 0; i < 25; i++) {
      const response = await sendWith(await seismicRequest(seismicBody({ data: { contentId: pad, teamSiteId: String(i) } })), { EVENTS_QUEUE: events.queue });
      expect(response.status).toBe(200);
    }
    expect(events.accepted.every((m) => m.event)).toBe(true);
    // A stand-in for D1 as deployed: a bound string over 2,000,000 bytes is refused. Batches counted.
    let batches = 0;
    const utf8 = new TextEncoder();
    const limited = {
      prepare: (sql: string) => {
        const statement = env.DB.prepare(sql);
        return new Proxy(statement, {
          get(target, prop) {
            if (prop === "bind") {
              return (...values: unknown[]) => {
                if (values.some((v) => typeof v === "string" && utf8.encode(v).byteLength > 2_000_000)) throw new Error("D1_ERROR: string or blob too big: SQLITE_TOOBIG");
                return target.bind(...values);
              };
            }
            const value = Reflect.get(target, prop, target);
            return typeof value === "function" ? value.bind(target) : value;
          },
        });
      },
      batch: (statements: D1PreparedStatement[]) => {
        batches++;
        return env.DB.batch(statements);
      },
    } as unknown as D1Database;
    const result = await consume(events.accepted, { DESTINATIONS: ALPHA, DB: limited, MAX_FORWARDS_PER_BATCH: "100" });
    expect(result.acked).toHaveLength(25);
    // One claim, one write of the routed deliveries and one record, not a refused claim and then one per message.
    expect(batches).toBe(3);
  });
});
