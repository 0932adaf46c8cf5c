/**
 * Lanes: one Durable Object per troubled destination, which forwards that destination's
 * deliveries at its own pace, so that no queue batch waits on it.
 *
 * A queue batch lasts as long as its slowest forward. A destination whose forward runs past the
 * lane budget (LANE_BUDGET_MS) is moved to its lane (store/controls.ts records when and why):
 * the rest of that batch's forwards to it, and from then on every new delivery to it, are written
 * `lane = 1` and the lane is woken; the message does not wait for them. A forward already running
 * is never cut off: it finishes in the batch that started it.
 *
 * The lane (an alarm loop) reads its due deliveries from D1, forwards them with its own 6
 * connections and the destination's rate limit, transform and circuit, and records each result
 * in D1 exactly as a consumer round does (store/deliveries.ts recordRounds), retries included:
 * a failed delivery stays in the lane and its alarm is set for the retry. An open circuit or a
 * pause holds what the lane has, as a round would. After LANE_EXIT_STREAK forwards in a row that
 * succeed within the budget, the destination goes back to the consumer; the lane still finishes
 * what it holds. Being single-threaded per destination, a lane never sends one delivery twice at once.
 */
import { DurableObject } from "cloudflare:workers";
import type { Env, LaneApi, LaneVars } from "../env";
import { getControls, stateOf } from "../store/controls";
import { recordRounds, type AttemptRecord, type ClosedDelivery, type Round } from "../store/deliveries";
import { laneDue, laneNextDue, lanesWithWork, leaveLane } from "../store/lanes";
import { notify } from "../alerts/notify";
import { attempt } from "./attempt";
import { alertNotes, followCircuits, sendDeadLetters } from "./follow-up";
import { heldReason } from "./plan";
import { retryPolicy } from "./retry";
import { loadDestinations, type Destination } from "./destinations";
import { limiter } from "./limiter";
import { forwardBody, transformRunner } from "./transform";

/** Workers allow 6 open connections per invocation; an alarm is one. */
const LANE_CONNECTIONS = 6;
/** Deliveries read and recorded together: 4 turns of the 6 connections per D1 round trip. */
const LANE_CHUNK = 24;
/** One alarm's work before it yields to the next (an alarm may run 15 minutes; a deploy restarts it). */
const LANE_SLICE_MS = 30_000;
/** Forwards in a row that succeed within the budget before the destination goes back to the consumer. */
export const LANE_EXIT_STREAK = 20;
/** When DESTINATIONS is invalid, or a record failed, the lane looks again this much later. */
const LANE_RETRY_MS = 30_000;
/** How far ahead a rate-limited lane takes slots from the destination's rate limiter. */
const RATE_HORIZON_MS = 2_000;

/** The vars a lane delivers under: those of the consumer that woke it (the same deploy's). */
const LANE_VARS = ["DESTINATIONS", "MAX_DELIVERY_ATTEMPTS", "RETRY_BASE_SECONDS", "RETRY_MAX_SECONDS", "TRANSFORM_CPU_MS", "TRANSFORM_TIMEOUT_MS", "LANE_BUDGET_MS"] as const;

/** Wakes each named destination's lane; returns the ones woken. A lane that cannot be reached is left to the cron's safety net. */
export async function pokeLanes(env: Env, names: string[]): Promise<Set<string>> {
  const woken = new Set<string>();
  const namespace = env.LANES;
  if (!namespace) return woken;
  const vars = Object.fromEntries(LANE_VARS.flatMap((name) => (env[name] === undefined ? [] : [[name, env[name]]]))) as LaneVars;
  await Promise.all(
    [...new Set(names)].map(async (name) => {
      try {
        await namespace.get(namespace.idFromName(name)).poke(name, vars);
        woken.add(name);
      } catch (err) {
        console.error(JSON.stringify({ queue: "deliver", destination: name, outcome: "lane_wake_failed", error: String(err) }));
      }
    }),
  );
  return woken;
}

/** The cron's safety net: wakes every lane that has unfinished deliveries (a wake-up lost, an alarm that failed for good). */
export async function wakeLanes(env: Env): Promise<{ lanes: number }> {
  const names = await lanesWithWork(env.DB);
  return { lanes: (await pokeLanes(env, names)).size };
}

export class DestinationLane extends DurableObject<Env> implements LaneApi {
  private vars: LaneVars = {};
  /** Forwards in a row that succeeded within the budget. */
  private streak = 0;

  async poke(destination: string, vars: LaneVars): Promise<void> {
    this.vars = vars;
    await this.ctx.storage.put("destination", destination);
    const alarm = await this.ctx.storage.getAlarm();
    // An alarm running now sets the next one itself, and one set during it fires after it.
    if (alarm === null || alarm > Date.now()) await this.ctx.storage.setAlarm(Date.now());
  }

