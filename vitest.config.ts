import { readFileSync } from "node:fs";
import path from "node:path";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";
import { defineConfig } from "vitest/config";

/**
 * Secrets the tests sign with; the gateway reads them exactly as it reads `wrangler secret`s.
 * Every value a developer's .dev.vars may set is pinned here, so tests never depend on it.
 */
export const testBindings = {
  DESTINATIONS: [],
  SOURCES: [],
  ZUDDL_AUTH_TOKEN: "",
  SEISMIC_SIGNING_SECRET: "test-seismic-current",
  SEISMIC_SIGNING_SECRET_OLD: "test-seismic-old",
  ZUDDL_SIGNING_SECRET: "test-zuddl-current",
  ZUDDL_SIGNING_SECRET_OLD: "test-zuddl-old",
  ADMIN_TOKEN: "test-admin-token-0123456789abcdef0123",
  // On, so every test's writes go through the search index's triggers; search.test.ts turns it off too.
  SEARCH: "on",
};

/**
 * Hostile and probing transforms the tests name (`transform = "test-throws"`), kept out of
 * transforms/ so that they are never deployed: `/transforms/test-<name>.js` is read from
 * test/fixtures/transforms/ as text, as wrangler's Text rule reads transforms/*.js.
 */
const testTransforms = {
  name: "edgehook-test-transforms",
  enforce: "pre" as const,
  resolveId(id: string) {
    const match = /^\/transforms\/(test-[a-z0-9-]+)\.js$/.exec(id);
    return match ? `\0test-transform:${match[1]}` : null;
  },
  load(id: string) {
    if (!id.startsWith("\0test-transform:")) return null;
    const file = path.join(import.meta.dirname, "test/fixtures/transforms", `${id.slice("\0test-transform:".length)}.js`);
    return `export default ${JSON.stringify(readFileSync(file, "utf8"))};`;
  },
};

export default defineConfig(async () => {
  const migrations = await readD1Migrations(path.join(import.meta.dirname, "migrations"));
  return {
    plugins: [
      testTransforms,
      cloudflareTest({
        main: "./src/index.ts",
        wrangler: { configPath: "./wrangler.toml" },
        miniflare: {
          bindings: { ...testBindings, TEST_MIGRATIONS: migrations },
        },
      }),
    ],
    test: {
      include: ["test/**/*.test.ts"],
      setupFiles: ["./test/setup.ts"],
      // The gateway logs one JSON line per request; show them only for failing tests.
      silent: "passed-only",
    },
  };
});
