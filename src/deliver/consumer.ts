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
 */
import { numberVar, type Env, type QueuedEvent } from "../env";
import { isRecord } from "../providers/provider";
import {
  claimForDelivery, FINISHED, holdForConfiguration, NOT_COUNTED, recordRounds,
  type AttemptRecord, type Claim, type Claimed, type ClosedDelivery, type DeliveryRow, type DeliveryStatus, type Round,
} from "../store/deliveries";
import { bodyJson, sourceOf, type EventRow, type EventStatus } from "../store/events";
import { loadDestinations, route, type Destination } from "./destinations";
import { forward } from "./forward";
import { withDeadline } from "../deadline";
import { writeAllOrEach } from "./all-or-each";
import { limiter, type Limiter } from "./limiter";

const DEFAULT_MAX_ATTEMPTS = 8;
/** Queues accept delays up to 12 hours. */
const MAX_DELAY_SECONDS = 43_200;
const DEFAULT_RETRY_BASE_SECONDS = 10;
const DEFAULT_RETRY_MAX_SECONDS = 3_600;
/** Messages of a batch handled at once (their forwards share the connection limit below). */
const MESSAGE_CONCURRENCY = 8;
/** Workers allow 6 simultaneous open connections per invocation; more would queue inside fetch() and time out there. */
const MAX_OPEN_FORWARDS = 6;
/** The free plan allows 50 subrequests per invocation; this leaves room for the D1 and Queue calls. */
const DEFAULT_MAX_FORWARDS_PER_BATCH = 40;
/** How long the dead-letter notices may take before the batch is recorded without them. */
const DEAD_LETTER_SEND_MS = 5_000;
/** Failed delivery rounds (exceptions) a message may have before its event is marked dead. */
const MAX_FAILED_ROUNDS = 10;
/** A message whose forwards did not fit in this batch comes back this soon. */
const DEFERRED_DELAY_SECONDS = 1;
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
}

export async function consumeEvents(batch: MessageBatch<QueuedEvent>, env: Env): Promise<void> {
  const retry: RetryPolicy = {
    maxAttempts: numberVar(env.MAX_DELIVERY_ATTEMPTS, DEFAULT_MAX_ATTEMPTS),
    baseSeconds: numberVar(env.RETRY_BASE_SECONDS, DEFAULT_RETRY_BASE_SECONDS),
    maxSeconds: numberVar(env.RETRY_MAX_SECONDS, DEFAULT_RETRY_MAX_SECONDS),
  };
  const messages: Message<QueuedEvent>[] = [];
  for (const message of batch.messages) {
    if (readableMessage(message.body)) messages.push(message);
    else {
      // Only our own code sends here, so this is a bug; a retry could never read it either.
      console.error(JSON.stringify({ queue: batch.queue, messageId: message.id, outcome: "unreadable_message" }));
      message.ack();
    }
  }
  if (messages.length === 0) return;
  const claims = messages.map(claimOf);
  const retryLater = (message: Message<QueuedEvent>) => message.retry({ delaySeconds: backoffSeconds(message.attempts, retry) });

  const config = loadDestinations(env);
  if (!config.ok) {
    // Waiting for a fix must not use up queue retries: store what the messages carry, say why on
    // the events, ack, and let the sweep re-enqueue them (they stay unfinished in D1).
    console.error(JSON.stringify({ queue: batch.queue, outcome: "invalid_destinations", errors: config.errors, events: claims.length }));
    try {
      await holdForConfiguration(env.DB, claims, WAITING_FOR_CONFIGURATION);
      for (const message of messages) message.ack();
    } catch (err) {
      console.error(JSON.stringify({ queue: batch.queue, outcome: "consumer_error", error: String(err) }));
      for (const message of messages) retryLater(message);
    }
    return;
  }

  const now = Date.now();
  // Per message id: its event and lease, null (a copy, or gone), or absent (could not be stored).
  const claimed = await claimEach(env.DB, claims, now);
  const budget: ForwardBudget = {
    connections: limiter(MAX_OPEN_FORWARDS),
    remaining: numberVar(env.MAX_FORWARDS_PER_BATCH, DEFAULT_MAX_FORWARDS_PER_BATCH),
    metrics: env.METRICS,
  };
  const plans = await mapLimited(messages, MESSAGE_CONCURRENCY, async (message): Promise<Plan> => {
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
    if (event.lease_by !== message.id) {
      // Another message is delivering it now: come back once that round is likely done.
      const leftSeconds = Math.ceil(((event.lease_until ?? now) - now) / 1000);
      return { decision: { ack: false, delaySeconds: Math.max(1, Math.min(leftSeconds, backoff)) }, round: null, outcome: "busy" };
    }
    try {
      return await deliverEvent(message.id, event, stored.deliveries, config.destinations, retry, budget, now);
    } catch (err) {
      return failedRound(event.key, message, err, backoff);
    }
  });
  await sendDeadLetters(env, plans);
  const unrecorded = await record(env.DB, plans, now);
  let acked = 0;
  plans.forEach((plan, i) => {
    const message = messages[i]!;
    if (unrecorded.has(plan)) retryLater(message);
    else if (plan.decision.ack) {
      message.ack();
      acked++;
    } else message.retry({ delaySeconds: plan.decision.delaySeconds });
  });
  // One line per batch; a line per event only where something was attempted or went wrong.
  const outcomes: Record<string, number> = {};
  for (const plan of plans) outcomes[plan.outcome] = (outcomes[plan.outcome] ?? 0) + 1;
  console.log(JSON.stringify({ queue: batch.queue, outcome: "batch", messages: batch.messages.length, ...outcomes, acked, unrecorded: unrecorded.size }));
}

