/**
 * The delivery path through the Worker's real queue and fetch handlers, with real D1.
 * Downstream URLs are mocked at the network edge with msw; nothing of ours is stubbed.
 */
import { env } from "cloudflare:workers";
import { http, HttpResponse } from "msw";
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import {
  accept, admin, consume, deadLetters, deliveries, downstream, events, heldDownstream, makeDue, runCron, SECRET_A, server, useDeliveryHarness,
} from "./delivery-harness";
import { faultyD1 } from "./faults";
import { countRows, sendWith, seismicBody, seismicRequest, zuddlBody, zuddlRequest } from "./helpers";

useDeliveryHarness();

describe("forwarding", () => {
  it("forwards the original bytes with Standard Webhooks headers a standard verifier accepts", async () => {
    const alpha = downstream("https://alpha.test/hook");
    downstream("https://beta.test/hook");
    downstream("https://gamma.test/hook");
    const body = seismicBody({ data: { name: "Zoë 🚀", teamSiteId: "1" } });
    const key = await accept(await seismicRequest(body));
    expect(events.accepted).toEqual([{ eventKey: key, event: expect.objectContaining({ body, provider: "seismic" }) }]);

    const result = await consume(events.accepted);
    expect(result.acked).toEqual(["msg-0"]);
    expect(alpha).toHaveLength(1);
    const [forwarded] = alpha;
    expect(forwarded!.body).toBe(body);
    expect(forwarded!.headers.get("content-type")).toBe("application/json");
    expect(forwarded!.headers.get("webhook-id")).toBe(key);
    expect(forwarded!.headers.get("x-edgehook-provider")).toBe("seismic");
    expect(forwarded!.headers.get("x-edgehook-event-type")).toBe("ContentManagerCreateFileV1");
    const verified = new Webhook(SECRET_A).verify(forwarded!.body, Object.fromEntries(forwarded!.headers));
    expect(verified).toEqual(JSON.parse(body));
    expect(() => new Webhook("whsec_" + btoa("a different secret!!")).verify(forwarded!.body, Object.fromEntries(forwarded!.headers))).toThrow();

    const state = await deliveries(key);
    expect(Object.keys(state)).toEqual(["alpha", "beta", "gamma"]);
    for (const row of Object.values(state)) expect(row).toMatchObject({ status: "delivered", attempts: 1, last_status_code: 200 });
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key = ? AND status = 'delivered'", key)).toBe(1);
  });

  it("sends unsigned when a destination has no secret, and only to destinations that route", async () => {
    downstream("https://alpha.test/hook");
    const beta = downstream("https://beta.test/hook");
    const gamma = downstream("https://gamma.test/hook");
    const key = await accept(await zuddlRequest(zuddlBody()));
    await consume(events.accepted);
    expect(beta).toHaveLength(0); // seismic only
    expect(gamma).toHaveLength(0); // ContentManager* only
    expect(Object.keys(await deliveries(key))).toEqual(["alpha"]);

    await accept(await seismicRequest(seismicBody({ version: "LiveDocCompletedV2" })));
    await consume(events.accepted.slice(-1));
    expect(beta).toHaveLength(1);
    expect(beta[0]!.headers.get("webhook-signature")).toBeNull();
    expect(beta[0]!.headers.get("webhook-id")).toMatch(/^evt_/);
  });

  it("keeps header values from payloads out of forwarded headers", async () => {
    const alpha = downstream("https://alpha.test/hook");
    downstream("https://beta.test/hook");
    const type = "Evil\r\nX-Injected: yes";
    await accept(await seismicRequest(seismicBody({ version: type })));
    await consume(events.accepted);
    expect(alpha[0]!.headers.get("x-injected")).toBeNull();
    expect(alpha[0]!.headers.get("x-edgehook-event-type")).toBe(encodeURIComponent(type));
  });

  it("never follows a redirect: a 3xx is a failed attempt", async () => {
    const alpha = downstream("https://alpha.test/hook", [[302, { location: "https://elsewhere.test/" }]]);
    const key = await accept(await zuddlRequest(zuddlBody()));
    const result = await consume(events.accepted);
    expect(alpha).toHaveLength(1);
    expect(result.retried).toHaveLength(1);
    expect((await deliveries(key)).alpha).toMatchObject({ status: "failed", last_status_code: 302 });
  });
});

