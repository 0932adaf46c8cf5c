/**
 * One message's delivery round: its planned forwards made (each at its reserved time, within the
 * batch's connections and window), and what the message does next (acked, or back when the
 * soonest retry is due); or, when handling it threw, the failed round that records why.
 */
import type { QueuedEvent } from "../env";
import { FINISHED, type AttemptRecord, type Claimed, type ClosedDelivery, type DeliveryStatus, type Round } from "../store/deliveries";
import { MAX_QUEUE_DELAY_SECONDS } from "../queues";
import { attempt } from "./attempt";
import { DEFERRED_DELAY_SECONDS, generationsOf, laneOwned, statusOf, type Draft, type ForwardBudget } from "./plan";
import type { RetryPolicy } from "./retry";
import { forwardBody } from "./transform";

/** Failed delivery rounds (exceptions) a message may have before its event is marked dead. */
const MAX_FAILED_ROUNDS = 10;

export type Decision = { ack: true } | { ack: false; delaySeconds: number };

export interface Plan {
  decision: Decision;
  /** What to record; null when the message did not deliver (a duplicate, its event gone or busy, or not stored). */
  round: Round | null;
  /** What became of the message, for the batch's log line. */
  outcome: "round" | "duplicate" | "event_not_found" | "busy" | "not_stored" | "body_deferred" | "body_unavailable" | "failed";
}

/**
 * A message that threw: its event shows the error, and it alone is retried. Failed rounds are
 * counted on the event (a round that runs resets the count), not the queue's deliveries of the
 * message, so busy and deferred deliveries never count. After MAX_FAILED_ROUNDS in a row the
 * event is dead everywhere: its unfinished deliveries are dead, a dead-letter notice goes out,
 * and it is counted, listed, purged and replayed like any dead delivery; but deliveries held for
 * their destination stay held, and so does the event, until they are released.
 * A round that was the open circuit's probe moves its delivery to the back of the held order and
 * hands the probe on (followCircuits), so an event whose rounds always fail never stalls the circuit.
 */
export function failedRound(
  { event, deliveries }: Claimed, lease: string, message: Message<QueuedEvent>, err: unknown, delaySeconds: number, probe: string | null, now: number,
): Plan {
  // The error's kind only: an exception's message can quote payload data, which never goes to logs or D1.
  const kind = err instanceof Error ? err.name : typeof err;
  const failures = event.failed_rounds + 1;
  // A message that keeps failing would otherwise retry, dead-letter and be swept again for ever.
  const givenUp = failures >= MAX_FAILED_ROUNDS;
  const error = givenUp
    ? `delivery round failed ${failures} times in a row (${kind}); the event is dead until replayed`
    : `delivery round failed: ${kind}`;
  // Held deliveries stay held: they wait for their destination, not for this event's rounds.
  const unfinished = givenUp
    ? deliveries.filter((row) => !FINISHED.has(row.status) && row.status !== "held" && !laneOwned(row) && row.destination !== probe).map((row) => row.destination)
    : [];
  const probed: ClosedDelivery[] = probe ? [{ destination: probe, status: "held", reason: `held: probe round failed (${kind}); the circuit stays open` }] : [];
  const stillHeld = probe !== null || deliveries.some((row) => row.status === "held");
  console.error(JSON.stringify({ queue: "deliver", eventKey: event.key, messageId: message.id, outcome: "message_error", error }));
  return {
    decision: givenUp ? { ack: true } : { ack: false, delaySeconds },
    round: {
      eventKey: event.key, lease, generation: event.generation, records: [], eventStatus: givenUp ? (stillHeld ? "held" : "dead") : null, deferred: [], laned: [], lane: false, error,
      closed: [...unfinished.map((destination): ClosedDelivery => ({ destination, status: "dead", reason: error })), ...probed],
      deadLettered: unfinished,
      gaveUp: givenUp,
      probe,
      // The only delivery this round holds is a failed probe's: to the back of the held order.
      heldOrder: probe ? now : event.received_at,
      generations: generationsOf(deliveries),
    },
    outcome: "failed",
  };
}

