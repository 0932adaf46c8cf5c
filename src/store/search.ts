/**
 * Payload search (#12): the `events_search` index and its state (migrations/0008_event_search.sql).
 * What an operator types becomes an FTS5 MATCH expression that can only mean "the payload contains
 * all of these words"; the cron makes the index follow the SEARCH var.
 */
import { HttpError, unavailable } from "../errors";
import { readBodies, type BodyHolder } from "./bodies";

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

interface IndexState {
  enabled: number;
  build_below: number | null;
}

/**
 * Events matching, counted only up to FEW_MATCHES + 1 (a word in every payload costs no more to
 * count than a rare one), in the same round trip as the check that the index is complete.
 */
export async function countMatches(db: D1Database, match: string): Promise<number> {
  const [state, count] = await db.batch([
    db.prepare("SELECT enabled, build_below FROM search_index"),
    db.prepare("SELECT count(*) AS n FROM (SELECT 1 FROM events_search WHERE events_search MATCH ?1 LIMIT ?2)").bind(match, FEW_MATCHES + 1),
  ]);
  const index = state!.results[0] as IndexState;
  if (!index.enabled || index.build_below !== null) {
    throw unavailable(
      "search_index_building",
      "the search index is not complete yet: after SEARCH is turned on, the cron (every 5 minutes) indexes new events at once and older ones newest first; try again in a few minutes",
      300,
    );
  }
  return (count!.results[0] as { n: number }).n;
}

/**
 * The longest text indexed for one body: its JSON parameter stays within D1's 2,000,000 bytes on
 * one string (6 bytes a UTF-16 unit at most, escaped), and the words past it are in no realistic payload.
 */
const MAX_INDEXED_CHARS = 300_000;

/**
 * What is indexed for a body kept in R2, as events_search_text (migrations/0008) says for one
 * kept in D1: the payload's string and number values as written (a 20-digit id keeps its
 * digits), not its keys; a body that is not JSON (a leading byte-order mark makes any body so) is
 * indexed as it is. Indexing never stops an event being stored: a payload it cannot walk (nested
 * deeper than the parser's stack) is indexed as no text.
 */
export function searchText(body: string): string {
  const values: string[] = [];
  try {
    // The reviver sees every value once, in document order, with its source text (numbers as written).
    JSON.parse(body, (_key: string, value: unknown, context?: { source?: string }) => {
      if (typeof value === "string") values.push(value);
      else if (typeof value === "number") values.push(context?.source ?? String(value));
      return value;
    });
  } catch (err) {
    return err instanceof SyntaxError ? body.slice(0, MAX_INDEXED_CHARS) : "";
  }
  return values.join(" ").slice(0, MAX_INDEXED_CHARS);
}

/**
 * Statements that index the text of events whose bodies are in R2 (the trigger indexes only
 * bodies kept in D1), run in the same D1 batch as their insert; a no-op while the index is off.
 * For the build (followSearchSetting), `whileBuildBelow`: only if the build still stands there.
 */
export function indexBodies(db: D1Database, events: { key: string; body: string }[]): D1PreparedStatement[] {
  return indexTexts(db, events.map((event) => ({ key: event.key, text: searchText(event.body) })), null);
}

function indexTexts(db: D1Database, texts: { key: string; text: string }[], whileBuildBelow: number | null): D1PreparedStatement[] {
  const statement = db.prepare(
    `INSERT OR REPLACE INTO events_search (rowid, text)
     SELECT events.rowid, t.value->>'text' FROM json_each(?1) AS t JOIN events ON events.key = t.value->>'key'
     WHERE (SELECT enabled FROM search_index) AND (?2 IS NULL OR (SELECT build_below FROM search_index) = ?2)`,
  );
  return chunkByBytes(texts, (text) => text.text.length).map((chunk) => statement.bind(JSON.stringify(chunk), whileBuildBelow));
}

/**
 * D1 takes at most 2,000,000 bytes in one string: items whose JSON could be more are split into
 * statements of their own (a JS string's JSON is at most 6 bytes a unit: `\u001f`).
 */
const BOUND_STRING_BUDGET = 1_900_000;
function chunkByBytes<T>(items: T[], units: (item: T) => number): T[][] {
  const chunks: T[][] = [];
  let chunk: T[] = [];
  let size = 0;
  for (const item of items) {
    const bytes = units(item) * 6 + 1_024;
    if (chunk.length && size + bytes > BOUND_STRING_BUDGET) {
      chunks.push(chunk);
      chunk = [];
      size = 0;
    }
    chunk.push(item);
    size += bytes;
  }
  if (chunk.length) chunks.push(chunk);
  return chunks;
}

