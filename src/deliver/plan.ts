/**
 * Planning a queue batch's rounds: where each event goes now (routing, cancellations, skips) and,
 * per destination, whether its delivery is due now, waits for its retry time, is held (paused, or
 * its circuit open), goes to the destination's lane, or waits for the message's next delivery
 * (beyond the batch's forward budget, or beyond what the destination's rate limit grants now).
 */
import { numberVar, type Env, type LaneProbe, type Reservation } from "../env";
import { stateOf, type ControlRow, type Deferral, type DestinationState } from "../store/controls";
import { FINISHED, NOT_COUNTED, type Claimed, type ClosedDelivery, type DeliveryRow, type DeliveryStatus } from "../store/deliveries";
import { bodyJson, sourceOf, type EventRow, type EventStatus } from "../store/events";
import { MAX_QUEUE_DELAY_SECONDS } from "../queues";
import type { QueuedEvent } from "../env";
import type { Due } from "./attempt";
import { currentProbe } from "./controls";
import { route, type Destination } from "./destinations";
import type { Limiter } from "./limiter";
import type { TransformRunner } from "./transform";

/** A message whose forwards did not fit in this batch's budget comes back at once (the next invocation has its own). */
export const DEFERRED_DELAY_SECONDS = 0;

/** How far ahead a batch reserves start times from a rate limit (it waits for them before recording). */
const RATE_HORIZON_MS = 2_000;

/** How far ahead the rate limiter books a slot for a deferred event: the queue's longest delay. */
const RATE_BOOK_AHEAD_MS = MAX_QUEUE_DELAY_SECONDS * 1000;

/** When the rate limiter cannot be reached, its destination's forwards wait this long (never sent unmetered). */
const RATE_UNAVAILABLE_MS = 5_000;

/**
 * A full batch of 100 events to 10 destinations, well within the paid plan's 10,000 subrequests per
 * invocation (README "Deploying"); higher, a batch's record (one JSON parameter, at most 2,000,000
 * bytes in D1) and its 5-minute start window (consumer.ts) run short. The free plan's 50 need "15".
 */
const DEFAULT_MAX_FORWARDS_PER_BATCH = 1_000;

/** Forwards one invocation may start (a queue batch, or a lane's alarm): the plan's subrequests per invocation. */
export const maxForwardsPerInvocation = (env: Env): number => numberVar(env.MAX_FORWARDS_PER_BATCH, DEFAULT_MAX_FORWARDS_PER_BATCH);

/** What a batch may spend on forwards: open connections at once, and forwards in all. */
export interface ForwardBudget {
  connections: Limiter;
  /** Forwards this batch may still start; work beyond it waits for the message's next delivery. */
  remaining: number;
  /** The optional Analytics Engine dataset each attempt writes a data point to. */
  metrics: AnalyticsEngineDataset | undefined;
  /** A forward that has not got a connection by then is not started: it waits for the message's next delivery. */
  startBy: number;
  /** Runs a destination's transform before its forward. */
  transform: TransformRunner;
  /** Destinations with a forward of this batch past the lane budget: their forwards not yet started go to their lane. */
  overBudget: Set<string>;
  /** Lanes are bound (LANES): without them every destination is forwarded here. */
  lanes: boolean;
}

/** A message's round, planned: what it forwards now, what it holds or closes, and what it waits for. */
export interface Draft {
  message: Message<QueuedEvent>;
  lease: string;
  event: EventRow;
  previous: Map<string, DeliveryRow>;
  targets: Destination[];
  closed: ClosedDelivery[];
  due: Due[];
  waitMs: number[];
  deferred: Deferral[];
  /** Destinations whose delivery goes to their lane (deliver/lane.ts) instead of being forwarded here. */
  laned: string[];
  /** The destination this message is the current probe of, if any (and the round probes it). */
  probe: string | null;
  /** The probe handed to its destination's lane instead (the destination is in a lane of its own). */
  lanedProbe: { destination: string; probe: LaneProbe } | null;
}

