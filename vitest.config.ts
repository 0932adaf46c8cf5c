import { execFileSync } from "node:child_process";
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
  // The request path answers 503 storage_timeout once D1 and the Queue have taken this long. On a
  // busy 2-core CI machine wrangler.toml's 1500 ms can elapse in a test that expects a 2xx or 4xx;
  // a minute no machine reaches. A test about the budget sets a small one with a stalled binding.
  STORAGE_BUDGET_MS: "60000",
};

/**
 * The transforms the tests run: transforms/ and the hostile and probing ones the tests name
 * (`transform = "test-throws"`), which live in test/fixtures/transforms so that no deploy carries
 * them. scripts/transforms.mjs writes them into a module of the tests' own, which stands in for
 * src/deliver/transforms.generated.ts here: that one stays as wrangler builds it, so a test run
 * never changes (and reloads) a `wrangler dev` running beside it.
 */
const testTransforms = path.join(import.meta.dirname, "test/transforms.generated.ts");

export default defineConfig(async () => {
  execFileSync(process.execPath, ["scripts/transforms.mjs", "--out", testTransforms, "test/fixtures/transforms"], {
    cwd: import.meta.dirname,
    stdio: "inherit",
  });
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
    resolve: {
      alias: [{ find: /^\.\/transforms\.generated$/, replacement: testTransforms }],
    },
    test: {
      include: ["test/**/*.test.ts"],
      setupFiles: ["./test/setup.ts"],
      globalSetup: ["./test/transform-builds.setup.mjs"],
      // The gateway logs one JSON line per request; show them only for failing tests.
      silent: "passed-only",
      // Two files at once even on 2 cores (vitest's default there is one): each file's workerd spends
      // much of its time starting up and waiting on I/O, so the suite takes about 80 s instead of 140.
      // Each file has its own storage; the few tests that bound a time (the deadline under a stalled
      // binding) bound it in seconds, with room to spare.
      maxWorkers: 2,
    },
  };
});
