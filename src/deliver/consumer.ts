/**
 * The delivery path: consume → route → forward → record. Each queue message names one
 * stored event; the consumer sends it to every destination that wants it and has not had
 * it yet, records each attempt in D1, and acks the message only when nothing is left to do.
 * Destinations that succeeded are never sent to again by a redelivered message.
 */
import { numberVar, type Env, type QueuedEvent } from "../env";
import { FINISHED, getEventWithDeliveries, markDeadLettered, recordRound, type AttemptRecord } from "../store/deliveries";
import type { EventRow, EventStatus } from "../store/events";
import { loadDestinations, route, type Destination } from "./destinations";
import { forward } from "./forward";

const DEFAULT_MAX_ATTEMPTS = 8;
/** While the configuration is invalid, look again this often (the events wait in the queue). */
const CONFIG_RETRY_SECONDS = 300;
/** Queues accept delays up to 12 hours. */
const MAX_DELAY_SECONDS = 43_200;
const BACKOFF_BASE_SECONDS = 10;
const BACKOFF_CAP_SECONDS = 3_600;
/** Messages of a batch handled at once; each forwards to its destinations in parallel. */
const MESSAGE_CONCURRENCY = 8;

type Decision = { ack: true } | { ack: false; delaySeconds: number };

export async function consumeEvents(batch: MessageBatch<QueuedEvent>, env: Env): Promise<void> {
  const config = loadDestinations(env);
  if (!config.ok) {
    console.error(JSON.stringify({ queue: batch.queue, outcome: "invalid_destinations", errors: config.errors }));
    batch.retryAll({ delaySeconds: CONFIG_RETRY_SECONDS });
    return;
  }
  await forEachLimited(batch.messages, MESSAGE_CONCURRENCY, async (message) => {
    let decision: Decision;
    try {
      decision = await deliverEvent(message.body, env, config.destinations);
    } catch (err) {
      // D1 or the dead-letter queue failed mid-way: nothing is acked, the message comes back.
      console.error(JSON.stringify({ queue: batch.queue, eventKey: message.body.eventKey, outcome: "consumer_error", error: String(err) }));
      decision = { ack: false, delaySeconds: backoffSeconds(message.attempts) };
    }
    if (decision.ack) message.ack();
    else message.retry({ delaySeconds: decision.delaySeconds });
  });
}

async function deliverEvent(queued: QueuedEvent, env: Env, destinations: Destination[]): Promise<Decision> {
  const now = Date.now();
  const { event, deliveries } = await getEventWithDeliveries(env.DB, queued.eventKey);
  if (!event) {
    console.log(JSON.stringify({ eventKey: queued.eventKey, outcome: "event_not_found" }));
    return { ack: true };
  }

  const targets = queued.destinations
    ? destinations.filter((d) => queued.destinations!.includes(d.name)) // an operator's replay: routing already chosen
    : route(destinations, { provider: event.provider, type: event.type, envelope: JSON.parse(event.body) });
  const previous = new Map(deliveries.map((row) => [row.destination, row]));

  const due: { destination: Destination; attempts: number }[] = [];
  const waitMs: number[] = [];
  for (const destination of targets) {
    const row = previous.get(destination.name);
    if (row && FINISHED.has(row.status)) continue;
    if (row?.next_attempt_at && row.next_attempt_at > now) waitMs.push(row.next_attempt_at - now);
    else due.push({ destination, attempts: row?.attempts ?? 0 });
  }

  const maxAttempts = numberVar(env.MAX_DELIVERY_ATTEMPTS, DEFAULT_MAX_ATTEMPTS);
  const records = await Promise.all(due.map(({ destination, attempts }) => attempt(event, destination, attempts + 1, maxAttempts)));
  for (const record of records) if (record.nextAttemptAt) waitMs.push(record.nextAttemptAt - now);

  // The event's status covers every destination it has state for, not only this round's.
  const statusNow = new Map([...previous].map(([name, row]) => [name, row.status]));
  for (const destination of targets) if (!statusNow.has(destination.name)) statusNow.set(destination.name, "pending");
  for (const record of records) statusNow.set(record.destination, record.status);
  const statuses = [...statusNow.values()];
  const eventStatus: EventStatus = statuses.some((s) => s === "failed" || s === "pending")
    ? "failed"
    : statuses.includes("dead") ? "dead" : "delivered";
  // Also records the enqueue when the request path's own write of it failed.
  if (records.length || event.status !== eventStatus || event.enqueued_at === null) {
    await recordRound(env.DB, event.key, records, eventStatus, now);
  }

  // Dead deliveries go to the dead-letter queue once (again, if an earlier send of it failed).
  const unlettered = [...statusNow].filter(([name, s]) => s === "dead" && !previous.get(name)?.dead_lettered_at).map(([name]) => name);
  if (unlettered.length) {
    await env.DEAD_LETTER_QUEUE.send({ eventKey: event.key, destinations: unlettered }, { contentType: "json" });
    await markDeadLettered(env.DB, event.key, unlettered, now);
  }

  console.log(JSON.stringify({
    queue: "deliver", eventKey: event.key, provider: event.provider, type: event.type, status: eventStatus,
    attempts: records.map((r) => ({ destination: r.destination, status: r.status, code: r.statusCode })),
  }));
  if (waitMs.length === 0) return { ack: true };
  return { ack: false, delaySeconds: Math.min(MAX_DELAY_SECONDS, Math.max(1, Math.ceil(Math.min(...waitMs) / 1000))) };
}

async function attempt(event: EventRow, destination: Destination, attemptNumber: number, maxAttempts: number): Promise<AttemptRecord> {
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
      if (attemptNumber >= maxAttempts) {
        return { ...base, status: "dead", error: `${result.error}; gave up after ${attemptNumber} attempts`, nextAttemptAt: null };
      }
      const delay = result.retryAfterSeconds ?? backoffSeconds(attemptNumber);
      return { ...base, status: "failed", error: result.error, nextAttemptAt: startedAt + Math.min(delay, MAX_DELAY_SECONDS) * 1000 };
    }
  }
}

/** Exponential backoff with jitter: half the step fixed, half random, so retries spread out. */
export function backoffSeconds(attempt: number): number {
  const step = Math.min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** Math.max(0, attempt - 1));
  return Math.ceil(step / 2 + Math.random() * (step / 2));
}

async function forEachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