/** Each delivery's generation as the round claimed it (a delivery it creates: 0). */
export const generationsOf = (rows: Iterable<DeliveryRow>): Record<string, number> => Object.fromEntries([...rows].map((row) => [row.destination, row.generation]));

/**
 * Plans a message's round. A delivery to a paused destination, or one whose circuit is open, is
 * held (no attempt, and the message does not wait for it), unless this message is the open
 * circuit's probe for it. The rest is due now, waits for its retry time, or, beyond the batch's
 * forward budget, for the message's next delivery.
 */
export function draftRound(
  message: Message<QueuedEvent>, lease: string, { event, deliveries }: Claimed, destinations: Destination[], controls: Map<string, ControlRow>,
  budget: ForwardBudget, now: number,
): Draft {
  const previous = new Map(deliveries.map((row) => [row.destination, row]));
  // What a lane holds is the lane's alone: it routes, holds, retries and records it itself.
  const lanes = (row: DeliveryRow) => budget.lanes && laneOwned(row);
  const { targets, closed } = routeRound(event, previous, destinations, lanes);
  // Known before routing: a probe whose event no longer routes to the destination still hands the probe on.
  const draft: Draft = { message, lease, event, previous, targets, closed, due: [], waitMs: [], deferred: [], laned: [], probe: currentProbe(message.body, controls), lanedProbe: null };
  for (const destination of targets) {
    const row = previous.get(destination.name);
    if (row && FINISHED.has(row.status)) continue;
    const control = controls.get(destination.name);
    const state = stateOf(control);
    const probe = draft.probe === destination.name;
    // A probe to a destination in its own lane, or of a delivery its lane holds, is the lane's to make: a batch never waits on it.
    if (probe && budget.lanes && (control?.lane_since != null || (row !== undefined && lanes(row)))) {
      draft.lanedProbe = { destination: destination.name, probe: { eventKey: event.key, probeId: control!.probe_id! } };
      draft.probe = null;
      continue;
    }
    if (row && lanes(row)) {
      draft.laned.push(destination.name);
      continue;
    }
    if (state !== "active" && !probe) {
      if (row?.status !== "held") closed.push({ destination: destination.name, status: "held", reason: heldReason(state, control!, destination) });
      continue;
    }
    // Its destination is in a lane of its own: the lane sends it, and the message does not wait for it.
    if (budget.lanes && !probe && control?.lane_since != null && row?.status !== "held") {
      draft.laned.push(destination.name);
      continue;
    }
    if (!probe && row?.next_attempt_at && row.next_attempt_at > now) draft.waitMs.push(row.next_attempt_at - now);
    else if (budget.remaining > 0) {
      budget.remaining--;
      draft.due.push({ destination, attempts: row?.attempts ?? 0, probe, startAt: null });
    } else draft.waitMs.push(DEFERRED_DELAY_SECONDS * 1000); // no attempt is used: it is simply not started
  }
  return draft;
}

export function heldReason(state: Exclude<DestinationState, "active">, control: ControlRow, destination: Destination): string {
  if (state === "paused") return `held: ${control.paused_reason ?? "paused"}`;
  return `held: circuit open after ${destination.circuitFailures} failed attempts in a row; a probe is tried every ${destination.probeSeconds} s`;
}

/**
 * Asks each rate-limited destination's Durable Object, once for the whole batch, for a slot per
 * event (in message order). A slot within RATE_HORIZON_MS starts the forward then; a later one
 * takes the forward out of the round, and the message comes back at that slot (which the object
 * keeps for the event), with no attempt used.
 */