describe("retries", () => {
  it("retries only the destinations that failed, never re-sending to ones that succeeded", async () => {
    const alpha = downstream("https://alpha.test/hook", [200]);
    const beta = downstream("https://beta.test/hook", [500, 200]);
    const gamma = downstream("https://gamma.test/hook", [200]);
    const key = await accept(await seismicRequest(seismicBody()));

    const first = await consume(events.accepted);
    expect(first.acked).toEqual([]);
    expect(first.retried.map((m: { msgId: string }) => m.msgId)).toEqual(["msg-0"]);
    expect(await deliveries(key)).toMatchObject({
      alpha: { status: "delivered" }, beta: { status: "failed", attempts: 1, last_status_code: 500, last_error: "HTTP 500" }, gamma: { status: "delivered" },
    });

    // Redelivered before the retry is due: nothing is sent, the message waits again.
    const early = await consume(events.accepted);
    expect(early.retried).toHaveLength(1);
    expect([alpha.length, beta.length, gamma.length]).toEqual([1, 1, 1]);

    await makeDue(key);
    const second = await consume(events.accepted);
    expect(second.acked).toEqual(["msg-0"]);
    expect([alpha.length, beta.length, gamma.length]).toEqual([1, 2, 1]);
    expect(beta[1]!.headers.get("webhook-id")).toBe(beta[0]!.headers.get("webhook-id"));
    expect((await deliveries(key)).beta).toMatchObject({ status: "delivered", attempts: 2 });

    // A duplicate of the finished message: every destination already has it.
    const again = await consume(events.accepted);
    expect(again.acked).toEqual(["msg-0"]);
    expect([alpha.length, beta.length, gamma.length]).toEqual([1, 2, 1]);
  });

  it("backs off exponentially with jitter, and honours Retry-After on 429 and 503", async () => {
    downstream("https://alpha.test/hook", [500]);
    downstream("https://beta.test/hook", [[429, { "retry-after": "120" }]]);
    downstream("https://gamma.test/hook", [[503, { "retry-after": new Date(Date.now() + 600_000).toUTCString() }]]);
    const key = await accept(await seismicRequest(seismicBody()));
    const before = Date.now();
    const result = await consume(events.accepted, { MAX_DELIVERY_ATTEMPTS: "5" });
    const state = await deliveries(key);
    const delay = (name: string) => ((state[name]!.next_attempt_at as number) - before) / 1000;
    expect(delay("alpha")).toBeGreaterThanOrEqual(4); // 10 s step, half of it jittered
    expect(delay("alpha")).toBeLessThanOrEqual(11);
    expect(delay("beta")).toBeCloseTo(120, -1);
    expect(delay("gamma")).toBeGreaterThan(590);
    expect(delay("gamma")).toBeLessThan(610);
    expect(result.retried.map((m: { msgId: string }) => m.msgId)).toEqual(["msg-0"]);

    await makeDue(key);
    await consume(events.accepted, { MAX_DELIVERY_ATTEMPTS: "5" });
    const later = await deliveries(key);
    const secondDelay = ((later.alpha!.next_attempt_at as number) - Date.now()) / 1000;
    expect(later.alpha).toMatchObject({ attempts: 2 });
    expect(secondDelay).toBeGreaterThanOrEqual(9); // 20 s step
    expect(secondDelay).toBeLessThanOrEqual(21);
  });

  it("stops at 410 Gone for that destination and says so", async () => {
    const alpha = downstream("https://alpha.test/hook", [410]);
    const key = await accept(await zuddlRequest(zuddlBody()));
    const result = await consume(events.accepted);
    expect(result.acked).toEqual(["msg-0"]);
    expect((await deliveries(key)).alpha).toMatchObject({ status: "gone", last_status_code: 410, last_error: expect.stringContaining("410 Gone") });
    await consume(events.accepted);
    expect(alpha).toHaveLength(1);
    expect(deadLetters.accepted).toHaveLength(0);
  });

  it("treats timeouts and network errors as failures to retry", async () => {
    server.use(http.post("https://alpha.test/hook", () => HttpResponse.error()));
    const key = await accept(await zuddlRequest(zuddlBody()));
    const result = await consume(events.accepted);
    expect(result.retried).toHaveLength(1);
    expect((await deliveries(key)).alpha).toMatchObject({ status: "failed", last_status_code: null, last_error: expect.stringContaining("network error") });

    server.use(http.post("https://alpha.test/hook", async () => new Promise<Response>(() => undefined)));
    const slow = [{ name: "alpha", url: "https://alpha.test/hook", timeout_ms: 150 }];
    const slowKey = await accept(await zuddlRequest(zuddlBody()));
    await consume(events.accepted.slice(-1), { DESTINATIONS: slow });
    expect((await deliveries(slowKey)).alpha).toMatchObject({ status: "failed", last_error: "timed out after 150 ms" });
  });

  it("exhausts the attempts into the dead-letter queue and records it", async () => {
    const alpha = downstream("https://alpha.test/hook", [500]);
    const key = await accept(await zuddlRequest(zuddlBody()));
    for (let i = 0; i < 3; i++) {
      await makeDue(key);
      await consume(events.accepted);
    }
    expect(alpha).toHaveLength(3);
    expect((await deliveries(key)).alpha).toMatchObject({ status: "dead", attempts: 3, last_error: expect.stringContaining("gave up after 3 attempts") });
    expect(deadLetters.accepted).toEqual([{ eventKey: key, destinations: ["alpha"] }]);
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key = ? AND status = 'dead'", key)).toBe(1);
    expect(await countRows("SELECT count(*) AS n FROM delivery_attempts WHERE event_key = ?", key)).toBe(3);

    // The message is acked once nothing is left to do, and the dead letter is sent once.
    const final = await consume(events.accepted);
    expect(final.acked).toEqual(["msg-0"]);
    expect(deadLetters.accepted).toHaveLength(1);
  });

  it("never acks a message whose delivery state could not be recorded", async () => {
    downstream("https://alpha.test/hook");
    const key = await accept(await zuddlRequest(zuddlBody()));
    const { faultyD1 } = await import("./faults");
    const db = faultyD1(env.DB, (sql) => {
      if (sql.includes("INSERT INTO deliveries")) throw new Error("injected D1 fault");
    });
    const result = await consume(events.accepted, { DB: db });
    expect(result.acked).toEqual([]);
    expect(result.retried).toHaveLength(1);
    expect(await deliveries(key)).toEqual({});
  });

  it("keeps every event while DESTINATIONS is invalid without using queue retries, and reports it in /healthz", async () => {
    const invalid = [{ name: "bad", url: "https://x.test", filter: "$.data[?(" }];
    const key = await accept(await zuddlRequest(zuddlBody()));
    const result = await consume(events.accepted, { DESTINATIONS: invalid });
    expect(result.acked).toEqual(["msg-0"]);
    expect(result.retried).toEqual([]);
    expect(await env.DB.prepare("SELECT status, last_error FROM events WHERE key = ?").bind(key).first()).toEqual({
      status: "queued", last_error: expect.stringContaining("DESTINATIONS is invalid"),
    });
    const health = await sendWith(new Request("https://edgehook.test/healthz"), { DESTINATIONS: invalid });
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: "degraded", destinations: { valid: false, errors: 1 } });
    const details = await admin("GET", "/admin/destinations", { DESTINATIONS: invalid });
    expect(await details.json()).toEqual({ valid: false, errors: [expect.stringContaining("DESTINATIONS[0] (bad).filter")] });
  });
});

