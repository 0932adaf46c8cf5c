/**
 * Payload search (#12): what an operator types, turned into an FTS5 MATCH expression for the
 * `events_search` index (migrations/0008_event_search.sql) that can only mean "the payload
 * contains all of these words".
 */
import { HttpError } from "../errors";

/** Longer queries are refused: every word is one more index lookup. */
export const MAX_QUERY_CHARS = 256;

/**
 * Whitespace and control characters separate words. Each word becomes one FTS5 string (a `"`
 * inside doubled), and inside a string `*`, `^`, `:`, `(`, `NEAR`, `AND`, `OR` and `NOT` are
 * plain text, so nothing typed is an operator or a column filter. The index's tokenizer splits a
 * string at punctuation into a phrase, so `jane.doe@example.com` matches those four tokens next
 * to each other, in that order. Words are ANDed.
 */
export function matchExpression(q: string): string {
  if (q.length > MAX_QUERY_CHARS) throw new HttpError(400, "invalid_query", `q must be at most ${MAX_QUERY_CHARS} characters`);
  // A word with no letter or digit tokenizes to nothing; FTS5 would ignore it, so say so instead.
  const words = q.split(/[\s\p{Cc}]+/u).filter((word) => /[\p{L}\p{N}]/u.test(word));
  if (words.length === 0) throw new HttpError(400, "invalid_query", "q must contain a word with a letter or a digit");
  return words.map((word) => `"${word.replaceAll('"', '""')}"`).join(" ");
}

/**
 * Up to this many matches, a search reads exactly those events and sorts them (its cost grows
 * with the matches); past it, it walks the event list's own index in order and keeps the rows
 * among the matches (its cost grows with how far it has to walk). See bench/search.mjs.
 */
export const FEW_MATCHES = 1000;

/** Events matching, counted only up to FEW_MATCHES + 1, so a word in every payload costs no more to count than a rare one. */
export async function countMatches(db: D1Database, match: string): Promise<number> {
  const row = await db
    .prepare(`SELECT count(*) AS n FROM (SELECT 1 FROM events_search WHERE events_search MATCH ?1 LIMIT ?2)`)
    .bind(match, FEW_MATCHES + 1)
    .first<{ n: number }>();
  return row?.n ?? 0;
}
