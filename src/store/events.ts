/**
 * D1 access for events. All SQL for this table lives here (quarantined payloads: quarantine.ts;
 * what a delivery round claims and records on an event's row: deliveries.ts).
 *
 * Who writes an event (see README "Durability"): normally the queue consumer, which stores a
 * queue batch's events in one D1 batch (deliveries.ts, claimForDelivery). Two writers store one
 * before any message exists, with `storeEvent`: the request path, for a body too large for a
 * queue message, and the dead-letter consumer, for an event whose message used up its retries
 * before the consumer could store it. Every writer inserts with ON CONFLICT DO NOTHING on
 * (provider, type, provider id), so copies of one provider event make one row, and every writer
 * puts the body in R2 before its row (storeWithBodies; the body column stays empty).
 */
import { HttpError } from "../errors";
import type { Arrival, SecretSlot } from "../env";
import { bytesToHex } from "../crypto";
import { countMatches, FEW_MATCHES, indexBodies, matchExpression } from "./search";
import { putTogether, recordSegment, withBody, type BodyPlace, type BodyWriter } from "./bodies";

/** held: nothing left to do for it but deliveries held by a paused destination or an open circuit. */
export type EventStatus = "received" | "queued" | "delivered" | "failed" | "dead" | "held";

export interface NewEvent extends Arrival {
  /** eventKey(provider, type, eventId); a row stored before ids were derived keeps its own. */
  key: string;
}

export interface EventRow {
  key: string;
  provider: string;
  /**
   * The source it arrived through. Null only for an event a gateway without sources stored during
   * its upgrade (migrations/0011 backfilled the rest): its provider's built-in source; see `sourceOf`.
   */
  source: string | null;
  event_id: string;
  type: string;
  known_type: number;
  tenant: string | null;
  occurred_at: string | null;
  received_at: number;
  verified_with: SecretSlot;
  content_type: string;
  /** The body as received; '' in D1 when it is kept in R2 (body_in_r2), filled in from there by store/bodies.ts. */
  body: string;
  /** 1: the body is in R2 (store/bodies.ts); 0: in `body` (stored before bodies moved to R2, and not moved yet). */
  body_in_r2: number;
  /** The R2 segment holding the body with others, its bytes at body_offset for body_length (store/bodies.ts); null: its own object, events/<key>. */
  body_segment: string | null;
  body_offset: number | null;
  body_length: number | null;
  status: EventStatus;
  enqueued_at: number | null;
  forced: number;
  progress_at: number | null;
  last_error: string | null;
  /** The queue message whose insert created the row (it owns delivery); null when stored outside the consumer. */
  owner: string | null;
  /** The delivery round holding the event now (its lease token: message id, delivery count, random), and until when (see migrations/0007). */
  lease_by: string | null;
  lease_until: number | null;
  /** Delivery rounds that failed in a row; at 10 the event is dead (migrations/0012). */
  failed_rounds: number;
  /** Bumped by a replay or a release: a round records only if it is still the one it claimed (migrations/0012). */
  generation: number;
}

/**
 * The gateway's id for an event (`evt_` + 24 hex digits, the forwards' `webhook-id`): a SHA-256
 * of (provider, type, provider event id), so every copy of a provider event, every gateway, and
 * the same event before and after a purge or a restore get one id, and the request path can
 * answer with it without asking D1.
 */
export async function eventKey(provider: string, type: string, eventId: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(JSON.stringify([provider, type, eventId])));
  return `evt_${bytesToHex(new Uint8Array(digest)).slice(0, 24)}`;
}

/**
 * The source an event arrived through. A message sent by a gateway without sources (still in the
 * queue across the upgrade) carries none: it came through its provider's built-in source.
 */
export function sourceOf(event: { provider: string; source?: string | null }): string {
  return event.source ?? event.provider;
}

