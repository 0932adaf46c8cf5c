/**
 * D1 access for each destination's run-time state: paused or not, and its circuit breaker.
 * All SQL for destination_state, and for moving deliveries in and out of `held`, lives here.
 * DESTINATIONS is static configuration; this is what an operator and the delivery path change
 * while it runs. A destination without a row is active with its circuit closed.
 */
import { NOT_DELIVERED } from "./indexes";

export interface ControlRow {
  destination: string;
  paused_at: number | null;
  paused_reason: string | null;
  failures: number;
  gone_streak: number;
  opened_at: number | null;
  probe_at: number | null;
  probe_id: string | null;
  /** The event the current probe message delivers. */
  probe_event_key: string | null;
  /** When a success last closed the circuit (or a half-open one): the batch whose success it was compares it with its own time. */
  closed_at: number | null;
  last_success_at: number | null;
  last_failure_at: number | null;
  updated_at: number;
  /** In a lane of its own since then (deliver/lane.ts); null: the consumer forwards it. */
  lane_since: number | null;
  /** Why it was moved to its lane. */
  lane_reason: string | null;
}

/** What an operator sees: paused wins over an open circuit (nothing is sent either way). */
export type DestinationState = "active" | "paused" | "open";

export function stateOf(row: ControlRow | undefined): DestinationState {
  if (row?.paused_at != null) return "paused";
  return row?.opened_at != null ? "open" : "active";
}

/** The reason an operator pause records (the 410 rule records its own). */
export const PAUSED_BY_OPERATOR = "paused by an operator";

/** Every destination's state, for the consumer's claim batch (a handful of rows). */
export function readControls(db: D1Database): D1PreparedStatement {
  return db.prepare(`SELECT * FROM destination_state`);
}

export async function getControls(db: D1Database): Promise<Map<string, ControlRow>> {
  const { results } = await readControls(db).all<ControlRow>();
  return new Map(results.map((row) => [row.destination, row]));
}

/** A pause or a resume: the destination's state after it, and whether it changed anything. */
export interface Toggled {
  control: ControlRow;
  changed: boolean;
}

/** Pauses a destination (kept when it already is, with its first reason and time). */
export async function pause(db: D1Database, destination: string, reason: string, now: number): Promise<Toggled> {
  return toggle(db, destination, db
    .prepare(
      `INSERT INTO destination_state (destination, paused_at, paused_reason, updated_at) VALUES (?1, ?3, ?2, ?3)
       ON CONFLICT (destination) DO UPDATE SET paused_at = COALESCE(paused_at, ?3), paused_reason = COALESCE(paused_reason, ?2), updated_at = ?3
       RETURNING *`,
    )
    .bind(destination, reason, now), (before) => before?.paused_at == null);
}

/** Resumes a destination: not paused, its run of 410s forgotten. The circuit keeps its own state. */
export async function resume(db: D1Database, destination: string, now: number): Promise<Toggled> {
  return toggle(db, destination, db
    .prepare(
      `INSERT INTO destination_state (destination, updated_at) VALUES (?1, ?2)
       ON CONFLICT (destination) DO UPDATE SET paused_at = NULL, paused_reason = NULL, gone_streak = 0, updated_at = ?2
       RETURNING *`,
    )
    .bind(destination, now), (before) => before?.paused_at != null);
}

/** The state before and the write, in one transaction: two operators pausing at once see one change. */
async function toggle(db: D1Database, destination: string, write: D1PreparedStatement, changes: (before: ControlRow | undefined) => boolean): Promise<Toggled> {
  const [before, after] = await db.batch([db.prepare(`SELECT * FROM destination_state WHERE destination = ?1`).bind(destination), write]);
  return { control: after!.results[0] as ControlRow, changed: changes(before!.results[0] as ControlRow | undefined) };
}

/**
 * One destination's attempts in a batch, in the order they started, folded into what they do to
 * its counters: a success resets the failures (and the run of 410s), so only what came after the
 * last one is added; a failure resets the run of 410s; a 410 is neither a success nor a failure.
 */
