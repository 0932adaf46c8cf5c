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

export default defineConfig(async () => {
  const migrations = await readD1Migrations(path.join(import.meta.dirname, "migrations"));
  return {
    plugins: [
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
      // Links the test suite's hostile transforms into transforms/ for the run (never deployed).
      globalSetup: ["./test/transforms-setup.mjs"],
      // The gateway logs one JSON line per request; show them only for failing tests.
      silent: "passed-only",
    },
  };
});