/**
 * The texts of a build chunk's bodies in R2, newest first, one body read at a time, until
 * BUILD_BODY_BYTES: `lastRowid` is the last one read when that stopped it short (the statement
 * then ends there), else null. A body R2 has no object for is indexed as no text (and logged); a
 * read R2 refuses throws, and the next run tries the chunk again.
 */
async function buildTexts(bucket: R2Bucket, rows: (BodyHolder & { rowid: number })[]) {
  const texts: { key: string; text: string }[] = [];
  let bytes = 0;
  for (const row of rows) {
    const { failed } = await readBodies(bucket, [row]);
    const error = failed.get(row.key);
    if (error && !error.missing) throw error;
    if (error) console.error(JSON.stringify({ cron: "search_index", eventKey: row.key, outcome: "body_missing" }));
    texts.push({ key: row.key, text: error ? "" : searchText(row.body) });
    bytes += row.body.length;
    row.body = "";
    if (bytes >= BUILD_BODY_BYTES || texts.length === BUILD_BODIES_PER_CHUNK) return { texts, lastRowid: row.rowid };
  }
  return { texts, lastRowid: null };
}

/** Rowids one statement of the build indexes: short enough not to hold up the request path's writes for long. */
const BUILD_CHUNK = 2_000;
/** Statements one cron run spends on the build; the next run continues. */
const BUILD_CHUNKS_PER_RUN = 50;
/** Bodies kept in R2 one statement of the build reads (it then covers fewer rowids), and one cron run (each read is a subrequest). */
const BUILD_BODIES_PER_CHUNK = 100;
const BUILD_BODIES_PER_RUN = 1_000;
/** The bytes of those bodies one statement reads at most (each body is read, made text and let go in turn). */
const BUILD_BODY_BYTES = 8 * 1024 * 1024;

/**
 * The cron's step: the index follows SEARCH. Off: stop indexing and empty the index, in one
 * transaction. On: start indexing every write (one statement: every event stored after it is
 * indexed by the triggers, every one before it has a rowid below build_below), then index the
 * older events, newest first, BUILD_CHUNK rowids a statement, and say whether it is complete.
 */
export async function followSearchSetting(db: D1Database, bucket: R2Bucket, on: boolean): Promise<{ search: "off" | "building" | "ready" }> {
  if (!on) {
    const { enabled } = (await db.prepare("SELECT enabled FROM search_index").first<IndexState>())!;
    if (enabled) {
      await db.batch([
        db.prepare("UPDATE search_index SET enabled = 0, build_below = NULL"),
        db.prepare("INSERT INTO events_search (events_search) VALUES ('delete-all')"),
      ]);
    }
    return { search: "off" };
  }
  await db.prepare("UPDATE search_index SET enabled = 1, build_below = (SELECT coalesce(max(rowid), 0) + 1 FROM events) WHERE enabled = 0").run();
  let index = (await db.prepare("SELECT enabled, build_below FROM search_index").first<IndexState>())!;
  let bodiesRead = 0;
  for (let chunk = 0; index.enabled && index.build_below !== null && chunk < BUILD_CHUNKS_PER_RUN && bodiesRead < BUILD_BODIES_PER_RUN; chunk++) {
    const below = index.build_below;
    // The chunk's bodies in R2, newest first: if there are more than a statement reads, it ends at the last one read.
    const { results: inR2 } = await db
      .prepare(`SELECT rowid, key, body, body_in_r2, body_segment, body_offset, body_length FROM events
                WHERE rowid >= ?1 AND rowid < ?2 AND body_in_r2 = 1 ORDER BY rowid DESC LIMIT ?3`)
      .bind(below - BUILD_CHUNK, below, BUILD_BODIES_PER_CHUNK)
      .all<BodyHolder & { rowid: number }>();
    const { texts, lastRowid } = await buildTexts(bucket, inR2);
    bodiesRead += texts.length;
    const from = lastRowid ?? below - BUILD_CHUNK;
    const statements = await db.batch([
      // Only if the build still stands where this run read it (another run, or SEARCH turned off, may have moved it).
      // Bodies in R2 read '' here, and are indexed by the statements after it.
      db.prepare(
        `INSERT OR REPLACE INTO events_search (rowid, text)
         SELECT rowid, text FROM events_search_text WHERE rowid >= ?1 AND rowid < ?2 AND (SELECT build_below FROM search_index) = ?2`,
      ).bind(from, below),
      ...indexTexts(db, texts, below),
      db.prepare("UPDATE search_index SET build_below = CASE WHEN ?1 > (SELECT coalesce(min(rowid), 0) FROM events) THEN ?1 END WHERE build_below = ?2").bind(from, below),
      db.prepare("SELECT enabled, build_below FROM search_index"),
    ]);
    index = statements.at(-1)!.results[0] as IndexState;
  }
  return { search: !index.enabled ? "off" : index.build_below === null ? "ready" : "building" };
}