export interface AttemptOutcomes {
  destination: string;
  /** Consecutive failures to set (`resetFailures`) or to add. */
  failures: number;
  resetFailures: boolean;
  gone: number;
  resetGone: boolean;
  successAt: number | null;
  failureAt: number | null;
  /** The destination's circuit_failures: this many failures in a row open the circuit, this many 410s pause it. */
  threshold: number;
  /** Why its forwards belong in a lane of their own (one ran past the lane budget), or null. */
  slow: string | null;
}

export type AttemptKind = "success" | "failure" | "gone";

export function foldAttempts(destination: string, threshold: number, attempts: { kind: AttemptKind; at: number }[], slow: string | null = null): AttemptOutcomes {
  const folded: AttemptOutcomes = { destination, failures: 0, resetFailures: false, gone: 0, resetGone: false, successAt: null, failureAt: null, threshold, slow };
  for (const { kind, at } of [...attempts].sort((a, b) => a.at - b.at)) {
    if (kind === "success") {
      Object.assign(folded, { failures: 0, resetFailures: true, gone: 0, resetGone: true, successAt: at });
    } else if (kind === "failure") {
      Object.assign(folded, { failures: folded.failures + 1, gone: 0, resetGone: true, failureAt: at });
    } else {
      Object.assign(folded, { gone: folded.gone + 1, failureAt: at });
    }
  }
  return folded;
}

/** Why the 410 rule paused a destination. */
export const goneReason = (count: number) => `paused after ${count} answers of 410 Gone in a row; resume once the receiver takes events again`;

/**
 * The batch's attempts applied to each destination's state, for the record batch: counters,
 * last success and failure, the circuit opened at `threshold` failures in a row (or closed by a
 * success), and a pause after `threshold` 410s in a row. RETURNING tells the caller what changed.
 */
export function controlStatements(db: D1Database, outcomes: AttemptOutcomes[], now: number): D1PreparedStatement[] {
  if (outcomes.length === 0) return [];
  const json = JSON.stringify(outcomes);
  const newFailures = `CASE WHEN u.reset_failures THEN u.failures ELSE destination_state.failures + u.failures END`;
  const newGone = `CASE WHEN u.reset_gone THEN u.gone ELSE destination_state.gone_streak + u.gone END`;
  return [
    db.prepare(`INSERT OR IGNORE INTO destination_state (destination, updated_at) SELECT value->>'destination', ?2 FROM json_each(?1)`).bind(json, now),
    db
      .prepare(
        `UPDATE destination_state SET
           failures = ${newFailures},
           gone_streak = ${newGone},
           opened_at = CASE WHEN u.failures > 0 AND ${newFailures} >= u.threshold THEN COALESCE(opened_at, ?2)
                            WHEN u.reset_failures THEN NULL ELSE opened_at END,
           probe_at = CASE WHEN ${newFailures} < u.threshold AND u.reset_failures THEN NULL ELSE probe_at END,
           closed_at = CASE WHEN ${newFailures} < u.threshold AND u.reset_failures AND (opened_at IS NOT NULL OR destination_state.failures >= u.threshold)
                            THEN ?2 ELSE closed_at END,
           paused_at = CASE WHEN paused_at IS NULL AND ${newGone} >= u.threshold THEN ?2 ELSE paused_at END,
           paused_reason = CASE WHEN paused_at IS NULL AND ${newGone} >= u.threshold THEN u.gone_reason ELSE paused_reason END,
           last_success_at = COALESCE(u.success_at, last_success_at),
           last_failure_at = COALESCE(u.failure_at, last_failure_at),
           lane_reason = CASE WHEN lane_since IS NULL AND u.slow IS NOT NULL THEN u.slow ELSE lane_reason END,
           lane_since = CASE WHEN u.slow IS NOT NULL THEN COALESCE(lane_since, ?2) ELSE lane_since END,
           updated_at = ?2
         FROM (SELECT value->>'destination' AS destination, value->>'failures' AS failures, value->>'resetFailures' AS reset_failures,
                      value->>'gone' AS gone, value->>'resetGone' AS reset_gone, value->>'successAt' AS success_at,
                      value->>'failureAt' AS failure_at, value->>'threshold' AS threshold, value->>'goneReason' AS gone_reason,
                      value->>'slow' AS slow
               FROM json_each(?1)) AS u
         WHERE destination_state.destination = u.destination
         RETURNING *`,
      )
      .bind(JSON.stringify(outcomes.map((o) => ({ ...o, goneReason: goneReason(o.threshold) }))), now),
  ];
}

