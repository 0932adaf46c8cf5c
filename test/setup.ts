import { applyD1Migrations } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { afterEach, expect } from "vitest";
import { searchEnabled } from "../src/env";
import { followSearchSetting } from "../src/store/search";
import { checkRecorded } from "./api-contract";

// Setup files may run more than once; applyD1Migrations only applies what is missing.
await applyD1Migrations(env.DB, env.TEST_MIGRATIONS);
// What the cron does with SEARCH on (the test bindings): every write from here on is indexed.
await followSearchSetting(env.DB, env.BODIES, searchEnabled(env));

// Every admin answer a test produced must be one /admin/openapi.json describes (#12).
afterEach(async () => {
  expect(await checkRecorded(), "admin answers that do not match /admin/openapi.json").toEqual([]);
});
