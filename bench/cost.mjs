// What a million events cost on Cloudflare's paid plan, from the operations and bytes counted per
// event (bench/storage.mjs). Prices are the published list prices beyond the included allowances
// (Workers Paid, standard usage model), read on 2026-12-07; the allowances (10 M requests, 1 M
// queue operations, 25 B D1 rows read, 50 M rows written, 5 GB of D1, 10 GB of R2, 1 M class A and
// 10 M class B operations a month, ...) are left out, so these are the costs at the margin.
// GB here is 10^9 bytes, as Cloudflare bills storage.

export const PRICES = {
  // https://developers.cloudflare.com/workers/platform/pricing/ : $0.30 per million requests (a queue
  // consumer's or cron's invocation is a Worker invocation), $0.02 per million CPU milliseconds.
  workerRequest: 0.3 / 1e6,
  workerCpuMs: 0.02 / 1e6,
  // https://developers.cloudflare.com/queues/platform/pricing/ : $0.40 per million operations; each
  // 64 KB written, read (every delivery, retries included) or deleted (acknowledged) is one.
  queueOperation: 0.4 / 1e6,
  // https://developers.cloudflare.com/d1/platform/pricing/ : $0.001 per million rows read, $1.00 per
  // million rows written, $0.75 per GB-month stored.
  d1RowRead: 0.001 / 1e6,
  d1RowWritten: 1.0 / 1e6,
  d1GbMonth: 0.75,
  // https://developers.cloudflare.com/r2/pricing/ : Standard storage, $4.50 per million class A
  // operations (put, list), $0.36 per million class B (get, head), $0.015 per GB-month; deletes are free.
  r2ClassA: 4.5 / 1e6,
  r2ClassB: 0.36 / 1e6,
  r2GbMonth: 0.015,
  // https://developers.cloudflare.com/durable-objects/platform/pricing/ : $0.15 per million requests
  // (every RPC call on a stub is one); duration ($12.50 per million GB-s) is not counted here.
  durableObjectRequest: 0.15 / 1e6,
  // https://developers.cloudflare.com/analytics/analytics-engine/pricing/ : $0.25 per million data points written.
  analyticsDataPoint: 0.25 / 1e6,
};

const MILLION = 1e6;
const GB = 1e9;
/** Days in a billing month (a GB-month is the average over 30 days). */
const MONTH_DAYS = 30;

/**
 * Cost lines for a million events, from figures per event: each line's resource, how much of it
 * an event uses (with its unit), and dollars per million events. Storage: a million events a
 * month, each kept `retentionDays` (wrangler.toml's RETENTION_DAYS), so the steady state holds
 * retentionDays/30 of a million events at any time.
 */
export function costLines(perEvent, { retentionDays = 30 } = {}) {
  const held = (bytes) => (bytes * MILLION * (retentionDays / MONTH_DAYS)) / GB;
  const line = (resource, amount, unit, dollarsPerMillion) => ({ resource, amount, unit, dollars: dollarsPerMillion });
  return [
    line("Worker requests (webhook, queue and cron invocations)", perEvent.invocations, "invocations", perEvent.invocations * MILLION * PRICES.workerRequest),
    line("Worker CPU", perEvent.cpuMs, "ms", perEvent.cpuMs * MILLION * PRICES.workerCpuMs),
    line("Queue operations (write, read, delete; retries' reads)", perEvent.queueOperations, "operations", perEvent.queueOperations * MILLION * PRICES.queueOperation),
    line("D1 rows read", perEvent.d1RowsRead, "rows", perEvent.d1RowsRead * MILLION * PRICES.d1RowRead),
    line("D1 rows written", perEvent.d1RowsWritten, "rows", perEvent.d1RowsWritten * MILLION * PRICES.d1RowWritten),
    line(`D1 storage (${retentionDays} days kept)`, perEvent.d1Bytes, "bytes", held(perEvent.d1Bytes) * PRICES.d1GbMonth),
    line("R2 class A (put, list)", perEvent.r2ClassA, "operations", perEvent.r2ClassA * MILLION * PRICES.r2ClassA),
    line("R2 class B (get, head)", perEvent.r2ClassB, "operations", perEvent.r2ClassB * MILLION * PRICES.r2ClassB),
    line(`R2 storage (${retentionDays} days kept)`, perEvent.r2Bytes, "bytes", held(perEvent.r2Bytes) * PRICES.r2GbMonth),
    line("Durable Object requests", perEvent.durableObjectRequests, "requests", perEvent.durableObjectRequests * MILLION * PRICES.durableObjectRequest),
    line("Analytics Engine data points (METRICS bound)", perEvent.analyticsDataPoints, "data points", perEvent.analyticsDataPoints * MILLION * PRICES.analyticsDataPoint),
  ];
}

/** Dollars per million events, all lines together. */
export const totalDollars = (lines) => lines.reduce((sum, l) => sum + l.dollars, 0);
