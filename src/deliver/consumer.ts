/**
 * The delivery path: consume → route → forward → record. Each queue message names one
 * stored event; the consumer sends it to every destination that wants it and has not had
 * it yet, and acks the message only when nothing is left to do for it. Destinations that
 * succeeded are never sent to again by a redelivered message.
 *
 * Storage is per batch, not per message: one D1 read before forwarding and one D1 write
 * after (D1 runs one query at a time, so transactions per event bound the gateway's rate).
 *
 * One message never affects another: anything thrown while handling a message (a bug, a
 * corrupt row) is recorded on its event and retries that message alone, and a failed write
 * of the batch falls back to writing message by message, so a batch-mate whose forwards
 * were recorded is acked, not forwarded again.
 */
import { numberVar, type Env, type QueuedEvent } from "../env";
import { FINISHED, loadForDelivery, NOT_COUNTED, recordRounds, type AttemptRecord, type ClosedDelivery, type DeliveryRow, type DeliveryStatus, type Round } from "../store/deliveries";
import { bodyJson, markWaiting, type EventRow, type EventStatus } from "../store/events";
import { loadDestinations, route, type Destination } from "./destinations";
import { forward } from "./forward";
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
/** A message whose forwards did not fit in this batch comes back this soon. */
const DEFERRED_DELAY_SECONDS = 1;
/** Kept on the event while DESTINATIONS is invalid; the reconciliation sweep re-enqueues it once fixed. */
export const WAITING_FOR_CONFIGURATION = "DESTINATIONS is invalid; the event waits and is re-enqueued by the reconciliation sweep once it is fixed";

type Decision = { ack: true } | { ack: false; delaySeconds: number };

interface Plan {
  decision: Decision;
  /** What to record; null when the message changed nothing (its event is gone, or nothing was due). */
  round: Round | null;
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
  const keys = batch.messages.map((m) => m.body.eventKey);
  const config = loadDestinations(env);
  if (!config.ok) {
    // Waiting for a fix must not use up queue retries: ack, say why on the events, and let the
    // sweep re-enqueue them (they stay unfinished in D1, so nothing is lost).
    console.error(JSON.stringify({ queue: batch.queue, outcome: "invalid_destinations", errors: config.errors, events: keys.length }));
    await markWaiting(env.DB, keys, WAITING_FOR_CONFIGURATION).catch(() => undefined);
    batch.ackAll();
    return;
  }
  const now = Date.now();
  const retry: RetryPolicy = {
    maxAttempts: numberVar(env.MAX_DELIVERY_ATTEMPTS, DEFAULT_MAX_ATTEMPTS),
    baseSeconds: numberVar(env.RETRY_BASE_SECONDS, DEFAULT_RETRY_BASE_SECONDS),
    maxSeconds: numberVar(env.RETRY_MAX_SECONDS, DEFAULT_RETRY_MAX_SECONDS),
  };
  let loaded: Awaited<ReturnType<typeof loadForDelivery>>;
  try {
    loaded = await loadForDelivery(env.DB, keys);
  } catch (err) {
    // Nothing was forwarded yet: every message simply comes back.
    console.error(JSON.stringify({ queue: batch.queue, outcome: "consumer_error", error: String(err) }));
    for (const message of batch.messages) message.retry({ delaySeconds: backoffSeconds(message.attempts, retry) });
    return;
  }
  const budget: ForwardBudget = {
    connections: limiter(MAX_OPEN_FORWARDS),
    remaining: numberVar(env.MAX_FORWARDS_PER_BATCH, DEFAULT_MAX_FORWARDS_PER_BATCH),
    metrics: env.METRICS,
  };
  const plans = await mapLimited(batch.messages, MESSAGE_CONCURRENCY, async (message): Promise<Plan> => {
    const stored = loaded.get(message.body.eventKey);
    if (!stored) {
      console.log(JSON.stringify({ queue: batch.queue, eventKey: message.body.eventKey, outcome: "event_not_found" }));
      return { decision: { ack: true }, round: null };
    }
    try {
      return await deliverEvent(stored.event, stored.deliveries, config.destinations, retry, budget, now);
    } catch (err) {
      return failedRound(stored.event.key, err, backoffSeconds(message.attempts, retry));
    }
  });
  await sendDeadLetters(env, plans);
  const unrecorded = await record(env.DB, plans, now);
  plans.forEach((plan, i) => {
    const message = batch.messages[i]!;
    if (unrecorded.has(plan)) message.retry({ delaySeconds: backoffSeconds(message.attempts, retry) });
    else if (plan.decision.ack) message.ack();
    else message.retry({ delaySeconds: plan.decision.delaySeconds });
  });
}

