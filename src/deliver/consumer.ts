/**
 * The delivery path: store → claim → route → forward → record. The request path's message
 * carries the event itself; the consumer stores it, then sends it to every destination that
 * wants it and has not had it yet, and acks the message only when nothing is left to do for it.
 * Destinations that succeeded are never sent to again by a redelivered message.
 *
 * Exactly one owner per event: copies of one provider event (the provider's redeliveries, a
 * retry after a 503) arrive as separate messages. The message whose insert created the row owns
 * delivery, and its own retries recognise themselves by message id; every other copy is acked
 * as a duplicate without forwarding anything. Messages that name a stored event (the sweep, a
 * replay, a body too large for a message) deliver what D1 says is due. Either way one message
 * at a time holds the event's delivery lease, so two messages never forward an event at once.
 *
 * Storage is per batch, not per message: one D1 batch before forwarding (store, lease, read) and
 * one after (record); D1 runs one query at a time, so transactions per event bound the rate.
 *
 * One message never affects another: a message that cannot be read is logged and acked, a
 * store or a record that fails for the batch is retried message by message (so only the message
 * that cannot be written comes back, with its body), and anything thrown while delivering a
 * message is recorded on its event and retries that message alone.
 *
 * Operator controls (deliver/controls.ts) act per round: a paused destination, or one whose
 * circuit is open, has its deliveries held (no attempt, nothing left for the message to wait
 * for); a probe message tries one delivery through an open circuit; a rate-limited destination's
 * forwards start at times its Durable Object reserves (deliver/rate-limiter.ts), and those that
 * do not fit wait for the message's next delivery, with no attempt used.
 */
import { numberVar, type Env, type EventsQueueMessage, type QueuedEvent, type ReleaseHeld, type Reservation } from "../env";
import { isRecord } from "../providers/provider";
import { getControls, stateOf, type ControlRow, type DestinationState } from "../store/controls";
import {
  claimForDelivery, FINISHED, holdForConfiguration, leaseHolders, NOT_COUNTED, recordRounds,
  type AttemptRecord, type Claim, type Claimed, type ClaimResult, type ClosedDelivery, type DeliveryRow, type DeliveryStatus, type Round,
} from "../store/deliveries";
import { bodyJson, LEASE_NONCE_CHARS, sourceOf, type EventRow, type EventStatus } from "../store/events";
import { bytesToHex } from "../receive/signature";
import { loadDestinations, route, type Destination } from "./destinations";
import { forward } from "./forward";
import { forwardBody, transformRunner, type ForwardBody, type TransformRunner } from "./transform";
import { withDeadline } from "../deadline";
import { MAX_QUEUE_DELAY_SECONDS } from "../queues";
import { writeAllOrEach } from "./all-or-each";
import { limiter, type Limiter } from "./limiter";
import { releaseChunk, scheduleProbe, startRelease } from "./controls";
import { notify, type Notice } from "../alerts/notify";
import { writePoint } from "../telemetry";

const DEFAULT_MAX_ATTEMPTS = 8;
const DEFAULT_RETRY_BASE_SECONDS = 10;
const DEFAULT_RETRY_MAX_SECONDS = 3_600;
/** Workers allow 6 simultaneous open connections per invocation; more would queue inside fetch() and time out there. */
const MAX_OPEN_FORWARDS = 6;
/**
 * The paid plan (README "Deploying") allows 10,000 subrequests per invocation: a full batch of 25
 * events to 40 destinations, with room for the D1 and Queue calls. The free plan's 50 need "40".
 */
const DEFAULT_MAX_FORWARDS_PER_BATCH = 1_000;
/** How long the dead-letter notices may take before the batch is recorded without them. */
const DEAD_LETTER_SEND_MS = 5_000;
/** Failed delivery rounds (exceptions) a message may have before its event is marked dead. */
const MAX_FAILED_ROUNDS = 10;
/**
 * How long after a batch starts its forwards may still start. A queue consumer may run 15 minutes;
 * 1,000 forwards through 6 connections to receivers that hang until their timeout (up to 30 s)
 * would take far longer, and a batch cut off records nothing. Forwards not started by then wait
 * for their message's next delivery (no attempt used), so a batch ends within this plus one timeout
 * (and a transform's turn and run, bounded by TRANSFORM_TIMEOUT_MS each).
 */
