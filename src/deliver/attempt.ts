/**
 * One forward and its record: the event's body (or its transform's) sent to one destination,
 * classified (delivered, gone, failed with its retry time, dead, or a failed probe that stays
 * held), and one Analytics Engine data point, a write that never throws. Used by the consumer's
 * rounds and by the lanes alike.
 */
import type { AttemptRecord } from "../store/deliveries";
import { sourceOf, type EventRow } from "../store/events";
import { MAX_QUEUE_DELAY_SECONDS } from "../queues";
import { writePoint } from "../telemetry";
import type { Destination } from "./destinations";
import { forward } from "./forward";
import { backoffSeconds, type RetryPolicy } from "./retry";
import type { ForwardBody, TransformFault } from "./transform";

/** A forward a round will make: to whom, how many attempts came before, whether it is a probe, and when it may start. */
export interface Due {
  destination: Destination;
  attempts: number;
  probe: boolean;
  /** A start time the destination's rate limit reserved; null: at once. */
  startAt: number | null;
}

/** One forward attempt of `body` (the event's, or its transform's), recorded; with METRICS bound, also one Analytics Engine data point. */
export async function attempt(event: EventRow, body: ForwardBody | TransformFault, due: Due, retry: RetryPolicy, metrics: AnalyticsEngineDataset | undefined): Promise<AttemptRecord> {
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

async function forwardOnce(event: EventRow, body: ForwardBody | TransformFault, { destination, attempts, probe }: Due, retry: RetryPolicy): Promise<AttemptRecord> {
  const attemptNumber = attempts + 1;
  const startedAt = Date.now();
  // A transform's passing fault (a timeout, a runtime limit or outage) fails this attempt, without a forward.
  const result = "fault" in body
    ? { outcome: "retry" as const, statusCode: null, durationMs: body.fault.durationMs, retryAfterSeconds: null, error: body.fault.message }
    : await forward(
      { key: event.key, provider: event.provider, type: event.type, contentType: body.contentType, body: body.body },
      destination,
    ).catch((err: unknown) => ({
      // A bug while forwarding is a failed attempt of this destination only, never the message's other forwards.
      outcome: "retry" as const, statusCode: null, durationMs: Date.now() - startedAt, retryAfterSeconds: null,
      error: `internal error: ${err instanceof Error ? err.name : "unknown"}`,
    }));
  const base = {
    destination: destination.name, attempt: attemptNumber, startedAt, durationMs: result.durationMs, statusCode: result.statusCode,
    circuitFailures: destination.circuitFailures, laneBudgetMs: retry.laneBudgetMs, transformCode: body.transformCode,
    transformFailure: "fault" in body ? body.fault.kind : null,
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
