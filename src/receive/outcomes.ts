/**
 * Counts what each webhook request came to, after its answer: a data point for Workers
 * Analytics Engine when the optional METRICS binding is bound, and the Prometheus counter of
 * refused requests. Accepted, duplicate and quarantined events are counted where they are
 * written (the consumer, the quarantine); a refusal writes nothing, so its count is gathered in
 * the isolate and written at most every FLUSH_MS (a refusal flood never becomes a D1 write flood;
 * an isolate that ends loses at most that window of refusal counts). Telemetry writes that
 * failed (telemetry.ts) are gathered and written the same way, by the request and queue paths.
 */
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../env";
import { findSource } from "../sources";
import { CounterDeltas } from "../store/metrics";
import { takeTelemetryFailures, writePoint } from "../telemetry";

const FLUSH_MS = 10_000;
let gathered = new CounterDeltas();
let lastFlush = 0;

export function webhookOutcomes(): MiddlewareHandler<AppEnv, "/webhooks/:source"> {
  return async function webhookOutcomes(c, next) {
    const started = Date.now();
    await next();
    const log = c.get("log");
    const status = c.res.status;
    // The request path cannot tell copies apart (the consumer does): below 400 it is accepted, or a challenge.
    const outcome = status < 400 ? (log.outcome === "challenge" ? "challenge" : "accepted") : log.outcome?.startsWith("quarantined:") ? "quarantined" : "refused";
    // A source name from the URL only when it is one we serve: a hostile path never becomes a label.
    const found = findSource(c.env, c.req.param("source"));
    const source = found?.name ?? "unknown";
    const provider = found?.provider.name ?? "unknown";
    writePoint(c.env.METRICS, {
      index: provider,
      // The source is appended: queries written against blob1-4 keep their meaning.
      blobs: [provider, log.type ?? "", outcome, log.outcome ?? "", source],
      doubles: [status, Date.now() - started],
    });
    if (outcome === "refused") gathered.event(source, provider, "", "refused");
    flushWhenDue(c.env.DB, c.executionCtx, started);
  };
}

/** Writes what this isolate has gathered, in the background, when FLUSH_MS has passed since the last write. */
export function flushWhenDue(db: D1Database, ctx: Pick<ExecutionContext, "waitUntil">, now: number): void {
  gatherTelemetryFailures();
  if (gathered.size > 0 && now - lastFlush >= FLUSH_MS) ctx.waitUntil(flushGathered(db).catch(() => undefined));
}

/** Writes the counts this isolate has gathered (a scrape calls it too, so what it serves is current). */
export async function flushGathered(db: D1Database): Promise<void> {
  lastFlush = Date.now();
  gatherTelemetryFailures();
  if (gathered.size === 0) return;
  const due = gathered;
  gathered = new CounterDeltas();
  await db.batch(due.statements(db));
}

function gatherTelemetryFailures(): void {
  const failed = takeTelemetryFailures();
  if (failed > 0) gathered.add("edgehook_telemetry_failures_total", {}, failed);
}
