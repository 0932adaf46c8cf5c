import { describe, expect, it } from "vitest";
import { loadDestinations, route, type Routing } from "../src/deliver/destinations";
import { compileFilter, DEFAULT_BUDGET, JsonPathError } from "../src/deliver/jsonpath";
import type { Env } from "../src/env";
import demoEvent from "./fixtures/seismic-demo-event-v1.json?raw";
import sessionSummary from "./fixtures/seismic-interaction-session-summary-enriched.json?raw";
import livesendSummary from "./fixtures/seismic-livesend-session-summary-v3.json?raw";

const demo = JSON.parse(demoEvent) as Record<string, unknown>;
/** "match" or "no_match", or why the filter could not decide (a test expecting a boolean would hide that). */
const outcome = (filter: string, document: unknown) => compileFilter(filter).evaluate(document).outcome;
const verdict = (matches: boolean) => (matches ? "match" : "no_match");
/** The ContentManagerCreateFileV1 and LiveDocCompletedV2 shapes the filter examples refer to. */
const createFile = {
  id: "c1", version: "ContentManagerCreateFileV1", occurredAt: "2024-03-31T09:13:57.948Z", tenantId: "234b9f0d-853d-4210-b5d2-b0574e003fcc", tenantName: "demo",
  data: { contentId: "5a5699ac-49a7-43ba-82cc-0eea22cea051", teamSiteId: "1", format: "PPTX", name: "Deck" },
};
const liveDoc = {
  id: "l1", version: "LiveDocCompletedV2", occurredAt: "2024-03-31T09:13:57.948Z", tenantId: "t", tenantName: "other",
  data: { requestId: "c9c564af-e5c9-4a4b-ac55-4f9f85662888", status: "Generated", output: { format: "PPTX" } },
};

describe("the JSONPath filter examples in seismic-webhooks-overview.txt", () => {
  const examples: [string, unknown, boolean][] = [
    ["$.data..[?(@.contentId == 'foo')]", demo, true],
    ["$.data..[?(@.contentId == 'bar')]", demo, false],
    ["$..[?(@.tenantId == '234b9f0d-853d-4210-b5d2-b0574e003fcc')]", demo, true],
    ["$..[?(@.tenantId == '234b9f0d-853d-4210-b5d2-b0574e003fcc')]", liveDoc, false],
    ["$..[?(@.tenantName == 'demo')]", demo, true],
    ["$..[?(@.tenantName == 'demo')]", liveDoc, false],
    ["$.data..[?(@.contentId == '5a5699ac-49a7-43ba-82cc-0eea22cea051')]", createFile, true],
    ["$.data..[?(@.teamSiteId == '1')]", createFile, true],
    ["$.data..[?(@.teamSiteId == '1')]", { ...createFile, data: { ...createFile.data, teamSiteId: 1 } }, true], // string/number coercion
    ["$.data..[?(@.teamSiteId == '1')]", { ...createFile, data: { ...createFile.data, teamSiteId: "2" } }, false],
    ["$.data..[?(@.format == 'PPTX')]", createFile, true],
    ["$.data..[?(@.requestId == 'c9c564af-e5c9-4a4b-ac55-4f9f85662888')]", liveDoc, true],
    ["$.data..[?(@.requestId == 'c9c564af-e5c9-4a4b-ac55-4f9f85662888' && @.output.format == 'PPTX')]", liveDoc, true],
    ["$.data..[?(@.requestId == 'c9c564af-e5c9-4a4b-ac55-4f9f85662888' && @.output.format == 'DOCX')]", liveDoc, false],
    ["$.data..[?(@.requestId == 'c9c564af-e5c9-4a4b-ac55-4f9f85662888' && @.output.format == 'PPTX' && @.status == 'Generated')]", liveDoc, true],
    ["$.data..[?(@.requestId == 'c9c564af-e5c9-4a4b-ac55-4f9f85662888' && @.output.format == 'PPTX' && @.status == 'Failed')]", liveDoc, false],
  ];
  for (const [filter, document, expected] of examples) {
    it(`${filter} ${expected ? "matches" : "does not match"} ${(document as { version: string }).version}`, () => {
      expect(outcome(filter, document)).toBe(verdict(expected));
    });
  }

  it("each costs under 1% of the default budget, also on the larger sample events", () => {
    const samples = [sessionSummary, livesendSummary].map((text) => JSON.parse(text) as unknown);
    const spent = examples.flatMap(([filter, document]) => [document, ...samples].map((doc) => compileFilter(filter).evaluate(doc).spent));
    expect(Math.max(...spent)).toBeLessThan(DEFAULT_BUDGET / 100);
  });
});

