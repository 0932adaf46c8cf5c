/**
 * D1 access for events. All SQL for this table lives here (quarantined payloads: quarantine.ts).
 *
 * Write order on the request path (see README "Durability"):
 *   1. one D1 batch: insert the event with an enqueue claim, or re-claim an earlier attempt's
 *      row that never reached the queue, and read its state back;
 *   2. send the reference to the queue, only by the attempt that holds the claim;
 *   3. mark the row enqueued.
 * A failure at 1 stores nothing; at 2 leaves a claimed, unenqueued row whose claim is released
 * (or lapses) so the provider's retry enqueues it; at 3 leaves a queued event the consumer marks.
 * Step 3 runs after the answer (it only saves the consumer that write), so an event costs the
 * request path one D1 round trip and one Queue send.
 */
import { HttpError } from "../errors";
import { bytesToHex } from "../receive/signature";
import type { SecretSlot } from "../receive/signature";
import { countMatches, FEW_MATCHES, matchExpression } from "./search";

/** How long an attempt owns the right to enqueue a stored event before a retry may take over. */
export const CLAIM_LEASE_MS = 30_000;

export type EventStatus = "received" | "queued" | "delivered" | "failed" | "dead";

export interface NewEvent {
  /** eventKey(provider, type, eventId); a row stored before ids were derived keeps its own. */
  key: string;
  provider: string;
  eventId: string;
  type: string;
  knownType: boolean;
  tenant: string | null;
  occurredAt: string | null;
  receivedAt: number;
  verifiedWith: SecretSlot;
  contentType: string;
  body: string;
  /** Released from quarantine as it was, past a failing validation (see store/quarantine.ts). */
  forced: boolean;
}

export interface EventRow {
  key: string;
  provider: string;
  event_id: string;
  type: string;
  known_type: number;
  tenant: string | null;
  occurred_at: string | null;
  received_at: number;
  verified_with: SecretSlot;
  content_type: string;
  body: string;
  status: EventStatus;
  enqueued_at: number | null;
  forced: number;
  progress_at: number | null;
  last_error: string | null;
}

/**
 * The gateway's id for an event (`evt_` + 24 hex digits, the forwards' `webhook-id`): a SHA-256
 * of (provider, type, provider event id), so every gateway, before and after a purge or a
 * restore, gives one provider event the same id and downstream deduplication keeps working.
 */
export async function eventKey(provider: string, type: string, eventId: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(JSON.stringify([provider, type, eventId])));
  return `evt_${bytesToHex(new Uint8Array(digest)).slice(0, 24)}`;
}

export interface StoreOutcome {
  /** The event's id: the one proposed, or the stored one of an earlier delivery. */
  key: string;
  /** claimed: this attempt must enqueue it; duplicate: already enqueued; in_progress: another attempt holds it. */
  state: "claimed" | "duplicate" | "in_progress";
}

/**
 * Step 1: stores the event (or finds it by provider, type and provider id) and says whether
 * this attempt must enqueue it. One batch: one round trip, one transaction.
 */
export async function storeAndClaim(db: D1Database, event: NewEvent): Promise<StoreOutcome> {
  const now = event.receivedAt;
  const natural = "provider = ?1 AND type = ?2 AND event_id = ?3";
  const [inserted, reclaimed, state] = await db.batch([
    db
      .prepare(
        `INSERT INTO events (provider, type, event_id, key, known_type, tenant, occurred_at, received_at,
                             verified_with, content_type, body, forced, status, claimed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'received', ?8)
         ON CONFLICT (provider, type, event_id) DO NOTHING`,
      )
      .bind(event.provider, event.type, event.eventId, event.key, event.knownType ? 1 : 0, event.tenant,
        event.occurredAt, now, event.verifiedWith, event.contentType, event.body, event.forced ? 1 : 0),
    db
      .prepare(
        `UPDATE events SET claimed_at = ?4
         WHERE ${natural} AND enqueued_at IS NULL AND (claimed_at IS NULL OR claimed_at < ?5)`,
      )
      .bind(event.provider, event.type, event.eventId, now, now - CLAIM_LEASE_MS),
    db.prepare(`SELECT key, enqueued_at FROM events WHERE ${natural}`).bind(event.provider, event.type, event.eventId),
  ]);
  const row = state!.results[0] as { key: string; enqueued_at: number | null };
  if (inserted!.meta.changes + reclaimed!.meta.changes > 0) return { key: row.key, state: "claimed" };
  return { key: row.key, state: row.enqueued_at !== null ? "duplicate" : "in_progress" };
}