/** An event to insert, who writes it and in which state. */
export interface EventInsert {
  event: NewEvent;
  status: Extract<EventStatus, "received" | "queued">;
  /** The consumer's message id (it then owns delivery); null for the other writers. */
  owner: string | null;
  /** When the queue accepted the event's message, when it is known. */
  enqueuedAt: number | null;
  /** The consumer's lease token for this delivery of its message (see insertEvents). */
  lease?: string;
}

/** The `type` label of every type no provider schema knows. */
export const OTHER_TYPE = "other";

/** Every column but the body: what the consumer reads back (it has the body in its message). */
const COLUMNS_WITHOUT_BODY = `key, provider, source, event_id, type, known_type, tenant, occurred_at, received_at, verified_with, content_type,
  status, enqueued_at, forced, progress_at, last_error, owner, lease_by, lease_until, failed_rounds, generation, body_in_r2,
  body_segment, body_offset, body_length`;
/** Every insert writes the body to R2 first (store/bodies.ts): the row keeps '' and says where it is. */
const INSERTED_COLUMNS = `provider, type, event_id, key, known_type, tenant, occurred_at, received_at, verified_with, content_type, body, body_in_r2,
  forced, status, owner, enqueued_at, lease_by, lease_until, source, body_segment, body_offset, body_length`;

/** Where each body stored together is in its segment (putTogether); none for a body stored alone. */
export type BodyPlaces = ReadonlyMap<string, BodyPlace>;

/**
 * Writes events' bodies to R2, then runs the statements that `insert` makes with where they went
 * (they insert the rows) in one D1 batch, with the segment's record (if they share one) and the
 * statements that index their text when SEARCH is on, after them (a caller reads its own
 * statements' results by position): a row never points at a body that is not there. A body R2
 * refuses throws here, before anything is written to D1.
 */
export async function storeWithBodies(
  db: D1Database, bodies: BodyWriter, events: NewEvent[], insert: (places: BodyPlaces) => D1PreparedStatement[],
): Promise<D1Result[]> {
  const segment = await putTogether(bodies.bucket, events);
  return db.batch([
    ...insert(segment?.places ?? new Map()),
    ...(segment ? [recordSegment(db, segment)] : []),
    ...(bodies.indexText ? indexBodies(db, events) : []),
  ]);
}

/** Inserts one event (its body in R2 already: see storeWithBodies), skipping it if its key or (provider, type, provider id) exists. */
export function insertEvent(db: D1Database, { event, status, owner, enqueuedAt }: EventInsert, places: BodyPlaces): D1PreparedStatement {
  const place = places.get(event.key);
  return db
    .prepare(`INSERT INTO events (${INSERTED_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, '', 1, ?11, ?12, ?13, ?14, NULL, NULL, ?15, ?16, ?17, ?18) ON CONFLICT DO NOTHING`)
    .bind(event.provider, event.type, event.eventId, event.key, event.knownType ? 1 : 0, event.tenant, event.occurredAt, event.receivedAt,
      event.verifiedWith, event.contentType, event.forced ? 1 : 0, status, owner, enqueuedAt, sourceOf(event),
      place?.segment ?? null, place?.offset ?? null, place?.length ?? null);
}

/**
 * Inserts a queue batch's events (their bodies in R2 already: see storeWithBodies) in one
 * statement (D1 pays per statement) from one JSON parameter (D1 allows 100 parameters),
 * skipping any whose key or (provider, type, provider id) exists, copies within the same call included.
 *
 * With a lease, this is the consumer's owning insert: each owner takes the event's delivery
 * lease with its insert (its row's `lease` token), or, on its own retry, takes it back if no
 * other message holds it. The token is `<message id>|<delivery count>|<8 random hex>`: a later
 * delivery of the same message takes the lease from an earlier one (which the queue only
 * redelivers once it ended), but two copies of one delivery running at once (at-least-once)
 * differ only in their random part, so the second finds the lease held. It returns (without
 * bodies) the rows of the events whose owner is among `rows`; a copy gets none.
 */
