/** D1 access for delivery state and attempts. All SQL for these tables lives here. */
import { countArrivals, insertEvents, leaseFree, storeWithBodies, type EventInsert, type EventRow, type EventStatus, type NewEvent } from "./events";
import type { BodyWriter } from "./bodies";
import { controlStatements, deferStatements, foldAttempts, readControls, type AttemptKind, type ControlRow, type Deferral } from "./controls";
import { CounterDeltas } from "./metrics";
import { NOT_DELIVERED } from "./indexes";

/**
 * pending/failed: work left. delivered, gone (410), dead: finished until an operator replays.
 * cancelled: the destination no longer routes the event (removed, renamed, types or filter changed).
 * skipped: the destination's filter could not decide (its work budget ran out); counts as no match.
 * held: the destination is paused or its circuit is open; no attempt is used, no message waits for
 * it. Resuming (or the circuit closing) makes it pending again (store/controls.ts).
 * transform_failed: the destination's transform failed on the event (its kind starts last_error);
 * not retried, since the same code gives the same answer: finished until replayed after a fix.
 */
export type DeliveryStatus = "pending" | "failed" | "delivered" | "gone" | "dead" | "cancelled" | "skipped" | "held" | "transform_failed";
export const DELIVERY_STATUSES: readonly DeliveryStatus[] = ["pending", "failed", "delivered", "gone", "dead", "cancelled", "skipped", "held", "transform_failed"];
/** Nothing more will be sent for these until an operator replays them. */
export const FINISHED: ReadonlySet<DeliveryStatus> = new Set(["delivered", "gone", "dead", "cancelled", "skipped", "transform_failed"]);
/** Deliveries that say nothing about the event's own status: nobody wants the event there now. */
export const NOT_COUNTED: ReadonlySet<DeliveryStatus> = new Set(["cancelled", "skipped"]);

export interface DeliveryRow {
  event_key: string;
  destination: string;
  status: DeliveryStatus;
  attempts: number;
  last_status_code: number | null;
  last_error: string | null;
  last_attempt_at: number | null;
  next_attempt_at: number | null;
  delivered_at: number | null;
  dead_lettered_at: number | null;
  pinned: number;
  updated_at: number;
  /** Bumped when a replay or a release resets it (migrations/0012). */
  generation: number;
  /** While held: its place in the order held work is released and probed in (migrations/0012). */
  held_order: number | null;
  /** 1: its destination's lane sends it (deliver/lane.ts), and the consumer leaves it alone (migrations/0016). */
  lane: number;
}

export interface AttemptRow {
  destination: string;
  attempt: number;
  started_at: number;
  duration_ms: number;
  status_code: number | null;
  error: string | null;
  /** Which transform code made the forwarded body (AttemptRecord.transformCode). */
  transform_code: string | null;
}

/** One message's part in a queue batch's claim. */
export interface Claim {
  messageId: string;
  /** This delivery round's lease token (see insertEvents): the caller holds the lease when `lease_by` equals it. */
  lease: string;
  eventKey: string;
  /** The event itself, when the message carries it (the request path's message): stored first. */
  arrival?: { event: NewEvent; enqueuedAt: number };
}

export interface Claimed {
  event: EventRow;
  deliveries: DeliveryRow[];
}

export interface ClaimResult {
  /** Per message id: its event with the lease as it now stands, or null (a copy, or gone). */
  claimed: Map<string, Claimed | null>;
  /** Each destination's run-time state (paused, circuit), read in the same transaction. */
  controls: Map<string, ControlRow>;
}

/**
 * The consumer's first D1 batch for a whole queue batch (one round trip, one transaction):
 *   - a message carrying its event inserts it; copies of one provider event make one row, and
 *     the message whose insert created it is its owner and takes its delivery lease with it;
 *     the owner's own retry takes the lease back if no other message holds it; a copy gets nothing;
 *   - a message naming a stored event (sweep, replay, large body) takes the lease if it is free;
 *   - the events and their delivery state are read back, with every destination's state.
 * Returns, per message id, its event with the lease as it now stands (the caller compares
 * `lease_by` with its lease token), or null: a copy (its event is another message's), or an
 * event that is gone.
 */
