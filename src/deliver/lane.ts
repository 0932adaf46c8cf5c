/**
 * Lanes: one Durable Object per troubled destination, which forwards that destination's
 * deliveries at its own pace, so that no queue batch waits on it.
 *
 * A queue batch lasts as long as its slowest forward. A destination whose forward runs past the
 * lane budget (LANE_BUDGET_MS) is moved to its lane (store/controls.ts records when and why):
 * the rest of that batch's forwards to it, and from then on every new delivery to it, are written
 * `lane = 1` and the lane is woken (lane-wake.ts); the message does not wait for them. A forward
 * already running is never cut off: it finishes in the batch that started it.
 *
 * The lane (an alarm loop) reads its due deliveries from D1, routes each again, forwards them
 * with its own 6 connections and the destination's rate limit and transform, and records each
 * result in D1 exactly as a consumer round does (store/deliveries.ts recordRounds), retries
 * included: a failed delivery stays in the lane and its alarm is set for the retry. An open
 * circuit or a pause holds each delivery as it comes due, as a round would, and the circuit's
 * probe is made here when its destination is in the lane. While a delivery is the lane's, only the
 * lane writes it (the guard in recordRounds). After LANE_EXIT_STREAK forwards in a row that
 * succeed within the budget, the destination goes back to the consumer; the lane still finishes
 * what it holds.
 */
import { DurableObject } from "cloudflare:workers";
import type { Env, LaneApi, LaneProbe, LaneVars } from "../env";
import { bytesToHex } from "../crypto";
import { getControls, stateOf } from "../store/controls";
import { FINISHED, recordRounds, type AttemptRecord, type ClosedDelivery, type DeliveryRow, type Round } from "../store/deliveries";
import { LEASE_NONCE_CHARS, type EventRow } from "../store/events";
import { laneDue, laneNextDue, leaseForProbe, leaveLane, postponeInLane, releaseLease } from "../store/lanes";
import { BODY_READ_BUDGET_BYTES, readBodies, withBody } from "../store/bodies";
import { notify } from "../alerts/notify";
import { attempt } from "./attempt";
import { alertNotes, followCircuits, sendDeadLetters } from "./follow-up";
import { scheduleProbe } from "./controls";
import { heldReason, laneOwned, maxForwardsPerInvocation, routeRound } from "./plan";
import { retryPolicy } from "./retry";
import { loadDestinations, type Destination } from "./destinations";
import { limiter } from "./limiter";
import { MAX_QUEUE_DELAY_SECONDS } from "../queues";
import { forwardBody, transformRunner } from "./transform";

/** Workers allow 6 open connections per invocation; an alarm is one. */
const LANE_CONNECTIONS = 6;
/** Deliveries read and recorded together: 4 turns of the 6 connections per D1 round trip. */
const LANE_CHUNK = 24;
/** One alarm's work before it yields to the next (an alarm may run 15 minutes; a deploy restarts it). */
const LANE_SLICE_MS = 30_000;
/** Forwards in a row that succeed within the budget before the destination goes back to the consumer. */
export const LANE_EXIT_STREAK = 20;
/** When DESTINATIONS is invalid, a record failed, or R2 did not give a body back, the lane looks again this much later. */
const LANE_RETRY_MS = 30_000;
/**
 * A rate slot this close starts its forward in this chunk (each waits for its own slot, within the
 * chunk's connections, so a chunk keeps the rate); a later one is booked, and the lane comes back for it.
 */
const RATE_HORIZON_MS = 30_000;
/** The D1 and Durable Object calls one chunk makes besides its forwards (read, controls, rate, record, follow-ups), counted toward the subrequest limit. */
const CHUNK_CALLS = 6;
/** How far ahead a lane books rate slots (as far as the consumer does: a queue message's longest delay). */
const RATE_BOOK_AHEAD_MS = MAX_QUEUE_DELAY_SECONDS * 1000;

export class DestinationLane extends DurableObject<Env> implements LaneApi {
  private vars: LaneVars = {};
  /** Forwards in a row that succeeded within the budget. */
  private streak = 0;

  async poke(destination: string, vars: LaneVars, probe?: LaneProbe): Promise<void> {
    this.vars = vars;
    await this.ctx.storage.put("destination", destination);
    if (probe) await this.ctx.storage.put("probe", probe);
    const alarm = await this.ctx.storage.getAlarm();
    // An alarm running now sets the next one itself, and one set during it fires after it.
    if (alarm === null || alarm > Date.now()) await this.ctx.storage.setAlarm(Date.now());
  }

