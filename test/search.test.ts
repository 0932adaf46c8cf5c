/**
 * Payload search (#12) through the Worker's real handlers: `GET /admin/events?q=` finds events
 * by what their payload says, with the other filters and the keyset pagination; the index is kept
 * in step by triggers, whatever inserts, changes or purges events; no input makes it fail; and
 * it is opt-in: the cron builds and empties the index as SEARCH says.
 */
import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Env, QueuedEvent } from "../src/env";
import worker from "../src/index";
import { FEW_MATCHES, MAX_QUERY_CHARS } from "../src/store/search";
import { ADMIN, adminGet, countRows, errorOf, send, sendAndConsume, sendWith, seismicBody, seismicRequest, zuddlBody, zuddlRequest } from "./helpers";

interface EventList {
  events: { id: string; provider: string; type: string; status: string; tenant: string | null }[];
  nextCursor: string | null;
}

/** The Worker's cron handler, as it fires every 5 minutes, with SEARCH as given. */
async function runCron(search = "on"): Promise<void> {
  const ctx = createExecutionContext();
  const handlers: ExportedHandler<Env, QueuedEvent> = worker;
  await handlers.scheduled!(createScheduledController({ scheduledTime: Date.now(), cron: "*/5 * * * *" }), { ...env, SEARCH: search }, ctx);
  await waitOnExecutionContext(ctx);
}

const indexed = (text: string) => countRows("SELECT count(*) AS n FROM events_search WHERE events_search MATCH ?", `"${text}"`);

/** A word no other test's payload contains: one token for the index (letters and digits only). */
const word = (prefix = "w") => `${prefix}${crypto.randomUUID().replaceAll("-", "")}`;

const search = (q: string, filters = "") => adminGet<EventList>(`/admin/events?q=${encodeURIComponent(q)}${filters}`);
const ids = (list: EventList) => list.events.map((e) => e.id);

/** Accepted and stored: the consumer stores what the request path enqueued (queue-first). */
async function accept(request: Request): Promise<string> {
  const response = await sendAndConsume(request);
  expect(response.status).toBe(200);
  return ((await response.json()) as { id: string }).id;
}

/** Every page of a search, following nextCursor. */
async function allPages(q: string, filters: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = "";
  for (;;) {
    const page = await search(q, `${filters}${cursor && `&cursor=${encodeURIComponent(cursor)}`}`);
    found.push(...ids(page));
    if (!page.nextCursor) return found;
    cursor = page.nextCursor;
  }
}

/**
 * `count` events inserted straight into D1, as another writer (a batch insert) would: received at
 * `base + i` seconds, two at each second so pages must break ties by key, half of each provider.
 */
async function insertMany(count: number, text: string): Promise<void> {
  await env.DB.prepare(
    `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
     INSERT INTO events (key, provider, event_id, type, known_type, tenant, received_at, verified_with, content_type, body, status)
     SELECT printf('evt_%s_%05d', ?2, i), CASE i % 2 WHEN 0 THEN 'seismic' ELSE 'zuddl' END, printf('%s-%d', ?2, i), 'BulkSearchV1', 1, NULL,
            1600000000000 + (i / 2) * 1000, 'current', 'application/json', json_object('note', ?2 || ' bulk ' || i), 'delivered'
     FROM n`,
  ).bind(count, text).run();
}

/** What the events table says the order is: newest first, ties by key. */
async function expectedOrder(text: string, where = ""): Promise<string[]> {
  const { results } = await env.DB.prepare(`SELECT key FROM events WHERE event_id LIKE ?1 || '-%' ${where} ORDER BY received_at DESC, key DESC`).bind(text).all<{ key: string }>();
  return results.map((r) => r.key);
}

