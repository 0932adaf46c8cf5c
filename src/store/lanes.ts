/**
 * D1 access for lanes (deliver/lane.ts): the deliveries a destination's lane sends, and the
 * destination's way back to the consumer. All SQL for `deliveries.lane` reads lives here.
 */
import type { DeliveryRow } from "./deliveries";
import { leaseFree, type EventRow } from "./events";

/** Unfinished deliveries of a lane: pending or failed, handed to it (migrations/0016). */
const IN_LANE = `destination = ?1 AND lane = 1 AND status IN ('pending', 'failed')`;

/**
 * Up to `limit` of a lane's deliveries that are due now, in the order they fell due (a retry by its
 * retry time, a new one by when it was handed over), each with its event.
 */
export async function laneDue(db: D1Database, destination: string, now: number, limit: number): Promise<{ event: EventRow; delivery: DeliveryRow }[]> {
  const due = `SELECT * FROM deliveries WHERE ${IN_LANE} AND COALESCE(next_attempt_at, 0) <= ?2 ORDER BY COALESCE(next_attempt_at, updated_at) LIMIT ?3`;
  // One transaction: the events are those of exactly these deliveries.
  const [deliveries, events] = await db.batch([
    db.prepare(due).bind(destination, now, limit),
    db.prepare(`SELECT * FROM events WHERE key IN (SELECT event_key FROM (${due}))`).bind(destination, now, limit),
  ]);
  const byKey = new Map((events!.results as EventRow[]).map((event) => [event.key, event]));
  return (deliveries!.results as DeliveryRow[]).flatMap((delivery) => {
    const event = byKey.get(delivery.event_key);
    return event ? [{ event, delivery }] : [];
  });
}

/** When the lane's next delivery is due (ms; now or earlier when one is due already), or null when it has none. */
export async function laneNextDue(db: D1Database, destination: string): Promise<number | null> {
  const row = await db
    .prepare(`SELECT count(*) AS n, min(COALESCE(next_attempt_at, 0)) AS at FROM deliveries WHERE ${IN_LANE}`)
    .bind(destination)
    .first<{ n: number; at: number | null }>();
  return row && row.n > 0 ? (row.at ?? 0) : null;
}

/** The lane looks at these deliveries again at `at`, not before (their bodies could not be read): the rest of the lane goes on meanwhile. */
export async function postponeInLane(db: D1Database, destination: string, eventKeys: string[], at: number): Promise<void> {
  await db
    .prepare(`UPDATE deliveries SET next_attempt_at = ?3 WHERE ${IN_LANE} AND event_key IN (SELECT value FROM json_each(?2))`)
    .bind(destination, JSON.stringify(eventKeys), at)
    .run();
}

/** Destinations whose lane has unfinished deliveries, for the cron's safety net (a lane whose wake-up was lost). */
export async function lanesWithWork(db: D1Database): Promise<string[]> {
  const { results } = await db
    .prepare(`SELECT DISTINCT destination FROM deliveries WHERE lane = 1 AND status IN ('pending', 'failed')`)
    .all<{ destination: string }>();
  return results.map((row) => row.destination);
}

/**
 * The destination goes back to the consumer, if it is still in the lane it entered at `since`.
 * What the lane already holds it still sends (retries included); new deliveries are the consumer's.
 */
export async function leaveLane(db: D1Database, destination: string, since: number, now: number): Promise<boolean> {
  const result = await db
    .prepare(
      `UPDATE destination_state SET lane_since = NULL, lane_reason = NULL, updated_at = ?3
       WHERE destination = ?1 AND lane_since = ?2`,
    )
    .bind(destination, since, now)
    .run();
  return result.meta.changes > 0;
}

/**
 * A lane's probe takes the event's delivery lease, as a round does (so a release or another round
 * never touches the event meanwhile), and reads the event and its delivery to `destination`.
 * Null when another holds the lease or the event is gone.
 */
export async function leaseForProbe(
  db: D1Database, eventKey: string, destination: string, lease: string, until: number, now: number,
): Promise<{ event: EventRow; delivery: DeliveryRow | null } | null> {
  const [, events, deliveries] = await db.batch([
    db.prepare(`UPDATE events SET lease_by = ?2, lease_until = ?3 WHERE key = ?1 AND ${leaseFree("?2", "?4")}`).bind(eventKey, lease, until, now),
    db.prepare(`SELECT * FROM events WHERE key = ?1 AND lease_by = ?2`).bind(eventKey, lease),
    db.prepare(`SELECT * FROM deliveries WHERE event_key = ?1 AND destination = ?2`).bind(eventKey, destination),
  ]);
  const event = events!.results[0] as EventRow | undefined;
  return event ? { event, delivery: (deliveries!.results[0] as DeliveryRow | undefined) ?? null } : null;
}

/** Gives back a lease taken for a probe that found nothing to try. */
export async function releaseLease(db: D1Database, eventKey: string, lease: string): Promise<void> {
  await db.prepare(`UPDATE events SET lease_by = NULL, lease_until = NULL WHERE key = ?1 AND lease_by = ?2`).bind(eventKey, lease).run();
}