  override async alarm(): Promise<void> {
    const name = await this.ctx.storage.get<string>("destination");
    if (!name) return;
    const next = await this.drain({ ...this.env, ...this.vars }, name);
    if (next !== null) await this.ctx.storage.setAlarm(Math.max(Date.now(), next));
  }

  /** Forwards what is due for one slice; returns when to look again (null: nothing left). */
  private async drain(env: Env, name: string): Promise<number | null> {
    const config = loadDestinations(env);
    if (!config.ok) return Date.now() + LANE_RETRY_MS;
    const destination = config.destinations.find((d) => d.name === name);
    // Removed from DESTINATIONS: its events' next rounds cancel what the lane held.
    if (!destination) return null;
    const sliceEnds = Date.now() + LANE_SLICE_MS;
    while (Date.now() < sliceEnds) {
      const now = Date.now();
      const [due, controls] = await Promise.all([laneDue(env.DB, name, now, LANE_CHUNK), getControls(env.DB)]);
      if (due.length === 0) return laneNextDue(env.DB, name);
      try {
        await this.forwardChunk(env, config.destinations, destination, due, controls, now);
      } catch (err) {
        // Unrecorded forwards stay pending in the lane and are sent again: at least once, never lost.
        console.error(JSON.stringify({ lane: name, outcome: "lane_round_failed", error: String(err) }));
        return Date.now() + LANE_RETRY_MS;
      }
    }
    return Date.now();
  }

  private async forwardChunk(
    env: Env, destinations: Destination[], destination: Destination, due: Awaited<ReturnType<typeof laneDue>>,
    controls: Awaited<ReturnType<typeof getControls>>, now: number,
  ): Promise<void> {
    const control = controls.get(destination.name);
    const state = stateOf(control);
    const retry = retryPolicy(env);
    const slots = await this.rateSlots(env, destination, due.map(({ event }) => event.key));
    const connections = limiter(LANE_CONNECTIONS);
    const run = transformRunner(env);
    const rounds = await Promise.all(
      due.map(async ({ event, delivery }, i): Promise<Round | null> => {
        let outcome: AttemptRecord | ClosedDelivery;
        if (state !== "active") {
          // Paused or its circuit open: held like any round would hold it (resume and probes release it).
          outcome = { destination: destination.name, status: "held", reason: heldReason(state, control!, destination) };
        } else {
          const slot = slots[i];
          if (slot === null) return null; // no rate slot yet: it waits in the lane
          if (slot !== undefined) await waitUntilTime(slot);
          const forwarding = { destination, attempts: delivery.attempts, probe: false, startAt: null };
          outcome = await connections(destination.name, async () => {
            const body = await forwardBody(event, destination, run);
            return "reason" in body ? body : attempt(event, body, forwarding, retry, env.METRICS);
          });
        }
        const record = "reason" in outcome ? null : outcome;
        return {
          eventKey: event.key, lease: "", generation: event.generation, gaveUp: false, probe: null, heldOrder: event.received_at,
          generations: { [destination.name]: delivery.generation },
          records: record ? [record] : [], closed: record ? [] : [outcome as ClosedDelivery],
          // Not null: the event's status is derived anew from its delivery rows once this is written.
          eventStatus: "failed",
          deadLettered: record?.status === "dead" ? [destination.name] : [],
          deferred: [], laned: [], error: null,
        };
      }),
    );
    const recorded = rounds.filter((round): round is Round => round !== null);
    await sendDeadLetters(env, recorded);
    // Recorded at the chunk's time, as a round is: a circuit this opens is told apart by opened_at = now.
    const changed = await recordRounds(env.DB, recorded, now);
    await followCircuits(env, destinations, controls, changed, recorded, now);
    await notify(env, alertNotes(controls, changed, recorded, now));
    await this.followStreak(env, destination, recorded.flatMap((round) => round.records), retry.laneBudgetMs, control?.lane_since ?? null);
  }

  /** Start times from the destination's rate limiter (shared with the consumer); null: not within the horizon. */
  private async rateSlots(env: Env, destination: Destination, keys: string[]): Promise<(number | null)[]> {
    if (destination.ratePerSecond === null || !env.RATE_LIMITER) return [];
    const namespace = env.RATE_LIMITER;
    const slots = await namespace.get(namespace.idFromName(destination.name)).reserve(keys, destination.ratePerSecond, RATE_HORIZON_MS, RATE_HORIZON_MS);
    return slots.map((slot) => (slot.at !== null && slot.go ? slot.at : null));
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

/** The Workers clock stands still between I/O, so a wait computed from it can end early: wait until it says the time has come. */
async function waitUntilTime(at: number): Promise<void> {
  while (at > Date.now()) await new Promise((resolve) => setTimeout(resolve, at - Date.now()));
}