const START_WINDOW_MS = 5 * 60_000;
/** A message whose forwards did not fit in this batch's budget comes back at once (the next invocation has its own). */
const DEFERRED_DELAY_SECONDS = 0;
/** A release that failed (D1) tries again this much later. */
const RELEASE_RETRY_SECONDS = 5;
/** How far ahead a batch reserves start times from a rate limit (it waits for them before recording). */
const RATE_HORIZON_MS = 2_000;
/** How far ahead the rate limiter books a slot for a deferred event: the queue's longest delay. */
const RATE_BOOK_AHEAD_MS = MAX_QUEUE_DELAY_SECONDS * 1000;
/** When the rate limiter cannot be reached, its destination's forwards wait this long (never sent unmetered). */
const RATE_UNAVAILABLE_MS = 5_000;
/**
 * How long a message may hold an event's delivery lease: a queue consumer's wall-clock limit
 * (15 minutes), so a lease never lapses under a round that is still running. A holder's own
 * retry takes it back at once; only a message lost while holding it makes others wait this long.
 */
export const LEASE_MS = 15 * 60_000;
/** Kept on the event while DESTINATIONS is invalid; the reconciliation sweep re-enqueues it once fixed. */
export const WAITING_FOR_CONFIGURATION = "DESTINATIONS is invalid; the event waits and is re-enqueued by the reconciliation sweep once it is fixed";

type Decision = { ack: true } | { ack: false; delaySeconds: number };

interface Plan {
  decision: Decision;
  /** What to record; null when the message did not deliver (a duplicate, its event gone or busy, or not stored). */
  round: Round | null;
  /** What became of the message, for the batch's log line. */
  outcome: "round" | "duplicate" | "event_not_found" | "busy" | "not_stored" | "failed";
}

interface RetryPolicy {
  maxAttempts: number;
  baseSeconds: number;
  maxSeconds: number;
}

/** What a batch may spend on forwards: open connections at once, and forwards in all. */
interface ForwardBudget {
  connections: Limiter;
  /** Forwards this batch may still start; work beyond it waits for the message's next delivery. */
  remaining: number;
  /** The optional Analytics Engine dataset each attempt writes a data point to. */
  metrics: AnalyticsEngineDataset | undefined;
  /** A forward that has not got a connection by then is not started: it waits for the message's next delivery. */
  startBy: number;
  /** Runs a destination's transform before its forward. */
  transform: TransformRunner;
}

