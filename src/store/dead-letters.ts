/** D1 access for the record of what reached the dead-letter queue. All SQL for this table lives here. */
import { insertEvent, storeWithBodies, type NewEvent } from "./events";
import type { BodyWriter } from "./bodies";

export interface DeadLetter {
  messageId: string;
  eventKey: string;
  destinations: string[] | null;
  attempts: number;
  receivedAt: number;
  /** The event the message carried, if the consumer never stored it (kept here, body included), and when it was first enqueued. */
  carried: { event: NewEvent; enqueuedAt: number } | null;
}

export interface DeadLetterRow {
  message_id: string;
  event_key: string;
  destinations: string | null;
  attempts: number;
  received_at: number;
}

/**
 * One batch of dead letters in one D1 batch; a redelivered message is recorded once. An event a
 * message carried is stored as an unfinished event the reconciliation sweep delivers (a copy
 * the consumer stored already is left as it is), and an event's delivery lease held by a message
 * that died is released, so the sweep's message need not wait for it to lapse. Returns the ids of
 * the messages recorded for the first time.
 */
export async function recordDeadLetters(db: D1Database, bodies: BodyWriter, letters: DeadLetter[]): Promise<Set<string>> {
  if (letters.length === 0) return new Set();
  const carried = letters.flatMap((letter) => (letter.carried ? [letter.carried.event] : []));
  const results = await storeWithBodies(db, bodies, carried, (places) =>
    letters.flatMap((letter) => [
      ...(letter.carried ? [insertEvent(db, { event: letter.carried.event, status: "received", owner: null, enqueuedAt: letter.carried.enqueuedAt }, places)] : []),
      db
        // Any delivery of that message (lease tokens start with its id: see insertEvents).
        .prepare(`UPDATE events SET lease_by = NULL, lease_until = NULL WHERE key = ?1 AND substr(lease_by, 1, length(?2) + 1) = ?2 || '|'`)
        .bind(letter.eventKey, letter.messageId),
      db
        .prepare(
          `INSERT INTO dead_letters (message_id, event_key, destinations, attempts, received_at) VALUES (?1, ?2, ?3, ?4, ?5)
           ON CONFLICT (message_id) DO UPDATE SET attempts = ?4
           RETURNING message_id, received_at = ?5 AS fresh`,
        )
        .bind(letter.messageId, letter.eventKey, letter.destinations && JSON.stringify(letter.destinations), letter.attempts, letter.receivedAt),
    ]),
  );
  // The letters recorded for the first time (a redelivered message only updates its row).
  const recorded = results.flatMap((result) => result.results as Partial<{ message_id: string; fresh: number }>[]);
  return new Set(recorded.flatMap((row) => (row?.fresh === 1 && row.message_id ? [row.message_id] : [])));
}

/** Newest first; `before` (a received_at|message_id pair) continues a page. */
export async function listDeadLetters(db: D1Database, limit: number, before: [number, string] | null): Promise<DeadLetterRow[]> {
  const { results } = await db
    .prepare(
      `SELECT * FROM dead_letters ${before ? "WHERE (received_at, message_id) < (?2, ?3)" : ""}
       ORDER BY received_at DESC, message_id DESC LIMIT ?1`,
    )
    .bind(limit, ...(before ?? []))
    .all<DeadLetterRow>();
  return results;
}