/** Makes a planned round's forwards (each at its reserved time, within the connection limit) and decides what the message does next. */
export async function runRound(draft: Draft, retry: RetryPolicy, budget: ForwardBudget, now: number): Promise<Plan> {
  const { event, previous, targets, closed, waitMs } = draft;
  const started = await Promise.all(
    draft.due.map(async (due) => {
      // Waiting for a reserved time holds no connection. The Workers clock stands still between I/O,
      // so a wait computed from it can end early: wait again until the clock says the time has come.
      while (due.startAt !== null && due.startAt > Date.now()) await new Promise((resolve) => setTimeout(resolve, due.startAt! - Date.now()));
      // The transform runs inside the forward's connection slot: at most 6 transformed bodies (each
      // up to MAX_BODY_BYTES) are held at once, whatever the batch's size.
      return budget.connections(due.destination.name, async (): Promise<AttemptRecord | ClosedDelivery | "laned" | null> => {
        if (Date.now() > budget.startBy) return null;
        const name = due.destination.name;
        // Another forward to it ran past the lane budget: the lane sends this one (a probe stays here).
        if (budget.lanes && budget.overBudget.has(name) && !due.probe && draft.previous.get(name)?.status !== "held") return "laned";
        const body = await forwardBody(event, due.destination, budget.transform);
        if ("reason" in body) return body;
        // Noticed while the forward runs (it is never cut off): the rest of the batch's forwards to it go to its lane.
        const overBudget = setTimeout(() => budget.overBudget.add(name), retry.laneBudgetMs);
        try {
          return await attempt(event, body, due, retry, budget.metrics);
        } finally {
          clearTimeout(overBudget);
        }
      }).then((outcome) => {
        if (outcome === "laned") draft.laned.push(due.destination.name);
        return outcome === "laned" ? undefined : outcome;
      });
    }),
  );
  // Not started in the batch's window (null): no attempt, back with the message's next delivery.
  if (started.includes(null)) waitMs.push(DEFERRED_DELAY_SECONDS * 1000);
  const outcomes = started.filter((outcome) => outcome !== null && outcome !== undefined);
  // A transform that skipped the event or failed closed its delivery without a forward.
  const records = outcomes.filter((outcome): outcome is AttemptRecord => !("reason" in outcome));
  closed.push(...outcomes.filter((outcome): outcome is ClosedDelivery => "reason" in outcome));
  // A Retry-After of 0 (or a date past) still waits a second: never a queue retry at once for a failure.
  for (const record of records) if (record.nextAttemptAt) waitMs.push(Math.max(1000, record.nextAttemptAt - now));

  // The event's status covers every destination it has state for, not only this round's.
  const statusNow = new Map<string, DeliveryStatus>([...previous].map(([name, row]) => [name, row.status]));
  for (const destination of targets) if (!statusNow.has(destination.name)) statusNow.set(destination.name, "pending");
  for (const change of closed) statusNow.set(change.destination, change.status);
  for (const record of records) statusNow.set(record.destination, record.status);
  const eventStatus = statusOf([...statusNow.values()]);
  // Dead deliveries go to the dead-letter queue once (again, if an earlier send of it failed).
  const deadLettered = [...statusNow].filter(([name, s]) => s === "dead" && !previous.get(name)?.dead_lettered_at).map(([name]) => name);

  // A line per event only when something did not simply succeed: every attempt is recorded in D1
  // (GET /admin/events/:id), and a line per forward cost the consumer CPU under load. A delivery
  // held for its destination is counted in the batch's line instead (consumer.ts).
  if (closed.some((c) => c.status !== "held") || records.some((r) => r.status !== "delivered")) {
    console.log(JSON.stringify({
      queue: "deliver", eventKey: event.key, provider: event.provider, type: event.type, status: eventStatus,
      attempts: records.map((r) => ({ destination: r.destination, status: r.status, code: r.statusCode })),
      ...(closed.length && { closed: closed.map((c) => ({ destination: c.destination, status: c.status })) }),
    }));
  }
  // Always recorded, even when nothing changed: the round releases the event's lease.
  return {
    decision: waitMs.length === 0
      ? { ack: true }
      : { ack: false, delaySeconds: Math.min(MAX_QUEUE_DELAY_SECONDS, Math.ceil(Math.min(...waitMs) / 1000)) },
    round: {
      eventKey: event.key, lease: draft.lease, generation: event.generation, records, closed, eventStatus, deadLettered, deferred: draft.deferred, laned: draft.laned, lane: false,
      gaveUp: false, error: null, probe: draft.probe, heldOrder: event.received_at, generations: generationsOf(previous.values()),
    },
    outcome: "round",
  };
}