export async function claimForDelivery(db: D1Database, bodies: BodyWriter, claims: Claim[], now: number, leaseUntil: number): Promise<ClaimResult> {
  const carrying = carried(claims);
  const named = claims.filter((claim) => !claim.arrival);
  const results = await storeWithBodies(db, bodies, carrying.map(({ event }) => event), (places) => [
    ...(carrying.length ? [countArrivals(db, carrying), insertEvents(db, carrying, places, { until: leaseUntil, now })] : []),
    ...named.map((claim) =>
      db
        .prepare(`UPDATE events SET lease_by = ?2, lease_until = ?3 WHERE key = ?1 AND ${leaseFree("?2", "?4")}`)
        .bind(claim.eventKey, claim.lease, leaseUntil, now),
    ),
    db.prepare(`SELECT * FROM events WHERE key IN (SELECT value FROM json_each(?1))`).bind(JSON.stringify(named.map((claim) => claim.eventKey))),
    db.prepare(`SELECT * FROM deliveries WHERE event_key IN (SELECT value FROM json_each(?1))`).bind(JSON.stringify(claims.map((claim) => claim.eventKey))),
    readControls(db),
  ]);
  // results: the arrivals count and the insert (if any message carries its event), the leases taken, then the three reads.
  const reads = (carrying.length ? 2 : 0) + named.length;
  // The owning insert returns its owners' rows without bodies (their messages have them).
  const insertedRows = carrying.length ? (results[1]!.results as Omit<EventRow, "body">[]) : [];
  const owned = new Map(insertedRows.map((row) => [row.owner, row]));
  const stored = new Map((results[reads]!.results as EventRow[]).map((event) => [event.key, event]));
  const deliveries = new Map<string, DeliveryRow[]>();
  for (const row of results[reads + 1]!.results as DeliveryRow[]) deliveries.set(row.event_key, [...(deliveries.get(row.event_key) ?? []), row]);
  const claimed = new Map(
    claims.map((claim) => {
      const row = claim.arrival ? owned.get(claim.messageId) : stored.get(claim.eventKey);
      const event = row && claim.arrival ? Object.assign(row, { body: claim.arrival.event.body }) : (row as EventRow | undefined);
      return [claim.messageId, event ? { event, deliveries: deliveries.get(event.key) ?? [] } : null];
    }),
  );
  return { claimed, controls: new Map((results[reads + 2]!.results as ControlRow[]).map((row) => [row.destination, row])) };
}

/** The events the messages carry, as the consumer inserts them: each message the owner of its own. */
function carried(claims: Claim[]): EventInsert[] {
  return claims.flatMap((claim) =>
    claim.arrival ? [{ event: claim.arrival.event, status: "queued" as const, owner: claim.messageId, enqueuedAt: claim.arrival.enqueuedAt, lease: claim.lease }] : [],
  );
}

/**
 * While DESTINATIONS is invalid nothing can be delivered: stores the events the messages carry
 * and says on every event named why it waits, in one batch, without touching its idle clock or
 * taking a lease, so the reconciliation sweep re-enqueues it once the configuration is fixed.
 * Returns the events that waited for no fix before (a copy's event, or one held already, is not among them).
 */
export async function holdForConfiguration(db: D1Database, bodies: BodyWriter, claims: Claim[], reason: string): Promise<string[]> {
  const keys = JSON.stringify([...new Set(claims.map((claim) => claim.eventKey))]);
  const carrying = carried(claims);
  const results = await storeWithBodies(db, bodies, carrying.map(({ event }) => event), (places) => [
    ...(carrying.length ? [countArrivals(db, carrying), insertEvents(db, carrying, places)] : []),
    db.prepare(`UPDATE events SET last_error = ?2 WHERE key IN (SELECT value FROM json_each(?1)) AND last_error IS NOT ?2 RETURNING key`).bind(keys, reason),
  ]);
  return (results[carrying.length ? 2 : 0]!.results as { key: string }[]).map((row) => row.key);
}

