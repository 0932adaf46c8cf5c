/**
 * Retention purge: old events, their deliveries and attempts, old quarantined payloads and dead
 * letters; the audit log on its own clock. An event's body in R2 goes after its row: the purge
 * notes its own object in `body_deletions` in the row's own transaction, then deletes what is
 * noted; a segment of bodies goes by its oldest body's age (bodies.ts, retireSegments).
 */
import { deleteObjects, retireSegments } from "./bodies";

export interface PurgeResult {
  events: number;
  /** Bodies deleted from R2 (this run's events', and any an earlier run noted but could not delete). */
  bodies: number;
  /** Objects past retention that no row pointed at, deleted by this run's step of the walk through the bucket. */
  orphanBodies: number;
  /** Bodies still in use moved out of segments past retention, segments whose deletion was noted, and segment moves that failed (see retireSegments). */
  segmentBodiesMoved: number;
  segmentsRetired: number;
  segmentsFailed: number;
  quarantined: number;
  deadLetters: number;
}

/**
 * What may be purged: events received before ?1, finished (delivered or dead), with no delivery
 * pending, being retried or held. The deletes test it again, in their own transaction, so an event
 * replayed (or released) after it was chosen is kept.
 */
const PURGEABLE = `received_at < ?1 AND status IN ('delivered', 'dead')
  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_key = events.key AND d.status IN ('pending', 'failed', 'held'))`;

/**
 * Deletes in bounded batches (a cron run must stay short), and never an event that still
 * has a delivery pending, being retried or held, nor one that has not reached the queue yet.
 */
export async function purgeOlderThan(
  db: D1Database, bucket: R2Bucket, cutoff: number, { now = Date.now(), batchSize = 200, maxBatches = 20 } = {},
): Promise<PurgeResult> {
  const purged: PurgeResult = { events: 0, bodies: 0, orphanBodies: 0, segmentBodiesMoved: 0, segmentsRetired: 0, segmentsFailed: 0, quarantined: 0, deadLetters: 0 };
  let caughtUp = false;
  for (let i = 0; i < maxBatches; i++) {
    const { results } = await db.prepare(`SELECT key FROM events WHERE ${PURGEABLE} LIMIT ?2`).bind(cutoff, batchSize).all<{ key: string }>();
    if (results.length === 0) {
      caughtUp = true;
      break;
    }
    const keys = JSON.stringify(results.map((r) => r.key));
    // The chosen events still purgeable now; the events go last, so the test reads the same rows each time.
    const stillPurgeable = `SELECT key FROM events WHERE key IN (SELECT value FROM json_each(?2)) AND ${PURGEABLE}`;
    const [, , , deleted] = await db.batch([
      // Every one, whatever body_in_r2 says: a move to R2 may have written the object and not its row (a missing object deletes as well).
      db.prepare(`INSERT OR IGNORE INTO body_deletions (object) SELECT 'events/' || key FROM events WHERE key IN (${stillPurgeable})`).bind(cutoff, keys),
      db.prepare(`DELETE FROM delivery_attempts WHERE event_key IN (${stillPurgeable})`).bind(cutoff, keys),
      db.prepare(`DELETE FROM deliveries WHERE event_key IN (${stillPurgeable})`).bind(cutoff, keys),
      db.prepare(`DELETE FROM events WHERE key IN (${stillPurgeable})`).bind(cutoff, keys),
    ]);
    purged.events += deleted!.meta.changes;
    if (results.length < batchSize) {
      caughtUp = true;
      break;
    }
  }
  // Bodies move out of a segment only once every event past the cutoff that may go has gone: its rows left then are kept ones, not ones about to be purged.
  try {
    ({ moved: purged.segmentBodiesMoved, retired: purged.segmentsRetired, failed: purged.segmentsFailed } = await retireSegments(db, bucket, cutoff, now, caughtUp));
  } catch (err) {
    // D1 refusing the step: counted, and tried again next run; the rest of the purge goes on.
    purged.segmentsFailed++;
    console.error(JSON.stringify({ cron: "retention_purge", outcome: "segments_failed", error: String(err) }));
  }
  purged.quarantined = await purgeQuarantine(db, cutoff, batchSize, maxBatches);
  purged.bodies = await deleteNotedBodies(db, bucket, maxBatches);
  purged.orphanBodies = await sweepOrphans(db, bucket, cutoff, 1000);
  purged.deadLetters = await deleteInBatches(
    db, `DELETE FROM dead_letters WHERE message_id IN (SELECT message_id FROM dead_letters WHERE received_at < ?1 LIMIT ?2)`, cutoff, batchSize, maxBatches,
  );
  return purged;
}