export async function consumeEvents(batch: MessageBatch<EventsQueueMessage>, env: Env): Promise<void> {
  const retry: RetryPolicy = {
    maxAttempts: numberVar(env.MAX_DELIVERY_ATTEMPTS, DEFAULT_MAX_ATTEMPTS),
    baseSeconds: numberVar(env.RETRY_BASE_SECONDS, DEFAULT_RETRY_BASE_SECONDS),
    maxSeconds: numberVar(env.RETRY_MAX_SECONDS, DEFAULT_RETRY_MAX_SECONDS),
  };
  const messages: Message<QueuedEvent>[] = [];
  const releases: Message<ReleaseHeld>[] = [];
  for (const message of batch.messages) {
    if (isEventMessage(message)) messages.push(message);
    else if (isReleaseMessage(message)) releases.push(message);
    else {
      // Only our own code sends here, so this is a bug; a retry could never read it either.
      console.error(JSON.stringify({ queue: batch.queue, messageId: message.id, outcome: "unreadable_message" }));
      message.ack();
    }
  }
  if (releases.length) await releaseEach(env, releases);
  if (messages.length === 0) return;
  const claims = messages.map(claimOf);
  const leases = new Map(claims.map((claim) => [claim.messageId, claim.lease]));
  const retryLater = (message: Message<QueuedEvent>) => message.retry({ delaySeconds: backoffSeconds(message.attempts, retry) });

  const config = loadDestinations(env);
  if (!config.ok) {
    // Waiting for a fix must not use up queue retries: store what the messages carry, say why on
    // the events, ack, and let the sweep re-enqueue them (they stay unfinished in D1).
    console.error(JSON.stringify({ queue: batch.queue, outcome: "invalid_destinations", errors: config.errors, events: claims.length }));
    // The alert counts events: a copy, or a message naming an event that waits already, adds none.
    const newlyHeld = new Set<string>();
    const hold = async (some: Message<QueuedEvent>[]) => {
      for (const key of await holdForConfiguration(env.DB, some.map(claimOf), WAITING_FOR_CONFIGURATION)) newlyHeld.add(key);
    };
    // In one go, else message by message: one D1 error costs a retry only to what it refused.
    const unheld = await writeAllOrEach(messages, hold, (message, err) => {
      console.error(JSON.stringify({ queue: batch.queue, messageId: message?.id, outcome: message ? "hold_failed" : "hold_batch_failed", error: String(err) }));
    });
    for (const message of messages) (unheld.has(message) ? retryLater(message) : message.ack());
    await notify(env, [{ kind: "configuration_invalid", subject: "DESTINATIONS", count: newlyHeld.size }]);
    return;
  }

  const now = Date.now();
  // Per message id: its event and lease, null (a copy, or gone), or absent (could not be stored).
  const { claimed, controls } = await claimEach(env.DB, claims, now);
  const budget: ForwardBudget = {
    connections: limiter(MAX_OPEN_FORWARDS),
    remaining: numberVar(env.MAX_FORWARDS_PER_BATCH, DEFAULT_MAX_FORWARDS_PER_BATCH),
    metrics: env.METRICS,
    startBy: now + START_WINDOW_MS,
    transform: transformRunner(env),
  };
  // Every message's round is planned first, so a rate-limited destination is asked once per batch.
  const drafts = messages.map((message): Plan | Draft => {
    const backoff = backoffSeconds(message.attempts, retry);
    // Not stored (or its lease not known): it comes back with its body, and nothing was forwarded.
    if (!claimed.has(message.id)) return { decision: { ack: false, delaySeconds: backoff }, round: null, outcome: "not_stored" };
    const stored = claimed.get(message.id);
    if (!stored) {
      // A copy: an earlier copy's insert created the row and owns delivery (or the provider event
      // is stored under the key it had before keys were derived). Or a stored event that is gone.
      if (!message.body.event) console.log(JSON.stringify({ queue: batch.queue, eventKey: message.body.eventKey, outcome: "event_not_found" }));
      return { decision: { ack: true }, round: null, outcome: message.body.event ? "duplicate" : "event_not_found" };
    }
    const { event } = stored;
    const lease = leases.get(message.id)!;
    if (event.lease_by !== lease) {
      // Another message is delivering it now: come back once that round is likely done.
      const leftSeconds = Math.ceil(((event.lease_until ?? now) - now) / 1000);
      return { decision: { ack: false, delaySeconds: Math.max(1, Math.min(leftSeconds, backoff)) }, round: null, outcome: "busy" };
    }
    try {
      return draftRound(message, lease, stored, config.destinations, controls, budget, now);
    } catch (err) {
      return failedRound(stored, lease, message, err, backoff);
    }
  });
  await reserveRates(env, drafts.filter(isDraft), now);
  const plans = await Promise.all(
    drafts.map(async (draft) => {
      if (!isDraft(draft)) return draft;
      try {
        return await runRound(draft, retry, budget, now);
      } catch (err) {
        const stored = { event: draft.event, deliveries: [...draft.previous.values()] };
        return failedRound(stored, draft.lease, draft.message, err, backoffSeconds(draft.message.attempts, retry));
      }
    }),
  );
  await sendDeadLetters(env, plans);
  const { unrecorded, changed } = await record(env.DB, plans, now);
  let acked = 0;
  plans.forEach((plan, i) => {
    const message = messages[i]!;
    if (unrecorded.has(plan)) retryLater(message);
    else if (plan.decision.ack) {
      message.ack();
      acked++;
    } else message.retry({ delaySeconds: plan.decision.delaySeconds });
  });
  const recorded = plans.filter((plan) => plan.round && !unrecorded.has(plan));
  await followCircuits(env, config.destinations, controls, changed, recorded, now);
  // Noted at the time of noting: a batch's forwards can take minutes, and the group wait runs from now.
  await notify(env, alertNotes(config.destinations, controls, changed, recorded, now));
  // One line per batch; a line per event only where a forward failed or a delivery was held, cancelled or skipped.
  const outcomes: Record<string, number> = {};
  for (const plan of plans) outcomes[plan.outcome] = (outcomes[plan.outcome] ?? 0) + 1;
  console.log(JSON.stringify({ queue: batch.queue, outcome: "batch", messages: batch.messages.length, ...outcomes, acked, unrecorded: unrecorded.size }));
}

