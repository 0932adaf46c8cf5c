/**
 * The build refuses a transform that could never run, naming the file and line (so `wrangler
 * deploy` stops), and accepts what only looks like an import. Each case is a real run of
 * scripts/transforms.mjs on a directory of test/fixtures/transform-builds (test/transform-builds.setup.mjs).
 */
import { describe, expect, inject, it } from "vitest";

declare module "vitest" {
  export interface ProvidedContext {
    transformBuilds: Record<string, { status: number | null; stderr: string }>;
  }
}

const builds = inject("transformBuilds");
const dir = "test/fixtures/transform-builds";

describe("scripts/transforms.mjs", () => {
  it("refuses a syntax error, naming the file, line and column", () => {
    expect(builds["syntax-error"]).toEqual({ status: 1, stderr: `scripts/transforms.mjs: ${dir}/syntax-error/build-syntax-error.js:3:29: Expected "}" but found ";"\n` });
  });

  it("refuses a file without a default export", () => {
    expect(builds["no-default"]).toEqual({
      status: 1, stderr: `scripts/transforms.mjs: ${dir}/no-default/build-no-default.js: no default export (export default the function that reshapes the event)\n`,
    });
  });

  it("refuses a static import, naming its line", () => {
    expect(builds["static-import"]!.status).toBe(1);
    expect(builds["static-import"]!.stderr).toMatch(/^scripts\/transforms\.mjs: test\/fixtures\/transform-builds\/static-import\/build-static-import\.js:2:\d+: a transform imports nothing/);
  });

  it("accepts a template string whose line starts with import", () => {
    expect(builds["template-import"]).toEqual({ status: 0, stderr: "" });
  });
});