describe("payload search", () => {
  it("runs on the runtime's SQLite: FTS5 with the unicode61 tokenizer, contentless-delete", async () => {
    const { sql } = (await env.DB.prepare("SELECT sql FROM sqlite_master WHERE name = 'events_search'").first<{ sql: string }>())!;
    expect(sql).toMatch(/USING fts5/i);
    expect(sql).toContain("contentless_delete = 1");
    expect(sql).toContain("unicode61");
    await env.DB.prepare("INSERT INTO events_search (events_search, rank) VALUES ('integrity-check', 0)").run();
  });

  it("finds an event by an email, a session title or a content id in its payload", async () => {
    const name = word("jane");
    const email = `${name}.doe@example.com`;
    const title = `${word("Quarterly")} pipeline review`;
    const contentId = crypto.randomUUID();
    const zuddl = await accept(await zuddlRequest(zuddlBody({
      registration: { id: "r-1", profile: { email, firstName: "Jane" } },
      session: { id: "s-1", title },
    })));
    const seismic = await accept(await seismicRequest(seismicBody({ data: { contentId, teamSiteId: "1" } })));

    expect(ids(await search(email))).toEqual([zuddl]);
    expect(ids(await search(email.toUpperCase()))).toEqual([zuddl]); // case does not matter
    expect(ids(await search(name))).toEqual([zuddl]); // a part of the email
    expect(ids(await search(title))).toEqual([zuddl]);
    expect(ids(await search(title.split(" ")[0]!))).toEqual([zuddl]);
    expect(ids(await search(contentId))).toEqual([seismic]);
    expect(ids(await search(contentId.toUpperCase()))).toEqual([seismic]);
    // Every word must appear: one of them elsewhere is not enough.
    expect(ids(await search(`${contentId} ${name}`))).toEqual([]);
  });

  it("finds nothing for words no payload contains, nor for keys, nor words out of order inside one word", async () => {
    const name = word("ann");
    await accept(await zuddlRequest(zuddlBody({ session: { id: "s-2", title: `${name} Kickoff` } })));
    expect(ids(await search(word("absent")))).toEqual([]);
    // Keys are not indexed: "organizationId" is a key of every Zuddl event, never a value here.
    expect(ids(await search(`organizationId ${name}`))).toEqual([]);
    // Punctuation joins the parts of a word into a phrase: the parts must be adjacent, in order.
    expect(ids(await search(`kickoff.${name}`))).toEqual([]);
    expect((await search(`${name}.kickoff`)).events).toHaveLength(1);
  });

  it("matches letters without their accents, and non-Latin scripts", async () => {
    const name = word("zoë");
    const id = await accept(await zuddlRequest(zuddlBody({ session: { id: "s-3", title: `${name} Überblick 東京セッション` } })));
    expect(ids(await search(name.replace("ë", "e")))).toEqual([id]);
    expect(ids(await search(`uberblick ${name}`))).toEqual([id]);
    expect(ids(await search(`東京セッション ${name}`))).toEqual([id]);
  });

  it("combines the words with the other filters", async () => {
    const tag = word("combo");
    const seismic = await accept(await seismicRequest(seismicBody({ tenantId: "tenant-search-1", data: { contentId: tag, teamSiteId: "1" } })));
    const zuddl = await accept(await zuddlRequest(zuddlBody({ session: { id: "s-4", title: tag } })));
    expect(new Set(ids(await search(tag)))).toEqual(new Set([seismic, zuddl]));
    expect(ids(await search(tag, "&provider=seismic"))).toEqual([seismic]);
    expect(ids(await search(tag, "&provider=zuddl&type=TIME_SPENT_IN_SESSION"))).toEqual([zuddl]);
    expect(ids(await search(tag, "&tenant=tenant-search-1"))).toEqual([seismic]);
    expect(ids(await search(tag, `&eventId=nothing-${tag}`))).toEqual([]);
    expect(ids(await search(tag, `&since=${Date.now() + 60_000}`))).toEqual([]);
    const { status } = (await search(tag, "&provider=zuddl")).events[0]!;
    expect(ids(await search(tag, `&provider=zuddl&status=${status}`))).toEqual([zuddl]);
  });

  it("pages through few matches and through many, newest first, ties broken by key, with and without filters", async () => {
    const few = word("few");
    await insertMany(25, few);
    expect(await allPages(few, "&limit=7")).toEqual(await expectedOrder(few));
    expect(await allPages(few, "&limit=4&provider=zuddl")).toEqual(await expectedOrder(few, "AND provider = 'zuddl'"));

    // Past FEW_MATCHES the query walks the event list's index instead of sorting the matches.
    const many = word("many");
    await insertMany(FEW_MATCHES + 150, many);
    const all = await allPages(many, "&limit=200");
    expect(all).toHaveLength(FEW_MATCHES + 150);
    expect(all).toEqual(await expectedOrder(many));
    expect(await allPages(many, "&limit=200&provider=seismic")).toEqual(await expectedOrder(many, "AND provider = 'seismic'"));
    // One event among the many: found by both of its words.
    expect(ids(await search(`${many} bulk 77`))).toEqual([`evt_${many}_00077`]);
  }, 60_000);

  it("answers odd input with 200 or a 400 JSON error, never a 500", async () => {
    const odd = ['"', '""', "*", "jane*", "NEAR(", "NEAR(a b)", "OR", "a OR b", "AND", "NOT", "-x", "^start", "text:jane", "{text}: x", "(", ")", "'", "\\",
      "\u0000", "a\u0000b", "🙂", "é", "東京", "%", "_", "a".repeat(MAX_QUERY_CHARS)].map(encodeURIComponent);
    // Percent-encoded bytes that are not UTF-8: a lone surrogate, a stray byte, a cut sequence.
    odd.push("%ED%A0%80", "a%FFb", "%E6%9D");
    for (const q of odd) {
      const response = await send(new Request(`https://edgehook.test/admin/events?q=${q}`, { headers: ADMIN }));
      expect([200, 400], JSON.stringify(q)).toContain(response.status);
      if (response.status === 400) expect((await errorOf(response)).code).toBe("invalid_query");
      else expect(((await response.json()) as EventList).events).toBeInstanceOf(Array);
    }
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string({ unit: "binary", maxLength: 80 }), // every code point, lone surrogates excepted (a URL cannot carry them)
          fc.array(fc.constantFrom('"', "*", "NEAR(", "OR", "AND", "NOT", ":", "(", ")", "^", "+", "-", "jane", "text", "rank", "é", " "), { maxLength: 12 }).map((parts) => parts.join("")),
        ),
        async (q) => {
          const response = await send(new Request(`https://edgehook.test/admin/events?q=${encodeURIComponent(q)}`, { headers: ADMIN }));
          expect([200, 400], JSON.stringify(q)).toContain(response.status);
          if (response.status === 400) expect((await errorOf(response)).code).toBe("invalid_query");
        },
      ),
      { numRuns: 300 },
    );
  }, 60_000);

  it("refuses a query with no letter or digit and one that is too long, saying why", async () => {
    for (const q of ['" * ( )', "-- !!"]) {
      const response = await send(new Request(`https://edgehook.test/admin/events?q=${encodeURIComponent(q)}`, { headers: ADMIN }));
      expect(response.status).toBe(400);
      expect(await errorOf(response)).toEqual({ code: "invalid_query", message: "q must contain a word with a letter or a digit" });
    }
    const long = await send(new Request(`https://edgehook.test/admin/events?q=${"a".repeat(MAX_QUERY_CHARS + 1)}`, { headers: ADMIN }));
    expect(await errorOf(long)).toMatchObject({ code: "invalid_query" });
    // A blank q is no search at all, like any other blank filter.
    expect((await send(new Request("https://edgehook.test/admin/events?q=%20", { headers: ADMIN }))).status).toBe(200);
  });
});