/** A message the consumers can act on: names an event, and if it carries one, it has a body. */
export function readableMessage(body: unknown): body is QueuedEvent {
  if (!isRecord(body) || typeof body.eventKey !== "string") return false;
  return body.event === undefined || (isRecord(body.event) && typeof body.event.body === "string");
}

const isEventMessage = (message: Message<EventsQueueMessage>): message is Message<QueuedEvent> => readableMessage(message.body);
const isReleaseMessage = (message: Message<EventsQueueMessage>): message is Message<ReleaseHeld> =>
  isRecord(message.body) && typeof (message.body as Partial<ReleaseHeld>).release === "string";

function claimOf(message: Message<QueuedEvent>): Claim {
  const { eventKey, event } = message.body;
  const nonce = bytesToHex(crypto.getRandomValues(new Uint8Array(LEASE_NONCE_CHARS / 2)));
  return {
    messageId: message.id,
    // This delivery of this message, told apart from a copy of it running at once (see insertEvents).
    lease: `${message.id}|${message.attempts}|${nonce}`,
    eventKey,
    ...(event && { arrival: { event: { ...event, key: eventKey }, enqueuedAt: message.timestamp.getTime() } }),
  };
}

/**
 * Stores and leases the whole batch in one D1 batch; if that fails, message by message, so one
 * message that cannot be stored costs only itself a retry (with its body: nothing is lost).
 * A message missing from the result was not stored.
 */
async function claimEach(db: D1Database, claims: Claim[], now: number): Promise<ClaimResult> {
  try {
    return await claimForDelivery(db, claims, now, now + LEASE_MS);
  } catch (err) {
    console.error(JSON.stringify({ queue: "deliver", outcome: "claim_batch_failed", error: String(err) }));
  }
  // Destination states come with any claim that succeeds; a message with no claim forwards nothing.
  const result: ClaimResult = { claimed: new Map(), controls: new Map() };
  for (const claim of claims) {
    try {
      const one = await claimForDelivery(db, [claim], now, now + LEASE_MS);
      for (const [messageId, value] of one.claimed) result.claimed.set(messageId, value);
      result.controls = one.controls;
    } catch (err) {
      console.error(JSON.stringify({ queue: "deliver", eventKey: claim.eventKey, messageId: claim.messageId, outcome: "claim_failed", error: String(err) }));
    }
  }
  return result;
}

/**
 * A message that threw: its event shows the error, and it alone is retried. Failed rounds are
 * counted on the event (a round that runs resets the count), not the queue's deliveries of the
 * message, so busy and deferred deliveries never count. After MAX_FAILED_ROUNDS in a row the
 * event is dead everywhere: its unfinished deliveries are dead, a dead-letter notice goes out,
 * and it is counted, listed, purged and replayed like any dead delivery.
 */
function failedRound({ event, deliveries }: Claimed, lease: string, message: Message<QueuedEvent>, err: unknown, delaySeconds: number): Plan {
  // The error's kind only: an exception's message can quote payload data, which never goes to logs or D1.
  const kind = err instanceof Error ? err.name : typeof err;
  const failures = event.failed_rounds + 1;
  // A message that keeps failing would otherwise retry, dead-letter and be swept again for ever.
  const givenUp = failures >= MAX_FAILED_ROUNDS;
  const error = givenUp
    ? `delivery round failed ${failures} times in a row (${kind}); the event is dead until replayed`
    : `delivery round failed: ${kind}`;
  // Held deliveries stay held: they wait for their destination, not for this event's rounds.
  const unfinished = givenUp ? deliveries.filter((row) => !FINISHED.has(row.status) && row.status !== "held").map((row) => row.destination) : [];
  console.error(JSON.stringify({ queue: "deliver", eventKey: event.key, messageId: message.id, outcome: "message_error", error }));
  return {
    decision: givenUp ? { ack: true } : { ack: false, delaySeconds },
    round: {
      eventKey: event.key, lease, generation: event.generation, records: [], eventStatus: givenUp ? "dead" : null, deferred: [], error,
      closed: unfinished.map((destination) => ({ destination, status: "dead", reason: error })),
      deadLettered: unfinished,
      gaveUp: givenUp,
      probe: null,
      heldOrder: event.received_at,
      generations: generationsOf(deliveries),
    },
    outcome: "failed",
  };
}