/** Step 3 (and the consumer, when step 3 failed): the queue has the event. */
export async function markEnqueued(db: D1Database, key: string, at: number): Promise<void> {
  await db
    .prepare(
      `UPDATE events SET enqueued_at = ?2, claimed_at = NULL,
              status = CASE status WHEN 'received' THEN 'queued' ELSE status END
       WHERE key = ?1 AND enqueued_at IS NULL`,
    )
    .bind(key, at)
    .run();
}

export async function isEnqueued(db: D1Database, key: string): Promise<boolean> {
  const row = await db.prepare(`SELECT enqueued_at FROM events WHERE key = ?1`).bind(key).first<{ enqueued_at: number | null }>();
  return row?.enqueued_at != null;
}

/** After a failed send: let the provider's next retry enqueue at once instead of after the lease. */
export async function releaseClaim(db: D1Database, key: string): Promise<void> {
  await db.prepare(`UPDATE events SET claimed_at = NULL WHERE key = ?1 AND enqueued_at IS NULL`).bind(key).run();
}

/**
 * Events the delivery path has lost track of: unfinished (received, queued or failed), not
 * handled by any consumer since `idleBefore`, and with no retry scheduled after it (a message
 * waiting out its backoff is not lost). Oldest first, so a backlog drains in order.
 */
export async function findStranded(db: D1Database, idleBefore: number, limit: number): Promise<string[]> {
  const { results } = await db
    .prepare(
      `SELECT key FROM events e
       WHERE status IN ('received', 'queued', 'failed') AND COALESCE(progress_at, received_at) < ?1
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_key = e.key
                         AND d.status IN ('pending', 'failed') AND d.next_attempt_at > ?1)
       ORDER BY received_at LIMIT ?2`,
    )
    .bind(idleBefore, limit)
    .all<{ key: string }>();
  return results.map((row) => row.key);
}

/** The sweep re-enqueued these: start their idle clock again, so the next sweep leaves them be. */
export async function markProgress(db: D1Database, keys: string[], now: number): Promise<void> {
  await db.prepare(`UPDATE events SET progress_at = ?2 WHERE key IN (SELECT value FROM json_each(?1))`).bind(JSON.stringify(keys), now).run();
}

/** Says why these events are waiting, without touching their idle clock (the sweep must find them). */
export async function markWaiting(db: D1Database, keys: string[], reason: string): Promise<void> {
  await db.prepare(`UPDATE events SET last_error = ?2 WHERE key IN (SELECT value FROM json_each(?1))`).bind(JSON.stringify(keys), reason).run();
}

export async function getEvent(db: D1Database, key: string): Promise<EventRow | null> {
  return db.prepare(`SELECT * FROM events WHERE key = ?1`).bind(key).first<EventRow>();
}

export interface EventFilter {
  provider?: string;
  type?: string;
  status?: string;
  tenant?: string;
  eventId?: string;
  since?: number;
  until?: number;
  /** Words the payload must contain (see store/search.ts); blank means no search. */
  q?: string;
}

export interface EventPage {
  events: Omit<EventRow, "body">[];
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
      `SELECT key, provider, event_id, type, known_type, tenant, occurred_at, received_at, verified_with,
              content_type, status, enqueued_at, forced, progress_at, last_error
       FROM ${from} ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY received_at DESC, key DESC LIMIT ?${params.length}`,
    )
    .bind(...params)
    .all<Omit<EventRow, "body">>();
  const page = results.slice(0, limit);
  const last = page[page.length - 1];
  return {
    events: page,
    nextCursor: results.length > limit && last ? encodeCursor({ receivedAt: last.received_at, key: last.key }) : null,
  };
}

/** A keyset position: a time and a tie-breaking key (quarantine.ts pages with it too). */
export interface Cursor {
  receivedAt: number;
  key: string;
}

export function encodeCursor(cursor: Cursor): string {
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