/** Who holds each event's delivery lease now (a round's token, or null). */
export async function leaseHolders(db: D1Database, eventKeys: string[]): Promise<Map<string, string | null>> {
  const { results } = await db
    .prepare(`SELECT key, lease_by FROM events WHERE key IN (SELECT value FROM json_each(?1))`)
    .bind(JSON.stringify(eventKeys))
    .all<{ key: string; lease_by: string | null }>();
  return new Map(results.map((row) => [row.key, row.lease_by]));
}

export async function getDeliveries(db: D1Database, eventKey: string): Promise<DeliveryRow[]> {
  const { results } = await db.prepare(`SELECT * FROM deliveries WHERE event_key = ?1 ORDER BY destination`).bind(eventKey).all<DeliveryRow>();
  return results;
}

export async function getAttempts(db: D1Database, eventKey: string): Promise<AttemptRow[]> {
  const { results } = await db
    .prepare(
      `SELECT destination, attempt, started_at, duration_ms, status_code, error, transform_code FROM delivery_attempts
       WHERE event_key = ?1 ORDER BY started_at, destination`,
    )
    .bind(eventKey)
    .all<AttemptRow>();
  return results;
}

export interface AttemptRecord {
  destination: string;
  /** `held`: a probe of an open circuit that failed (the delivery waits on, its attempts unchanged). */
  status: DeliveryStatus;
  attempt: number;
  startedAt: number;
  durationMs: number;
  statusCode: number | null;
  error: string | null;
  nextAttemptAt: number | null;
  /** The destination's circuit_failures, which its run of failures is measured against. */
  circuitFailures: number;
  /** A forward that took this long or longer moves its destination to a lane of its own. */
  laneBudgetMs: number;
  /** Which transform code made the forwarded body (a hash of its source); null: the event's own body. */
  transformCode: string | null;
  /** The kind of the transform's passing fault that failed this attempt (no forward): not the destination's failure. */
  transformFailure: string | null;
}

/**
 * A delivery set without an attempt: cancelled (no longer routed), skipped (filter undecided, or
 * its transform returned null), held (its destination paused or its circuit open), dead (its
 * event gave up), or transform_failed (its transform failed, of this `kind`).
 */
export interface ClosedDelivery {
  destination: string;
  status: "cancelled" | "skipped" | "held" | "dead" | "transform_failed";
  reason: string;
  kind?: string;
}

/** What one message's delivery round changed: attempts, closed deliveries, the event's status, new dead letters. */
export interface Round {
  eventKey: string;
  /** The round's lease token; the event's delivery lease is released if it still holds it. */
  lease: string;
  /** The event's generation the round claimed: a replay or release since then wins (nothing but attempts is recorded). */
  generation: number;
  /** The event gave up (too many failed rounds): a dead-letter notice goes out even if no delivery was unfinished. */
  gaveUp: boolean;
  /** The destination this round was the current circuit probe of, if any. */
  probe: string | null;
  /** Where a delivery it holds goes in held order: the event's receipt time. */
  heldOrder: number;
  /** Each delivery's generation as the round claimed it: a delivery reset since (a replay, a release) is not written over. */
  generations: Record<string, number>;
  records: AttemptRecord[];
  closed: ClosedDelivery[];
  /** null: leave the event's status as it is (the round failed before deciding it). */
  eventStatus: EventStatus | null;
  deadLettered: string[];
  /** Forwards the rate limit moved to a later delivery of the message, and when that is due. */
  deferred: Deferral[];
  /** Destinations whose delivery the round handed to their lane (deliver/lane.ts) instead of forwarding it. */
  laned: string[];
  /** A lane's round (deliver/lane.ts): it writes only what its lane holds, and re-derives the event's status whatever its generation. */
  lane: boolean;
  /** Why the round could not run (an exception while handling the message), shown on the event. */
  error: string | null;
}