describe("the search index stays in step", () => {
  it("the retention purge takes purged events out of the index", async () => {
    const tag = word("purged");
    const old = await accept(await zuddlRequest(zuddlBody({ session: { id: "s-5", title: tag } })));
    const kept = await accept(await seismicRequest(seismicBody({ data: { contentId: tag, teamSiteId: "1" } })));
    await env.DB.prepare("UPDATE events SET status = 'delivered', received_at = ? WHERE key = ?").bind(Date.now() - 40 * 86_400_000, old).run();
    const rowid = (await env.DB.prepare("SELECT rowid AS id FROM events WHERE key = ?").bind(old).first<{ id: number }>())!.id;

    await runCron();

    expect(await countRows("SELECT count(*) AS n FROM events WHERE key = ?", old)).toBe(0);
    expect(await countRows("SELECT count(*) AS n FROM events_search WHERE rowid = ?", rowid)).toBe(0);
    expect(ids(await search(tag))).toEqual([kept]);
    await env.DB.prepare("INSERT INTO events_search (events_search, rank) VALUES ('integrity-check', 0)").run();
  });

  it("indexes whatever writes the row: a batch insert, a body that is not JSON, a body too deep to parse, a changed body", async () => {
    const [a, b, c, d] = [word("batch"), word("text"), word("deep"), word("changed")];
    const row = (key: string, body: string) =>
      env.DB.prepare(
        `INSERT INTO events (key, provider, event_id, type, known_type, received_at, verified_with, content_type, body, status)
         VALUES (?1, 'zuddl', ?1, 'T', 0, ?2, 'current', 'application/json', ?3, 'queued')`,
      ).bind(key, Date.now(), body);
    const deep = `${"[".repeat(2000)}"${c}"${"]".repeat(2000)}`;
    await env.DB.batch([row(`evt_${a}`, JSON.stringify({ note: a })), row(`evt_${b}`, `not json, just ${b} as text`), row(`evt_${c}`, deep)]);
    expect(ids(await search(a))).toEqual([`evt_${a}`]);
    expect(ids(await search(b))).toEqual([`evt_${b}`]);
    // SQLite's JSON parser stops at depth 1000; such a body is indexed as its text.
    expect(ids(await search(c))).toEqual([`evt_${c}`]);

    await env.DB.prepare("UPDATE events SET body = ?2 WHERE key = ?1").bind(`evt_${a}`, JSON.stringify({ note: d })).run();
    expect(ids(await search(a))).toEqual([]);
    expect(ids(await search(d))).toEqual([`evt_${a}`]);
    // Other updates (status, marks) leave the index alone.
    await env.DB.prepare("UPDATE events SET status = 'delivered' WHERE key = ?1").bind(`evt_${a}`).run();
    expect(ids(await search(d))).toEqual([`evt_${a}`]);
  });
});

