/**
 * Lanes, through the Worker's real queue handler and the lane's real Durable Object (its alarm
 * runs in this runtime): a destination whose forward runs past LANE_BUDGET_MS moves to its own
 * lane, queue batches stop waiting on it, and its lane sends every delivery once, records it as
 * a round does, and hands the destination back once it is fast again.
 */
import { env } from "cloudflare:workers";
import { http, HttpResponse } from "msw";
import { describe, expect, it } from "vitest";
import type { Env } from "../src/env";
import { accept, admin, bindings, consume, deliveries, events, runCron, server, useDeliveryHarness } from "./delivery-harness";
import { sleep } from "./faults";
import { seismicBody, seismicRequest } from "./helpers";
import { LANE_EXIT_STREAK } from "../src/deliver/lane";

useDeliveryHarness();

const uniqueName = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
/** Far above a mocked answer's time even on a loaded machine, far below the slow receiver's. */
const BUDGET_MS = 400;

/** A downstream that answers 200 after `delayMs` (changeable), counting each event's forwards by webhook-id. */
function timedDownstream(url: string, delayMs: number) {
  const state = { delayMs, status: 200, received: new Map<string, number>(), inFlight: 0 };
  server.use(
    http.post(url, async ({ request }) => {
      const id = request.headers.get("webhook-id")!;
      state.inFlight++;
      await sleep(state.delayMs);
      state.inFlight--;
      state.received.set(id, (state.received.get(id) ?? 0) + 1);
      return new HttpResponse(null, { status: state.status });
    }),
  );
  return state;
}

async function acceptMany(count: number): Promise<string[]> {
  const keys: string[] = [];
  for (let i = 0; i < count; i++) keys.push(await accept(await seismicRequest(seismicBody())));
  return keys;
}

async function laneOf(name: string): Promise<{ lane: string; laneSince: string | null; laneReason: string | null }> {
  const body = (await (await admin("GET", "/admin/destinations")).json()) as { destinations: { name: string; lane: string; laneSince: string | null; laneReason: string | null }[] };
  return body.destinations.find((d) => d.name === name)!;
}

/** Polls D1 until every key's delivery to `name` has `status` (the lane works in the background). */
async function until(keys: string[], name: string, status: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const rows = await Promise.all(keys.map(async (key) => (await deliveries(key))[name]?.status));
    if (rows.every((s) => s === status)) return;
    if (Date.now() > deadline) throw new Error(`not all ${status} at ${name}: ${rows.join(", ")}`);
    await sleep(50);
  }
}