describe("JSONPath operators", () => {
  const doc = { a: { b: [{ n: 1, s: "x" }, { n: 5, s: "y", deep: { k: "v" } }] }, flag: true };
  const cases: [string, boolean][] = [
    ["$.a.b[?(@.n > 3)]", true],
    ["$.a.b[?(@.n > 9)]", false],
    ["$.a.b[?(@.n >= 5 && @.s == 'y')]", true],
    ["$.a.b[?(@.s == 'z' || @.n <= 1)]", true],
    ["$.a.b[?(@.s != 'x' && @.s != 'y')]", false],
    ["$.a.b[?(@.missing != 'x')]", false],
    ["$.a.b[?(@.deep)]", true],
    ["$.a.b[?(!(@.deep))]", true],
    ["$..k", true],
    ["$..nothing", false],
    ["$.a.*", true],
    ["$.a.b[1].deep.k", true],
    ["$.a.b[-1].s", true],
    ["$['a']['b'][0]", true],
    ["$..[?(@.k == \"v\")]", true],
    ["$[?(@ == true)]", true],
    ["$..[?(@.n == 1.0)]", true],
  ];
  for (const [filter, expected] of cases) {
    it(`${filter} → ${expected}`, () => expect(outcome(filter, doc)).toBe(verdict(expected)));
  }

  it("survives very deep payloads without recursion limits", () => {
    let deep: unknown = { target: "here" };
    for (let i = 0; i < 20_000; i++) deep = { next: deep };
    expect(outcome("$..[?(@.target == 'here')]", deep)).toBe("match");
  });

  it("rejects invalid expressions with the position of the problem", () => {
    for (const bad of ["", "data.x", "$.data[?(@.x == )]", "$.data[?(@.x == 'open)]", "$.data..[?(@.x == 'a' &&)]", "$.a[", "$.a b", "$[?(@.x == 1)", "$..[1]"]) {
      expect(() => compileFilter(bad), bad).toThrow(JsonPathError);
    }
  });
});

const env = (destinations: unknown, extra: Record<string, string> = {}) => ({ DESTINATIONS: destinations, ...extra }) as unknown as Env;
const names = (routing: Routing) => routing.destinations.map((d) => d.name);

describe("destination routing", () => {
  const loaded = loadDestinations(env([
    { name: "everything", url: "https://a.example/hook" },
    { name: "seismic-only", url: "https://b.example/hook", providers: ["seismic"] },
    { name: "content-manager", url: "https://c.example/hook", types: ["ContentManager*"] },
    { name: "exact-types", url: "https://d.example/hook", types: ["TIME_SPENT_IN_SESSION", "LiveDocCompletedV2"] },
    { name: "team-site-1", url: "https://e.example/hook", providers: ["seismic"], filter: "$.data..[?(@.teamSiteId == '1')]" },
    { name: "local", url: "http://127.0.0.1:9999/hook", providers: ["zuddl"] },
  ]));
  if (!loaded.ok) throw new Error(loaded.errors.join("\n"));
  const destinations = loaded.destinations;

  it("routes by provider, exact type, wildcard type and filter", () => {
    expect(names(route(destinations, { provider: "seismic", source: "seismic", type: "ContentManagerCreateFileV1", envelope: createFile }))).toEqual([
      "everything", "seismic-only", "content-manager", "team-site-1",
    ]);
    expect(names(route(destinations, { provider: "seismic", source: "seismic", type: "LiveDocCompletedV2", envelope: liveDoc }))).toEqual([
      "everything", "seismic-only", "exact-types",
    ]);
    expect(names(route(destinations, { provider: "zuddl", source: "zuddl", type: "TIME_SPENT_IN_SESSION", envelope: {} }))).toEqual([
      "everything", "exact-types", "local",
    ]);
    expect(names(route(destinations, { provider: "zuddl", source: "zuddl", type: "ContentManagerX", envelope: {} }))).toEqual(["everything", "content-manager", "local"]);
  });

  it("reports every configuration error clearly", () => {
    const result = loadDestinations(env([
      { name: "bad filter", url: "https://a.example", filter: "$.data..[?(@.x == )]" },
      { name: "private", url: "http://10.0.0.1/hook" },
      { name: "ok", url: "https://b.example" },
      { name: "ok", url: "https://b.example", filter: "$.data[?(@.x == 'y'" },
      { name: "typo", url: "https://c.example", provider: ["seismic"] },
      { name: "nosecret", url: "https://d.example", secret: "MISSING_SECRET" },
      { name: "badsecret", url: "https://d.example", secret: "BAD_SECRET" },
      { url: "https://e.example" },
    ], { BAD_SECRET: "plain-text" }));
    expect(result.ok).toBe(false);
    const errors = result.ok ? [] : result.errors;
    expect(errors).toEqual(expect.arrayContaining([
      "DESTINATIONS[0].name: must be 1-64 letters, digits or ._- starting with a letter or digit",
      expect.stringMatching(/DESTINATIONS\[1\] \(private\)\.url: must be https/),
      expect.stringMatching(/DESTINATIONS\[3\] \(ok\): name "ok" is used twice/),
      expect.stringMatching(/DESTINATIONS\[3\] \(ok\)\.filter: expected "\)" at position/),
      expect.stringMatching(/DESTINATIONS\[4\] \(typo\)\.provider: is not a known field/),
      expect.stringMatching(/DESTINATIONS\[5\] \(nosecret\)\.secret: the binding it names is missing/),
      expect.stringMatching(/DESTINATIONS\[6\] \(badsecret\)\.secret/),
      expect.stringMatching(/DESTINATIONS\[7\]\.name: is required; must be 1-64/),
    ]));
    expect(errors.join("\n")).not.toContain("plain-text");
    expect(loadDestinations(env({ name: "not-an-array" }))).toEqual({ ok: false, errors: ["DESTINATIONS must be an array of tables (or JSON text of one)"] });
    const fromText = loadDestinations(env(JSON.stringify([{ name: "text", url: "https://a.example" }])));
    expect(fromText.ok && fromText.destinations.map((d) => d.name)).toEqual(["text"]);
  });
});