/**
 * Every round of a queue batch in one D1 batch (one round trip, one transaction), in at most seven
 * statements whatever the batch's size (D1 pays per statement): attempts, delivery state, event
 * status and progress (and the enqueue, which the consumer proves), each round's delivery lease
 * released, new dead letters marked, and the attempts' effect on each destination's circuit.
 * Returns the destination states the attempts changed, as they now stand.
 */
export async function recordRounds(
  db: D1Database, rounds: Round[], now: number, { routed = [], lanes = true }: { routed?: Routed[]; lanes?: boolean } = {},
): Promise<ControlRow[]> {
  if (rounds.length === 0) return [];
  // Each delivery as the round claimed it: its writes apply only if no replay or release reset it since,
  // and only by whoever owns it now (`lane`: its lane while it is handed over, the consumer otherwise).
  const claimed = (round: Round, destination: string) => ({ eventKey: round.eventKey, destination, generation: round.generations[destination] ?? 0, lane: round.lane ? 1 : 0 });
  const deadLettered = rounds.flatMap((round) => round.deadLettered.map((destination) => claimed(round, destination)));
  const laned = rounds.flatMap((round) => round.laned.map((destination) => claimed(round, destination)));
  // A failed probe moves its delivery to the back of the held order; a delivery newly held takes its event's place.
  const records = rounds.flatMap((round) => round.records.map((r) => ({ ...r, ...claimed(round, r.destination), heldOrder: r.startedAt })));
  const closed = rounds.flatMap((round) => round.closed.map((c) => ({ ...c, ...claimed(round, c.destination), heldOrder: round.heldOrder })));
  const deferred = rounds.flatMap((round) => round.deferred.map((d) => ({ ...d, ...claimed(round, d.destination) })));
  const events = rounds.map((round) => ({
    eventKey: round.eventKey, generation: round.generation, lease: round.lease, status: round.eventStatus, error: round.error, lane: round.lane ? 1 : 0,
  }));
  const controls = controlStatements(db, attemptOutcomes(records), now);
  const results = await db.batch([
    ...(records.length
      ? [
          db
            .prepare(
              `INSERT INTO deliveries (event_key, destination, status, attempts, last_status_code, last_error, last_attempt_at,
                                       next_attempt_at, delivered_at, updated_at, generation, held_order, lane)
               SELECT r->>'eventKey', r->>'destination', r->>'status', r->>'attempt', r->>'statusCode', r->>'error', r->>'startedAt',
                      r->>'nextAttemptAt', CASE WHEN r->>'status' = 'delivered' THEN ?2 END, ?2, r->>'generation',
                      CASE WHEN r->>'status' = 'held' THEN r->>'heldOrder' END, r->>'lane'
               FROM (SELECT value AS r FROM json_each(?1)) WHERE true
               ON CONFLICT (event_key, destination) DO UPDATE SET
                 status = excluded.status, attempts = excluded.attempts, last_status_code = excluded.last_status_code,
                 last_error = excluded.last_error, last_attempt_at = excluded.last_attempt_at, next_attempt_at = excluded.next_attempt_at,
                 delivered_at = COALESCE(excluded.delivered_at, delivered_at), held_order = excluded.held_order, updated_at = ?2,
                 lane = CASE WHEN ?3 THEN deliveries.lane ELSE 0 END
               WHERE deliveries.generation = excluded.generation AND (${OWNED_BY_WRITER} OR NOT ?3)`,
            )
            .bind(JSON.stringify(records), now, lanes ? 1 : 0),
          db
            .prepare(
              `INSERT OR IGNORE INTO delivery_attempts (event_key, destination, attempt, started_at, duration_ms, status_code, error, transform_code)
               SELECT r->>'eventKey', r->>'destination', r->>'attempt', r->>'startedAt', r->>'durationMs', r->>'statusCode', r->>'error', r->>'transformCode'
               FROM (SELECT value AS r FROM json_each(?1))`,
            )
            .bind(JSON.stringify(records)),
        ]
      : []),
    ...(closed.length
      ? [
          db
            .prepare(
              `INSERT INTO deliveries (event_key, destination, status, last_error, updated_at, generation, held_order, lane)
               SELECT c->>'eventKey', c->>'destination', c->>'status', c->>'reason', ?2, c->>'generation',
                      CASE WHEN c->>'status' = 'held' THEN c->>'heldOrder' END, c->>'lane'
               FROM (SELECT value AS c FROM json_each(?1)) WHERE true
               ON CONFLICT (event_key, destination) DO UPDATE SET
                 status = excluded.status, last_error = excluded.last_error, next_attempt_at = NULL, held_order = excluded.held_order,
                 pinned = CASE WHEN excluded.status = 'held' THEN pinned ELSE 0 END, updated_at = ?2,
                 lane = CASE WHEN ?3 THEN deliveries.lane ELSE 0 END
               WHERE deliveries.generation = excluded.generation AND (${OWNED_BY_WRITER} OR NOT ?3)`,
            )
            .bind(JSON.stringify(closed), now, lanes ? 1 : 0),
        ]
      : []),
    ...(laned.length ? [laneStatement(db, laned, now)] : []),
    // Before the event's status is derived: every delivery with work left has its row by then.
    ...(routed.length ? routedStatements(db, routed, now) : []),
    ...deferStatements(db, deferred, now),
    db
      .prepare(
        // A lane's round re-derives the status whatever the event's generation (it reads the rows as they
        // are), and leaves the consumer's round count and error alone.
        `UPDATE events SET
                status = CASE WHEN (events.generation = u.generation OR u.lane = 1) AND u.status IS NOT NULL THEN ${EVENT_STATUS_SQL} ELSE events.status END,
                last_error = CASE WHEN u.lane = 1 OR events.generation != u.generation THEN events.last_error ELSE u.error END,
                failed_rounds = CASE WHEN u.lane = 1 OR events.generation != u.generation THEN events.failed_rounds
                                     WHEN u.error IS NULL THEN 0 ELSE events.failed_rounds + 1 END,
                progress_at = ?2, enqueued_at = COALESCE(events.enqueued_at, ?2),
                lease_by = CASE WHEN events.lease_by = u.lease THEN NULL ELSE events.lease_by END,
                lease_until = CASE WHEN events.lease_by = u.lease THEN NULL ELSE events.lease_until END
         FROM (SELECT value->>'eventKey' AS key, value->>'status' AS status, value->>'error' AS error, value->>'lease' AS lease,
                      value->>'generation' AS generation, value->>'lane' AS lane
               FROM json_each(?1)) AS u
         WHERE events.key = u.key`,
      )
      .bind(JSON.stringify(events), now),
    ...(deadLettered.length
      ? [
          db
            .prepare(
              `UPDATE deliveries SET dead_lettered_at = ?2
               WHERE (event_key, destination, generation) IN (SELECT value->>'eventKey', value->>'destination', value->>'generation' FROM json_each(?1))`,
            )
            .bind(JSON.stringify(deadLettered), now),
        ]
      : []),
    ...roundCounters(rounds).statements(db),
    ...controls,
  ]);
  return controls.length ? (results.at(-1)!.results as ControlRow[]) : [];
}

