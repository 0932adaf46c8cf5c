/**
 * The controls' state machine where its transitions meet: a probe round that throws, an event
 * that gives up while a delivery is held, a release that fails half-way or races a round, rate
 * deferrals and the sweep, circuits closed by another invocation, retention racing a replay,
 * resume and the cron's probes. Through the Worker's real fetch, queue and scheduled handlers.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { accept, admin, bindings, consume, deliveries, downstream, events, heldDownstream, makeDue, runCron, useDeliveryHarness } from "./delivery-harness";
import { acceptMany, destinationState, switchable, take, uniqueName } from "./controls-harness";
import { breakingEventRows, faultyD1, faultyQueue, recordingQueue } from "./faults";
import { countRows, zuddlBody, zuddlRequest } from "./helpers";

useDeliveryHarness();

const hook = (name: string) => `https://${name}.test/hook`;
const eventStatus = async (key: string) => (await env.DB.prepare("SELECT status FROM events WHERE key = ?").bind(key).first<{ status: string }>())?.status;

describe("probes", () => {
  it("a probe whose round throws moves its delivery to the back of the held order and hands the probe on", async () => {
    const name = uniqueName("throwing");
    bindings.DESTINATIONS = [{ name, url: hook(name), circuit_failures: 1, circuit_probe_seconds: 30 }];
    const target = switchable(hook(name), 500);
    const [first] = await acceptMany(1);
    await consume(take());
    const [probe] = take();
    expect(probe).toMatchObject({ eventKey: first, probe: name });
    const [second] = await acceptMany(1);
    const logged = vi.spyOn(console, "log");
    const batchLines = () => logged.mock.calls.map(([line]) => JSON.parse(String(line)) as { outcome?: string; held?: Record<string, number> }).filter((l) => l.outcome === "batch");
    await consume(take(), {}, { ids: ["second"] });
    expect((await deliveries(second!))[name]).toMatchObject({ status: "held" });
    expect(batchLines().map((line) => line.held)).toEqual([{ [name]: 1 }]);
    logged.mockClear();

    // The probe's round throws before it forwards anything. Its delivery was held already: the
    // batch's line does not count it as newly held (the round's error has a line of its own).
    await consume([probe!], { DB: breakingEventRows(env.DB, (key) => key === first) }, { ids: ["probe-1"] });
    expect(batchLines().map((line) => line.held)).toEqual([undefined]);
    logged.mockRestore();
    expect(target.received).toHaveLength(1);
    const [next] = take();
    expect(next).toMatchObject({ eventKey: second, probe: name });
    expect(next!.probeId).not.toBe(probe!.probeId);
    const rows = [await deliveries(first!), await deliveries(second!)].map((d) => d[name]!);
    expect(rows[0]).toMatchObject({ status: "held" });
    expect(rows[0]!.held_order as number).toBeGreaterThan(rows[1]!.held_order as number);

    // The next probe succeeds: the circuit closes and releases the first event too.
    target.status = 200;
    await consume([next!], {}, { ids: ["probe-2"] });
    await consume(take(), {}, { ids: ["release"] });
    await consume(take(), {}, { ids: ["released"] });
    for (const key of [first!, second!]) expect((await deliveries(key))[name]).toMatchObject({ status: "delivered" });
  });

  it("a probe whose event no longer routes to the destination hands the probe on at once", async () => {
    const name = uniqueName("rerouted");
    bindings.DESTINATIONS = [{ name, url: hook(name), providers: ["zuddl", "seismic"], circuit_failures: 1, circuit_probe_seconds: 30 }];
    const target = switchable(hook(name), 500);
    const first = await accept(await zuddlRequest(zuddlBody()));
    await consume(take());
    const [probe] = take();
    expect(probe).toMatchObject({ eventKey: first, probe: name });
    const [second] = await acceptMany(1);
    await consume(take(), {}, { ids: ["second"] });

    bindings.DESTINATIONS = [{ name, url: hook(name), providers: ["seismic"], circuit_failures: 1, circuit_probe_seconds: 30 }];
    const before = Date.now();
    await consume([probe!], {}, { ids: ["probe-1"] });
    expect(Date.parse((await destinationState(name)).nextProbeAt!) - before).toBeLessThan(5_000);
    expect((await deliveries(first))[name]).toMatchObject({ status: "cancelled" });
    const [next] = take();
    expect(next).toMatchObject({ eventKey: second, probe: name });
    expect(target.received).toHaveLength(1);
  });

  it("resume on an active destination with an open circuit leaves its probe be, and a probe it cannot send is the cron's, not a 500", async () => {
    const name = uniqueName("open");
    bindings.DESTINATIONS = [{ name, url: hook(name), circuit_failures: 1, circuit_probe_seconds: 30 }];
    const target = switchable(hook(name), 500);
    const [key] = await acceptMany(1);
    await consume(take());
    expect(take()).toMatchObject([{ eventKey: key, probe: name }]);
    expect((await admin("POST", `/admin/destinations/${name}/resume`)).status).toBe(200);
    expect(take()).toEqual([]);

    // Paused and resumed while the queue refuses sends: resumed all the same, and the cron sends the probe.
    await admin("POST", `/admin/destinations/${name}/pause`);
    const down = faultyQueue(events.queue, () => {
      throw new Error("queue unavailable");
    });
    expect((await admin("POST", `/admin/destinations/${name}/resume`, { EVENTS_QUEUE: down.queue })).status).toBe(200);
    await runCron(new Date(Date.now() + 120_000));
    const [again] = take();
    expect(again).toMatchObject({ eventKey: key, probe: name });
    target.status = 200;
    await consume([again!], {}, { ids: ["probe"] });
    expect((await deliveries(key!))[name]).toMatchObject({ status: "delivered" });
  });

  it("a late success from another invocation that closes a just-opened circuit releases what it held and alerts", async () => {
    const name = uniqueName("late-success");
    const alerts = recordingQueue();
    Object.assign(bindings, { ALERT_URL: "https://alerts.test/hook", ALERTS_QUEUE: alerts.queue });
    bindings.DESTINATIONS = [{ name, url: hook(name), circuit_failures: 1, circuit_probe_seconds: 30 }];
    const target = heldDownstream(hook(name), 200, 500);
    const [slow] = await acceptMany(1);
    const inFlight = consume(take(), {}, { ids: ["slow"] });
    await target.waiting;
    // Another invocation's forward fails: the circuit opens, and a third event is held.
    await acceptMany(1);
    await consume(take(), {}, { ids: ["failing"] });
    expect(take()).toMatchObject([{ probe: name }]);
    const [held] = await acceptMany(1);
    await consume(take(), {}, { ids: ["held"] });
    expect((await deliveries(held!))[name]).toMatchObject({ status: "held" });

    target.finish();
    await inFlight;
    expect((await deliveries(slow!))[name]).toMatchObject({ status: "delivered" });
    expect(take()).toEqual([{ release: name }]);
    expect(await countRows("SELECT pending AS n FROM alerts WHERE kind = 'circuit_closed' AND subject = ?", name)).toBe(1);
  });
});

describe("held work", () => {
  it("an event that gives up while a delivery is held stays held: never purged, and once released the sweep finds it", async () => {
    const paused = uniqueName("paused");
    const failing = uniqueName("failing");
    bindings.DESTINATIONS = [{ name: paused, url: hook(paused) }, { name: failing, url: hook(failing) }];
    const toPaused = switchable(hook(paused), 200);
    switchable(hook(failing), 500);
    await admin("POST", `/admin/destinations/${paused}/pause`);
    const [key] = await acceptMany(1);
    await consume(take());
    await makeDue(key!);
    const broken = { DB: breakingEventRows(env.DB, (k) => k === key) };
    for (let attempts = 1; attempts <= 10; attempts++) await consume([{ eventKey: key! }], broken, { ids: ["again"], attempts });
    expect(await deliveries(key!)).toMatchObject({ [failing]: { status: "dead" }, [paused]: { status: "held" } });
    expect(await eventStatus(key!)).toBe("held");

    // Retention leaves it.
    await runCron(new Date(Date.now() + 2 * 86_400_000), { RETENTION_DAYS: "1" });
    expect((await deliveries(key!))[paused]).toMatchObject({ status: "held" });

    // Resumed while the queue refuses sends: released, not enqueued; the sweep enqueues it.
    const down = faultyQueue(events.queue, () => {
      throw new Error("queue unavailable");
    });
    expect((await admin("POST", `/admin/destinations/${paused}/resume`, { EVENTS_QUEUE: down.queue })).status).toBe(200);
    expect(await eventStatus(key!)).toBe("queued");
    await runCron(new Date(Date.now() + 3_600_000), { RECONCILE_AFTER_SECONDS: "60" });
    const swept = take().filter((m) => m.eventKey === key);
    expect(swept).toEqual([{ eventKey: key }]);
    await consume(swept, {}, { ids: ["swept"] });
    expect((await deliveries(key!))[paused]).toMatchObject({ status: "delivered" });
    expect(toPaused.received).toHaveLength(1);
  });

  it("a release that D1 refuses half-way leaves nothing half-released, and the cron releases it", async () => {
    const name = uniqueName("paused");
    bindings.DESTINATIONS = [{ name, url: hook(name) }];
    const target = switchable(hook(name), 200);
    await admin("POST", `/admin/destinations/${name}/pause`);
    const [key] = await acceptMany(1);
    await consume(take());
    const refusing = faultyD1(env.DB, (sql) => {
      if (sql.includes("UPDATE events")) throw new Error("D1 refused the statement");
    });
    expect((await admin("POST", `/admin/destinations/${name}/resume`, { DB: refusing })).status).toBe(200);
    expect((await deliveries(key!))[name]).toMatchObject({ status: "held" });
    expect(await eventStatus(key!)).toBe("held");

    await runCron(new Date(Date.now() + 60_000));
    const released = take().filter((m) => m.eventKey === key);
    expect(released).toEqual([{ eventKey: key }]);
    await consume(released, {}, { ids: ["released"] });
    expect((await deliveries(key!))[name]).toMatchObject({ status: "delivered" });
    expect(target.received).toHaveLength(1);
  });

  it("a release never takes a held delivery that a round in flight is forwarding: it is sent once", async () => {
    const paused = uniqueName("paused");
    const flaky = uniqueName("flaky");
    bindings.DESTINATIONS = [{ name: paused, url: hook(paused) }, { name: flaky, url: hook(flaky) }];
    const toFlaky = switchable(hook(flaky), 500);
    await admin("POST", `/admin/destinations/${paused}/pause`);
    const [key] = await acceptMany(1);
    await consume(take());
    // Resumed, but its release fails: the destination is active and still holds the delivery.
    const refusing = faultyD1(env.DB, (sql) => {
      if (sql.includes("status = 'pending'")) throw new Error("D1 refused the statement");
    });
    await admin("POST", `/admin/destinations/${paused}/resume`, { DB: refusing });
    expect((await deliveries(key!))[paused]).toMatchObject({ status: "held" });

    // The event's retry forwards the held delivery while the cron's safety net releases it.
    toFlaky.status = 200;
    await makeDue(key!);
    const toPaused = heldDownstream(hook(paused), 200);
    const round = consume([{ eventKey: key! }], {}, { ids: ["retry"] });
    await toPaused.waiting;
    await runCron(new Date(Date.now() + 60_000));
    toPaused.finish();
    await round;
    for (const [i, message] of take().filter((m) => m.eventKey === key).entries()) await consume([message], {}, { ids: [`after-${i}`] });
    expect(toPaused.calls).toBe(1);
    expect(await deliveries(key!)).toMatchObject({ [paused]: { status: "delivered", attempts: 1 }, [flaky]: { status: "delivered" } });
    expect(await eventStatus(key!)).toBe("delivered");
  });
});

describe("retention", () => {
  it("never purges an event replayed between the purge's choice and its delete", async () => {
    bindings.DESTINATIONS = [{ name: "alpha", url: "https://alpha.test/hook" }];
    downstream("https://alpha.test/hook");
    const [key] = await acceptMany(1);
    await consume(take());
    expect(await eventStatus(key!)).toBe("delivered");
    let replayed = false;
    const replayingFirst = faultyD1(env.DB, async (sql) => {
      if (!replayed && sql.startsWith("DELETE FROM delivery_attempts")) {
        replayed = true;
        expect((await admin("POST", `/admin/events/${key}/replay`)).status).toBe(202);
      }
    });
    await runCron(new Date(Date.now() + 2 * 86_400_000), { RETENTION_DAYS: "1", DB: replayingFirst });
    expect(replayed).toBe(true);
    expect(await eventStatus(key!)).toBe("queued");
    expect((await deliveries(key!)).alpha).toMatchObject({ status: "pending" });
  });
});

describe("rate limit", () => {
  it("a deferred forward records when it is due, so the sweep leaves its event alone until then", async () => {
    const name = uniqueName("slow-rate");
    bindings.DESTINATIONS = [{ name, url: hook(name), rate_per_second: 0.01 }];
    const target = switchable(hook(name), 200);
    const keys = await acceptMany(3);
    const result = await consume(take());
    expect(target.received).toHaveLength(1);
    expect(result.retried).toHaveLength(2);
    const deferred = keys.filter((key) => key !== target.received[0]!.eventKey);
    for (const key of deferred) {
      const row = (await deliveries(key))[name]!;
      expect(row).toMatchObject({ status: "pending", attempts: 0 });
      expect(row.next_attempt_at as number).toBeGreaterThan(Date.now() + 60_000);
    }
    await runCron(new Date(Date.now() + 120_000), { RECONCILE_AFTER_SECONDS: "60" });
    expect(take().filter((m) => keys.includes(m.eventKey))).toEqual([]);
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key IN (?, ?) AND progress_at > ?", deferred[0], deferred[1], Date.now() + 60_000)).toBe(0);
  });
});

