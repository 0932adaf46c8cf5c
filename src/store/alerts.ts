/** D1 access for alerts: what is pending per kind and subject, when it is due, what was sent. All SQL for `alerts` lives here. */

export interface AlertRow {
  kind: string;
  subject: string;
  pending: number;
  first_at: number | null;
  last_at: number | null;
  due_at: number | null;
  last_sent_at: number | null;
  sending_until: number | null;
  /** The first occurrence noted while this key was being sent: the next alert's first. */
  next_first_at: number | null;
  sent: number;
  failed: number;
}

export interface AlertNote {
  kind: string;
  subject: string;
  count: number;
}

/** When a noted key's send is due: after the group wait, and never before the cooldown since the last one ended. */
export interface AlertTiming {
  groupWaitMs: number;
  cooldownMs: number;
}

/**
 * Adds occurrences and, given `timing`, schedules a send for every key that has none on its way
 * (so a burst becomes one alert). Returns the keys it scheduled, with when: the caller sends a
 * queue message for each. Without `timing` it only counts: the keys wait, unscheduled.
 */
export async function noteAlerts(db: D1Database, notes: AlertNote[], now: number, timing: AlertTiming | null): Promise<AlertRow[]> {
  const json = JSON.stringify(notes);
  const [, scheduled] = await db.batch([
    db
      .prepare(
        `INSERT INTO alerts (kind, subject, pending, first_at, last_at)
         SELECT value->>'kind', value->>'subject', value->>'count', ?2, ?2 FROM json_each(?1) WHERE true
         ON CONFLICT (kind, subject) DO UPDATE SET pending = pending + excluded.pending, first_at = COALESCE(first_at, excluded.first_at), last_at = max(COALESCE(last_at, 0), excluded.last_at),
           next_first_at = CASE WHEN sending_until > ?2 THEN COALESCE(next_first_at, excluded.first_at) ELSE next_first_at END`,
      )
      .bind(json, now),
    ...(timing
      ? [
          db
            .prepare(
              `UPDATE alerts SET due_at = max(?2 + ?3, COALESCE(last_sent_at + ?4, 0))
               WHERE due_at IS NULL AND pending > 0 AND (kind, subject) IN (SELECT value->>'kind', value->>'subject' FROM json_each(?1))
               RETURNING *`,
            )
            .bind(json, now, timing.groupWaitMs, timing.cooldownMs),
        ]
      : []),
  ]);
  return (scheduled?.results ?? []) as AlertRow[];
}

/**
 * Takes the right to send a key until `until`, if it has something pending and nobody else is
 * sending it: two messages for one key (a lost one sent again) never send it twice. Null: nothing
 * to send, or another consumer is on it.
 */
export async function claimAlert(db: D1Database, kind: string, subject: string, now: number, until: number): Promise<AlertRow | null> {
  return db
    .prepare(
      `UPDATE alerts SET sending_until = ?4 WHERE kind = ?1 AND subject = ?2 AND pending > 0 AND (sending_until IS NULL OR sending_until <= ?3)
       RETURNING *`,
    )
    .bind(kind, subject, now, until)
    .first<AlertRow>();
}

/** Gives the right to send back without sending (the cooldown has not ended): due at `dueAt` (null: unscheduled). */
export async function alertDeferred(db: D1Database, row: AlertRow, dueAt: number | null): Promise<void> {
  await db.prepare(`UPDATE alerts SET sending_until = NULL, next_first_at = NULL, due_at = ?3 WHERE kind = ?1 AND subject = ?2`).bind(row.kind, row.subject, dueAt).run();
}

/**
 * `count` occurrences were sent: what came since stays pending, due a cooldown from now (the
 * returned row says when, or due_at NULL when nothing is left). Counted in the same batch.
 */
export async function alertSent(db: D1Database, row: AlertRow, count: number, now: number, cooldownMs: number, counters: D1PreparedStatement[]): Promise<AlertRow> {
  const [updated] = await db.batch([
    db
      .prepare(
        `UPDATE alerts SET pending = pending - ?3, sent = sent + 1, last_sent_at = ?4, sending_until = NULL,
                first_at = CASE WHEN pending - ?3 > 0 THEN COALESCE(next_first_at, last_at) END, next_first_at = NULL,
                due_at = CASE WHEN pending - ?3 > 0 THEN ?4 + ?5 END
         WHERE kind = ?1 AND subject = ?2 RETURNING *`,
      )
      .bind(row.kind, row.subject, count, now, cooldownMs),
    ...counters,
  ]);
  return updated!.results[0] as AlertRow;
}

/** Sending failed: the next try is due at `retryAt` (its message is retried), and the failure counted. */
export async function alertFailed(db: D1Database, row: AlertRow, retryAt: number, counters: D1PreparedStatement[]): Promise<void> {
  await db.batch([
    db.prepare(`UPDATE alerts SET failed = failed + 1, due_at = ?3, sending_until = NULL, next_first_at = NULL WHERE kind = ?1 AND subject = ?2`).bind(row.kind, row.subject, retryAt),
    ...counters,
  ]);
}

/** Nothing left to send for a key whose message arrived: no send is scheduled any more. */
export async function alertIdle(db: D1Database, kind: string, subject: string): Promise<void> {
  await db.prepare(`UPDATE alerts SET due_at = NULL WHERE kind = ?1 AND subject = ?2 AND pending <= 0 AND sending_until IS NULL`).bind(kind, subject).run();
}

/**
 * These keys' sends are no longer scheduled (their messages were refused while an ALERT_* setting
 * was wrong): what is pending waits, and the cron schedules it again (due_at NULL) once they are right.
 */
export async function unscheduleAlerts(db: D1Database, keys: { kind: string; subject: string }[], now: number): Promise<void> {
  if (keys.length === 0) return;
  await db
    .prepare(
      `UPDATE alerts SET due_at = NULL
       WHERE (sending_until IS NULL OR sending_until <= ?2) AND (kind, subject) IN (SELECT value->>'kind', value->>'subject' FROM json_each(?1))`,
    )
    .bind(JSON.stringify(keys), now)
    .run();
}

/** Keys whose scheduled send is long overdue (its message was lost): due again now, at most `limit` a run (the next run takes the rest). */
export async function rescheduleStale(db: D1Database, staleBefore: number, now: number, limit: number): Promise<AlertRow[]> {
  const { results } = await db
    .prepare(
      `UPDATE alerts SET due_at = ?2
       WHERE rowid IN (SELECT rowid FROM alerts WHERE pending > 0 AND (due_at IS NULL OR due_at < ?1) ORDER BY first_at LIMIT ?3) RETURNING *`,
    )
    .bind(staleBefore, now, limit)
    .all<AlertRow>();
  return results;
}

export async function listAlerts(db: D1Database): Promise<AlertRow[]> {
  const { results } = await db.prepare(`SELECT * FROM alerts ORDER BY COALESCE(last_at, 0) DESC LIMIT 200`).all<AlertRow>();
  return results;
}