  override async alarm(): Promise<void> {
    const name = await this.ctx.storage.get<string>("destination");
    if (!name) return;
    const next = await this.drain({ ...this.env, ...this.vars }, name);
    if (next === null) return;
    // A wake-up that came in while this ran set an earlier alarm: keep it.
    const woken = await this.ctx.storage.getAlarm();
    await this.ctx.storage.setAlarm(Math.max(Date.now(), Math.min(next, woken ?? Infinity)));
  }

  /**
   * Forwards what is due for one slice, within MAX_FORWARDS_PER_BATCH subrequests (the plan's
   * limit per invocation, counting each chunk's D1 and Durable Object calls too: the next alarm is
   * a new invocation); returns when to look again (null: nothing left). A failure (D1 refusing)
   * leaves everything in the lane and looks again LANE_RETRY_MS later.
   */
  private async drain(env: Env, name: string): Promise<number | null> {
    try {
      const config = loadDestinations(env);
      if (!config.ok) return Date.now() + LANE_RETRY_MS;
      const destination = config.destinations.find((d) => d.name === name);
      let subrequestsLeft = maxForwardsPerInvocation(env);
      const probe = await this.ctx.storage.get<LaneProbe>("probe");
      if (probe && destination) {
        // Taken first, and once: a probe that cannot go now (its event busy) waits a second.
        if (!(await this.probeOnce(env, config.destinations, destination, probe))) return Date.now() + 1000;
        // A newer probe handed over meanwhile is kept.
        if ((await this.ctx.storage.get<LaneProbe>("probe"))?.probeId === probe.probeId) await this.ctx.storage.delete("probe");
        subrequestsLeft -= 1 + CHUNK_CALLS;
      }
      const sliceEnds = Date.now() + LANE_SLICE_MS;
      while (Date.now() < sliceEnds && subrequestsLeft > CHUNK_CALLS + 1) {
        const now = Date.now();
        // Removed from DESTINATIONS: everything it holds is cancelled, whenever it was due.
        const dueBy = destination ? now : Number.MAX_SAFE_INTEGER;
        // Each delivery may cost a body read and a forward.
        const limit = Math.min(LANE_CHUNK, Math.floor((subrequestsLeft - CHUNK_CALLS) / 2));
        const [allDue, controls] = await Promise.all([laneDue(env.DB, name, dueBy, limit), getControls(env.DB)]);
        if (allDue.length === 0) return laneNextDue(env.DB, name);
        // Bodies past what a chunk reads wait for the next chunk; those R2 did not give back are looked at
        // again LANE_RETRY_MS later, and the rest of the lane goes on meanwhile. A cancellation needs none.
        const bodies = await readBodies(env.BODIES, destination ? allDue.map(({ event }) => event) : [], BODY_READ_BUDGET_BYTES);
        const due = allDue.filter(({ event }) => !bodies.failed.has(event.key) && !bodies.deferred.has(event.key));
        if (bodies.failed.size) await postponeInLane(env.DB, name, [...bodies.failed.keys()], now + LANE_RETRY_MS);
        for (const [key, error] of bodies.failed) console.error(JSON.stringify({ lane: name, eventKey: key, outcome: "body_unavailable", error: error.reason }));
        const chunk = destination
          ? await this.forwardChunk(env, config.destinations, destination, due, controls, now)
          : { forwards: 0, waitUntil: null, rounds: due.map(({ event, delivery }) => laneRound(event, delivery, removed(name))) };
        if (!destination) await recordRounds(env.DB, chunk.rounds, now);
        subrequestsLeft -= chunk.forwards + CHUNK_CALLS + (destination ? allDue.length : 0);
        // Its rate limit has no slot for the rest yet: come back when it has.
        if (chunk.waitUntil !== null) return chunk.waitUntil;
      }
      return Date.now();
    } catch (err) {
      // Unrecorded forwards stay pending in the lane and are sent again: at least once, never lost.
      console.error(JSON.stringify({ lane: name, outcome: "lane_round_failed", error: String(err) }));
      return Date.now() + LANE_RETRY_MS;
    }
  }

