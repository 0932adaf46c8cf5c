/**
 * The delivery path: consume → route → forward → record. Each queue message names one
 * stored event; the consumer sends it to every destination that wants it and has not had
 * it yet, and acks the message only when nothing is left to do for it. Destinations that
 * succeeded are never sent to again by a redelivered message.
 *
 * Storage is per batch, not per message: one D1 read before forwarding and one D1 write
 * after (D1 runs one query at a time, so transactions per event bound the gateway's rate).
 * If that write fails, no message of the batch with work in it is acked.
 */
import { numberVar, type Env, type QueuedEvent } from "../env";
import { FINISHED, loadForDelivery, recordRounds, type AttemptRecord, type DeliveryRow, type DeliveryStatus, type Round } from "../store/deliveries";
import type { EventRow, EventStatus } from "../store/events";
import { loadDestinations, route, type Destination } from "./destinations";
import { forward } from "./forward";

const DEFAULT_MAX_ATTEMPTS = 8;
/** While the configuration is invalid, look again this often (the events wait in the queue). */
const CONFIG_RETRY_SECONDS = 300;
/** Queues accept delays up to 12 hours. */
const MAX_DELAY_SECONDS = 43_200;
const DEFAULT_RETRY_BASE_SECONDS = 10;
const DEFAULT_RETRY_MAX_SECONDS = 3_600;
/** Messages of a batch forwarded at once; each forwards to its destinations in parallel. */
const MESSAGE_CONCURRENCY = 8;

type Decision = { ack: true } | { ack: false; delaySeconds: number };

interface Plan {
  decision: Decision;
  /** What to record; null when the message changed nothing (its event is gone, or nothing was due). */
  round: Round | null;
}

export async function consumeEvents(batch: MessageBatch<QueuedEvent>, env: Env): Promise<void> {
  const config = loadDestinations(env);
  if (!config.ok) {
    console.error(JSON.stringify({ queue: batch.queue, outcome: "invalid_destinations", errors: config.errors }));
    batch.retryAll({ delaySeconds: CONFIG_RETRY_SECONDS });
    return;
  }
  const now = Date.now();
  const retry: RetryPolicy = {
    maxAttempts: numberVar(env.MAX_DELIVERY_ATTEMPTS, DEFAULT_MAX_ATTEMPTS),
    baseSeconds: numberVar(env.RETRY_BASE_SECONDS, DEFAULT_RETRY_BASE_SECONDS),
    maxSeconds: numberVar(env.RETRY_MAX_SECONDS, DEFAULT_RETRY_MAX_SECONDS),
  };
  try {
    const loaded = await loadForDelivery(env.DB, batch.messages.map((m) => m.body.eventKey));
    const plans = await mapLimited(batch.messages, MESSAGE_CONCURRENCY, (message) => {
      const stored = loaded.get(message.body.eventKey);
      if (!stored) {
        console.log(JSON.stringify({ queue: batch.queue, eventKey: message.body.eventKey, outcome: "event_not_found" }));
        return Promise.resolve<Plan>({ decision: { ack: true }, round: null });
      }
      return deliverEvent(message.body, stored.event, stored.deliveries, config.destinations, retry, now);
    });
    const rounds = plans.flatMap((plan) => (plan.round ? [plan.round] : []));
    const letters = rounds.filter((round) => round.deadLettered.length);
    if (letters.length) {
      await env.DEAD_LETTER_QUEUE.sendBatch(
        letters.map((round) => ({ body: { eventKey: round.eventKey, destinations: round.deadLettered }, contentType: "json" as const })),
      );
    }
    await recordRounds(env.DB, rounds, now);
    plans.forEach((plan, i) => {
      const message = batch.messages[i]!;
      if (plan.decision.ack) message.ack();
      else message.retry({ delaySeconds: plan.decision.delaySeconds });
    });
  } catch (err) {
    // D1 or the dead-letter queue failed: nothing is acked, every message comes back.
    console.error(JSON.stringify({ queue: batch.queue, outcome: "consumer_error", error: String(err) }));
    for (const message of batch.messages) message.retry({ delaySeconds: backoffSeconds(message.attempts, retry) });
  }
}

async function deliverEvent(
  queued: QueuedEvent, event: EventRow, deliveries: DeliveryRow[], destinations: Destination[], retry: RetryPolicy, now: number,
): Promise<Plan> {
  const targets = queued.destinations
    ? destinations.filter((d) => queued.destinations!.includes(d.name)) // an operator's replay: routing already chosen
    : route(destinations, { provider: event.provider, type: event.type, envelope: JSON.parse(event.body) }).destinations;
  const previous = new Map(deliveries.map((row) => [row.destination, row]));

  const due: { destination: Destination; attempts: number }[] = [];
  const waitMs: number[] = [];
  for (const destination of targets) {
    const row = previous.get(destination.name);
    if (row && FINISHED.has(row.status)) continue;
    if (row?.next_attempt_at && row.next_attempt_at > now) waitMs.push(row.next_attempt_at - now);
    else due.push({ destination, attempts: row?.attempts ?? 0 });
  }

  const records = await Promise.all(due.map(({ destination, attempts }) => attempt(event, destination, attempts + 1, retry)));
  for (const record of records) if (record.nextAttemptAt) waitMs.push(record.nextAttemptAt - now);

  // The event's status covers every destination it has state for, not only this round's.
  const statusNow = new Map<string, DeliveryStatus>([...previous].map(([name, row]) => [name, row.status]));
  for (const destination of targets) if (!statusNow.has(destination.name)) statusNow.set(destination.name, "pending");
  for (const record of records) statusNow.set(record.destination, record.status);
  const statuses = [...statusNow.values()];
  const eventStatus: EventStatus = statuses.some((s) => s === "failed" || s === "pending")
    ? "failed"
    : statuses.includes("dead") ? "dead" : "delivered";
  // Dead deliveries go to the dead-letter queue once (again, if an earlier send of it failed).
  const deadLettered = [...statusNow].filter(([name, s]) => s === "dead" && !previous.get(name)?.dead_lettered_at).map(([name]) => name);

  console.log(JSON.stringify({
    queue: "deliver", eventKey: event.key, provider: event.provider, type: event.type, status: eventStatus,
    attempts: records.map((r) => ({ destination: r.destination, status: r.status, code: r.statusCode })),
  }));
  // Also records the enqueue when the request path's own write of it failed.
  const changed = records.length > 0 || deadLettered.length > 0 || event.status !== eventStatus || event.enqueued_at === null;
  return {
    decision: waitMs.length === 0
      ? { ack: true }
      : { ack: false, delaySeconds: Math.min(MAX_DELAY_SECONDS, Math.max(1, Math.ceil(Math.min(...waitMs) / 1000))) },
    round: changed ? { eventKey: event.key, records, eventStatus, deadLettered } : null,
  };
}

async function attempt(event: EventRow, destination: Destination, attemptNumber: number, retry: RetryPolicy): Promise<AttemptRecord> {
  const startedAt = Date.now();
  const result = await forward(
    { key: event.key, provider: event.provider, type: event.type, contentType: event.content_type, body: event.body },
    destination,
  );
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

interface RetryPolicy {
  maxAttempts: number;
  baseSeconds: number;
  maxSeconds: number;
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