/** A message that threw: its event shows the error, and it alone is retried. */
function failedRound(eventKey: string, err: unknown, delaySeconds: number): Plan {
  const error = `delivery round failed: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`.slice(0, 500);
  console.error(JSON.stringify({ queue: "deliver", eventKey, outcome: "message_error", error }));
  return {
    decision: { ack: false, delaySeconds },
    round: { eventKey, records: [], closed: [], eventStatus: null, deadLettered: [], error },
  };
}

/**
 * Writes the batch's rounds in one D1 batch; if that fails, message by message, so one
 * unwritable round costs only its own message a retry. Returns the plans not recorded.
 */
async function record(db: D1Database, plans: Plan[], now: number): Promise<Set<Plan>> {
  const pending = plans.filter((plan) => plan.round);
  try {
    await recordRounds(db, pending.map((plan) => plan.round!), now);
    return new Set();
  } catch (err) {
    console.error(JSON.stringify({ queue: "deliver", outcome: "record_batch_failed", error: String(err) }));
  }
  const failed = new Set<Plan>();
  for (const plan of pending) {
    await recordRounds(db, [plan.round!], now).catch((err: unknown) => {
      console.error(JSON.stringify({ queue: "deliver", eventKey: plan.round!.eventKey, outcome: "record_failed", error: String(err) }));
      failed.add(plan);
    });
  }
  return failed;
}

/** Notices of new dead deliveries; if the send fails they stay unmarked (visible) and nothing else is held up. */
async function sendDeadLetters(env: Env, plans: Plan[]): Promise<void> {
  const rounds = plans.flatMap((plan) => (plan.round?.deadLettered.length ? [plan.round] : []));
  if (rounds.length === 0) return;
  try {
    await env.DEAD_LETTER_QUEUE.sendBatch(
      rounds.map((round) => ({ body: { eventKey: round.eventKey, destinations: round.deadLettered }, contentType: "json" as const })),
    );
  } catch (err) {
    console.error(JSON.stringify({ queue: "deliver", outcome: "dead_letter_send_failed", error: String(err) }));
    for (const round of rounds) round.deadLettered = [];
  }
}

async function deliverEvent(
  event: EventRow, deliveries: DeliveryRow[], destinations: Destination[], retry: RetryPolicy, budget: ForwardBudget, now: number,
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

  console.log(JSON.stringify({
    queue: "deliver", eventKey: event.key, provider: event.provider, type: event.type, status: eventStatus,
    attempts: records.map((r) => ({ destination: r.destination, status: r.status, code: r.statusCode })),
    ...(closed.length && { closed: closed.map((c) => ({ destination: c.destination, status: c.status })) }),
  }));
  // Also records the enqueue when the request path's own write of it failed, and clears an earlier error.
  const changed = records.length > 0 || closed.length > 0 || deadLettered.length > 0 || event.status !== eventStatus
    || event.enqueued_at === null || event.last_error !== null;
  return {
    decision: waitMs.length === 0
      ? { ack: true }
      : { ack: false, delaySeconds: Math.min(MAX_DELAY_SECONDS, Math.max(1, Math.ceil(Math.min(...waitMs) / 1000))) },
    round: changed ? { eventKey: event.key, records, closed, eventStatus, deadLettered, error: null } : null,
  };
}

/**
 * Where the event goes now: the destinations that route it, plus deliveries an operator pinned
 * by name. Unfinished deliveries to anything else are cancelled (the configuration changed), and
 * destinations whose filter could not decide are skipped; neither counts toward the event's status.
 */
function plan(event: EventRow, previous: Map<string, DeliveryRow>, destinations: Destination[]): { targets: Destination[]; closed: ClosedDelivery[] } {
  // Route on what the receive path parsed: the stored text without a byte-order mark (it is still forwarded).
  const routing = route(destinations, { provider: event.provider, type: event.type, envelope: bodyJson(event.body)?.json ?? null });
  const targets = new Map(routing.destinations.map((d) => [d.name, d]));
  const configured = new Map(destinations.map((d) => [d.name, d]));
  const closed: ClosedDelivery[] = [];
  for (const row of previous.values()) {
    if (FINISHED.has(row.status) || targets.has(row.destination)) continue;
    const destination = configured.get(row.destination);
    if (destination && row.pinned) targets.set(row.destination, destination);
    else if (!routing.skipped.some((s) => s.destination === row.destination)) {
      const reason = destination ? "no longer routes this event (its providers, types or filter changed)" : "no destination by this name in DESTINATIONS";
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
    blobs: [destination.name, record.status, event.provider, event.type],
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