  /**
   * One chunk of the lane's due deliveries: routed again (the configuration may have changed since
   * they were handed over), held while the destination is paused or open, forwarded in their rate
   * slots, and recorded as a round records them.
   */
  private async forwardChunk(
    env: Env, destinations: Destination[], destination: Destination, due: Awaited<ReturnType<typeof laneDue>>,
    controls: Awaited<ReturnType<typeof getControls>>, now: number,
  ): Promise<{ forwards: number; waitUntil: number | null; rounds: Round[] }> {
    const control = controls.get(destination.name);
    const state = stateOf(control);
    const retry = retryPolicy(env);
    // Only this destination's verdict: routing also reports other destinations' skips, which are not the lane's to write.
    const routed = due.map(({ event, delivery }) => ({
      event, delivery, closed: routeRound(event, new Map([[destination.name, delivery]]), destinations).closed.filter((c) => c.destination === destination.name),
    }));
    const sendable = routed.filter((item) => item.closed.length === 0);
    const slots = state === "active" ? await this.rateSlots(env, destination, sendable.map(({ event }) => event.key)) : new Map<string, RateSlot>();
    const connections = limiter(LANE_CONNECTIONS);
    const run = transformRunner(env);
    let forwards = 0;
    const rounds = await Promise.all(
      routed.map(async ({ event, delivery, closed }): Promise<Round | null> => {
        // No longer routed to it (removed from its providers, types, filter): cancelled or skipped, as a round would.
        if (closed.length) return laneRound(event, delivery, closed[0]!);
        // Paused or its circuit open: held like any round would hold it (resume and probes release it).
        if (state !== "active") return laneRound(event, delivery, { destination: destination.name, status: "held", reason: heldReason(state, control!, destination) });
        const slot = slots.get(event.key);
        if (slot && !slot.go) return null; // its rate slot is later: it waits in the lane
        if (slot) await waitUntilTime(slot.at);
        forwards++;
        const forwarding = { destination, attempts: delivery.attempts, probe: false, startAt: null };
        const outcome = await connections(destination.name, async () => {
          const body = await forwardBody(event, destination, run);
          return "reason" in body ? body : attempt(event, body, forwarding, retry, env.METRICS);
        });
        return laneRound(event, delivery, outcome);
      }),
    );
    const recorded = rounds.filter((round): round is Round => round !== null);
    await sendDeadLetters(env, recorded);
    // Recorded at the chunk's time, as a round is: a circuit this opens is told apart by opened_at = now.
    const changed = await recordRounds(env.DB, recorded, now);
    await followCircuits(env, destinations, controls, changed, recorded, now);
    await notify(env, alertNotes(controls, changed, recorded, now));
    await this.followStreak(env, destination, recorded.flatMap((round) => round.records), retry.laneBudgetMs, control?.lane_since ?? null);
    const later = [...slots.values()].filter((slot) => !slot.go).map((slot) => slot.at);
    return { forwards, rounds: recorded, waitUntil: later.length ? Math.max(Date.now(), Math.min(...later) - RATE_HORIZON_MS) : null };
  }

  /**
   * The open circuit's probe, handed over by the batch that got its message: one forward of its
   * delivery under the event's lease, recorded as the consumer records a probe (a failure moves it
   * to the back of the held order and schedules the next probe; a success closes the circuit and
   * releases what it held). A probe no longer current is dropped; one whose delivery is finished
   * hands the probe on at once. False when the event is busy (another holds its lease).
   */
  private async probeOnce(env: Env, destinations: Destination[], destination: Destination, probe: LaneProbe): Promise<boolean> {
    const now = Date.now();
    const controls = await getControls(env.DB);
    const control = controls.get(destination.name);
    if (stateOf(control) !== "open" || control?.probe_id !== probe.probeId) return true;
    const lease = `lane-probe-${destination.name}|0|${bytesToHex(crypto.getRandomValues(new Uint8Array(LEASE_NONCE_CHARS / 2)))}`;
    const leased = await leaseForProbe(env.DB, probe.eventKey, destination.name, lease, now + PROBE_LEASE_MS, now);
    if (!leased) return false;
    const { delivery } = leased;
    // Unreadable: thrown, and the lane looks again later (the lease lapses meanwhile).
    const event = await withBody(env.BODIES, leased.event);
    if (!delivery || FINISHED.has(delivery.status)) {
      await releaseLease(env.DB, event.key, lease);
      await scheduleProbe(env, destination, 0);
      return true;
    }
    const forwarding = { destination, attempts: delivery.attempts, probe: true, startAt: null };
    const body = await forwardBody(event, destination, transformRunner(env));
    const outcome = "reason" in body ? body : await attempt(event, body, forwarding, retryPolicy(env), env.METRICS);
    const round: Round = {
      ...laneRound(event, delivery, outcome), lease, probe: destination.name,
      // Written as its owner would: the lane while it holds the delivery, else as the consumer writes a held one.
      lane: laneOwned(delivery),
    };
    await sendDeadLetters(env, [round]);
    const changed = await recordRounds(env.DB, [round], now);
    await followCircuits(env, destinations, controls, changed, [round], now);
    await notify(env, alertNotes(controls, changed, [round], now));
    return true;
  }