/** A message the consumers can act on: names an event, and if it carries one, it has a body. */
export function readableMessage(body: unknown): body is QueuedEvent {
  if (!isRecord(body) || typeof body.eventKey !== "string") return false;
  return body.event === undefined || (isRecord(body.event) && typeof body.event.body === "string");
}

function claimOf(message: Message<QueuedEvent>): Claim {
  const { eventKey, event } = message.body;
  return {
    messageId: message.id,
    eventKey,
    ...(event && { arrival: { event: { ...event, key: eventKey }, enqueuedAt: message.timestamp.getTime() } }),
  };
}

/**
 * Stores and leases the whole batch in one D1 batch; if that fails, message by message, so one
 * message that cannot be stored costs only itself a retry (with its body: nothing is lost).
 * A message missing from the result was not stored.
 */
async function claimEach(db: D1Database, claims: Claim[], now: number): Promise<Map<string, Claimed | null>> {
  try {
    return await claimForDelivery(db, claims, now, now + LEASE_MS);
  } catch (err) {
    console.error(JSON.stringify({ queue: "deliver", outcome: "claim_batch_failed", error: String(err) }));
  }
  const claimed = new Map<string, Claimed | null>();
  for (const claim of claims) {
    try {
      for (const [messageId, value] of await claimForDelivery(db, [claim], now, now + LEASE_MS)) claimed.set(messageId, value);
    } catch (err) {
      console.error(JSON.stringify({ queue: "deliver", eventKey: claim.eventKey, messageId: claim.messageId, outcome: "claim_failed", error: String(err) }));
    }
  }
  return claimed;
}

/** A message that threw: its event shows the error, and it alone is retried. */
function failedRound(eventKey: string, message: Message<QueuedEvent>, err: unknown, delaySeconds: number): Plan {
  // The error's kind only: an exception's message can quote payload data, which never goes to logs or D1.
  const kind = err instanceof Error ? err.name : typeof err;
  // A message that keeps failing would otherwise retry, dead-letter and be swept again for ever.
  const givenUp = message.attempts >= MAX_FAILED_ROUNDS;
  const error = givenUp
    ? `delivery round failed ${message.attempts} times (${kind}); the event is dead until replayed`
    : `delivery round failed: ${kind}`;
  console.error(JSON.stringify({ queue: "deliver", eventKey, messageId: message.id, outcome: "message_error", error }));
  return {
    decision: givenUp ? { ack: true } : { ack: false, delaySeconds },
    round: { eventKey, messageId: message.id, records: [], closed: [], eventStatus: givenUp ? "dead" : null, deadLettered: [], error },
    outcome: "failed",
  };
}

/**
 * Writes the batch's rounds in one D1 batch; if that fails, message by message, so one
 * unwritable round costs only its own message a retry. Returns the plans not recorded.
 */
async function record(db: D1Database, plans: Plan[], now: number): Promise<Set<Plan>> {
  const pending = plans.filter((plan) => plan.round);
  return writeAllOrEach(pending, (some) => recordRounds(db, some.map((plan) => plan.round!), now), (plan, err) => {
    const outcome = plan ? { eventKey: plan.round!.eventKey, outcome: "record_failed" } : { outcome: "record_batch_failed" };
    console.error(JSON.stringify({ queue: "deliver", ...outcome, error: String(err) }));
  });
}