/**
 * Writes the batch's rounds in one D1 batch; if that fails, message by message, so one
 * unwritable round costs only its own message a retry. Returns the plans not recorded, and the
 * destination states the recorded attempts changed.
 */
async function record(db: D1Database, plans: Plan[], now: number): Promise<{ unrecorded: Set<Plan>; changed: ControlRow[] }> {
  const pending = plans.filter((plan) => plan.round);
  const changed: ControlRow[] = [];
  const unrecorded = await writeAllOrEach(
    pending,
    async (some) => changed.push(...(await recordRounds(db, some.map((plan) => plan.round!), now))),
    (plan, err) => {
      const outcome = plan ? { eventKey: plan.round!.eventKey, outcome: "record_failed" } : { outcome: "record_batch_failed" };
      console.error(JSON.stringify({ queue: "deliver", ...outcome, error: String(err) }));
    },
    // A batch that committed but lost its answer released its rounds' leases: rewriting them would count their counters twice.
    async (some) => {
      const holders = await leaseHolders(db, some.map((plan) => plan.round!.eventKey));
      return new Set(some.filter((plan) => holders.get(plan.round!.eventKey) !== plan.round!.lease));
    },
  );
  return { unrecorded, changed };
}

/** Notices of new dead deliveries; if the send fails they stay unmarked (visible) and nothing else is held up. */
async function sendDeadLetters(env: Env, plans: Plan[]): Promise<void> {
  const rounds = plans.flatMap((plan) => (plan.round?.deadLettered.length || plan.round?.gaveUp ? [plan.round] : []));
  if (rounds.length === 0) return;
  try {
    // Bounded: a hanging dead-letter queue must not hold the batch's record (and its acks) hostage.
    await withDeadline(
      env.DEAD_LETTER_QUEUE.sendBatch(
        rounds.map((round) => ({ body: { eventKey: round.eventKey, destinations: round.deadLettered }, contentType: "json" as const })),
      ),
      DEAD_LETTER_SEND_MS,
      () => new Error(`dead-letter send took over ${DEAD_LETTER_SEND_MS} ms`),
    );
  } catch (err) {
    console.error(JSON.stringify({ queue: "deliver", outcome: "dead_letter_send_failed", error: String(err) }));
    for (const round of rounds) round.deadLettered = [];
  }
}

/** A forward a round will make: to whom, how many attempts came before, whether it is a probe, and when it may start. */
interface Due {
  destination: Destination;
  attempts: number;
  probe: boolean;
  /** A start time the destination's rate limit reserved; null: at once. */
  startAt: number | null;
}

/** A message's round, planned: what it forwards now, what it holds or closes, and what it waits for. */
interface Draft {
  message: Message<QueuedEvent>;
  lease: string;
  event: EventRow;
  previous: Map<string, DeliveryRow>;
  targets: Destination[];
  closed: ClosedDelivery[];
  due: Due[];
  waitMs: number[];
  deferred: string[];
  /** The destination this message is the current probe of, if any. */
  probe: string | null;
}

const isDraft = (value: Plan | Draft): value is Draft => "message" in value;

/** Each delivery's generation as the round claimed it (a delivery it creates: 0). */
const generationsOf = (rows: Iterable<DeliveryRow>): Record<string, number> => Object.fromEntries([...rows].map((row) => [row.destination, row.generation]));

/**
 * Plans a message's round. A delivery to a paused destination, or one whose circuit is open, is
 * held (no attempt, and the message does not wait for it), unless this message is the open
 * circuit's probe for it. The rest is due now, waits for its retry time, or, beyond the batch's
 * forward budget, for the message's next delivery.
 */
