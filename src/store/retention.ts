/** Retention purge: old events, their deliveries and attempts, old quarantined payloads and dead letters; the audit log on its own clock. */

export interface PurgeResult {
  events: number;
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
export async function purgeOlderThan(db: D1Database, cutoff: number, batchSize = 200, maxBatches = 20): Promise<PurgeResult> {
  const purged: PurgeResult = { events: 0, quarantined: 0, deadLetters: 0 };
  for (let i = 0; i < maxBatches; i++) {
    const { results } = await db.prepare(`SELECT key FROM events WHERE ${PURGEABLE} LIMIT ?2`).bind(cutoff, batchSize).all<{ key: string }>();
    if (results.length === 0) break;
    const keys = JSON.stringify(results.map((r) => r.key));
    // The chosen events still purgeable now; the events go last, so the test reads the same rows each time.
    const stillPurgeable = `SELECT key FROM events WHERE key IN (SELECT value FROM json_each(?2)) AND ${PURGEABLE}`;
    const [, , deleted] = await db.batch([
      db.prepare(`DELETE FROM delivery_attempts WHERE event_key IN (${stillPurgeable})`).bind(cutoff, keys),
      db.prepare(`DELETE FROM deliveries WHERE event_key IN (${stillPurgeable})`).bind(cutoff, keys),
      db.prepare(`DELETE FROM events WHERE key IN (${stillPurgeable})`).bind(cutoff, keys),
    ]);
    purged.events += deleted!.meta.changes;
    if (results.length < batchSize) break;
  }
  purged.quarantined = await deleteInBatches(db, `DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine WHERE last_received_at < ?1 LIMIT ?2)`, cutoff, batchSize, maxBatches);
  purged.deadLetters = await deleteInBatches(
    db, `DELETE FROM dead_letters WHERE message_id IN (SELECT message_id FROM dead_letters WHERE received_at < ?1 LIMIT ?2)`, cutoff, batchSize, maxBatches,
  );
  return purged;
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