describe("operator API", () => {
  it("shows an event with its per-destination deliveries and attempt history", async () => {
    downstream("https://alpha.test/hook", [503, 200]);
    const key = await accept(await zuddlRequest(zuddlBody()));
    await consume(events.accepted);
    await makeDue(key);
    await consume(events.accepted);
    const { event } = (await (await admin("GET", `/admin/events/${key}`)).json()) as { event: { deliveries: Record<string, unknown>[] } };
    expect(event.deliveries).toEqual([
      expect.objectContaining({
        destination: "alpha", status: "delivered", attempts: 2, lastStatusCode: 200,
        history: [expect.objectContaining({ attempt: 1, statusCode: 503, error: "HTTP 503" }), expect.objectContaining({ attempt: 2, statusCode: 200 })],
      }),
    ]);
  });

  it("shows an event's deliveries as pending from the moment its round routes them, while the round still runs", async () => {
    const alpha = heldDownstream("https://alpha.test/hook", 200);
    downstream("https://beta.test/hook");
    const key = await accept(await seismicRequest(seismicBody()));
    const round = consume(events.accepted);
    await alpha.waiting;
    const during = (await (await admin("GET", `/admin/events/${key}`)).json()) as { event: { deliveries: { destination: string; status: string }[] } };
    expect(during.event.deliveries).toEqual(
      expect.arrayContaining([expect.objectContaining({ destination: "alpha", status: "pending", attempts: 0 })]),
    );
    alpha.finish();
    await round;
    expect((await deliveries(key)).alpha).toMatchObject({ status: "delivered", attempts: 1 });
  });

  it("if the routed write fails, the round's record writes the deliveries left to do, so the event is never called delivered early", async () => {
    downstream("https://alpha.test/hook");
    downstream("https://beta.test/hook");
    const key = await accept(await seismicRequest(seismicBody()));
    // D1 refuses the batch that writes the routed deliveries (the first that holds that statement, and only that one).
    let refused = false;
    const refusing = faultyD1(env.DB, (sql) => {
      if (!refused && sql.includes("(event_key, destination) DO NOTHING")) {
        refused = true;
        throw new Error("D1_ERROR: refused");
      }
    });
    // One forward this batch: the other destination waits for the message's next delivery.
    const result = await consume(events.accepted, { DB: refusing, MAX_FORWARDS_PER_BATCH: "1" });
    expect(result.retried).toHaveLength(1);
    const rows = await deliveries(key);
    const statuses = Object.values(rows).map((r) => r.status);
    expect(statuses.filter((status) => status === "delivered")).toHaveLength(1);
    expect(statuses.length).toBeGreaterThan(1);
    expect(statuses.filter((status) => status !== "delivered").every((status) => status === "pending")).toBe(true);
    const event = await env.DB.prepare("SELECT status FROM events WHERE key = ?").bind(key).first<{ status: string }>();
    expect(event!.status).toBe("failed");
  });

  it("replays one event to all its destinations or to one, dead or delivered", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const beta = downstream("https://beta.test/hook");
    const key = await accept(await seismicRequest(seismicBody({ version: "LiveDocCompletedV2" })));
    await consume(events.accepted);
    expect([alpha.length, beta.length]).toEqual([1, 1]);

    const all = await admin("POST", `/admin/events/${key}/replay`);
    expect(all.status).toBe(202);
    expect(await all.json()).toEqual({ id: key, replayed: ["alpha", "beta"], roundInFlight: false });
    await consume(events.accepted.slice(-1));
    expect([alpha.length, beta.length]).toEqual([2, 2]);

    const one = await admin("POST", `/admin/events/${key}/replay?destination=beta`);
    expect(await one.json()).toEqual({ id: key, replayed: ["beta"], roundInFlight: false });
    expect(events.accepted.at(-1)).toEqual({ eventKey: key });
    await consume(events.accepted.slice(-1));
    expect([alpha.length, beta.length]).toEqual([2, 3]);
    expect(alpha[1]!.headers.get("webhook-id")).toBe(key);

    expect((await admin("POST", `/admin/events/${key}/replay?destination=nope`)).status).toBe(404);
    expect((await admin("POST", `/admin/events/evt_missing/replay`)).status).toBe(404);
  });

  it("lists deliveries by status and replays dead ones in bulk", async () => {
    const failing = [{ name: `flaky-${crypto.randomUUID()}`, url: "https://flaky.test/hook" }];
    downstream("https://flaky.test/hook", [500]);
    const keys: string[] = [];
    for (let i = 0; i < 2; i++) keys.push(await accept(await zuddlRequest(zuddlBody())));
    for (let round = 0; round < 3; round++) {
      for (const key of keys) await makeDue(key);
      await consume(events.accepted, { DESTINATIONS: failing, MAX_DELIVERY_ATTEMPTS: "2" });
    }
    const listed = (await (await admin("GET", `/admin/deliveries?status=dead&destination=${failing[0]!.name}`, { DESTINATIONS: failing })).json()) as {
      deliveries: { eventId: string; status: string }[];
    };
    expect(listed.deliveries.map((d) => d.eventId).sort()).toEqual([...keys].sort());

    const recovered = downstream("https://flaky.test/hook", [200]);
    const sentBefore = events.accepted.length;
    const bulk = await admin("POST", `/admin/replay?status=dead&destination=${failing[0]!.name}`, { DESTINATIONS: failing });
    expect(await bulk.json()).toEqual({ replayed: 2, events: 2, more: false, nextCursor: null });
    const replays = events.accepted.slice(sentBefore);
    expect(replays).toHaveLength(2);
    await consume(replays, { DESTINATIONS: failing });
    expect(recovered).toHaveLength(2);
    for (const key of keys) expect((await deliveries(key))[failing[0]!.name]).toMatchObject({ status: "delivered" });
    expect((await admin("GET", "/admin/deliveries?status=bogus")).status).toBe(400);
  });

  it("counts events and deliveries by provider, type and status", async () => {
    downstream("https://alpha.test/hook");
    downstream("https://beta.test/hook");
    const since = Date.now() - 1;
    const type = `StatsTypeV${Date.now()}`;
    await accept(await seismicRequest(seismicBody({ version: type })));
    await accept(await seismicRequest(seismicBody({ version: type })));
    await consume(events.accepted);
    const stats = (await (await admin("GET", `/admin/stats?since=${since}`)).json()) as {
      events: { provider: string; type: string; status: string; count: number }[];
    };
    expect(stats.events).toContainEqual({ provider: "seismic", type, status: "delivered", count: 2 });
  });
});