function draftRound(
  message: Message<QueuedEvent>, lease: string, { event, deliveries }: Claimed, destinations: Destination[], controls: Map<string, ControlRow>,
  budget: ForwardBudget, now: number,
): Draft {
  const previous = new Map(deliveries.map((row) => [row.destination, row]));
  const { targets, closed } = plan(event, previous, destinations);
  const draft: Draft = { message, lease, event, previous, targets, closed, due: [], waitMs: [], deferred: [], probe: null };
  for (const destination of targets) {
    const row = previous.get(destination.name);
    if (row && FINISHED.has(row.status)) continue;
    const control = controls.get(destination.name);
    const state = stateOf(control);
    // Only the circuit's current probe message probes (an old one still around is an ordinary message).
    const probe = state === "open" && message.body.probe === destination.name && message.body.probeId === control?.probe_id;
    if (probe) draft.probe = destination.name;
    if (state !== "active" && !probe) {
      if (row?.status !== "held") closed.push({ destination: destination.name, status: "held", reason: heldReason(state, control!, destination) });
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

function heldReason(state: Exclude<DestinationState, "active">, control: ControlRow, destination: Destination): string {
  if (state === "paused") return `held: ${control.paused_reason ?? "paused"}`;
  return `held: circuit open after ${destination.circuitFailures} failed attempts in a row; a probe is tried every ${destination.probeSeconds} s`;
}

/**
 * Asks each rate-limited destination's Durable Object, once for the whole batch, for a slot per
 * event (in message order). A slot within RATE_HORIZON_MS starts the forward then; a later one
 * takes the forward out of the round, and the message comes back at that slot (which the object
 * keeps for the event), with no attempt used.
 */
async function reserveRates(env: Env, drafts: Draft[], now: number): Promise<void> {
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
        draft.waitMs.push(slot.at === null ? (unavailable ? RATE_UNAVAILABLE_MS : RATE_BOOK_AHEAD_MS) : Math.max(1000, slot.at - now - RATE_HORIZON_MS));
        draft.deferred.push(destination.name);
      });
    }),
  );
}

/** Makes a planned round's forwards (each at its reserved time, within the connection limit) and decides what the message does next. */
async function runRound(draft: Draft, retry: RetryPolicy, budget: ForwardBudget, now: number): Promise<Plan> {
  const { event, previous, targets, closed, waitMs } = draft;
  const started = await Promise.all(
    draft.due.map(async (due) => {
      // Waiting for a reserved time holds no connection. The Workers clock stands still between I/O,
      // so a wait computed from it can end early: wait again until the clock says the time has come.
      while (due.startAt !== null && due.startAt > Date.now()) await new Promise((resolve) => setTimeout(resolve, due.startAt! - Date.now()));
      // The transform runs inside the forward's connection slot: at most 6 transformed bodies (each
      // up to MAX_BODY_BYTES) are held at once, whatever the batch's size.
      return budget.connections(due.destination.name, async () => {
        if (Date.now() > budget.startBy) return null;
        const body = await forwardBody(event, due.destination, budget.transform);
        return "reason" in body ? body : attempt(event, body, due, retry, budget.metrics);
      });
    }),
  );
  // Not started in the batch's window (null): no attempt, back with the message's next delivery.
  if (started.includes(null)) waitMs.push(DEFERRED_DELAY_SECONDS * 1000);
  const outcomes = started.filter((outcome) => outcome !== null);
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
  // (GET /admin/events/:id), and a line per forward cost the consumer CPU under load.
  if (closed.length || records.some((r) => r.status !== "delivered")) {
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
      eventKey: event.key, lease: draft.lease, generation: event.generation, records, closed, eventStatus, deadLettered, deferred: draft.deferred,
      gaveUp: false, error: null, probe: draft.probe, heldOrder: event.received_at, generations: generationsOf(previous.values()),
    },
    outcome: "round",
  };
}

/**
 * After a batch is recorded, the circuits it moved: one that opened gets its first probe, one
 * whose current probe message ran a round (the probe failed, got a 410, or found nothing to try)
 * and is still open gets the next (at once if its transform skipped the event: the destination
 * was not tried), and one that closed releases what it held. A paused circuit
 * is not probed (resuming it starts a probe). Anything that fails here is left to the cron's
 * safety net (deliver/controls.ts).
 */
