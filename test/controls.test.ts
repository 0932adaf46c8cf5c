/**
 * Steering delivery while it runs, through the Worker's real fetch, queue and scheduled handlers
 * with real D1 and the rate limiter's real Durable Object: pause and resume, the circuit breaker
 * (open, probe, close), the 410 rule and the per-destination rate limit. Downstreams are msw mocks.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { QueuedEvent } from "../src/env";
import { accept, admin, bindings, consume, deliveries, downstream, heldDownstream, makeDue, runCron, useDeliveryHarness } from "./delivery-harness";
import { acceptMany, destinationState as stateOf, switchable, take, uniqueName, type DestinationState } from "./controls-harness";
import { sleep } from "./faults";
import { countRows, seismicBody, seismicRequest } from "./helpers";

useDeliveryHarness();

describe("pause and resume", () => {
  it("holds a paused destination's deliveries (no attempt, message acked), leaves them to a week of crons, and delivers them oldest first on resume", async () => {
    const paused = uniqueName("paused");
    const other = uniqueName("other");
    bindings.DESTINATIONS = [{ name: paused, url: `https://${paused}.test/hook` }, { name: other, url: `https://${other}.test/hook` }];
    const toPaused = downstream(`https://${paused}.test/hook`);
    const toOther = downstream(`https://${other}.test/hook`);

    const pausedAnswer = (await (await admin("POST", `/admin/destinations/${paused}/pause`)).json()) as { destination: DestinationState };
    expect(pausedAnswer.destination).toMatchObject({ name: paused, state: "paused", pausedReason: "paused by an operator" });

    const keys = await acceptMany(3);
    const messages = take();
    const result = await consume(messages);
    // Nothing is left for the messages to wait for: acked, no queue retry used.
    expect(result.acked).toEqual(["msg-0", "msg-1", "msg-2"]);
    expect(result.retried).toEqual([]);
    expect(toPaused).toHaveLength(0);
    expect(toOther).toHaveLength(3);
    for (const key of keys) {
      expect((await deliveries(key))[paused]).toMatchObject({ status: "held", attempts: 0 });
      expect(await countRows("SELECT count(*) AS n FROM events WHERE key = ? AND status = 'held'", key)).toBe(1);
    }
    expect(await stateOf(paused)).toMatchObject({ state: "paused", held: 3 });

    // A redelivered message changes nothing.
    expect((await consume(messages.slice(0, 1))).acked).toEqual(["msg-0"]);
    expect(toPaused).toHaveLength(0);

    // A week of sweeps and purges (a one-day retention) leaves held work alone.
    for (const days of [1, 3, 7]) await runCron(new Date(Date.now() + days * 86_400_000), { RETENTION_DAYS: "1" });
    expect(take()).toEqual([]);
    for (const key of keys) expect((await deliveries(key))[paused]).toMatchObject({ status: "held", attempts: 0 });

    // A replay to a paused destination is held too.
    expect((await admin("POST", `/admin/events/${keys[0]}/replay?destination=${paused}`)).status).toBe(202);
    expect((await consume(take(), {}, { ids: ["replay-0"] })).acked).toEqual(["replay-0"]);
    expect(toPaused).toHaveLength(0);
    expect((await deliveries(keys[0]!))[paused]).toMatchObject({ status: "held", attempts: 0, pinned: 1 });

    const resumed = (await (await admin("POST", `/admin/destinations/${paused}/resume`)).json()) as { destination: DestinationState; released: number };
    expect(resumed).toMatchObject({ released: 3, destination: { state: "active", held: 0 } });
    const released = take();
    expect(released).toEqual(keys.map((eventKey) => ({ eventKey })));
    expect((await consume(released, {}, { ids: ["r-0", "r-1", "r-2"] })).acked).toEqual(["r-0", "r-1", "r-2"]);
    expect(toPaused.map((r) => r.headers.get("webhook-id")).sort()).toEqual([...keys].sort());
    for (const key of keys) expect((await deliveries(key))[paused]).toMatchObject({ status: "delivered", attempts: 1 });
    // The original messages, redelivered, send nothing again.
    await consume(messages);
    expect(toPaused).toHaveLength(3);
    expect(toOther).toHaveLength(3);
  });

  it("cancels what a destination held once it is removed from DESTINATIONS", async () => {
    const gone = uniqueName("removed");
    const stays = uniqueName("stays");
    bindings.DESTINATIONS = [{ name: gone, url: `https://${gone}.test/hook` }, { name: stays, url: `https://${stays}.test/hook` }];
    downstream(`https://${stays}.test/hook`);
    await admin("POST", `/admin/destinations/${gone}/pause`);
    const [key] = await acceptMany(1);
    const [message] = take();
    await consume([message!]);
    expect((await deliveries(key!))[gone]).toMatchObject({ status: "held" });

    bindings.DESTINATIONS = [{ name: stays, url: `https://${stays}.test/hook` }];
    // The cron cancels it and forgets the removed destination's state; its sweep then settles the event.
    await runCron(new Date(Date.now() + 3_600_000), { RECONCILE_AFTER_SECONDS: "60" });
    expect((await deliveries(key!))[gone]).toMatchObject({ status: "cancelled" });
    expect(await countRows("SELECT count(*) AS n FROM destination_state WHERE destination = ?", gone)).toBe(0);
    const swept = take().filter((m) => m.eventKey === key);
    expect(swept).toEqual([{ eventKey: key }]);
    await consume(swept, {}, { ids: ["sweep-0"] });
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key = ? AND status = 'delivered'", key)).toBe(1);
  });

  it("a resume while a round is in flight: the round's result for another destination stands, and nothing is sent twice", async () => {
    const paused = uniqueName("paused");
    const busy = uniqueName("busy");
    bindings.DESTINATIONS = [{ name: paused, url: `https://${paused}.test/hook` }, { name: busy, url: `https://${busy}.test/hook` }];
    const toPaused = downstream(`https://${paused}.test/hook`);
    const toBusy = heldDownstream(`https://${busy}.test/hook`, 200);
    await admin("POST", `/admin/destinations/${paused}/pause`);
    const [key] = await acceptMany(1);
    const round = consume(take());
    await toBusy.waiting;
    // The round holds `paused` and is forwarding to `busy` when the operator resumes.
    const resumed = (await (await admin("POST", `/admin/destinations/${paused}/resume`)).json()) as { released: number };
    toBusy.finish();
    await round;
    expect((await deliveries(key!))[busy]).toMatchObject({ status: "delivered", attempts: 1 });
    // The released message delivers `paused` (held by the round or released: either way once) and not `busy` again.
    await consume(take(), {}, { ids: ["after"] });
    if (resumed.released === 0) await runCron(new Date(Date.now() + 60_000));
    await consume(take(), {}, { ids: ["after-2"] });
    expect(toBusy.calls).toBe(1);
    expect(toPaused).toHaveLength(1);
    expect((await deliveries(key!))[paused]).toMatchObject({ status: "delivered" });
  });

  it("releases a large backlog a chunk at a time through release messages", async () => {
    const name = uniqueName("backlog");
    bindings.DESTINATIONS = [{ name, url: `https://${name}.test/hook` }];
    await admin("POST", `/admin/destinations/${name}/pause`);
    // 401 held deliveries, written directly: one more than a release chunk.
    const now = Date.now();
    await env.DB.batch(
      Array.from({ length: 401 }, (_, i) => [
        env.DB.prepare(
          `INSERT INTO events (key, provider, event_id, type, known_type, received_at, verified_with, content_type, body, status)
           VALUES (?1, 'seismic', ?1, 'ContentManagerCreateFileV1', 1, ?2, 'current', 'application/json', '{}', 'held')`,
        ).bind(`evt_${name}_${String(i).padStart(3, "0")}`, now + i),
        env.DB.prepare(`INSERT INTO deliveries (event_key, destination, status, updated_at) VALUES (?1, ?2, 'held', ?3)`).bind(`evt_${name}_${String(i).padStart(3, "0")}`, name, now),
      ]).flat(),
    );
    const resumed = (await (await admin("POST", `/admin/destinations/${name}/resume`)).json()) as { released: number };
    expect(resumed.released).toBe(400);
    const first = take();
    expect(first).toHaveLength(401);
    expect(first.slice(0, 3)).toEqual([0, 1, 2].map((i) => ({ eventKey: `evt_${name}_00${i}` })));
    expect(first.at(-1)).toEqual({ release: name });

    await consume([first.at(-1)!], {}, { ids: ["release-1"] });
    expect(take()).toEqual([{ eventKey: `evt_${name}_400` }]);
    expect(await countRows("SELECT count(*) AS n FROM deliveries WHERE destination = ? AND status = 'held'", name)).toBe(0);
    expect(await countRows("SELECT count(*) AS n FROM events WHERE key LIKE ? AND status = 'queued'", `evt_${name}_%`)).toBe(401);
  });
});

describe("circuit breaker", () => {
  it("opens after circuit_failures failures in a row, holds new work, probes, and closes on a successful probe, releasing what it held", async () => {
    const name = uniqueName("flaky");
    bindings.DESTINATIONS = [{ name, url: `https://${name}.test/hook`, circuit_failures: 3, circuit_probe_seconds: 30 }];
    bindings.MAX_DELIVERY_ATTEMPTS = "3";
    const target = switchable(`https://${name}.test/hook`, 500);

    const keys = await acceptMany(3);
    const originals = take();
    const first = await consume(originals);
    expect(first.retried.map((r) => r.msgId)).toEqual(["msg-0", "msg-1", "msg-2"]);
    expect(target.received).toHaveLength(3);
    const opened = await stateOf(name);
    expect(opened).toMatchObject({ state: "open", consecutiveFailures: 3 });
    expect(Date.parse(opened.nextProbeAt!) - Date.parse(opened.circuitOpenedAt!)).toBeGreaterThanOrEqual(29_000);
    // The first probe is on its way, for an unfinished delivery, under the circuit's current probe id.
    let probe = take();
    expect(probe).toEqual([{ eventKey: expect.any(String), probe: name, probeId: expect.stringMatching(/^[0-9a-f]{16}$/) }]);
    expect(keys).toContain(probe[0]!.eventKey);

    // New work and the failed messages' retries are held, not attempted: no attempt is used up.
    const [fourth] = await acceptMany(1);
    for (const key of keys) await makeDue(key);
    const held = await consume([...originals, ...take()]);
    expect(held.acked).toEqual(["msg-0", "msg-1", "msg-2", "msg-3"]);
    expect(target.received).toHaveLength(3);
    for (const key of [...keys, fourth!]) expect((await deliveries(key))[name]).toMatchObject({ status: "held" });

    // Failed probes: one forward each, the delivery stays held with its attempts, and the next
    // probe goes to the next held delivery (a failed one moves to the back), so one event the
    // receiver always refuses cannot stall the rest.
    const probed: string[] = [];
    for (let i = 1; i <= 4; i++) {
      probed.push(probe[0]!.eventKey);
      await consume(probe, {}, { ids: [`probe-${i}`] });
      const next = take();
      expect(next).toHaveLength(1);
      expect(next[0]!.probeId).not.toBe(probe[0]!.probeId);
      probe = next;
    }
    expect(target.received).toHaveLength(7);
    expect(new Set(probed).size).toBe(4);
    // Many failed probes never make a delivery dead (MAX_DELIVERY_ATTEMPTS is 3 here), nor use attempts.
    for (const key of [...keys, fourth!]) expect((await deliveries(key))[name]).toMatchObject({ status: "held", attempts: key === fourth ? 0 : 1 });
    expect(await stateOf(name)).toMatchObject({ state: "open", held: 4 });

    // An earlier probe message that comes back (a retry, a duplicate) is an ordinary message: it holds, and adds no probe.
    const stale = { ...probe[0]!, probeId: "0000000000000000" };
    expect((await consume([stale], {}, { ids: ["stale"] })).acked).toEqual(["stale"]);
    expect(target.received).toHaveLength(7);
    expect(take()).toEqual([]);

    // The destination recovers: the probe succeeds, the circuit closes and releases what it held, oldest first.
    target.status = 200;
    const closer = probe[0]!.eventKey;
    await consume(probe, {}, { ids: ["probe-ok"] });
    expect((await deliveries(closer))[name]).toMatchObject({ status: "delivered" });
    expect(await stateOf(name)).toMatchObject({ state: "active", consecutiveFailures: 0 });
    const release = take();
    expect(release).toEqual([{ release: name }]);
    await consume(release as unknown as QueuedEvent[], {}, { ids: ["release"] });
    const released = take();
    expect(released).toEqual([...keys, fourth!].filter((key) => key !== closer).map((eventKey) => ({ eventKey })));
    await consume(released, {}, { ids: ["r-1", "r-2", "r-3"] });
    for (const key of [...keys, fourth!]) expect((await deliveries(key))[name]).toMatchObject({ status: "delivered" });
    // Each event reached the receiver once with a 2xx: nothing repeated.
    for (const key of [...keys, fourth!]) {
      expect(await countRows("SELECT count(*) AS n FROM delivery_attempts WHERE event_key = ? AND destination = ? AND status_code = 200", key, name)).toBe(1);
    }
    expect(await countRows("SELECT count(*) AS n FROM deliveries WHERE destination = ? AND status = 'dead'", name)).toBe(0);
  });

  it("a probe a whole interval overdue is sent again by the cron under the same id: the late one still probes, and only one of them does", async () => {
    const name = uniqueName("lost");
    bindings.DESTINATIONS = [{ name, url: `https://${name}.test/hook`, circuit_failures: 1, circuit_probe_seconds: 60 }];
    const target = switchable(`https://${name}.test/hook`, 503);
    const [key] = await acceptMany(1);
    await consume(take());
    const [late] = take();
    expect(late).toMatchObject({ eventKey: key, probe: name });
    await runCron(new Date(Date.now() + 30_000));
    expect(take()).toEqual([]);
    await runCron(new Date(Date.now() + 125_000));
    const [again] = take();
    expect(again).toEqual(late);
    // The late message arrives first and probes; its hand-off makes the copy an ordinary message.
    await consume([late!], {}, { ids: ["late"] });
    expect(target.received).toHaveLength(2);
    const [next] = take();
    expect(next!.probeId).not.toBe(late!.probeId);
    await consume([again!], {}, { ids: ["copy"] });
    expect(target.received).toHaveLength(2);
    expect(take()).toEqual([]);
  });

  it("a probe whose transform skips its event tries the next held delivery at once, not a probe interval later", async () => {
    const name = uniqueName("skipping");
    bindings.DESTINATIONS = [{ name, url: `https://${name}.test/hook`, circuit_failures: 1, circuit_probe_seconds: 30, transform: "test-skip-marked" }];
    const target = switchable(`https://${name}.test/hook`, 503);
    const [failing] = await acceptMany(1);
    await consume(take());
    let [probe] = take();
    expect(probe).toMatchObject({ eventKey: failing, probe: name });
    // Two events the transform skips arrive while the circuit is open: held, the transform not run yet.
    const skipped = [];
    for (let i = 0; i < 2; i++) {
      skipped.push(await accept(await seismicRequest(seismicBody({ data: { skip: true } }))));
      await sleep(3);
    }
    await consume(take(), {}, { ids: ["s-1", "s-2"] });
    for (const key of skipped) expect((await deliveries(key))[name]).toMatchObject({ status: "held" });

    // The probe through the failing event fails: the next probe waits the interval.
    await consume([probe!], {}, { ids: ["probe-1"] });
    [probe] = take();
    expect(skipped).toContain(probe!.eventKey);
    let state = await stateOf(name);
    expect(Date.parse(state.nextProbeAt!) - Date.now()).toBeGreaterThan(25_000);
    // Each probe the transform skips closes that delivery and sends the next probe at once.
    for (const id of ["probe-2", "probe-3"]) {
      const before = Date.now();
      await consume([probe!], {}, { ids: [id] });
      expect((await deliveries(probe!.eventKey))[name]).toMatchObject({ status: "skipped", last_error: "skipped: transform" });
      state = await stateOf(name);
      expect(state.state).toBe("open");
      expect(Date.parse(state.nextProbeAt!) - before).toBeLessThan(5_000);
      [probe] = take();
    }
    expect(probe).toMatchObject({ eventKey: failing, probe: name });
    expect(target.received).toHaveLength(2);
  });

  it("resuming a destination whose circuit opened while it was paused starts a probe", async () => {
    const name = uniqueName("paused-open");
    bindings.DESTINATIONS = [{ name, url: `https://${name}.test/hook`, circuit_failures: 1, circuit_probe_seconds: 5 }];
    const target = switchable(`https://${name}.test/hook`, 500);
    const [key] = await acceptMany(1);
    await consume(take());
    expect(take()).toHaveLength(1); // the first probe
    await admin("POST", `/admin/destinations/${name}/pause`);
    const resumed = (await (await admin("POST", `/admin/destinations/${name}/resume`)).json()) as { destination: DestinationState };
    expect(resumed.destination.state).toBe("open");
    const [probe] = take();
    expect(probe).toMatchObject({ eventKey: key, probe: name });
    target.status = 200;
    await consume([probe!], {}, { ids: ["probe"] });
    expect(await stateOf(name)).toMatchObject({ state: "active" });
  });

  it("pauses a destination that answers 410 to circuit_failures attempts in a row", async () => {
    const name = uniqueName("gone");
    bindings.DESTINATIONS = [{ name, url: `https://${name}.test/hook`, circuit_failures: 2 }];
    const target = switchable(`https://${name}.test/hook`, 410);
    const keys = await acceptMany(2);
    await consume(take());
    for (const key of keys) expect((await deliveries(key))[name]).toMatchObject({ status: "gone" });
    const state = await stateOf(name);
    expect(state).toMatchObject({ state: "paused" });
    expect(state.pausedReason).toMatch(/410 Gone/);
    const [third] = await acceptMany(1);
    expect((await consume(take(), {}, { ids: ["third"] })).acked).toEqual(["third"]);
    expect(target.received).toHaveLength(2);
    expect((await deliveries(third!))[name]).toMatchObject({ status: "held", attempts: 0 });
  });
});

describe("rate limit", () => {
  it("spaces forwards 1/rate apart, defers what does not fit without using an attempt, and holds across concurrent invocations", async () => {
    const name = uniqueName("limited");
    bindings.DESTINATIONS = [{ name, url: `https://${name}.test/hook`, rate_per_second: 10 }];
    const target = switchable(`https://${name}.test/hook`, 200);
    await acceptMany(25);
    const batch = take();
    const result = await consume(batch);
    // 2 s of slots at 10/s: 21 forwards now, the other 4 deferred (no attempt: pending, due when their message is back).
    expect(target.received).toHaveLength(21);
    expect(result.retried).toHaveLength(4);
    const deferredKeys = result.retried.map((r) => batch[Number(r.msgId.slice(4))]!.eventKey);
    for (const key of deferredKeys) expect((await deliveries(key))[name]).toMatchObject({ status: "pending", attempts: 0, next_attempt_at: expect.any(Number) });

    // Two invocations at once draw from the same schedule.
    await acceptMany(10);
    const more = take();
    await Promise.all([consume(more.slice(0, 5), {}, { ids: ["a0", "a1", "a2", "a3", "a4"] }), consume(more.slice(5), {}, { ids: ["b0", "b1", "b2", "b3", "b4"] })]);
    expect(target.received).toHaveLength(31);
    const at = target.received.map((r) => r.at).sort((a, b) => a - b);
    // Any 11 forwards in a row span at least ~1 s (10 intervals of 100 ms, less timer jitter).
    for (let i = 0; i + 10 < at.length; i++) expect(at[i + 10]! - at[i]!).toBeGreaterThanOrEqual(900);

    const metrics = await (await admin("GET", "/admin/metrics")).text();
    expect(metrics).toContain(`edgehook_deferred_total{destination="${name}"} 4`);

    // The deferred come back (late: their booked slots have passed): booked anew, spaced, never a burst.
    const deferred = result.retried.map((r) => batch[Number(r.msgId.slice(4))]!);
    await consume(deferred, {}, { ids: result.retried.map((r) => r.msgId), attempts: 2 });
    expect(target.received).toHaveLength(35);
    const all = target.received.map((r) => r.at).sort((a, b) => a - b);
    for (let i = 0; i + 10 < all.length; i++) expect(all[i + 10]! - all[i]!).toBeGreaterThanOrEqual(900);
    for (const key of deferredKeys) expect((await deliveries(key))[name]).toMatchObject({ status: "delivered", attempts: 1 });
  });
});

describe("configuration", () => {
  it("refuses a rate limit without the Durable Object binding and out-of-range controls, naming field and rule", async () => {
    const response = await admin("GET", "/admin/destinations", {
      DESTINATIONS: [{ name: "a", url: "https://a.test/", rate_per_second: 5 }, { name: "b", url: "https://b.test/", circuit_failures: 0, circuit_probe_seconds: 99_999 }],
      RATE_LIMITER: undefined,
    });
    const body = (await response.json()) as { valid: boolean; errors: string[] };
    expect(body.valid).toBe(false);
    expect(body.errors).toEqual([
      "DESTINATIONS[0] (a).rate_per_second: needs the RATE_LIMITER Durable Object binding (wrangler.toml)",
      "DESTINATIONS[1] (b).circuit_failures: must be an integer from 1 to 1000",
      "DESTINATIONS[1] (b).circuit_probe_seconds: must be an integer from 1 to 43200",
    ]);
  });

  it("shows each destination's state in /admin/metrics", async () => {
    const name = uniqueName("watched");
    bindings.DESTINATIONS = [{ name, url: `https://${name}.test/hook` }];
    await admin("POST", `/admin/destinations/${name}/pause`);
    await acceptMany(2);
    await consume(take());
    const metrics = await (await admin("GET", "/admin/metrics")).text();
    expect(metrics).toContain(`edgehook_destination_state{destination="${name}",state="paused"} 1`);
    expect(metrics).toContain(`edgehook_destination_state{destination="${name}",state="active"} 0`);
    expect(metrics).toContain(`edgehook_destination_held{destination="${name}"} 2`);
  });
});