export async function reserveRates(env: Env, drafts: Draft[], now: number): Promise<void> {
  const limited = new Map<string, { destination: Destination; items: { draft: Draft; due: Due }[] }>();
  for (const draft of drafts) {
    for (const due of draft.due) {
      if (due.destination.ratePerSecond === null) continue;
      const group = limited.get(due.destination.name) ?? { destination: due.destination, items: [] };
      group.items.push({ draft, due });
      limited.set(due.destination.name, group);
    }
  }
  await Promise.all(
    [...limited.values()].map(async ({ destination, items }) => {
      let slots: Reservation[];
      let unavailable = false;
      try {
        const namespace = env.RATE_LIMITER!;
        const keys = items.map(({ draft }) => draft.event.key);
        slots = await namespace.get(namespace.idFromName(destination.name)).reserve(keys, destination.ratePerSecond!, RATE_HORIZON_MS, RATE_BOOK_AHEAD_MS);
      } catch (err) {
        console.error(JSON.stringify({ queue: "deliver", destination: destination.name, outcome: "rate_limiter_unavailable", error: String(err) }));
        slots = items.map(() => ({ at: null }));
        unavailable = true;
      }
      items.forEach(({ draft, due }, i) => {
        const slot = slots[i] ?? { at: null };
        if (slot.at !== null && slot.go) {
          due.startAt = slot.at;
          return;
        }
        draft.due.splice(draft.due.indexOf(due), 1);
        // Back before its slot, within the horizon (the batch then waits for it): a queue delay is whole seconds and
        // batching adds up to one more, and a message that comes back late is booked anew. No slot: after the booking horizon.
        const waitMs = slot.at === null ? (unavailable ? RATE_UNAVAILABLE_MS : RATE_BOOK_AHEAD_MS) : Math.max(1000, slot.at - now - RATE_HORIZON_MS);
        draft.waitMs.push(waitMs);
        draft.deferred.push({ destination: destination.name, dueAt: now + waitMs });
      });
    }),
  );
}

/** A delivery its destination's lane holds: unfinished, and handed over (deliver/lane.ts). */
export const laneOwned = (row: DeliveryRow): boolean => row.lane === 1 && (row.status === "pending" || row.status === "failed");

/**
 * Where the event goes now: the destinations that route it, plus deliveries an operator pinned
 * by name. Unfinished deliveries to anything else are cancelled (the configuration changed), and
 * destinations whose filter could not decide are skipped; neither counts toward the event's status.
 * Rows `leave` says belong to someone else (a lane) are left out: neither targets nor closed.
 */
export function routeRound(
  event: EventRow, previous: Map<string, DeliveryRow>, destinations: Destination[], leave: (row: DeliveryRow) => boolean = () => false,
): { targets: Destination[]; closed: ClosedDelivery[] } {
  // Route on what the receive path parsed: the stored text without a byte-order mark (it is still forwarded).
  const routing = route(destinations, { provider: event.provider, source: sourceOf(event), type: event.type, envelope: bodyJson(event.body)?.json ?? null });
  const targets = new Map(routing.destinations.map((d) => [d.name, d]));
  const configured = new Map(destinations.map((d) => [d.name, d]));
  const closed: ClosedDelivery[] = [];
  for (const row of previous.values()) {
    if (FINISHED.has(row.status) || targets.has(row.destination) || leave(row)) continue;
    const destination = configured.get(row.destination);
    if (destination && row.pinned) targets.set(row.destination, destination);
    else if (!routing.skipped.some((s) => s.destination === row.destination)) {
      const reason = destination ? "no longer routes this event (its providers, sources, types or filter changed)" : "no destination by this name in DESTINATIONS";
      closed.push({ destination: row.destination, status: "cancelled", reason: `cancelled: ${reason}` });
    }
  }
  for (const skip of routing.skipped) {
    const row = previous.get(skip.destination);
    if (!(row && (FINISHED.has(row.status) || leave(row))) && !targets.has(skip.destination)) {
      closed.push({ destination: skip.destination, status: "skipped", reason: `skipped: ${skip.reason}` });
    }
  }
  return { targets: [...targets.values()], closed };
}

export function statusOf(statuses: DeliveryStatus[]): EventStatus {
  const counted = statuses.filter((s) => !NOT_COUNTED.has(s));
  if (counted.some((s) => s === "failed" || s === "pending")) return "failed";
  if (counted.includes("held")) return "held";
  // A failed transform, like a dead delivery, waits for an operator's replay.
  return counted.includes("dead") || counted.includes("transform_failed") ? "dead" : "delivered";
}