describe("search is opt-in (SEARCH)", () => {
  it("with SEARCH off, q is refused with 400 search_disabled saying how to turn it on; the list still works", async () => {
    const off = (path: string) => sendWith(new Request(`https://edgehook.test${path}`, { headers: ADMIN }), { SEARCH: "off" });
    const refused = await off("/admin/events?q=jane");
    expect(refused.status).toBe(400);
    expect(await errorOf(refused)).toEqual({
      code: "search_disabled",
      message: 'payload search is off on this gateway: set the SEARCH var to "on" (wrangler.toml [vars]) and deploy; the cron then builds the index',
    });
    expect((await off("/admin/events?q=")).status).toBe(200);
    expect((await off("/admin/events?provider=zuddl")).status).toBe(200);
  });

  it("the cron empties the index when SEARCH is turned off, and builds it again, older events included, when it is turned on", async () => {
    const [before, during] = [word("before"), word("during")];
    const early = await accept(await zuddlRequest(zuddlBody({ session: { id: "s-6", title: before } })));
    expect(await indexed(before)).toBe(1);

    await runCron("off");
    expect(await countRows("SELECT count(*) AS n FROM events_search")).toBe(0);
    expect(await env.DB.prepare("SELECT enabled, build_below FROM search_index").first()).toEqual({ enabled: 0, build_below: null });
    // Writes are no longer indexed: the triggers only check the flag.
    const late = await accept(await zuddlRequest(zuddlBody({ session: { id: "s-7", title: during } })));
    expect(await indexed(during)).toBe(0);

    // SEARCH on again, before the cron has run: the index is not complete, and the API says so.
    const waiting = await send(new Request(`https://edgehook.test/admin/events?q=${before}`, { headers: ADMIN }));
    expect(waiting.status).toBe(503);
    expect(waiting.headers.get("retry-after")).toBe("300");
    expect(await errorOf(waiting)).toMatchObject({ code: "search_index_building" });

    await runCron("on");
    expect(await env.DB.prepare("SELECT enabled, build_below FROM search_index").first()).toEqual({ enabled: 1, build_below: null });
    expect(ids(await search(before))).toEqual([early]);
    expect(ids(await search(during))).toEqual([late]);
    expect(await countRows("SELECT count(*) AS n FROM events_search")).toBe(await countRows("SELECT count(*) AS n FROM events"));
    await env.DB.prepare("INSERT INTO events_search (events_search, rank) VALUES ('integrity-check', 0)").run();
  });

  it("an event the build reaches after its trigger indexed it is found once, and leaves the index with its row", async () => {
    const tag = word("twice");
    const key = await accept(await seismicRequest(seismicBody({ data: { contentId: tag, teamSiteId: "1" } })));
    // As if indexing had begun just before this event was stored: the build covers it again.
    const { id } = (await env.DB.prepare("SELECT rowid AS id FROM events WHERE key = ?").bind(key).first<{ id: number }>())!;
    await env.DB.prepare("UPDATE search_index SET build_below = ?").bind(id + 1).run();
    const building = await send(new Request(`https://edgehook.test/admin/events?q=${tag}`, { headers: ADMIN }));
    expect(await errorOf(building)).toMatchObject({ code: "search_index_building" });
    await runCron("on");
    expect(await indexed(tag)).toBe(1);
    expect(ids(await search(tag))).toEqual([key]);
    await env.DB.prepare("DELETE FROM events WHERE key = ?").bind(key).run();
    expect(await indexed(tag)).toBe(0);
  });
});