/** Old quarantined payloads, their objects in R2 noted for deletion in the same transaction. */
async function purgeQuarantine(db: D1Database, cutoff: number, batchSize: number, maxBatches: number): Promise<number> {
  const old = `SELECT id FROM quarantine WHERE last_received_at < ?1 LIMIT ?2`;
  let deleted = 0;
  for (let i = 0; i < maxBatches; i++) {
    const [, result] = await db.batch([
      db.prepare(`INSERT OR IGNORE INTO body_deletions (object)
                  SELECT 'quarantine/' || provider || '/' || body_sha256 FROM quarantine WHERE id IN (${old})`).bind(cutoff, batchSize),
      db.prepare(`DELETE FROM quarantine WHERE id IN (${old})`).bind(cutoff, batchSize),
    ]);
    deleted += result!.meta.changes;
    if (result!.meta.changes < batchSize) break;
  }
  return deleted;
}

/**
 * SQL: whether the object named `object` is some row's body now, each looked up by its table's
 * key (events: its key; a segment: its own row, until retireSegments drops it; quarantine:
 * provider and SHA-256, the last 64 characters).
 */
const inUse = (object: string) => `(
  (${object} GLOB 'events/*' AND EXISTS (SELECT 1 FROM events e WHERE e.key = substr(${object}, 8)))
  OR (${object} GLOB 'segments/*' AND EXISTS (SELECT 1 FROM body_segments s WHERE s.id = substr(${object}, 10)))
  OR (${object} GLOB 'quarantine/*' AND EXISTS (SELECT 1 FROM quarantine q
        WHERE q.provider = substr(${object}, 12, length(${object}) - 11 - 65) AND q.body_sha256 = substr(${object}, -64))))`;
const IN_USE = inUse("d.object");

/**
 * Deletes the objects noted in `body_deletions` from R2, then their notes. One that is some row's
 * body again meanwhile (a provider sent the same event, or the same bytes, after its purge) is
 * kept and its note dropped: that row's own purge notes it again.
 */
async function deleteNotedBodies(db: D1Database, bucket: R2Bucket, maxBatches: number): Promise<number> {
  let deleted = 0;
  for (let i = 0; i < maxBatches; i++) {
    const { results } = await db.prepare(`SELECT object FROM body_deletions d WHERE NOT ${IN_USE} LIMIT 1000`).all<{ object: string }>();
    if (results.length === 0) break;
    const objects = results.map((row) => row.object);
    await deleteObjects(bucket, objects);
    await db.prepare(`DELETE FROM body_deletions WHERE object IN (SELECT value FROM json_each(?1))`).bind(JSON.stringify(objects)).run();
    deleted += objects.length;
    if (objects.length < 1000) break;
  }
  await db.prepare(`DELETE FROM body_deletions AS d WHERE ${IN_USE}`).run();
  return deleted;
}

/**
 * One step of a walk through the bucket, a run at a time: the objects of this page uploaded
 * before `cutoff` that no row points at are deleted (a body written whose row never was: its D1
 * write refused after it, and the sender gave up). Newer ones are left: their row may be on its way.
 */
async function sweepOrphans(db: D1Database, bucket: R2Bucket, cutoff: number, pageSize: number): Promise<number> {
  const state = await db.prepare(`SELECT cursor FROM body_sweep`).first<{ cursor: string | null }>();
  // A cursor R2 no longer takes starts the walk again.
  const page = await bucket.list({ limit: pageSize, ...(state?.cursor ? { cursor: state.cursor } : {}) }).catch(() => bucket.list({ limit: pageSize }));
  const old = page.objects.filter((object) => object.uploaded.getTime() < cutoff).map((object) => object.key);
  const { results } = await db
    .prepare(`SELECT value AS object FROM json_each(?1) WHERE NOT ${inUse("value")}`)
    .bind(JSON.stringify(old))
    .all<{ object: string }>();
  await deleteObjects(bucket, results.map((row) => row.object));
  await db.prepare(`UPDATE body_sweep SET cursor = ?1`).bind(page.truncated ? page.cursor : null).run();
  return results.length;
}

/** Deletes audit records older than `cutoff` (AUDIT_RETENTION_DAYS), in bounded batches like the rest. */
export async function purgeAuditLog(db: D1Database, cutoff: number, batchSize = 200, maxBatches = 20): Promise<number> {
  return deleteInBatches(db, `DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < ?1 LIMIT ?2)`, cutoff, batchSize, maxBatches);
}

async function deleteInBatches(db: D1Database, sql: string, cutoff: number, batchSize: number, maxBatches: number): Promise<number> {
  let deleted = 0;
  for (let i = 0; i < maxBatches; i++) {
    const { meta } = await db.prepare(sql).bind(cutoff, batchSize).run();
    deleted += meta.changes;
    if (meta.changes < batchSize) break;
  }
  return deleted;
}
