/** D1 access for failed console sign-ins; console/throttle.ts decides what the counts mean. */

export interface LoginCount {
  failures: number;
  window_started_at: number;
}

/**
 * Counts one sign-in attempt by `client` in a fixed window that opens with its first attempt,
 * after deleting every window that has ended (so the table holds only the last `windowMs`).
 * One batch, and the count comes back from the write: concurrent attempts in other isolates
 * each see their own number, so a burst cannot slip past the limit between a read and a write.
 */
export async function countLoginAttempt(db: D1Database, client: string, now: number, windowMs: number): Promise<LoginCount> {
  const [, counted] = await db.batch([
    db.prepare(`DELETE FROM login_failures WHERE window_started_at <= ?1`).bind(now - windowMs),
    db
      .prepare(
        `INSERT INTO login_failures (client, failures, window_started_at) VALUES (?1, 1, ?2)
         ON CONFLICT (client) DO UPDATE SET failures = failures + 1
         RETURNING failures, window_started_at`,
      )
      .bind(client, now),
  ]);
  return counted!.results[0] as LoginCount;
}

/** A successful sign-in: the client's earlier failures no longer count. */
export async function clearLoginFailures(db: D1Database, client: string): Promise<void> {
  await db.prepare(`DELETE FROM login_failures WHERE client = ?1`).bind(client).run();
}
