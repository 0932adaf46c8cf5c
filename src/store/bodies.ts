/**
 * Event bodies in R2 (the BODIES bucket), D1 being their index: every event's body, byte for byte
 * as it was signed (a leading byte-order mark included). Bodies stored together (a queue batch's)
 * share one object, a segment, segments/<id>, each at an offset its row records: one R2 write per
 * batch instead of one per event. A body stored alone has its own object, events/<event key>. The
 * body is written before the row that points at it, so an event row never points at a missing
 * body; the retention purge deletes it after its row (retention.ts, through `body_deletions`), a
 * segment once its oldest body is past retention (retireSegments). A
 * row stored before bodies moved here keeps its body in D1 (`body_in_r2` 0) until the cron moves
 * it (`moveBodiesToR2`). All R2 access for bodies lives here.
 */
import { withDeadline } from "../deadline";
import { searchEnabled, type Env } from "../env";
import { bytesToHex } from "../crypto";
import { HttpError } from "../errors";

/** A row that names its event and holds its body, or says where in R2 it is (EventRow's columns). */
export interface BodyHolder {
  key: string;
  body: string;
  body_in_r2: number;
  /** The segment holding the body, its bytes at body_offset for body_length; null: events/<key>. */
  body_segment: string | null;
  body_offset: number | null;
  body_length: number | null;
}

/** Where in a segment a body stored with others is (BodyHolder's columns, as an insert writes them). */
export interface BodyPlace {
  segment: string;
  offset: number;
  length: number;
}

/** What a writer of events needs for their bodies: the bucket, and whether the search index takes their text now. */
export interface BodyWriter {
  bucket: R2Bucket;
  indexText: boolean;
}

export const bodyWriter = (env: Env): BodyWriter => ({ bucket: env.BODIES, indexText: searchEnabled(env) });

/** The object that holds an event's body. */
export const bodyObjectKey = (eventKey: string): string => `events/${eventKey}`;
/** The object that holds the bodies of events stored together. */
export const segmentObjectKey = (segment: string): string => `segments/${segment}`;
/** The object a row's body is in (BodyHolder: one kept in R2). */
const objectOf = (row: BodyHolder): string => (row.body_segment === null ? bodyObjectKey(row.key) : segmentObjectKey(row.body_segment));
/** The object that holds a quarantined payload: one per provider and bytes, as its row is. */
export const quarantineObjectKey = (provider: string, sha256: string): string => `quarantine/${provider}/${sha256}`;

const utf8 = new TextEncoder();
/** Bodies were decoded this way when they arrived (receive/body.ts): encoding them again gives the bytes that were signed. */
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * How long one R2 call may take on the delivery path and in the cron: past it the call counts as
 * failed (a write: the message is retried; a read: the body is unavailable), so a stalled R2
 * holds up no batch for long. The request path has its own, shorter storage budget.
 */
const R2_CALL_MS = 10_000;

function withinR2Deadline<T>(call: Promise<T>, what: string): Promise<T> {
  return withDeadline(call, R2_CALL_MS, () => new Error(`R2 ${what} did not answer within ${R2_CALL_MS} ms`));
}

/** Only if no object has the name yet: the first copy of an event stored is the one kept (its row is the first inserted too). */
const CREATE_ONLY: R2PutOptions = { onlyIf: new Headers({ "if-none-match": "*" }) };

/** Writes each event's body to its own object, unless it is there already (a copy of an event is the same event); throws if any write fails. */
export async function putBodies(bucket: R2Bucket, events: { key: string; body: string }[]): Promise<void> {
  // The first copy of a key, as the insert keeps the first.
  const bodies = new Map<string, string>();
  for (const event of events) if (!bodies.has(event.key)) bodies.set(event.key, event.body);
  await Promise.all([...bodies].map(([key, body]) => withinR2Deadline(bucket.put(bodyObjectKey(key), utf8.encode(body), CREATE_ONLY), "put")));
}

/** A segment just written: its id, where each body is in it, and its row in `body_segments`. */
export interface Segment {
  id: string;
  places: Map<string, BodyPlace>;
  /** The earliest `receivedAt` of the bodies in it: retention goes by it (retireSegments). */
  oldestReceivedAt: number;
}

/**
 * Writes the bodies of events stored together: one of them alone to its own object (putBodies),
 * two or more to one new segment, which it returns (null for one alone). A key given twice is
 * placed once, with its first body: the insert keeps the first copy too. Throws if the write
 * fails. Why segments: an R2 write is a class A operation (the dearest), and a Worker's
 * subrequests are counted: a queue batch of 100 events makes one write, not 100.
 */