async function followCircuits(env: Env, destinations: Destination[], before: Map<string, ControlRow>, changed: ControlRow[], recorded: Plan[], now: number): Promise<void> {
  const byName = new Map(destinations.map((d) => [d.name, d]));
  const after = new Map(before);
  for (const row of changed) after.set(row.destination, row);
  // Each destination to probe, and whether at once (rather than after its probe interval).
  const probes = new Map<string, boolean>();
  const releases = new Set<string>();
  for (const row of changed) {
    const wasOpen = before.get(row.destination)?.opened_at != null;
    if (row.opened_at === now && !wasOpen) probes.set(row.destination, false);
    if (wasOpen && row.opened_at === null && row.paused_at === null) releases.add(row.destination);
  }
  for (const plan of recorded) {
    const probed = plan.round!.probe;
    if (!probed || stateOf(after.get(probed)) !== "open") continue;
    // A probe whose transform skipped its event never reached the destination: the next held
    // delivery probes at once (this one is closed, so it is not picked again). Not after a failed
    // transform: were the loader down, that would fail the whole backlog at queue speed.
    const untried = plan.round!.closed.some((c) => c.destination === probed && c.status === "skipped");
    probes.set(probed, untried);
  }
  for (const [name, atOnce] of probes) {
    const destination = byName.get(name);
    if (!destination || releases.has(name) || after.get(name)?.paused_at != null) continue;
    await scheduleProbe(env, destination, atOnce ? 0 : destination.probeSeconds).catch((err: unknown) => {
      console.error(JSON.stringify({ queue: "deliver", destination: name, outcome: "probe_schedule_failed", error: String(err) }));
    });
  }
  for (const name of releases) {
    await startRelease(env, name).catch((err: unknown) => {
      console.error(JSON.stringify({ queue: "deliver", destination: name, outcome: "release_failed", error: String(err) }));
    });
  }
}

/**
 * What a recorded batch tells an operator: deliveries gone dead, circuits opened or closed,
 * destinations paused by the 410 rule. A half-open circuit (nothing was left to probe with) has
 * not closed yet: its first success closes it.
 */
function alertNotes(destinations: Destination[], before: Map<string, ControlRow>, changed: ControlRow[], recorded: Plan[], now: number): Notice[] {
  const threshold = new Map(destinations.map((d) => [d.name, d.circuitFailures]));
  const notes: Notice[] = [];
  for (const { round } of recorded) {
    for (const change of [...round!.records, ...round!.closed]) {
      if (change.status === "dead") notes.push({ kind: "delivery_dead", subject: change.destination, count: 1 });
      if (change.status === "transform_failed") notes.push({ kind: "transform_failed", subject: change.destination, count: 1 });
    }
  }
  for (const row of changed) {
    const was = before.get(row.destination);
    if (row.opened_at === now && was?.opened_at == null) notes.push({ kind: "circuit_opened", subject: row.destination, count: 1 });
    const limit = threshold.get(row.destination) ?? Infinity;
    const wasTripped = was != null && (was.opened_at != null || was.failures >= limit);
    if (wasTripped && row.opened_at === null && row.failures < limit) notes.push({ kind: "circuit_closed", subject: row.destination, count: 1 });
    if (row.paused_at === now && was?.paused_at == null) notes.push({ kind: "destination_paused", subject: row.destination, count: 1 });
  }
  return notes;
}

/** Release messages: each makes the next chunk of its destination's held deliveries pending, if it is active. */
async function releaseEach(env: Env, releases: Message<ReleaseHeld>[]): Promise<void> {
  const config = loadDestinations(env);
  for (const message of releases) {
    const destination = message.body.release;
    try {
      // A destination paused again, or no longer configured, keeps what it holds.
      if (config.ok && config.destinations.some((d) => d.name === destination)) {
        const controls = await getControls(env.DB);
        if (stateOf(controls.get(destination)) === "active") await releaseChunk(env, destination, Date.now());
      }
      message.ack();
    } catch (err) {
      console.error(JSON.stringify({ queue: "deliver", destination, outcome: "release_failed", error: String(err) }));
      message.retry({ delaySeconds: RELEASE_RETRY_SECONDS });
    }
  }
}

/**
 * Where the event goes now: the destinations that route it, plus deliveries an operator pinned
 * by name. Unfinished deliveries to anything else are cancelled (the configuration changed), and
 * destinations whose filter could not decide are skipped; neither counts toward the event's status.
 */
