/** The filter's work budget (#9.7): hostile payloads end as "budget_exceeded", never as an exception or a stall. */
import { describe, expect, it } from "vitest";
import { loadDestinations, route } from "../src/deliver/destinations";
import { compileFilter, DEFAULT_BUDGET, JsonPathError } from "../src/deliver/jsonpath";
import type { Env } from "../src/env";

/** `{"a":{"a":…{"leaf":1}}}`: about 6 bytes per level, like the 6 KB, 1,000-deep payload of the report. */
function chain(depth: number): unknown {
  let node: unknown = { leaf: 1 };
  for (let i = 0; i < depth; i++) node = { a: node };
  return node;
}

describe("the filter budget", () => {
  for (const depth of [500, 1000]) {
    it(`stops $..*..*..* on a ${depth}-deep payload as soon as the default budget is spent`, () => {
      // Unbudgeted, this selects about depth³/6 nodes: 3.5 s at 500 deep, a crash at 1,000.
      expect(compileFilter("$..*..*..*").evaluate(chain(depth))).toEqual({
        outcome: "budget_exceeded",
        spent: DEFAULT_BUDGET + 1,
        reason: `filter exceeded its budget of ${DEFAULT_BUDGET} nodes`,
      });
    });
  }

  it("takes the budget as a parameter, and counts each node a scan visits", () => {
    const filter = compileFilter("$..*");
    const document = { a: [1, 2, { b: 3 }] }; // $, a, 1, 2, {b}, 3: six nodes
    expect(filter.evaluate(document, 6)).toEqual({ outcome: "match", spent: 6 });
    expect(filter.evaluate(document, 5)).toMatchObject({ outcome: "budget_exceeded", reason: "filter exceeded its budget of 5 nodes" });
  });

  it("counts wildcards, filter candidates, the paths inside a filter and each sub-expression", () => {
    const document = { items: [{ n: 1 }, { n: 2 }, { n: 3 }] };
    // items (1) + 3 children (3) + per candidate: one test (1) and one step of @.n (1)
    expect(compileFilter("$.items[?(@.n > 2)]").evaluate(document)).toEqual({ outcome: "match", spent: 10 });
    // items (1) + wildcard over 3 children (3) + .n on each (3)
    expect(compileFilter("$.items.*.n").evaluate(document)).toEqual({ outcome: "match", spent: 7 });
    // items (1) + 3 children (3) + per candidate: && (1), the left test and step (2), and only for n = 3 the right ones (2)
    const both = compileFilter("$.items[?(@.n > 2 && @.n < 9)]");
    expect(both.evaluate(document)).toEqual({ outcome: "match", spent: 15 });
    expect(both.evaluate(document, 14)).toMatchObject({ outcome: "budget_exceeded" });
  });

  it("compares deep containers without recursion, and pays for every pair", () => {
    const document = { pair: { x: chain(100_000), y: chain(100_000) } };
    const filter = compileFilter("$[?(@.x == @.y)]");
    expect(filter.evaluate(document, 1_000_000)).toMatchObject({ outcome: "match" });
    expect(filter.evaluate(document)).toMatchObject({ outcome: "budget_exceeded" });
    const different = { pair: { x: chain(100_000), y: chain(99_999) } };
    expect(filter.evaluate(different, 1_000_000)).toMatchObject({ outcome: "no_match" });
    expect(compileFilter("$[?(@.x != @.y)]").evaluate(different, 1_000_000)).toMatchObject({ outcome: "match" });
  });

  it("pays for the keys of every object an equality compares, even when their counts differ", () => {
    // 2,000 empty objects, each compared with one of 6,000 keys: unpaid key listing took seconds.
    const big = Object.fromEntries(Array.from({ length: 6_000 }, (_, i) => [`k${i}`, i]));
    const document = { big, items: Array.from({ length: 2_000 }, () => ({})) };
    expect(compileFilter("$.items[?(@ == $.big)]").evaluate(document).outcome).toBe("no_match");
    const reversed = { big: {}, items: Array.from({ length: 2_000 }, () => big) };
    expect(compileFilter("$.items[?(@ == $.big)]").evaluate(reversed)).toMatchObject({ outcome: "budget_exceeded" });
  });

  it("compares objects as JSON values: key order does not matter", () => {
    const document = { pair: { x: { a: 1, b: [1, { c: null }] }, y: { b: [1, { c: null }], a: 1 }, z: { a: 1, b: [{ c: null }, 1] } } };
    expect(compileFilter("$[?(@.x == @.y)]").evaluate(document).outcome).toBe("match");
    expect(compileFilter("$[?(@.x == @.z)]").evaluate(document).outcome).toBe("no_match");
  });

  it("never throws: a failure is a result with the error's kind, not its message", () => {
    const hostile = {
      get data(): never {
        throw new Error("message quoting whsec_NeverEchoed");
      },
    };
    const result = compileFilter("$.data").evaluate(hostile);
    expect(result).toEqual({ outcome: "failed", spent: 1, reason: "filter evaluation failed (Error)" });
  });

  it("refuses, when compiling, expressions nested deeper than evaluation may recurse", () => {
    expect(() => compileFilter(`$[?(${"!".repeat(10_000)}@.a)]`)).toThrow(JsonPathError);
    expect(() => compileFilter(`$[?(${"(".repeat(10_000)}@.a${")".repeat(10_000)})]`)).toThrow(/nested deeper than 32 levels/);
    expect(compileFilter(`$[?(${"!".repeat(30)}@.a)]`).evaluate({ x: { a: 1 } }).outcome).toBe("match");
  });
});

describe("routing with a filter over its budget", () => {
  const loaded = loadDestinations({
    DESTINATIONS: [
      { name: "everything", url: "https://a.example/hook" },
      { name: "cubic", url: "https://b.example/hook", filter: "$..*..*..*" },
      { name: "linear", url: "https://c.example/hook", filter: "$..leaf" },
    ],
  } as unknown as Env);
  if (!loaded.ok) throw new Error(loaded.errors.join("\n"));

  it("leaves that destination out, says why, and still routes to the others", () => {
    const routing = route(loaded.destinations, { provider: "seismic", source: "seismic", type: "X", envelope: chain(1000) });
    expect(routing.destinations.map((d) => d.name)).toEqual(["everything", "linear"]);
    expect(routing.skipped).toEqual([{ destination: "cubic", reason: `filter exceeded its budget of ${DEFAULT_BUDGET} nodes` }]);
  });

  it("skips nothing when every filter decides", () => {
    const routing = route(loaded.destinations, { provider: "seismic", source: "seismic", type: "X", envelope: chain(2) });
    expect(routing).toEqual({ destinations: loaded.destinations, skipped: [] });
  });
});
