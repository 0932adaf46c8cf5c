/**
 * The console's and the operator API's aggregate queries over events, deliveries and attempts:
 * counts, the timeline, each destination's health. Read-only, apart from the delivery writes in
 * deliveries.ts.
 */
import { NOT_DELIVERED } from "./indexes";

export interface Stats {
  events: { provider: string; type: string; status: string; count: number }[];
  deliveries: { destination: string; status: string; count: number }[];
}

export async function stats(db: D1Database, since: number, until: number): Promise<Stats> {
  const [events, deliveries] = await db.batch([
    db
      .prepare(
        `SELECT provider, type, status, count(*) AS count FROM events
         WHERE received_at >= ?1 AND received_at < ?2 GROUP BY provider, type, status ORDER BY provider, type, status`,
      )
      .bind(since, until),
    db
      .prepare(
        `SELECT destination, status, count(*) AS count FROM deliveries
         WHERE updated_at >= ?1 AND updated_at < ?2 GROUP BY destination, status ORDER BY destination, status`,
      )
      .bind(since, until),
  ]);
  return { events: events!.results as Stats["events"], deliveries: deliveries!.results as Stats["deliveries"] };
}

export interface TimelineBucket {
  start: number;
  received: number;
  delivered: number;
  failed: number;
}

/** Events received and delivery outcomes per bucket since `since`, for the console's chart. */
export async function timeline(db: D1Database, since: number, bucketMs: number, buckets: number): Promise<TimelineBucket[]> {
  const [events, deliveries] = await db.batch([
    db
      .prepare(`SELECT CAST((received_at - ?1) / ?2 AS INTEGER) AS bucket, count(*) AS n FROM events WHERE received_at >= ?1 GROUP BY bucket`)
      .bind(since, bucketMs),
    db
      .prepare(
        `SELECT CAST((updated_at - ?1) / ?2 AS INTEGER) AS bucket, sum(status IN ('delivered', 'gone')) AS delivered,
                sum(status IN ('failed', 'dead')) AS failed
         FROM deliveries WHERE updated_at >= ?1 GROUP BY bucket`,
      )
      .bind(since, bucketMs),
  ]);
  const rows = Array.from({ length: buckets }, (_, i) => ({ start: since + i * bucketMs, received: 0, delivered: 0, failed: 0 }));
  for (const r of events!.results as { bucket: number; n: number }[]) if (rows[r.bucket]) rows[r.bucket]!.received = r.n;
  for (const r of deliveries!.results as { bucket: number; delivered: number; failed: number }[]) {
    if (rows[r.bucket]) Object.assign(rows[r.bucket]!, { delivered: r.delivered, failed: r.failed });
  }
  return rows;
}

/** The console's headline counts: events received in the last hour and day, deliveries an operator must replay (dead, or their transform failed). */
export async function consoleCounts(db: D1Database, now: number): Promise<{ hour: number; day: number; deadDeliveries: number }> {
  const [hour, day, dead] = await db.batch([
    db.prepare(`SELECT count(*) AS n FROM events WHERE received_at >= ?1`).bind(now - 3_600_000),
    db.prepare(`SELECT count(*) AS n FROM events WHERE received_at >= ?1`).bind(now - 86_400_000),
    db.prepare(`SELECT count(*) AS n FROM deliveries WHERE status IN ('dead', 'transform_failed') AND ${NOT_DELIVERED}`),
  ]);
  const n = (result: D1Result | undefined) => (result?.results[0] as { n: number } | undefined)?.n ?? 0;
  return { hour: n(hour), day: n(day), deadDeliveries: n(dead) };
}

export interface DestinationHealth {
  destination: string;
  /** Forward attempts started in the window (at least 1: destinations without any are left out). */
  forwards: number;
  /** Of those, the ones the destination answered with a 2xx. */
  succeeded: number;
  /** 95th percentile of their duration in ms, by nearest rank: the shortest duration that at least 95% of them do not exceed. */
  p95Ms: number;
}

/**
 * One destination's forward attempts started since ?2. SQLite has no percentile function: p95 is
 * the duration at ascending rank ceil(0.95 n), read as OFFSET n - ceil(0.95 n) in descending
 * order, so the sort keeps only the slowest 5%. Each use of `day` is a range scan of the covering
 * index delivery_attempts_by_destination (migration 0010; a test checks the plan).
 */
export const DESTINATION_HEALTH_SQL = `
  WITH day AS (SELECT duration_ms, status_code FROM delivery_attempts WHERE destination = ?1 AND started_at >= ?2)
  SELECT ?1 AS destination, count(*) AS forwards, count(CASE WHEN status_code BETWEEN 200 AND 299 THEN 1 END) AS succeeded,
         (SELECT duration_ms FROM day ORDER BY duration_ms DESC
          LIMIT 1 OFFSET (SELECT count(*) - (95 * count(*) + 99) / 100 FROM day)) AS p95Ms
  FROM day`;

/** For the console's charts: each destination's forwards since `since`, in one round trip; those without any are left out. */
export async function destinationHealth(db: D1Database, destinations: string[], since: number): Promise<DestinationHealth[]> {
  if (destinations.length === 0) return [];
  const results = await db.batch(destinations.map((name) => db.prepare(DESTINATION_HEALTH_SQL).bind(name, since)));
  return results.flatMap((result) => (result.results as DestinationHealth[]).filter((row) => row.forwards > 0));
}