/** A forward the rate limit deferred: its destination, and when its message comes back for it. */
export interface Deferral {
  destination: string;
  dueAt: number;
}

/**
 * For the record batch: each deferred delivery is pending (no attempt) and due when its message
 * comes back, so the sweep, which leaves a delivery alone until it is a window overdue, does not
 * enqueue its event again while it waits for its slot. Written only over a delivery still as the
 * round claimed it (same generation, unfinished).
 */
export function deferStatements(db: D1Database, deferrals: (Deferral & { eventKey: string; generation: number })[], now: number): D1PreparedStatement[] {
  if (deferrals.length === 0) return [];
  return [
    db
      .prepare(
        `INSERT INTO deliveries (event_key, destination, status, next_attempt_at, updated_at, generation)
         SELECT d->>'eventKey', d->>'destination', 'pending', d->>'dueAt', ?2, d->>'generation' FROM (SELECT value AS d FROM json_each(?1)) WHERE true
         ON CONFLICT (event_key, destination) DO UPDATE SET next_attempt_at = excluded.next_attempt_at, updated_at = ?2
         WHERE deliveries.generation = excluded.generation AND deliveries.status IN ('pending', 'failed')`,
      )
      .bind(JSON.stringify(deferrals), now),
  ];
}

/**
 * The delivery a probe tries: the first held one in held order (the oldest event, with failed
 * probes moved to the back: see migrations/0012), else one failed or pending; null when none.
 */
export async function probeCandidate(db: D1Database, destination: string): Promise<string | null> {
  const [held, other] = await db.batch([
    db.prepare(`SELECT event_key FROM deliveries WHERE destination = ?1 AND status = 'held' ORDER BY held_order LIMIT 1`).bind(destination),
    db.prepare(`SELECT event_key FROM deliveries WHERE destination = ?1 AND status IN ('failed', 'pending') AND ${NOT_DELIVERED} ORDER BY updated_at LIMIT 1`).bind(destination),
  ]);
  const first = (result: D1Result | undefined) => (result?.results[0] as { event_key: string } | undefined)?.event_key ?? null;
  return first(held) ?? first(other);
}

/** The probe `probeId` of `eventKey` is on its way for `at`: it alone probes, and the cron's safety net leaves the circuit alone until then. */
export async function probeScheduled(db: D1Database, destination: string, probeId: string, eventKey: string, at: number, now: number): Promise<void> {
  await db
    .prepare(`UPDATE destination_state SET probe_at = ?2, probe_id = ?3, probe_event_key = ?4, updated_at = ?5 WHERE destination = ?1`)
    .bind(destination, at, probeId, eventKey, now)
    .run();
}

/** Whether the event still has a delivery to the destination that waits for it (one a probe can try). */
export async function awaitsDelivery(db: D1Database, destination: string, eventKey: string): Promise<boolean> {
  const row = await db
    .prepare(`SELECT 1 AS n FROM deliveries WHERE event_key = ?1 AND destination = ?2 AND status IN ('held', 'failed', 'pending')`)
    .bind(eventKey, destination)
    .first<{ n: number }>();
  return row !== null;
}

/**
 * Nothing to probe with: the circuit half-opens. It closes (probe_at and opened_at cleared) but
 * keeps its count of failures, so the next attempt is the probe: one more failure opens it again.
 */
export async function halfOpen(db: D1Database, destination: string, now: number): Promise<void> {
  await db
    .prepare(`UPDATE destination_state SET opened_at = NULL, probe_at = NULL, probe_id = NULL, updated_at = ?2 WHERE destination = ?1`)
    .bind(destination, now)
    .run();
}