export async function putTogether(bucket: R2Bucket, events: { key: string; body: string; receivedAt: number }[]): Promise<Segment | null> {
  const firsts = new Map<string, Uint8Array>();
  for (const event of events) if (!firsts.has(event.key)) firsts.set(event.key, utf8.encode(event.body));
  if (firsts.size < 2) {
    await putBodies(bucket, events);
    return null;
  }
  const id = bytesToHex(crypto.getRandomValues(new Uint8Array(12)));
  const places = new Map<string, BodyPlace>();
  let offset = 0;
  for (const [key, bytes] of firsts) {
    places.set(key, { segment: id, offset, length: bytes.byteLength });
    offset += bytes.byteLength;
  }
  const joined = new Uint8Array(offset);
  for (const [key, bytes] of firsts) joined.set(bytes, places.get(key)!.offset);
  // 96 random bits: a name taken already is all but impossible, but would be another batch's bodies.
  const written = await withinR2Deadline(bucket.put(segmentObjectKey(id), joined, CREATE_ONLY), "put");
  if (!written) throw new Error(`R2 segment ${id} exists already`);
  return { id, places, oldestReceivedAt: Math.min(...events.map((event) => event.receivedAt)) };
}

/**
 * Records a segment just written, in the D1 batch that inserts the rows pointing at it, after
 * them: its age is that of its oldest body, and a copy of an event stored earlier (a provider's
 * resend is received anew) counts from when its event was, so the copy goes with it.
 */