export function insertEvents(db: D1Database, rows: EventInsert[], places: BodyPlaces, lease?: { until: number; now: number }): D1PreparedStatement {
  const onConflict = lease
    ? `ON CONFLICT (provider, type, event_id) DO UPDATE SET
         lease_by = CASE WHEN ${leaseFree("excluded.lease_by", "?3")} THEN excluded.lease_by ELSE lease_by END,
         lease_until = CASE WHEN ${leaseFree("excluded.lease_by", "?3")} THEN excluded.lease_until ELSE lease_until END
       WHERE owner = excluded.owner
       ON CONFLICT DO NOTHING
       RETURNING ${COLUMNS_WITHOUT_BODY}`
    : "ON CONFLICT DO NOTHING";
  // Everything but the body, which is in R2.
  const values = rows.map(({ event: { body: _inR2, ...event }, status, owner, enqueuedAt, lease: token }) => ({
    ...event, source: sourceOf(event), status, owner, enqueuedAt, lease: token ?? null, place: places.get(event.key) ?? null,
  }));
  return db
    .prepare(
      `INSERT INTO events (${INSERTED_COLUMNS})
       SELECT e->>'provider', e->>'type', e->>'eventId', e->>'key', e->>'knownType', e->>'tenant', e->>'occurredAt', e->>'receivedAt',
              e->>'verifiedWith', e->>'contentType', '', 1, e->>'forced', e->>'status', e->>'owner', e->>'enqueuedAt',
              CASE WHEN ?2 IS NOT NULL THEN e->>'lease' END, ?2, e->>'source', e->>'$.place.segment', e->>'$.place.offset', e->>'$.place.length'
       FROM (SELECT value AS e FROM json_each(?1)) WHERE true
       ${onConflict}`,
    )
    .bind(JSON.stringify(values), lease?.until ?? null, ...(lease ? [lease.now] : []));
}

/** The random part's length at the end of a lease token. */
export const LEASE_NONCE_CHARS = 8;

/**
 * SQL: whether the round with lease token `token` may take an event's lease at time `now`: it is
 * free, lapsed, or held by an earlier delivery of the same message (same id, another count).
 */
export function leaseFree(token: string, now: string): string {
  const message = `substr(${token}, 1, instr(${token}, '|'))`;
  const delivery = `substr(${token}, 1, length(${token}) - ${LEASE_NONCE_CHARS})`;
  return `(lease_by IS NULL OR lease_until <= ${now}
           OR (substr(lease_by, 1, length(${message})) = ${message} AND substr(lease_by, 1, length(${delivery})) != ${delivery}))`;
}

/**
 * Counts what inserting `rows` will make of them (edgehook_events_total), run just before that
 * insert in the same transaction: the first copy of an event not stored yet is `accepted`, any
 * other copy is a `duplicate`, and an owner's own retry (its row is already its own) is nothing.
 * Only a consumer's message owns a row: a writer with no owner (the request path storing a large
 * body) is never an owner's retry, so a provider's redelivery of a large body is a `duplicate`.
 * A release from quarantine is not a webhook request (that request was counted `quarantined`),
 * so it is not counted here at all.
 *
 * The `type` label is the type's name only when a provider schema knows it (`knownType`); any
 * other type, which a signed payload may make anything, counts as `other`, so the number of
 * label values stays that of the documented types.
 */
export function countArrivals(db: D1Database, rows: EventInsert[]): D1PreparedStatement {
  const values = rows
    .filter(({ event }) => !event.released)
    .map(({ event, owner }) => ({ key: event.key, source: sourceOf(event), provider: event.provider, type: event.knownType ? event.type : OTHER_TYPE, owner }));
  return db
    .prepare(
      `INSERT INTO metric_counters (name, labels, value)
       SELECT 'edgehook_events_total', json_object('source', source, 'provider', provider, 'type', type, 'outcome', outcome), count(*)
       FROM (
         SELECT c.value->>'source' AS source, c.value->>'provider' AS provider, c.value->>'type' AS type,
                CASE
                  WHEN e.key IS NOT NULL AND e.owner = c.value->>'owner' THEN NULL
                  WHEN e.key IS NULL AND c.key = (SELECT min(d.key) FROM json_each(?1) AS d WHERE d.value->>'key' = c.value->>'key') THEN 'accepted'
                  ELSE 'duplicate'
                END AS outcome
         FROM json_each(?1) AS c LEFT JOIN events AS e ON e.key = c.value->>'key'
       )
       WHERE outcome IS NOT NULL
       GROUP BY source, provider, type, outcome
       ON CONFLICT (name, labels) DO UPDATE SET value = value + excluded.value`,
    )
    .bind(JSON.stringify(values));
}