describe("lanes", () => {
  it("moves a destination past the lane budget to its own lane mid-batch; batches stop waiting on it and its lane sends every event once", { timeout: 30_000 }, async () => {
    const fast = uniqueName("fast");
    const slow = uniqueName("slow");
    bindings.DESTINATIONS = [
      { name: fast, url: `https://${fast}.test/hook` },
      { name: slow, url: `https://${slow}.test/hook` },
    ];
    bindings.LANE_BUDGET_MS = String(BUDGET_MS);
    const fastReceiver = timedDownstream(`https://${fast}.test/hook`, 0);
    const slowReceiver = timedDownstream(`https://${slow}.test/hook`, 1_000);

    // First batch: its forwards to the slow one that started run to the end (never cut off); once one is past
    // the budget, those not started yet go to the lane, and the messages do not wait for them.
    const first = await acceptMany(12);
    const firstResult = await consume(events.accepted.splice(0));
    expect(firstResult.retried).toHaveLength(0);
    expect(fastReceiver.received.size).toBe(12);
    const sentInBatch = slowReceiver.received.size;
    expect(sentInBatch).toBeGreaterThan(0);
    expect(sentInBatch).toBeLessThan(12);
    const state = await laneOf(slow);
    expect(state.lane).toBe("own");
    expect(state.laneReason).toMatch(/over the lane budget of 400 ms/);
    expect((await laneOf(fast)).lane).toBe("consumer");

    // Next batch: nothing is forwarded to the slow one by the consumer; its deliveries are pending in its lane.
    const second = await acceptMany(6);
    const beforeSecond = slowReceiver.received.size;
    const secondResult = await consume(events.accepted.splice(0), {}, { ids: second.map((_, i) => `second-${i}`) });
    expect(secondResult.retried).toHaveLength(0);
    expect(secondResult.acked).toHaveLength(6);
    for (const key of second) expect((await deliveries(key))[fast]).toMatchObject({ status: "delivered" });
    const handed = (await deliveries(second[0]!))[slow]!;
    expect(handed).toMatchObject({ lane: 1 });
    expect(slowReceiver.received.size - beforeSecond).toBeLessThan(6);

    // The lane delivers all of them, each exactly once, recorded as a round records them.
    await until([...first, ...second], slow, "delivered");
    expect(slowReceiver.received.size).toBe(18);
    expect([...slowReceiver.received.values()].every((n) => n === 1)).toBe(true);
    for (const key of [...first, ...second]) {
      const { results } = await env.DB.prepare("SELECT status FROM events WHERE key = ?").bind(key).all<{ status: string }>();
      expect(results[0]!.status).toBe("delivered");
      const attempts = await env.DB.prepare("SELECT count(*) AS n FROM delivery_attempts WHERE event_key = ? AND destination = ?").bind(key, slow).first<{ n: number }>();
      expect(attempts!.n).toBe(1);
    }
  });

  it("retries a failed delivery in the lane, and hands the destination back to the consumer after a run of fast successes", { timeout: 30_000 }, async () => {
    const name = uniqueName("recovering");
    bindings.DESTINATIONS = [{ name, url: `https://${name}.test/hook` }];
    bindings.LANE_BUDGET_MS = String(BUDGET_MS);
    bindings.RETRY_BASE_SECONDS = "1";
    bindings.RETRY_MAX_SECONDS = "1";
    const receiver = timedDownstream(`https://${name}.test/hook`, 1_000);
    const [slowKey] = await acceptMany(1);
    await consume(events.accepted.splice(0), {}, { ids: ["m-slow"] });
    expect((await laneOf(name)).lane).toBe("own");

    // In the lane, a 500 is a failed attempt retried by the lane at its retry time, not by the queue message.
    receiver.delayMs = 0;
    receiver.status = 500;
    const [failingKey] = await acceptMany(1);
    const handed = await consume(events.accepted.splice(0), {}, { ids: ["m-failing"] });
    expect(handed.acked).toHaveLength(1);
    await until([failingKey!], name, "failed");
    receiver.status = 200;
    await until([failingKey!], name, "delivered", 20_000);
    expect((await deliveries(failingKey!))[name]).toMatchObject({ attempts: 2 });

    // Fast again: after LANE_EXIT_STREAK successes within the budget the consumer takes it back.
    const batch = await acceptMany(LANE_EXIT_STREAK + 2);
    await consume(events.accepted.splice(0), {}, { ids: batch.map((_, i) => `m-${i}`) });
    await until(batch, name, "delivered");
    // The lane hands it back right after recording that chunk.
    for (let i = 0; i < 40 && (await laneOf(name)).lane !== "consumer"; i++) await sleep(50);
    expect((await laneOf(name)).lane).toBe("consumer");
    const [after] = await acceptMany(1);
    await consume(events.accepted.splice(0), {}, { ids: ["m-after"] });
    expect((await deliveries(after!))[name]).toMatchObject({ status: "delivered", lane: 0 });
    expect((await deliveries(slowKey!))[name]).toMatchObject({ status: "delivered", attempts: 1 });
  });

  it("wakes a lane whose wake-up was lost from the cron, and the sweep leaves events waiting in a lane alone", { timeout: 30_000 }, async () => {
    const { name, key, receiver } = await handedToUnwokenLane("unwoken");

    // An hour later: the sweep does not re-enqueue it (its lane has it), and the cron wakes the lane.
    await runCron(new Date(Date.now() + 3_600_000));
    expect(events.accepted.filter((m) => m.eventKey === key)).toHaveLength(0);
    await until([key], name, "delivered");
    expect(receiver.received.get(key)).toBe(1);
  });

  it("leaves what a lane holds to the lane: a paused destination's round does not hold it, the lane does", { timeout: 30_000 }, async () => {
    const { name, key } = await handedToUnwokenLane("owned");

    // Paused; a message for the event comes again (a sweep, a copy): its round leaves the lane's delivery alone.
    await admin("POST", `/admin/destinations/${name}/pause`);
    await consume([{ eventKey: key }], { LANES: unreachable() }, { ids: ["again"] });
    expect((await deliveries(key))[name]).toMatchObject({ status: "pending", lane: 1 });
    // The lane, woken by the cron, holds it itself.
    await runCron(new Date());
    await until([key], name, "held");
  });

  it("cancels what a lane holds for a destination removed from DESTINATIONS, and the event finishes", { timeout: 30_000 }, async () => {
    const { name, key } = await handedToUnwokenLane("removed");

    bindings.DESTINATIONS = [];
    await runCron(new Date());
    await until([key], name, "cancelled");
    const row = await env.DB.prepare("SELECT status FROM events WHERE key = ?").bind(key).first<{ status: string }>();
    expect(row!.status).toBe("delivered");
  });
});

