/**
 * The partial indexes on deliveries (migrations/0021) keep every status but `delivered`, and SQLite
 * uses one only where the query states its WHERE term: the queries that need them say NOT_DELIVERED.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { NOT_DELIVERED } from "../src/store/indexes";

const plan = async (sql: string) =>
  (await env.DB.prepare(`EXPLAIN QUERY PLAN ${sql}`).all<{ detail: string }>()).results.map((row) => row.detail).join("; ");

describe("partial indexes on deliveries", () => {
  it("a count by status uses the index by status only when it states NOT_DELIVERED", async () => {
    expect(await plan(`SELECT count(*) FROM deliveries WHERE status = 'dead' AND ${NOT_DELIVERED}`)).toContain("deliveries_by_status");
    expect(await plan(`SELECT count(*) FROM deliveries WHERE status = 'dead'`)).not.toContain("deliveries_by_status");
  });

  it("a destination's unfinished deliveries use the index by destination; its held ones, the index of held work", async () => {
    expect(await plan(`SELECT event_key FROM deliveries WHERE destination = 'a' AND status IN ('failed', 'pending') AND ${NOT_DELIVERED} ORDER BY updated_at LIMIT 1`)).toContain("deliveries_by_destination");
    expect(await plan(`SELECT event_key FROM deliveries WHERE destination = 'a' AND status = 'held' ORDER BY held_order LIMIT 1`)).toContain("deliveries_held");
  });

  it("a delivered delivery has no entry in them", async () => {
    const partial = await env.DB.prepare(`SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name IN ('deliveries_by_status', 'deliveries_by_destination', 'deliveries_held')`).all<{ name: string; sql: string }>();
    expect(Object.fromEntries(partial.results.map((row) => [row.name, /WHERE status (<> 'delivered'|= 'held')$/.test(row.sql)]))).toEqual({
      deliveries_by_status: true, deliveries_by_destination: true, deliveries_held: true,
    });
  });
});
