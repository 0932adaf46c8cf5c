/**
 * D1 access for quarantined payloads: signed bodies the request path could not accept (not
 * UTF-8, not JSON, or not their schema), kept byte for byte. An operator may release one into
 * events later (admin/quarantine.ts); the row then stays, as the record of what it became.
 */
import { HttpError } from "../errors";
import { CounterDeltas } from "./metrics";
import { bytesToHex } from "../crypto";
import type { SecretSlot } from "../env";
import { decodeCursor, keysetPage } from "./events";
import { putQuarantinedBody, readQuarantinedBody } from "./bodies";

export interface QuarantinedPayload {
  provider: string;
  /** The source it arrived through; the first one kept when the same bytes arrive through another. */
  source: string;
  reason: string;
  error: string;
  path: string | null;
  contentType: string;
  verifiedWith: SecretSlot;
  body: Uint8Array;
  receivedAt: number;
}

/**
 * Keeps a signed body that could not be accepted: its bytes in R2 first, then its row (a row kept
 * before bodies moved to R2 moves there now); a redelivery of the same bytes bumps `attempts`.
 */
export async function quarantine(db: D1Database, bucket: R2Bucket, item: QuarantinedPayload): Promise<void> {
  const digest = bytesToHex(new Uint8Array(await crypto.subtle.digest("SHA-256", item.body)));
  await putQuarantinedBody(bucket, item.provider, digest, item.body);
  const counted = new CounterDeltas();
  counted.event(item.source, item.provider, "", "quarantined");
  await db.batch([
    db
      .prepare(
        `INSERT INTO quarantine (provider, reason, error, path, content_type, verified_with, body, body_in_r2, body_bytes, body_sha256,
                                 first_received_at, last_received_at, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, x'', 1, ?7, ?8, ?9, ?9, ?10)
         ON CONFLICT (provider, body_sha256) DO UPDATE SET attempts = attempts + 1, last_received_at = ?9, body = x'', body_in_r2 = 1, body_bytes = ?7`,
      )
      .bind(item.provider, item.reason, item.error, item.path, item.contentType, item.verifiedWith, item.body.byteLength, digest, item.receivedAt, item.source),
    ...counted.statements(db),
  ]);
}

/** A row as listed: everything but the body. */
export interface QuarantineSummary {
  id: number;
  provider: string;
  /** Null only for a row a gateway without sources wrote during its upgrade: its provider's built-in source. */
  source: string | null;
  reason: string;
  error: string;
  path: string | null;
  bytes: number;
  attempts: number;
  first_received_at: number;
  last_received_at: number;
  released_at: number | null;
  event_key: string | null;
  forced: number;
}

export interface QuarantineRow extends QuarantineSummary {
  content_type: string;
  verified_with: SecretSlot;
  body: ArrayBuffer;
  body_sha256: string;
}

export interface QuarantineFilter {
  provider?: string;
  /** true: only released rows; false: only those still held. */
  released?: boolean;
}

export interface QuarantinePage {
  items: QuarantineSummary[];
  nextCursor: string | null;
}

const SUMMARY = `id, provider, source, reason, error, path, coalesce(body_bytes, length(body)) AS bytes, attempts, first_received_at, last_received_at,
                 released_at, event_key, forced`;

/**
 * Newest first by last_received_at, keyset-paginated on (last_received_at, id): the index on
 * last_received_at carries the rowid, so every page is an index range. A redelivery moves its
 * row to the top, so a walk through the pages can see it twice or not at all.
 */
export async function listQuarantine(db: D1Database, filter: QuarantineFilter, limit: number, cursor: string | null): Promise<QuarantinePage> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (filter.provider) {
    params.push(filter.provider);
    where.push(`provider = ?${params.length}`);
  }
  if (filter.released !== undefined) where.push(filter.released ? "released_at IS NOT NULL" : "released_at IS NULL");
  const after = cursor ? decodeCursor(cursor) : null;
  if (cursor && !(after && /^\d+$/.test(after.key))) throw new HttpError(400, "invalid_cursor", "cursor is not one this API returned");
  if (after) {
    params.push(after.receivedAt, Number(after.key));
    where.push(`(last_received_at < ?${params.length - 1} OR (last_received_at = ?${params.length - 1} AND id < ?${params.length}))`);
  }
  params.push(limit + 1);
  const { results } = await db
    .prepare(
      `SELECT ${SUMMARY} FROM quarantine ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY last_received_at DESC, id DESC LIMIT ?${params.length}`,
    )
    .bind(...params)
    .all<QuarantineSummary>();
  const { rows, nextCursor } = keysetPage(results, limit, (last) => ({ receivedAt: last.last_received_at, key: String(last.id) }));
  return { items: rows, nextCursor };
}

/** One quarantined payload with its bytes (from R2 where they are kept: BodyUnavailable, 503, if R2 does not give them back). */
export async function getQuarantined(db: D1Database, bucket: R2Bucket, id: number): Promise<QuarantineRow | null> {
  const row = await db
    .prepare(`SELECT ${SUMMARY}, content_type, verified_with, body, body_in_r2, body_sha256 FROM quarantine WHERE id = ?1`)
    .bind(id)
    .first<QuarantineRow & { body_in_r2: number }>();
  if (row?.body_in_r2) row.body = await readQuarantinedBody(bucket, row.provider, row.body_sha256);
  return row;
}

/** Takes a release back (its event could not be enqueued), so the payload can be released again. */
export async function unmarkReleased(db: D1Database, id: number, at: number): Promise<void> {
  await db.prepare(`UPDATE quarantine SET released_at = NULL, event_key = NULL, forced = 0 WHERE id = ?1 AND released_at = ?2`).bind(id, at).run();
}

/** Records a release; false when another release of the same row recorded one first. */
export async function markReleased(db: D1Database, id: number, eventKey: string, forced: boolean, at: number): Promise<boolean> {
  const { meta } = await db
    .prepare(`UPDATE quarantine SET released_at = ?2, event_key = ?3, forced = ?4 WHERE id = ?1 AND released_at IS NULL`)
    .bind(id, at, eventKey, forced ? 1 : 0)
    .run();
  return meta.changes > 0;
}