  /** Each event's slot from the destination's rate limiter (shared with the consumer): now-ish (go), or booked for later. */
  private async rateSlots(env: Env, destination: Destination, keys: string[]): Promise<Map<string, RateSlot>> {
    if (destination.ratePerSecond === null || !env.RATE_LIMITER || keys.length === 0) return new Map();
    const namespace = env.RATE_LIMITER;
    const slots = await namespace.get(namespace.idFromName(destination.name)).reserve(keys, destination.ratePerSecond, RATE_HORIZON_MS, RATE_BOOK_AHEAD_MS);
    // Beyond the booking horizon (no slot at all): looked at again after it.
    return new Map(keys.map((key, i) => {
      const slot = slots[i];
      return [key, slot && slot.at !== null ? { at: slot.at, go: slot.go } : { at: Date.now() + RATE_BOOK_AHEAD_MS, go: false }];
    }));
  }

  /** Counts forwards that succeeded within the budget; after LANE_EXIT_STREAK in a row the destination goes back to the consumer. */
  private async followStreak(env: Env, destination: Destination, records: AttemptRecord[], budgetMs: number, laneSince: number | null): Promise<void> {
    for (const record of records.sort((a, b) => a.startedAt - b.startedAt)) {
      this.streak = record.status === "delivered" && record.durationMs < budgetMs ? this.streak + 1 : 0;
    }
    if (this.streak < LANE_EXIT_STREAK || laneSince === null) return;
    if (await leaveLane(env.DB, destination.name, laneSince, Date.now())) {
      console.log(JSON.stringify({ lane: destination.name, outcome: "lane_left", streak: this.streak }));
    }
    this.streak = 0;
  }
}

/** How long a lane's probe holds its event's lease: its one forward's timeout and its record, with room (a lost lease lapses then). */
const PROBE_LEASE_MS = 60_000;

/** A rate slot: start then (go), or booked for then (the lane comes back for it). */
interface RateSlot {
  at: number;
  go: boolean;
}

/** What one lane delivery came to, as a round: it writes only what the lane holds (Round.lane). */
function laneRound(event: EventRow, delivery: DeliveryRow, outcome: AttemptRecord | ClosedDelivery): Round {
  const record = "reason" in outcome ? null : outcome;
  return {
    eventKey: event.key, lease: "", generation: event.generation, gaveUp: false, probe: null, heldOrder: event.received_at,
    generations: { [delivery.destination]: delivery.generation },
    records: record ? [record] : [], closed: record ? [] : [outcome as ClosedDelivery],
    // Not null: the event's status is derived anew from its delivery rows once this is written (this
    // is its status only when no delivery counts: nothing is wanted of it, as a round would say).
    eventStatus: "delivered",
    deadLettered: record?.status === "dead" ? [delivery.destination] : [],
    deferred: [], laned: [], lane: true, error: null,
  };
}

/** A destination no longer in DESTINATIONS: what its lane held is cancelled, as a round cancels it. */
const removed = (destination: string): ClosedDelivery => ({ destination, status: "cancelled", reason: "cancelled: no destination by this name in DESTINATIONS" });

/** The Workers clock stands still between I/O, so a wait computed from it can end early: wait until it says the time has come. */
async function waitUntilTime(at: number): Promise<void> {
  while (at > Date.now()) await new Promise((resolve) => setTimeout(resolve, at - Date.now()));
}