/**
 * Stores an event before any message of it exists (status `received`, no owner): whatever
 * message then names its key delivers it, and until one does, the reconciliation sweep finds it.
 */
export async function storeEvent(db: D1Database, bodies: BodyWriter, event: NewEvent): Promise<void> {
  const row: EventInsert = { event, status: "received", owner: null, enqueuedAt: null };
  await storeWithBodies(db, bodies, [event], (places) => [countArrivals(db, [row]), insertEvent(db, row, places)]);
}

/**
 * Events the delivery path has lost track of: unfinished (received, queued or failed), not
 * handled by any consumer since `idleBefore`, with no retry scheduled after it (a message
 * waiting out its backoff is not lost), and no message holding its delivery lease now (one is
 * delivering it, or died doing so and its lease has yet to lapse). An event whose only unfinished
 * deliveries are in lanes is not lost either, while lanes are bound: its lanes send them (and the
 * cron wakes lanes with work). Oldest first, so a backlog drains in order.
 */
export async function findStranded(db: D1Database, idleBefore: number, now: number, limit: number, lanes: boolean): Promise<string[]> {
  const { results } = await db
    .prepare(
      `SELECT key FROM events e
       WHERE status IN ('received', 'queued', 'failed') AND COALESCE(progress_at, received_at) < ?1
         AND (lease_until IS NULL OR lease_until <= ?2)
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_key = e.key
                         AND d.status IN ('pending', 'failed') AND d.next_attempt_at > ?1)
         AND NOT (?4 AND EXISTS (SELECT 1 FROM deliveries d WHERE d.event_key = e.key AND d.status IN ('pending', 'failed') AND d.lane = 1)
                  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_key = e.key AND d.status IN ('pending', 'failed') AND d.lane = 0))
       ORDER BY received_at LIMIT ?3`,
    )
    .bind(idleBefore, now, limit, lanes ? 1 : 0)
    .all<{ key: string }>();
  return results.map((row) => row.key);
}

/** The sweep re-enqueued these: start their idle clock again, so the next sweep leaves them be. */
export async function markProgress(db: D1Database, keys: string[], now: number): Promise<void> {
  await db.prepare(`UPDATE events SET progress_at = ?2 WHERE key IN (SELECT value FROM json_each(?1))`).bind(JSON.stringify(keys), now).run();
}

/** One event with its body (from R2 when it is kept there: BodyUnavailable, 503, if R2 does not give it back). */
export async function getEvent(db: D1Database, bucket: R2Bucket, key: string): Promise<EventRow | null> {
  const row = await db.prepare(`SELECT * FROM events WHERE key = ?1`).bind(key).first<EventRow>();
  return row && withBody(bucket, row);
}

export interface EventFilter {
  provider?: string;
  source?: string;
  type?: string;
  status?: string;
  tenant?: string;
  eventId?: string;
  since?: number;
  until?: number;
  /** Words the payload must contain (see store/search.ts); blank means no search. */
  q?: string;
}

/** An event as listed: everything but its body and the delivery path's bookkeeping. */
export type EventSummary = Omit<EventRow, "body" | "owner" | "lease_by" | "lease_until">;

export interface EventPage {
  events: EventSummary[];
  nextCursor: string | null;
}