function plan(event: EventRow, previous: Map<string, DeliveryRow>, destinations: Destination[]): { targets: Destination[]; closed: ClosedDelivery[] } {
  // Route on what the receive path parsed: the stored text without a byte-order mark (it is still forwarded).
  const routing = route(destinations, { provider: event.provider, source: sourceOf(event), type: event.type, envelope: bodyJson(event.body)?.json ?? null });
  const targets = new Map(routing.destinations.map((d) => [d.name, d]));
  const configured = new Map(destinations.map((d) => [d.name, d]));
  const closed: ClosedDelivery[] = [];
  for (const row of previous.values()) {
    if (FINISHED.has(row.status) || targets.has(row.destination)) continue;
    const destination = configured.get(row.destination);
    if (destination && row.pinned) targets.set(row.destination, destination);
    else if (!routing.skipped.some((s) => s.destination === row.destination)) {
      const reason = destination ? "no longer routes this event (its providers, sources, types or filter changed)" : "no destination by this name in DESTINATIONS";
      closed.push({ destination: row.destination, status: "cancelled", reason: `cancelled: ${reason}` });
    }
  }
  for (const skip of routing.skipped) {
    const row = previous.get(skip.destination);
    if (!(row && FINISHED.has(row.status)) && !targets.has(skip.destination)) {
      closed.push({ destination: skip.destination, status: "skipped", reason: `skipped: ${skip.reason}` });
    }
  }
  return { targets: [...targets.values()], closed };
}

function statusOf(statuses: DeliveryStatus[]): EventStatus {
  const counted = statuses.filter((s) => !NOT_COUNTED.has(s));
  if (counted.some((s) => s === "failed" || s === "pending")) return "failed";
  if (counted.includes("held")) return "held";
  // A failed transform, like a dead delivery, waits for an operator's replay.
  return counted.includes("dead") || counted.includes("transform_failed") ? "dead" : "delivered";
}

/** One forward attempt of `body` (the event's, or its transform's), recorded; with METRICS bound, also one Analytics Engine data point. */
async function attempt(event: EventRow, body: ForwardBody, due: Due, retry: RetryPolicy, metrics: AnalyticsEngineDataset | undefined): Promise<AttemptRecord> {
  const { destination } = due;
  const record = await forwardOnce(event, body, due, retry);
  writePoint(metrics, {
    index: destination.name,
    // The source is appended: queries written against blob1-4 keep their meaning.
    blobs: [destination.name, record.status, event.provider, event.type, sourceOf(event)],
    doubles: [record.durationMs, record.statusCode ?? 0],
  });
  return record;
}

async function forwardOnce(event: EventRow, { contentType, body }: ForwardBody, { destination, attempts, probe }: Due, retry: RetryPolicy): Promise<AttemptRecord> {
  const attemptNumber = attempts + 1;
  const startedAt = Date.now();
  const result = await forward(
    { key: event.key, provider: event.provider, type: event.type, contentType, body },
    destination,
  ).catch((err: unknown) => ({
    // A bug while forwarding is a failed attempt of this destination only, never the message's other forwards.
    outcome: "retry" as const, statusCode: null, durationMs: Date.now() - startedAt, retryAfterSeconds: null,
    error: `internal error: ${err instanceof Error ? err.name : "unknown"}`,
  }));
  const base = {
    destination: destination.name, attempt: attemptNumber, startedAt, durationMs: result.durationMs, statusCode: result.statusCode,
    circuitFailures: destination.circuitFailures,
  };
  switch (result.outcome) {
    case "delivered":
      return { ...base, status: "delivered", error: null, nextAttemptAt: null };
    case "gone":
      return { ...base, status: "gone", error: result.error, nextAttemptAt: null };
    case "retry": {
      // The open circuit's attempt, not the delivery's: it stays held and keeps its attempts.
      if (probe) return { ...base, attempt: attempts, status: "held", error: `probe failed (${result.error}); the circuit stays open`, nextAttemptAt: null };
      if (attemptNumber >= retry.maxAttempts) {
        return { ...base, status: "dead", error: `${result.error}; gave up after ${attemptNumber} attempts`, nextAttemptAt: null };
      }
      const delay = result.retryAfterSeconds ?? backoffSeconds(attemptNumber, retry);
      return { ...base, status: "failed", error: result.error, nextAttemptAt: startedAt + Math.min(delay, MAX_QUEUE_DELAY_SECONDS) * 1000 };
    }
  }
}

/** Exponential backoff with jitter: half the step fixed, half random, so retries spread out. */
function backoffSeconds(attempt: number, policy: Pick<RetryPolicy, "baseSeconds" | "maxSeconds">): number {
  const step = Math.min(policy.maxSeconds, policy.baseSeconds * 2 ** Math.max(0, attempt - 1));
  return Math.ceil(step / 2 + Math.random() * (step / 2));
}