/**
 * Releases up to `limit` of a destination's held deliveries, oldest event first: they become
 * pending and their events queued (with their idle clock started, so the sweep enqueues them
 * if the caller's send is lost, their failed rounds forgotten, and a new generation). An event a
 * round holds the lease of is left for a later release: that round may be forwarding the held
 * delivery now (a probe, or a round that found the destination active), and its outcome stands.
 * One D1 batch: the events and their deliveries change together or not at all. Returns the
 * events to enqueue.
 */
export async function releaseHeld(db: D1Database, destination: string, limit: number, now: number): Promise<string[]> {
  // Both statements pick the same rows: one transaction, one order (rowid breaks ties), and the
  // first changes nothing the pick reads. Two releases running at once never take the same rows.
  const chunk = `SELECT d.rowid FROM deliveries d JOIN events e ON e.key = d.event_key
                 WHERE d.destination = ?1 AND d.status = 'held' AND (e.lease_by IS NULL OR e.lease_until <= ?3)
                 ORDER BY d.held_order, d.rowid LIMIT ?2`;
  const [, released] = await db.batch([
    db
      .prepare(
        // An event that gave up while this was held is unfinished again: the sweep must find it.
        `UPDATE events SET status = CASE WHEN status IN ('received', 'queued', 'failed') THEN status ELSE 'queued' END, failed_rounds = 0,
                progress_at = ?3, generation = generation + 1
         WHERE key IN (SELECT event_key FROM deliveries WHERE rowid IN (${chunk}))`,
      )
      .bind(destination, limit, now),
    db
      .prepare(
        `UPDATE deliveries SET status = 'pending', last_error = NULL, next_attempt_at = NULL, generation = generation + 1, lane = 0, updated_at = ?3
         WHERE rowid IN (${chunk})
         RETURNING event_key, held_order`,
      )
      .bind(destination, limit, now),
  ]);
  // RETURNING has no order of its own: oldest first again.
  return (released!.results as { event_key: string; held_order: number | null }[])
    .sort((a, b) => (a.held_order ?? 0) - (b.held_order ?? 0))
    .map((row) => row.event_key);
}

/**
 * Held deliveries of destinations no longer in DESTINATIONS are cancelled, as any unfinished
 * delivery to a removed destination is (their events go back to `queued`, so the sweep's round
 * settles their status), and the state of removed destinations is forgotten. Returns how many.
 */
export async function cancelRemoved(db: D1Database, configured: string[], limit: number, now: number): Promise<number> {
  const names = JSON.stringify(configured);
  const [cancelled] = await db.batch([
    db
      .prepare(
        `UPDATE deliveries SET status = 'cancelled', last_error = 'cancelled: no destination by this name in DESTINATIONS', held_order = NULL,
                pinned = 0, updated_at = ?3
         WHERE rowid IN (SELECT rowid FROM deliveries WHERE status = 'held' AND destination NOT IN (SELECT value FROM json_each(?1)) LIMIT ?2)
         RETURNING event_key`,
      )
      .bind(names, limit, now),
    db.prepare(`DELETE FROM destination_state WHERE destination NOT IN (SELECT value FROM json_each(?1))`).bind(names),
  ]);
  const keys = (cancelled!.results as { event_key: string }[]).map((row) => row.event_key);
  if (keys.length) {
    await db.prepare(`UPDATE events SET status = 'queued' WHERE status = 'held' AND key IN (SELECT value FROM json_each(?1))`).bind(JSON.stringify(keys)).run();
  }
  return keys.length;
}

/** Held deliveries per destination. */
export async function heldCounts(db: D1Database): Promise<Map<string, number>> {
  const { results } = await db
    .prepare(`SELECT destination, count(*) AS n FROM deliveries WHERE status = 'held' GROUP BY destination`)
    .all<{ destination: string; n: number }>();
  return new Map(results.map((row) => [row.destination, row.n]));
}