/** Newest first, keyset-paginated on (received_at, key) so deep pages stay as fast as the first. */
export async function listEvents(db: D1Database, filter: EventFilter, limit: number, cursor: string | null): Promise<EventPage> {
  const where: string[] = [];
  const params: unknown[] = [];
  const add = (clause: string, value: unknown) => {
    params.push(value);
    where.push(clause.replace("?", `?${params.length}`));
  };
  if (filter.provider) add("provider = ?", filter.provider);
  if (filter.source) add("source = ?", filter.source);
  if (filter.type) add("type = ?", filter.type);
  if (filter.status) add("status = ?", filter.status);
  if (filter.tenant) add("tenant = ?", filter.tenant);
  if (filter.eventId) add("event_id = ?", filter.eventId);
  if (filter.since !== undefined) add("received_at >= ?", filter.since);
  if (filter.until !== undefined) add("received_at < ?", filter.until);
  const after = cursor ? decodeCursor(cursor) : null;
  if (cursor && !after) throw new HttpError(400, "invalid_cursor", "cursor is not one this API returned");
  if (after) {
    params.push(after.receivedAt, after.key);
    where.push(`(received_at < ?${params.length - 1} OR (received_at = ?${params.length - 1} AND key < ?${params.length}))`);
  }
  let from = "events";
  if (filter.q?.trim()) {
    const match = matchExpression(filter.q);
    const matches = await countMatches(db, match);
    if (matches === 0) return { events: [], nextCursor: null };
    params.push(match);
    const found = `SELECT rowid AS id FROM events_search WHERE events_search MATCH ?${params.length}`;
    // Few matches: those events, then sorted (CROSS JOIN keeps SQLite from starting at another
    // filter's index). Many: the usual index order, keeping rows among the matches (the unary +
    // keeps SQLite from looking each match up and sorting them all). Measured in bench/search.mjs.
    if (matches <= FEW_MATCHES) from = `(${found}) AS found CROSS JOIN events ON events.rowid = found.id`;
    else where.push(`+events.rowid IN (${found})`);
  }
  params.push(limit + 1);
  const { results } = await db
    .prepare(
      `SELECT key, provider, source, event_id, type, known_type, tenant, occurred_at, received_at, verified_with,
              content_type, status, enqueued_at, forced, progress_at, last_error
       FROM ${from} ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY received_at DESC, key DESC LIMIT ?${params.length}`,
    )
    .bind(...params)
    .all<EventSummary>();
  const { rows, nextCursor } = keysetPage(results, limit, (last) => ({ receivedAt: last.received_at, key: last.key }));
  return { events: rows, nextCursor };
}

/** One page of a keyset query that read `limit + 1` rows: the page, and a cursor when more follow. */
export function keysetPage<T>(results: T[], limit: number, cursorOf: (last: T) => Cursor): { rows: T[]; nextCursor: string | null } {
  const rows = results.slice(0, limit);
  const last = rows[rows.length - 1];
  return { rows, nextCursor: results.length > limit && last ? encodeCursor(cursorOf(last)) : null };
}

/** A keyset position: a time and a tie-breaking key (quarantine.ts pages with it too). */
export interface Cursor {
  receivedAt: number;
  key: string;
}

function encodeCursor(cursor: Cursor): string {
  return btoa(`${cursor.receivedAt}:${cursor.key}`).replace(/=+$/, "");
}

export function decodeCursor(cursor: string): Cursor | null {
  try {
    const [receivedAt, key] = atob(cursor).split(":");
    const at = Number(receivedAt);
    return Number.isSafeInteger(at) && key ? { receivedAt: at, key } : null;
  } catch {
    return null;
  }
}

/**
 * A stored body's JSON, or null when it is not JSON (only a forced event's can be anything).
 * A leading byte-order mark is kept in the stored text, forwarded byte for byte, but not parsed.
 */
export function bodyJson(body: string): { json: unknown } | null {
  try {
    return { json: JSON.parse(body.charCodeAt(0) === 0xfeff ? body.slice(1) : body) };
  } catch {
    return null;
  }
}