/** Notices of new dead deliveries; if the send fails they stay unmarked (visible) and nothing else is held up. */
async function sendDeadLetters(env: Env, plans: Plan[]): Promise<void> {
  const rounds = plans.flatMap((plan) => (plan.round?.deadLettered.length ? [plan.round] : []));
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

async function deliverEvent(
  messageId: string, event: EventRow, deliveries: DeliveryRow[], destinations: Destination[], retry: RetryPolicy, budget: ForwardBudget, now: number,
): Promise<Plan> {
  const previous = new Map(deliveries.map((row) => [row.destination, row]));
  const { targets, closed } = plan(event, previous, destinations);

  const due: { destination: Destination; attempts: number }[] = [];
  const waitMs: number[] = [];
  for (const destination of targets) {
    const row = previous.get(destination.name);
    if (row && FINISHED.has(row.status)) continue;
    if (row?.next_attempt_at && row.next_attempt_at > now) waitMs.push(row.next_attempt_at - now);
    else if (budget.remaining > 0) {
      budget.remaining--;
      due.push({ destination, attempts: row?.attempts ?? 0 });
    } else waitMs.push(DEFERRED_DELAY_SECONDS * 1000); // no attempt is used: it is simply not started
  }

  const records = await Promise.all(
    due.map(({ destination, attempts }) => budget.connections(() => attempt(event, destination, attempts + 1, retry, budget.metrics))),
  );
  for (const record of records) if (record.nextAttemptAt) waitMs.push(record.nextAttemptAt - now);

  // The event's status covers every destination it has state for, not only this round's.
  const statusNow = new Map<string, DeliveryStatus>([...previous].map(([name, row]) => [name, row.status]));
  for (const destination of targets) if (!statusNow.has(destination.name)) statusNow.set(destination.name, "pending");
  for (const change of closed) statusNow.set(change.destination, change.status);
  for (const record of records) statusNow.set(record.destination, record.status);
  const eventStatus = statusOf([...statusNow.values()]);
  // Dead deliveries go to the dead-letter queue once (again, if an earlier send of it failed).
  const deadLettered = [...statusNow].filter(([name, s]) => s === "dead" && !previous.get(name)?.dead_lettered_at).map(([name]) => name);

  if (records.length || closed.length) {
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
      : { ack: false, delaySeconds: Math.min(MAX_DELAY_SECONDS, Math.max(1, Math.ceil(Math.min(...waitMs) / 1000))) },
    round: { eventKey: event.key, messageId, records, closed, eventStatus, deadLettered, error: null },
    outcome: "round",
  };
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
  return counted.includes("dead") ? "dead" : "delivered";
}

/** One forward attempt, recorded; with METRICS bound, also one Analytics Engine data point. */
async function attempt(
  event: EventRow, destination: Destination, attemptNumber: number, retry: RetryPolicy, metrics: AnalyticsEngineDataset | undefined,
): Promise<AttemptRecord> {
  const record = await forwardOnce(event, destination, attemptNumber, retry);
  metrics?.writeDataPoint({
    indexes: [destination.name],
    // The source is appended: queries written against blob1-4 keep their meaning.
    blobs: [destination.name, record.status, event.provider, event.type, sourceOf(event)],
    doubles: [record.durationMs, record.statusCode ?? 0],
  });
  return record;
}

async function forwardOnce(event: EventRow, destination: Destination, attemptNumber: number, retry: RetryPolicy): Promise<AttemptRecord> {
  const startedAt = Date.now();
  const result = await forward(
    { key: event.key, provider: event.provider, type: event.type, contentType: event.content_type, body: event.body },
    destination,
  ).catch((err: unknown) => ({
    // A bug while forwarding is a failed attempt of this destination only, never the message's other forwards.
    outcome: "retry" as const, statusCode: null, durationMs: Date.now() - startedAt, retryAfterSeconds: null,
    error: `internal error: ${err instanceof Error ? err.name : "unknown"}`,
  }));
  const base = { destination: destination.name, attempt: attemptNumber, startedAt, durationMs: result.durationMs, statusCode: result.statusCode };
  switch (result.outcome) {
    case "delivered":
      return { ...base, status: "delivered", error: null, nextAttemptAt: null };
    case "gone":
      return { ...base, status: "gone", error: result.error, nextAttemptAt: null };
    case "retry": {
      if (attemptNumber >= retry.maxAttempts) {
        return { ...base, status: "dead", error: `${result.error}; gave up after ${attemptNumber} attempts`, nextAttemptAt: null };
      }
      const delay = result.retryAfterSeconds ?? backoffSeconds(attemptNumber, retry);
      return { ...base, status: "failed", error: result.error, nextAttemptAt: startedAt + Math.min(delay, MAX_DELAY_SECONDS) * 1000 };
    }
  }
}

/** Exponential backoff with jitter: half the step fixed, half random, so retries spread out. */
function backoffSeconds(attempt: number, policy: Pick<RetryPolicy, "baseSeconds" | "maxSeconds">): number {
  const step = Math.min(policy.maxSeconds, policy.baseSeconds * 2 ** Math.max(0, attempt - 1));
  return Math.ceil(step / 2 + Math.random() * (step / 2));
}

async function mapLimited<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await work(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