/**
 * Who may write a delivery row now: while it is handed to its lane (lane = 1, unfinished) only
 * the lane (excluded.lane = 1), otherwise only a consumer round; a write by the other is dropped.
 * Without the lanes' binding the consumer owns every row, and takes back what a lane held.
 */
const OWNED_BY_WRITER = `(excluded.lane = 1) = (deliveries.lane = 1 AND deliveries.status IN ('pending', 'failed'))`;

/**
 * An event's status, in SQL, from its delivery rows as they stand once the round's writes are in:
 * work left (pending, failed) comes first, then held work, then work an operator must replay.
 * Deliveries nobody wants (cancelled, skipped) say nothing. Derived from the rows rather than from
 * one round's view, because a lane records its destination's deliveries beside the consumer's rounds.
 * An event with no counted delivery keeps the round's own verdict.
 */
const EVENT_STATUS_SQL = `(SELECT CASE WHEN count(*) = 0 THEN u.status
                                       WHEN sum(d.status IN ('pending', 'failed')) > 0 THEN 'failed'
                                       WHEN sum(d.status = 'held') > 0 THEN 'held'
                                       WHEN sum(d.status IN ('dead', 'transform_failed')) > 0 THEN 'dead'
                                       ELSE 'delivered' END
                            FROM deliveries d WHERE d.event_key = events.key AND d.status NOT IN ('cancelled', 'skipped'))`;