describe("lanes and the rest of the configuration", () => {
  it("sends what it holds when another destination's filter runs out of budget on the same event (that skip is not the lane's)", { timeout: 30_000 }, async () => {
    const name = uniqueName("beside-skip");
    const picky = uniqueName("picky");
    // Work that grows with the cube of the payload's depth: this filter gives up (skipped) on a 150-deep payload.
    bindings.DESTINATIONS = [{ name, url: `https://${name}.test/hook` }, { name: picky, url: `https://${picky}.test/hook`, filter: "$..*..*..*" }];
    bindings.LANE_BUDGET_MS = String(BUDGET_MS);
    const receiver = timedDownstream(`https://${name}.test/hook`, 1_000);
    timedDownstream(`https://${picky}.test/hook`, 0);
    await acceptMany(1);
    await consume(events.accepted.splice(0), {}, { ids: ["first"] });
    expect((await laneOf(name)).lane).toBe("own");
    let deep: Record<string, unknown> = { end: 1 };
    for (let i = 0; i < 150; i++) deep = { a: deep };
    const key = await accept(await seismicRequest(seismicBody({ data: { contentId: "deep", teamSiteId: "1", deep } })));
    await consume(events.accepted.splice(0), {}, { ids: ["deep"] });
    expect((await deliveries(key))[picky]).toMatchObject({ status: "skipped" });
    await until([key], name, "delivered");
    expect(receiver.received.get(key)).toBe(1);
  });

  it("without the LANES binding, the consumer takes back what a lane held and its outcome sticks", { timeout: 30_000 }, async () => {
    const { name, key, receiver } = await handedToUnwokenLane("unbound");

    // The binding is gone (a rollback): the next round for the event forwards it itself, and records it.
    receiver.delayMs = 0;
    const result = await consume([{ eventKey: key }], { LANES: undefined }, { ids: ["unbound"] });
    expect(result.acked).toHaveLength(1);
    expect((await deliveries(key))[name]).toMatchObject({ status: "delivered", lane: 0, attempts: 1 });
  });
});

describe("lanes and the circuit", () => {
  it("makes an open circuit's probe in the destination's lane: the batch that carried the probe message does not forward it", { timeout: 30_000 }, async () => {
    const name = uniqueName("probed");
    bindings.DESTINATIONS = [{ name, url: `https://${name}.test/hook`, circuit_failures: 1, circuit_probe_seconds: 1 }];
    bindings.LANE_BUDGET_MS = String(BUDGET_MS);
    const receiver = timedDownstream(`https://${name}.test/hook`, 1_000);
    receiver.status = 500;
    // One slow failure: the destination moves to its lane and its circuit opens, with a probe on its way.
    const [key] = await acceptMany(1);
    await consume(events.accepted.splice(0), {}, { ids: ["first"] });
    expect((await laneOf(name)).lane).toBe("own");
    const probe = events.accepted.splice(0).find((m) => m.probe === name)!;
    expect(probe).toMatchObject({ eventKey: key, probe: name });

    // The receiver is fine again. The probe message's batch hands the probe to the lane and forwards nothing to it.
    receiver.delayMs = 0;
    receiver.status = 200;
    const before = receiver.received.get(key!) ?? 0;
    const result = await consume([probe], {}, { ids: ["probe"] });
    expect(result.acked).toHaveLength(1);
    expect(receiver.received.get(key!) ?? 0).toBe(before);
    // The lane probes once the batch has let go of the event: the delivery goes through and the circuit closes.
    await until([key!], name, "delivered");
    expect(receiver.received.get(key!)).toBe(before + 1);
    for (let i = 0; i < 40 && (await stateOf(name)) !== "active"; i++) await sleep(50);
    expect(await stateOf(name)).toBe("active");
  });
});

async function stateOf(name: string): Promise<string> {
  const body = (await (await admin("GET", "/admin/destinations")).json()) as { destinations: { name: string; state: string }[] };
  return body.destinations.find((d) => d.name === name)!.state;
}

/**
 * A destination moved to its lane by one slow forward, and one more event whose delivery is handed
 * to that lane while the lane cannot be reached: the delivery waits there, pending, unsent.
 */
async function handedToUnwokenLane(prefix: string) {
  const name = uniqueName(prefix);
  bindings.DESTINATIONS = [{ name, url: `https://${name}.test/hook` }];
  bindings.LANE_BUDGET_MS = String(BUDGET_MS);
  const receiver = timedDownstream(`https://${name}.test/hook`, 1_000);
  await acceptMany(1);
  await consume(events.accepted.splice(0), {}, { ids: ["first"] });
  expect((await laneOf(name)).lane).toBe("own");
  const [key] = await acceptMany(1);
  const result = await consume(events.accepted.splice(0), { LANES: unreachable() }, { ids: ["handed"] });
  expect(result.acked).toHaveLength(1);
  expect((await deliveries(key!))[name]).toMatchObject({ status: "pending", lane: 1 });
  expect(receiver.received.has(key!)).toBe(false);
  return { name, key: key!, receiver };
}

/** A LANES binding whose objects cannot be reached: deliveries are handed over, and no lane runs. */
function unreachable(): Env["LANES"] {
  return {
    idFromName: (id: string) => env.LANES!.idFromName(id),
    get: () => ({ poke: () => Promise.reject(new Error("lane unreachable")) }),
  } as unknown as Env["LANES"];
}
