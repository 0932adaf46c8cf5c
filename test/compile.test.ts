/**
 * The compiled predicates must accept exactly what superstruct accepts, or the fast path
 * would let a bad payload through (or send a good one down the slow path). Every node of
 * every sample is replaced by values of every JSON kind, and both verdicts compared.
 */
import { is, type Struct } from "superstruct";
import { describe, expect, it } from "vitest";
import { compile } from "../src/providers/compile";
import { InteractionSessionSummary, SeismicEnvelope, SeismicLegacyEnvelope } from "../src/providers/seismic";
import { TimeSpentInSession, ZuddlAction } from "../src/providers/zuddl";
import demoEvent from "./fixtures/seismic-demo-event-v1.json?raw";
import enrichedLegacy from "./fixtures/seismic-interaction-session-summary-enriched.json?raw";
import livesendV3 from "./fixtures/seismic-livesend-session-summary-v3.json?raw";
import timeSpent from "./fixtures/zuddl-time-spent-in-session.json?raw";

type Json = unknown;
const REPLACEMENTS: Json[] = [undefined, null, "", "text", 0, 1.5, -1, true, false, [], [1], {}, { a: 1 }];

/** Every document obtained by replacing one node (or removing one key) of `root`. */
function* mutations(root: Json, node: Json = root, path: (string | number)[] = []): Generator<{ path: string; value: Json }> {
  for (const replacement of REPLACEMENTS) yield { path: path.join("."), value: replaceAt(root, path, replacement) };
  if (node && typeof node === "object") {
    for (const [key, child] of Object.entries(node)) yield* mutations(root, child, [...path, Array.isArray(node) ? Number(key) : key]);
  }
}

function replaceAt(root: Json, path: (string | number)[], value: Json): Json {
  if (path.length === 0) return value;
  const copy = structuredClone(root) as Record<string | number, Json>;
  let node = copy;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, Json>;
  const last = path[path.length - 1]!;
  if (value === undefined && !Array.isArray(node)) delete node[last];
  else node[last] = value;
  return copy;
}

const cases: [string, Json, Struct<unknown, unknown>][] = [
  ["livesend v3 envelope", JSON.parse(livesendV3), SeismicEnvelope as Struct<unknown, unknown>],
  ["livesend v3 data", JSON.parse(livesendV3).data, InteractionSessionSummary as Struct<unknown, unknown>],
  ["legacy enriched envelope", JSON.parse(enrichedLegacy), SeismicLegacyEnvelope as Struct<unknown, unknown>],
  ["legacy enriched data", JSON.parse(enrichedLegacy).Data, InteractionSessionSummary as Struct<unknown, unknown>],
  ["demo envelope", JSON.parse(demoEvent), SeismicEnvelope as Struct<unknown, unknown>],
  ["zuddl action", JSON.parse(timeSpent), ZuddlAction as Struct<unknown, unknown>],
  ["zuddl time spent", JSON.parse(timeSpent), TimeSpentInSession as Struct<unknown, unknown>],
];

describe("compiled schemas agree with superstruct", () => {
  for (const [name, sample, struct] of cases) {
    it(name, () => {
      const fast = compile(struct);
      let checked = 0;
      let rejected = 0;
      for (const { path, value } of mutations(sample)) {
        const expected = is(value, struct);
        if (fast(value) !== expected) expect.fail(`disagree at "${path}" with ${JSON.stringify(value)?.slice(0, 80)}: superstruct says ${expected}`);
        checked++;
        if (!expected) rejected++;
      }
      expect(fast(sample)).toBe(true);
      expect(checked).toBeGreaterThan(100);
      expect(rejected).toBeGreaterThan(10); // the mutations really exercise failures
    });
  }

  it("refuses combinators it cannot compile", async () => {
    const { record, string } = await import("superstruct");
    expect(() => compile(record(string(), string()) as Struct<unknown, unknown>)).toThrow(/not supported/);
  });
});