/**
 * Hands deliveries (as claimed, by generation) to their destination's lane: created pending if
 * they have no row yet, marked if they are unfinished, left alone if a replay or a release reset them since.
 */
function laneStatement(db: D1Database, deliveries: { eventKey: string; destination: string; generation: number }[], now: number): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO deliveries (event_key, destination, status, lane, updated_at, generation)
       SELECT value->>'eventKey', value->>'destination', 'pending', 1, ?2, value->>'generation' FROM json_each(?1) WHERE true
       ON CONFLICT (event_key, destination) DO UPDATE SET lane = 1, updated_at = ?2
       WHERE deliveries.status IN ('pending', 'failed') AND deliveries.generation = excluded.generation`,
    )
    .bind(JSON.stringify(deliveries), now);
}

/** A delivery a round routed: shown as pending from then on, and handed to its lane when `lane`. */
export interface Routed {
  eventKey: string;
  destination: string;
  generation: number;
  lane: boolean;
}

/**
 * Before a batch forwards anything: every routed delivery without a row gets one, pending, so an
 * event's page shows where it is going while the round runs, and the deliveries for destinations
 * in a lane of their own are handed to it (one D1 batch for the whole queue batch).
 */
export async function recordRouted(db: D1Database, routed: Routed[], now: number): Promise<void> {
  if (routed.length === 0) return;
  await db.batch(routedStatements(db, routed, now));
}

/** The INSERT leaves existing rows alone; the lane's statement then marks those handed over. */
function routedStatements(db: D1Database, routed: Routed[], now: number): D1PreparedStatement[] {
  const laned = routed.filter((r) => r.lane);
  return [
    db
      .prepare(
        `INSERT INTO deliveries (event_key, destination, status, updated_at, generation)
         SELECT value->>'eventKey', value->>'destination', 'pending', ?2, value->>'generation' FROM json_each(?1) WHERE true
         ON CONFLICT (event_key, destination) DO NOTHING`,
      )
      .bind(JSON.stringify(routed), now),
    ...(laned.length ? [laneStatement(db, laned, now)] : []),
  ];
}

/** What the batch's attempts say about each destination, folded in the order they started. */
function attemptOutcomes(records: AttemptRecord[]) {
  const byDestination = new Map<string, { threshold: number; slow: string | null; attempts: { kind: AttemptKind; at: number }[] }>();
  for (const r of records) {
    // A transform's passing fault never reached the destination: it says nothing of its health.
    if (r.transformFailure) continue;
    const kind: AttemptKind = r.status === "delivered" ? "success" : r.status === "gone" ? "gone" : "failure";
    const entry = byDestination.get(r.destination) ?? { threshold: r.circuitFailures, slow: null, attempts: [] };
    entry.attempts.push({ kind, at: r.startedAt });
    if (!entry.slow && r.durationMs >= r.laneBudgetMs) entry.slow = `a forward took ${r.durationMs} ms, over the lane budget of ${r.laneBudgetMs} ms`;
    byDestination.set(r.destination, entry);
  }
  return [...byDestination].map(([destination, { threshold, slow, attempts }]) => foldAttempts(destination, threshold, attempts, slow));
}

/** The Prometheus counters a batch of rounds moves, written in the same transaction as the rounds. */
function roundCounters(rounds: Round[]): CounterDeltas {
  const counted = new CounterDeltas();
  for (const round of rounds) {
    for (const r of round.records) {
      // A failed probe leaves its delivery held; as an attempt it failed.
      counted.add("edgehook_attempts_total", { destination: r.destination, result: r.status === "held" ? "failed" : r.status });
      if (r.transformFailure) counted.add("edgehook_transform_failures_total", { destination: r.destination, kind: r.transformFailure });
      else counted.observeForward(r.destination, r.durationMs / 1000);
      if (FINISHED.has(r.status)) counted.add("edgehook_deliveries_total", { destination: r.destination, status: r.status });
    }
    for (const c of round.closed) if (c.status !== "held") counted.add("edgehook_deliveries_total", { destination: c.destination, status: c.status });
    for (const c of round.closed) if (c.kind) counted.add("edgehook_transform_failures_total", { destination: c.destination, kind: c.kind });
    for (const { destination } of round.deferred) counted.add("edgehook_deferred_total", { destination });
  }
  return counted;
}

/**
 * Makes deliveries due again for a replay, creating any that do not exist yet. Attempt history
 * is kept; the attempt counter restarts so a replay gets the full retry budget. `pinned`
 * deliveries were named by the operator and are sent even where routing no longer selects them.
 */
export function replayStatements(db: D1Database, eventKey: string, destinations: string[], pinned: boolean, now: number): D1PreparedStatement[] {
  return [
    db
      .prepare(
        `INSERT INTO deliveries (event_key, destination, status, pinned, updated_at, generation)
         SELECT ?1, value, 'pending', ?3, ?4, 1 FROM json_each(?2) WHERE true
         ON CONFLICT (event_key, destination) DO UPDATE SET
           status = 'pending', attempts = 0, next_attempt_at = NULL, dead_lettered_at = NULL, held_order = NULL, lane = 0, pinned = ?3, updated_at = ?4,
           generation = generation + 1`,
      )
      .bind(eventKey, JSON.stringify(destinations), pinned ? 1 : 0, now),
    db
      .prepare(`UPDATE events SET status = 'queued', last_error = NULL, failed_rounds = 0, generation = generation + 1, progress_at = ?2 WHERE key = ?1`)
      .bind(eventKey, now),
  ];
}

export interface DeliveryFilter {
  status?: string;
  destination?: string;
  since?: number;
  /** Only deliveries last updated at or before this time (fixes a bulk replay's set at its first page). */
  until?: number;
  /** Only these destinations (the ones configured now). */
  destinations?: string[];
}

export type DeliveryCursor = [updatedAt: number, eventKey: string, destination: string];

/** Newest first by last update; `before` continues a page (an `updated_at|event_key|destination` cursor). */
export async function listDeliveries(db: D1Database, filter: DeliveryFilter, limit: number, before: DeliveryCursor | null): Promise<DeliveryRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  const bind = (value: unknown) => `?${params.push(value)}`;
  if (filter.status) where.push(`status = ${bind(filter.status)}`);
  // The partial indexes by status and by destination hold every other status (a delivered page walks the index by time).
  if (filter.status && filter.status !== "delivered") where.push(NOT_DELIVERED);
  if (filter.destination) where.push(`destination = ${bind(filter.destination)}`);
  if (filter.destinations) where.push(`destination IN (SELECT value FROM json_each(${bind(JSON.stringify(filter.destinations))}))`);
  if (filter.since !== undefined) where.push(`updated_at >= ${bind(filter.since)}`);
  if (filter.until !== undefined) where.push(`updated_at <= ${bind(filter.until)}`);
  if (before) {
    const [at, key, destination] = before.map(bind);
    where.push(`(updated_at, event_key, destination) < (${at}, ${key}, ${destination})`);
  }
  const { results } = await db
    .prepare(
      `SELECT * FROM deliveries ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY updated_at DESC, event_key DESC, destination DESC LIMIT ${bind(limit)}`,
    )
    .bind(...params)
    .all<DeliveryRow>();
  return results;
}