describe("retention", () => {
  it("purges old finished events, deliveries and quarantine, never one still pending", async () => {
    downstream("https://alpha.test/hook", [200]);
    const oldDone = await accept(await zuddlRequest(zuddlBody()));
    const oldPending = await accept(await zuddlRequest(zuddlBody()));
    const recent = await accept(await zuddlRequest(zuddlBody()));
    await consume([events.accepted[0]!, events.accepted[2]!]);
    await consume([events.accepted[1]!], { DESTINATIONS: [] });
    await env.DB.prepare("INSERT INTO deliveries (event_key, destination, status, attempts, updated_at) VALUES (?, 'alpha', 'failed', 1, 0)").bind(oldPending).run();
    await env.DB.prepare("UPDATE events SET status = 'failed' WHERE key = ?").bind(oldPending).run();
    const longAgo = Date.now() - 40 * 86_400_000;
    await env.DB.prepare("UPDATE events SET received_at = ? WHERE key IN (?, ?)").bind(longAgo, oldDone, oldPending).run();
    await env.DB.prepare("INSERT INTO quarantine (provider, reason, error, content_type, verified_with, body, body_sha256, first_received_at, last_received_at) VALUES ('zuddl', 'x', 'x', 'application/json', 'current', x'00', ?, ?, ?)")
      .bind(crypto.randomUUID(), longAgo, longAgo).run();

    await runCron(new Date());

    const remaining = async (key: string) => countRows("SELECT count(*) AS n FROM events WHERE key = ?", key);
    expect(await remaining(oldDone)).toBe(0);
    expect(await countRows("SELECT count(*) AS n FROM deliveries WHERE event_key = ?", oldDone)).toBe(0);
    expect(await countRows("SELECT count(*) AS n FROM delivery_attempts WHERE event_key = ?", oldDone)).toBe(0);
    expect(await remaining(oldPending)).toBe(1);
    expect(await remaining(recent)).toBe(1);
    expect(await countRows("SELECT count(*) AS n FROM quarantine WHERE last_received_at < ?", Date.now() - 30 * 86_400_000)).toBe(0);
  });
});
