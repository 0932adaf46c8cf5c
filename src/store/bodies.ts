/**
 * Event bodies in R2 (the BODIES bucket), D1 being their index: every event's body, byte for byte
 * as it was signed (a leading byte-order mark included), under events/<event key>. The body is
 * written before the row that points at it, so an event row never points at a missing body; the
 * retention purge deletes it after its row (retention.ts, through `body_deletions`). A row stored
 * before bodies moved here keeps its body in D1 (`body_in_r2` 0) until the cron moves it
 * (`moveBodiesToR2`). All R2 access for bodies lives here.
 */
import { searchEnabled, type Env } from "../env";
import { HttpError } from "../errors";

/** A row that names its event and holds its body, or says the body is in R2 (EventRow's columns). */
export interface BodyHolder {
  key: string;
  body: string;
  body_in_r2: number;
}

/** What a writer of events needs for their bodies: the bucket, and whether the search index takes their text now. */
export interface BodyWriter {
  bucket: R2Bucket;
  indexText: boolean;
}

export const bodyWriter = (env: Env): BodyWriter => ({ bucket: env.BODIES, indexText: searchEnabled(env) });

/** The object that holds an event's body. */
export const bodyObjectKey = (eventKey: string): string => `events/${eventKey}`;
/** The object that holds a quarantined payload: one per provider and bytes, as its row is. */
export const quarantineObjectKey = (provider: string, sha256: string): string => `quarantine/${provider}/${sha256}`;

const utf8 = new TextEncoder();
/** Bodies were decoded this way when they arrived (receive/body.ts): encoding them again gives the bytes that were signed. */
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Writes each event's body (one write per key, copies of an event being the same event); throws if any write fails. */
export async function putBodies(bucket: R2Bucket, events: { key: string; body: string }[]): Promise<void> {
  const bodies = new Map(events.map((event) => [event.key, event.body]));
  await Promise.all([...bodies].map(([key, body]) => bucket.put(bodyObjectKey(key), utf8.encode(body))));
}

/** A body that R2 did not give back (refused, failed, or missing): 503, try again later; `reason` says why, for the log. */
export class BodyUnavailable extends HttpError {
  constructor(key: string, readonly reason: string) {
    super(503, "body_unavailable", `the body of ${key} could not be read from R2; retry later`, { retryAfterSeconds: 5 });
    this.name = "BodyUnavailable";
  }
}

/**
 * Fills in the bodies kept in R2 of `rows` (a row whose body is in D1 has it already), reading
 * at most `budgetBytes` in all (the first body is always read): an isolate has 128 MB, and a
 * queue batch may name 25 events whose bodies are up to MAX_BODY_BYTES each. Returns, per key,
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
        const object = await bucket.get(bodyObjectKey(row.key));
        if (!object) throw new Error("no such object");
        if (reserved > 0 && reserved + object.size > budgetBytes) {
          deferred.add(row.key);
          await object.body.cancel();
          return;
        }
        reserved += object.size;
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
  const object = await bucket.get(quarantineObjectKey(provider, sha256)).catch((err: unknown) => {
    throw new BodyUnavailable(`quarantined payload ${sha256}`, String(err));
  });
  if (!object) throw new BodyUnavailable(`quarantined payload ${sha256}`, "no such object");
  return object.arrayBuffer();
}

/** Deletes these objects (R2 takes up to 1,000 keys in one call). */
export async function deleteObjects(bucket: R2Bucket, objects: string[]): Promise<void> {
  for (let i = 0; i < objects.length; i += 1000) await bucket.delete(objects.slice(i, i + 1000));
}

/**
 * The cron's step for events stored before bodies moved to R2: up to `batchSize` × `maxBatches`
 * bodies a run are written to R2, then emptied in D1 (their search index entries stay). A body R2
 * refuses stays in D1, readable as before, until a later run.
 */
export async function moveBodiesToR2(db: D1Database, bucket: R2Bucket, batchSize = 100, maxBatches = 5): Promise<{ bodiesMoved: number }> {
  let moved = 0;
  for (let i = 0; i < maxBatches; i++) {
    const { results } = await db.prepare(`SELECT key, body FROM events WHERE body_in_r2 = 0 LIMIT ?1`).bind(batchSize).all<{ key: string; body: string }>();
    if (results.length === 0) break;
    await putBodies(bucket, results);
    const { meta } = await db
      .prepare(`UPDATE events SET body = '', body_in_r2 = 1 WHERE key IN (SELECT value FROM json_each(?1)) AND body_in_r2 = 0`)
      .bind(JSON.stringify(results.map((row) => row.key)))
      .run();
    moved += meta.changes;
    if (results.length < batchSize) break;
  }
  return { bodiesMoved: moved };
}