export function recordSegment(db: D1Database, segment: Segment): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO body_segments (id, oldest_received_at, keys)
       SELECT ?1, min(?2, coalesce((SELECT min(received_at) FROM events WHERE key IN (SELECT value FROM json_each(?3))), ?2)), ?3`,
    )
    .bind(segment.id, segment.oldestReceivedAt, JSON.stringify([...segment.places.keys()]));
}

/**
 * A body that R2 did not give back: 503, try again later. `missing`: R2 answered that there is
 * no such object (not a passing fault); `reason` says why, for the log.
 */
export class BodyUnavailable extends HttpError {
  constructor(key: string, readonly reason: string, readonly missing = false) {
    super(503, "body_unavailable", `the body of ${key} could not be read from R2; retry later`, { retryAfterSeconds: 5 });
    this.name = "BodyUnavailable";
  }
}

/**
 * The bodies one queue batch or lane chunk reads from R2 at most (the first is always read): an
 * isolate has 128 MB, 100 stored events' bodies could be up to MAX_BODY_BYTES (8 MiB) each, and a
 * round holds each several times over (text, parsed for routing, a transform's input, each
 * forward's copy).
 */
export const BODY_READ_BUDGET_BYTES = 8 * 1024 * 1024;

/**
 * Fills in the bodies kept in R2 of `rows` (a row whose body is in D1 has it already), reading
 * at most `budgetBytes` in all (the first body is always read): an isolate has 128 MB, and a
 * queue batch may name 100 events whose bodies are up to MAX_BODY_BYTES each. Returns, per key,
 * the rows whose body could not be read (with why) and those left for later (past the budget).
 */
export async function readBodies<T extends BodyHolder>(
  bucket: R2Bucket, rows: T[], budgetBytes = Infinity,
): Promise<{ failed: Map<string, BodyUnavailable>; deferred: Set<string> }> {
  const failed = new Map<string, BodyUnavailable>();
  const deferred = new Set<string>();
  let reserved = 0;
  await Promise.all(
    rows.filter((row) => row.body_in_r2).map(async (row) => {
      try {
        const inSegment = row.body_segment !== null;
        // R2 refuses an empty range; an empty body needs no read.
        if (inSegment && row.body_length === 0) return void (row.body = "");
        const object = await withinR2Deadline(
          bucket.get(objectOf(row), inSegment ? { range: { offset: row.body_offset!, length: row.body_length! } } : {}),
          "get",
        );
        if (!object) {
          failed.set(row.key, new BodyUnavailable(row.key, "no such object", true));
          return;
        }
        // A segment's size is that of every body in it: this body's is its range's.
        const size = inSegment ? row.body_length! : object.size;
        if (reserved > 0 && reserved + size > budgetBytes) {
          deferred.add(row.key);
          await object.body.cancel();
          return;
        }
        reserved += size;
        row.body = decoder.decode(await object.arrayBuffer());
      } catch (err) {
        failed.set(row.key, new BodyUnavailable(row.key, String(err)));
      }
    }),
  );
  return { failed, deferred };
}

/** One row's body, from R2 if it is kept there; throws BodyUnavailable (503) if R2 does not give it back. */
export async function withBody<T extends BodyHolder>(bucket: R2Bucket, row: T): Promise<T> {
  const { failed } = await readBodies(bucket, [row]);
  const error = failed.get(row.key);
  if (error) throw error;
  return row;
}

/** A quarantined payload's bytes from R2; BodyUnavailable (503) if R2 does not give them back. */
export async function readQuarantinedBody(bucket: R2Bucket, provider: string, sha256: string): Promise<ArrayBuffer> {
  const object = await withinR2Deadline(bucket.get(quarantineObjectKey(provider, sha256)), "get").catch((err: unknown) => {
    throw new BodyUnavailable(`quarantined payload ${sha256}`, String(err));
  });
  if (!object) throw new BodyUnavailable(`quarantined payload ${sha256}`, "no such object", true);
  return object.arrayBuffer();
}

/** Deletes these objects (R2 takes up to 1,000 keys in one call). */
export async function deleteObjects(bucket: R2Bucket, objects: string[]): Promise<void> {
  for (let i = 0; i < objects.length; i += 1000) await withinR2Deadline(bucket.delete(objects.slice(i, i + 1000)), "delete");
}

/** Writes a quarantined payload's bytes, unless the object is there already (its name is their hash). */
export async function putQuarantinedBody(bucket: R2Bucket, provider: string, sha256: string, bytes: Uint8Array): Promise<void> {
  await bucket.put(quarantineObjectKey(provider, sha256), bytes, CREATE_ONLY);
}

/** Bodies one batch of the move holds at once: a body kept in D1 may be up to 2,000,000 bytes. */
const MOVE_BATCH_BYTES = 8 * 1024 * 1024;

/**
 * The cron's step for events stored before bodies moved to R2: up to `rows` bodies a run, in
 * batches of at most MOVE_BATCH_BYTES, are written to R2, then emptied in D1 (their search index
 * entries stay). A body R2 refuses stays in D1, readable as before, until a later run.
 */
export async function moveBodiesToR2(db: D1Database, bucket: R2Bucket, rows = 500): Promise<{ bodiesMoved: number }> {
  const { results: sizes } = await db
    .prepare(`SELECT key, length(CAST(body AS BLOB)) AS bytes FROM events WHERE body_in_r2 = 0 LIMIT ?1`)
    .bind(rows)
    .all<{ key: string; bytes: number }>();
  let moved = 0;
  for (const batch of batchesOf(sizes, MOVE_BATCH_BYTES)) {
    const keys = JSON.stringify(batch.map((row) => row.key));
    const { results } = await db.prepare(`SELECT key, body FROM events WHERE key IN (SELECT value FROM json_each(?1)) AND body_in_r2 = 0`).bind(keys).all<{ key: string; body: string }>();
    await putBodies(bucket, results);
    const { meta } = await db
      .prepare(`UPDATE events SET body = '', body_in_r2 = 1 WHERE key IN (SELECT value FROM json_each(?1)) AND body_in_r2 = 0`)
      .bind(JSON.stringify(results.map((row) => row.key)))
      .run();
    moved += meta.changes;
  }
  return { bodiesMoved: moved };
}

/** Segments each of the purge's two looks takes at most: those moved out past their grace, and the oldest past the cutoff. */
const SEGMENTS_PER_RUN = 2_000;
/** Segments with rows still in them that a run moves out at most (a get, a put per body and a D1 batch each), and for how long. */
const MOVES_PER_RUN = 50;
const MOVING_BUDGET_MS = 30_000;
/** How long a segment whose bodies moved out stays for a reader that read a row's place just before. */
const MOVED_GRACE_MS = 60_000;

/**
 * The purge's step for segments. A segment whose oldest body is past `cutoff` is retired: if no
 * row is in it any more, its deletion is noted (deleteNotedBodies deletes it); if rows are still
 * in it (held work, a batch-mate received later than a copy beside it) and `movesAllowed` (the
 * purge has caught up, so they are not rows about to go), their bodies get objects of their own,
 * written over whatever an object of that name held (a copy written alone that no row read), the
 * rows point there, and a later run notes the segment's deletion, once MOVED_GRACE_MS have passed.
 * A segment R2 has no object for is dropped (its rows' bodies are gone: readers answer
 * body_unavailable, as for a missing object of their own); one R2 refuses to read or write is
 * counted in `failed` and tried again next run.
 */
export async function retireSegments(
  db: D1Database, bucket: R2Bucket, cutoff: number, now: number, movesAllowed: boolean,
): Promise<{ moved: number; retired: number; failed: number }> {
  const { results: done } = await db
    .prepare(`SELECT id FROM body_segments WHERE moved_at IS NOT NULL AND moved_at < ?1 LIMIT ?2`)
    .bind(now - MOVED_GRACE_MS, SEGMENTS_PER_RUN)
    .all<{ id: string }>();
  const { results: old } = await db
    .prepare(
      `SELECT id, keys, EXISTS (SELECT 1 FROM json_each(s.keys) j JOIN events e ON e.key = j.value WHERE e.body_segment = s.id) AS in_use
       FROM body_segments s WHERE oldest_received_at < ?1 AND moved_at IS NULL ORDER BY oldest_received_at LIMIT ?2`,
    )
    .bind(cutoff, SEGMENTS_PER_RUN)
    .all<{ id: string; keys: string; in_use: number }>();
  const unused = [...done, ...old.filter((segment) => !segment.in_use)].map((segment) => segment.id);
  await forget(db, unused);
  const result = { moved: 0, retired: unused.length, failed: 0 };
  if (!movesAllowed) return result;
  const started = Date.now();
  for (const segment of old.filter((segment) => segment.in_use).slice(0, MOVES_PER_RUN)) {
    if (Date.now() - started > MOVING_BUDGET_MS) break;
    try {
      const { moved, dropped } = await moveOutOfSegment(db, bucket, segment, now);
      result.moved += moved;
      if (dropped) result.retired++;
    } catch (err) {
      result.failed++;
      console.error(JSON.stringify({ cron: "retention_purge", segment: segment.id, outcome: "segment_move_failed", error: String(err) }));
    }
  }
  return result;
}

/** Notes these segments' deletion and drops their rows, in one transaction: deleteNotedBodies deletes the objects. */
async function forget(db: D1Database, ids: string[]): Promise<void> {
  if (ids.length === 0) return;
  const list = JSON.stringify(ids);
  await db.batch([
    db.prepare(`INSERT OR IGNORE INTO body_deletions (object) SELECT 'segments/' || value FROM json_each(?1)`).bind(list),
    db.prepare(`DELETE FROM body_segments WHERE id IN (SELECT value FROM json_each(?1))`).bind(list),
  ]);
}

/** Gives each row still in `segment` its own object (see retireSegments); `dropped`: the segment was forgotten instead (no row left, or no object). */
async function moveOutOfSegment(db: D1Database, bucket: R2Bucket, segment: { id: string; keys: string }, now: number): Promise<{ moved: number; dropped: boolean }> {
  const { results: rows } = await db
    .prepare(`SELECT key, body_offset, body_length FROM events WHERE key IN (SELECT value FROM json_each(?1)) AND body_segment = ?2`)
    .bind(segment.keys, segment.id)
    .all<{ key: string; body_offset: number; body_length: number }>();
  if (rows.length === 0) {
    await forget(db, [segment.id]);
    return { moved: 0, dropped: true };
  }
  const object = await withinR2Deadline(bucket.get(segmentObjectKey(segment.id)), "get");
  if (!object) {
    console.error(JSON.stringify({ cron: "retention_purge", segment: segment.id, outcome: "segment_missing", rows: rows.length }));
    await forget(db, [segment.id]);
    return { moved: 0, dropped: true };
  }
  const bytes = new Uint8Array(await object.arrayBuffer());
  await Promise.all(rows.map((row) =>
    withinR2Deadline(bucket.put(bodyObjectKey(row.key), bytes.subarray(row.body_offset, row.body_offset + row.body_length)), "put")));
  await db.batch([
    db
      .prepare(`UPDATE events SET body_segment = NULL, body_offset = NULL, body_length = NULL WHERE key IN (SELECT value FROM json_each(?1)) AND body_segment = ?2`)
      .bind(JSON.stringify(rows.map((row) => row.key)), segment.id),
    db.prepare(`UPDATE body_segments SET moved_at = ?2 WHERE id = ?1`).bind(segment.id, now),
  ]);
  return { moved: rows.length, dropped: false };
}

/** Consecutive batches of rows whose bytes add up to at most `budget` each (a larger row alone). */
function batchesOf<T extends { bytes: number }>(rows: T[], budget: number): T[][] {
  const batches: T[][] = [];
  let batch: T[] = [];
  let bytes = 0;
  for (const row of rows) {
    if (batch.length && bytes + row.bytes > budget) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(row);
    bytes += row.bytes;
  }
  if (batch.length) batches.push(batch);
  return batches;
}
