#!/usr/bin/env node
// `npm run test:deploy`: the real `npm run deploy` (and through it the real wrangler) against a
// local stand-in of the Cloudflare API (test/deploy/cloudflare-api.mjs), with no Cloudflare
// account: a dry run, a first deploy on a new account, a second that changes nothing, a run cut
// off midway and finished by the next, and API errors told as what to do. The live checks run
// against the gateway itself under `wrangler dev` (EDGEHOOK_URL), as they would against workers.dev.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startWorker } from "../../scripts/local-gateway.mjs";
import { BUILT_IN_OPTIONAL, BUILT_IN_REQUIRED, expectedSecrets } from "../../scripts/deploy/secrets.mjs";
import { ACCOUNT_ID, API_TOKEN, startCloudflareApi } from "./cloudflare-api.mjs";

const root = new URL("../..", import.meta.url).pathname;
const MIGRATIONS = readdirSync(join(root, "migrations")).filter((f) => f.endsWith(".sql")).sort();
const QUEUES = ["edgehook-events", "edgehook-dead-letters", "edgehook-alerts"];
const BUCKET = "edgehook-bodies";
/** Provider secrets as an operator's environment gives them: none may appear in any output. */
const PROVIDER_SECRETS = { SEISMIC_SIGNING_SECRET: "seismic-standin-secret-3f9a1c", ZUDDL_SIGNING_SECRET: "zuddl-standin-secret-7be204" };
const results = [];

/**
 * `npm run deploy -- args…` as an operator runs it (no terminal: nothing is asked), with the API pointed at the stand-in.
 * Each run's temporary files go to a folder of its own, so the test sees that its secrets file is gone
 * after the run, whatever the scenarios running beside it are doing.
 */
function deploy(api, gateway, args = [], extraEnv = {}) {
  const scratch = mkdtempSync(join(tmpdir(), "edgehook-deploy-test-"));
  const env = {
    ...process.env,
    CLOUDFLARE_API_BASE_URL: api.url,
    CLOUDFLARE_API_TOKEN: API_TOKEN,
    CLOUDFLARE_ACCOUNT_ID: ACCOUNT_ID,
    EDGEHOOK_URL: gateway.url,
    EDGEHOOK_CHECK_WAIT_MS: "0",
    TMPDIR: scratch,
    ...PROVIDER_SECRETS,
    ...extraEnv,
  };
  if (extraEnv.EDGEHOOK_URL === undefined && "EDGEHOOK_URL" in extraEnv) delete env.EDGEHOOK_URL;
  // An operator's shell, not CI: ADMIN_TOKEN is generated and shown once. (CI's own run is below.)
  if (!("CI" in extraEnv)) delete env.CI;
  return new Promise((resolve) => {
    const child = spawn("npm", ["run", "--silent", "deploy", "--", ...args], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    child.on("close", (code) => {
      const left = readdirSync(scratch).filter((name) => name.startsWith("edgehook-secrets-"));
      rmSync(scratch, { recursive: true, force: true });
      assert.deepEqual(left, [], "the secrets file is removed whatever the run's outcome");
      resolve({ code, stdout, stderr, output: `${stdout}\n${stderr}` });
    });
  });
}

const creations = (state) => state.requests.filter((r) => /^POST .*\/(d1\/database|queues|r2\/buckets)$/.test(r));

async function scenario(name, run) {
  const started = Date.now();
  try {
    await run();
    results.push({ name, ok: true, seconds: (Date.now() - started) / 1000 });
    console.log(`ok   ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (err) {
    results.push({ name, ok: false, error: String(err) });
    console.log(`FAIL ${name}: ${err.stack ?? err}`);
  }
}

/** No secret value in `output`; the generated ADMIN_TOKEN exactly `adminTokenShown` times. */
function assertNoSecretIn(output, adminToken, adminTokenShown) {
  for (const [name, value] of Object.entries(PROVIDER_SECRETS)) assert.ok(!output.includes(value), `${name}'s value appears in the output`);
  if (adminToken) assert.equal(output.split(adminToken).length - 1, adminTokenShown, "ADMIN_TOKEN shown once, on its own line, and nowhere else");
}

/** What a failed run must look like: a sentence, what to do, no stack trace, no colour codes. */
function assertToldPlainly(run, pattern) {
  assert.notEqual(run.code, 0, "the run failed");
  assert.match(run.stderr, pattern);
  assert.match(run.stderr, /\n {2}→ /, "says what to do");
  assert.doesNotMatch(run.output, /^\s+at .+:\d+:\d+\)?$/m, "no stack trace");
}

await scenario("the deploy expects every built-in source's secret bindings (src/providers/*.ts), the signing secrets as required", async () => {
  const declared = readdirSync(join(root, "src/providers")).flatMap((file) => {
    const match = /bindings: \{([^}]*)\}/.exec(readFileSync(join(root, "src/providers", file), "utf8"));
    return match ? [...match[1].matchAll(/(\w+): "([A-Z0-9_]+)"/g)].map(([, role, name]) => ({ role, name })) : [];
  });
  assert.ok(declared.length >= 5, "found the providers' bindings");
  assert.deepEqual(declared.filter((b) => b.role === "secret").map((b) => b.name).sort(), [...BUILT_IN_REQUIRED].sort());
  for (const { role, name } of declared.filter((b) => b.role !== "secret")) assert.ok(BUILT_IN_OPTIONAL.includes(name), `${role} ${name}`);
  // Declared sources and destinations, as arrays or as JSON text: a source's token is required (it refuses every request without it).
  const expected = expectedSecrets({
    SOURCES: JSON.stringify([{ name: "summit", provider: "zuddl", secret: "SUMMIT_SECRET", secret_old: "SUMMIT_OLD", token: "SUMMIT_TOKEN" }]),
    DESTINATIONS: [{ name: "crm", url: "https://crm.test", secret: "CRM_SECRET", headers: { authorization: "Bearer ${CRM_TOKEN}" } }],
  });
  for (const name of ["SUMMIT_SECRET", "SUMMIT_TOKEN", "CRM_SECRET", "CRM_TOKEN"]) assert.ok(expected.required.includes(name), name);
  assert.ok(expected.optional.includes("SUMMIT_OLD"));
});

const gateway = await startWorker({ migrate: false, vars: { ADMIN_TOKEN: "deploy-test-admin-token-0123456789abcdef" } });
try {
  // Four accounts at once, each on a stand-in of its own: the runs on the deployed account follow each
  // other, and the scenarios with an account of their own run beside them (CI's time limit).
  const dryRunOnNewAccount = () => scenario("dry run on a new account: prints the plan and changes nothing", async () => {
    const api = await startCloudflareApi();
    try {
      const run = await deploy(api, gateway, ["--dry-run"]);
      assert.equal(run.code, 0, run.output);
      assert.match(run.stdout, /D1 database edgehook: create/);
      for (const queue of QUEUES) assert.match(run.stdout, new RegExp(`queue ${queue}: create`));
      assert.match(run.stdout, new RegExp(`R2 bucket ${BUCKET}: create`));
      assert.match(run.stdout, new RegExp(`migrations to apply: ${MIGRATIONS.join(", ")}`));
      assert.match(run.stdout, /secrets to set: ADMIN_TOKEN, SEISMIC_SIGNING_SECRET, ZUDDL_SIGNING_SECRET/);
      const state = await api.state();
      assert.deepEqual(state.requests.filter((r) => !r.startsWith("GET ")), [], "only reads");
      assert.deepEqual([state.databases, state.queues, state.buckets, state.scripts], [[], [], [], []]);
      assertNoSecretIn(run.output);
    } finally {
      await api.close();
    }
  });

  const oneAccountInTurn = async () => {
    const api = await startCloudflareApi();
    try {
      let adminToken;
      await scenario("first run: D1, three queues, the R2 bucket, consumers, Durable Object migrations, cron, secrets and migrations; the live checks pass", async () => {
        const run = await deploy(api, gateway);
        assert.equal(run.code, 0, run.output);
        const state = await api.state();
        assert.deepEqual(state.unknown, []);
        assert.equal(state.databases.length, 1);
        const [database] = state.databases;
        assert.deepEqual(database.migrations, MIGRATIONS, "every migration recorded in d1_migrations");
        for (const table of ["events", "deliveries", "delivery_attempts", "destination_state", "quarantine", "alerts"]) assert.ok(database.tables.includes(table), table);
        assert.deepEqual(state.queues.map((q) => q.queue_name).sort(), [...QUEUES].sort());
        assert.deepEqual(state.buckets.map((b) => b.name), [BUCKET]);
        assert.equal(creations(state).filter((r) => r.endsWith("/r2/buckets")).length, 1, "the bucket created once");
        const consumer = (queue) => state.queues.find((q) => q.queue_name === queue).consumers;
        assert.deepEqual(consumer("edgehook-events").map((c) => [c.script, c.settings.batch_size, c.settings.max_retries, c.settings.max_wait_time_ms, c.dead_letter_queue]), [["edgehook", 100, 100, 1000, "edgehook-dead-letters"]]);
        assert.deepEqual(consumer("edgehook-dead-letters").map((c) => [c.script, c.settings.batch_size, c.settings.max_retries, c.settings.max_wait_time_ms]), [["edgehook", 100, 100, 5000]]);
        assert.deepEqual(consumer("edgehook-alerts").map((c) => [c.script, c.settings.batch_size, c.settings.max_retries, c.settings.max_wait_time_ms]), [["edgehook", 10, 100, 5000]]);
        assert.equal(state.scripts.length, 1);
        const [script] = state.scripts;
        assert.equal(script.migrationTag, "v2");
        assert.deepEqual(script.migrationSteps, [{ new_sqlite_classes: ["DestinationRateLimiter"] }, { new_sqlite_classes: ["DestinationLane"] }]);
        assert.deepEqual(script.schedules, ["*/5 * * * *"]);
        assert.equal(script.workersDev, true);
        const bound = (type) => script.bindings.filter((b) => b.type === type).map((b) => b.name).sort();
        assert.deepEqual(bound("d1"), ["DB"]);
        assert.deepEqual(bound("queue"), ["ALERTS_QUEUE", "DEAD_LETTER_QUEUE", "EVENTS_QUEUE"]);
        assert.deepEqual(bound("durable_object_namespace"), ["LANES", "RATE_LIMITER"]);
        assert.deepEqual(script.bindings.filter((b) => b.type === "r2_bucket").map((b) => [b.name, b.bucket_name]), [["BODIES", BUCKET]]);
        assert.deepEqual(script.secretNames.sort(), ["ADMIN_TOKEN", "SEISMIC_SIGNING_SECRET", "ZUDDL_SIGNING_SECRET"]);
        for (const [name, value] of Object.entries(PROVIDER_SECRETS)) assert.equal(await api.secret("edgehook", name), value, `${name} set from the environment`);
        adminToken = await api.secret("edgehook", "ADMIN_TOKEN");
        assert.match(adminToken, /^[0-9a-f]{64}$/, "ADMIN_TOKEN generated: 64 hex characters");
        assertNoSecretIn(run.output, adminToken, 1);
        // What to do next, and the live gateway checked.
        assert.match(run.stdout, new RegExp(`Seismic request URL \\(event subscription\\): ${gateway.url}/webhooks/seismic`));
        assert.match(run.stdout, new RegExp(`Zuddl webhook URL: ${gateway.url}/webhooks/zuddl`));
        assert.match(run.stdout, new RegExp(`Console: ${gateway.url}/console`));
        assert.match(run.stdout, /✓ GET \/healthz: 200 ok/);
        assert.match(run.stdout, /✓ Seismic URL verification: challenge answered in \d+ ms \(deadline 3000 ms\)/);
      });

      await scenario("second run: creates nothing, keeps every secret, applies no migration, deploys the code again", async () => {
        const before = await api.state();
        await api.resetLog();
        const run = await deploy(api, gateway, [], { SEISMIC_SIGNING_SECRET: "a-value-that-must-not-replace-the-set-one" });
        assert.equal(run.code, 0, run.output);
        const state = await api.state();
        assert.deepEqual(creations(state), [], "nothing created");
        assert.deepEqual(state.requests.filter((r) => /\/consumers$/.test(r) && r.startsWith("POST")), [], "no second consumer");
        assert.match(run.stdout, /migrations: none to apply/);
        assert.match(run.stdout, /no secret changed/);
        assert.equal(await api.secret("edgehook", "SEISMIC_SIGNING_SECRET"), PROVIDER_SECRETS.SEISMIC_SIGNING_SECRET, "kept: not overwritten");
        assert.equal(await api.secret("edgehook", "ADMIN_TOKEN"), adminToken, "ADMIN_TOKEN kept");
        assert.equal(state.scripts[0].uploads, before.scripts[0].uploads + 1, "the code deployed again");
        assert.deepEqual(state.databases[0].migrations, MIGRATIONS);
        assert.ok(!run.output.includes(adminToken), "a kept ADMIN_TOKEN is not shown again");
        assertNoSecretIn(run.output);
      });

      await scenario("a dry run on a deployed gateway only reads: the migrations applied are read, not listed (listing creates wrangler's table)", async () => {
        await api.resetLog();
        const run = await deploy(api, gateway, ["--dry-run"]);
        assert.equal(run.code, 0, run.output);
        assert.match(run.stdout, /D1 database edgehook: exists/);
        assert.match(run.stdout, new RegExp(`R2 bucket ${BUCKET}: exists`));
        assert.match(run.stdout, /migrations to apply: none/);
        assert.match(run.stdout, /secrets to set: none missing/);
        const state = await api.state();
        // A D1 SELECT and the analytics query `r2 bucket info` makes are POSTs that read.
        const writes = state.requests.filter((r) => !r.startsWith("GET ") && !/\/query$|^POST \/graphql$/.test(r));
        assert.deepEqual(writes, [], "only reads");
        const unknown = await deploy(api, gateway, ["--dryrun"]);
        assertToldPlainly(unknown, /unknown argument "--dryrun"/);
      });

      await scenario("--replace-secret NAME sets that secret again, and only that one; without EDGEHOOK_URL the URLs are the workers.dev one wrangler printed", async () => {
        const run = await deploy(api, gateway, ["--replace-secret", "ZUDDL_SIGNING_SECRET"], { ZUDDL_SIGNING_SECRET: "zuddl-standin-rotated-51c0", EDGEHOOK_URL: undefined });
        // The stand-in's workers.dev name resolves nowhere: the live checks fail, and say so.
        assert.equal(run.code, 1, run.output);
        assert.match(run.stdout, /Seismic request URL \(event subscription\): https:\/\/edgehook\.standin\.workers\.dev\/webhooks\/seismic/);
        assert.match(run.stdout, /✘ GET \/healthz: not reachable/);
        assert.equal(await api.secret("edgehook", "ZUDDL_SIGNING_SECRET"), "zuddl-standin-rotated-51c0");
        assert.equal(await api.secret("edgehook", "ADMIN_TOKEN"), adminToken);
        assert.ok(!run.output.includes("zuddl-standin-rotated-51c0"));
      });
    } finally {
      await api.close();
    }
  };

  const stoppedMidway = () => scenario("a run stopped midway (the Worker upload refused) is finished by the next one, under CI: nothing created twice, nothing asked, missing secrets warned", async () => {
    const api = await startCloudflareApi();
    try {
      // A refusal wrangler does not retry (a 5xx it would, with backoff), so the run stops at the upload.
      await api.fault({ method: "PUT", path: "/workers/scripts/edgehook$", status: 400, code: 10021, message: "Uploaded script failed validation", times: 100 });
      const stopped = await deploy(api, gateway);
      assertToldPlainly(stopped, /wrangler deploy failed:[\s\S]*failed validation[\s\S]*fix it, and run `npm run deploy` again/);
      const midway = await api.state();
      assert.equal(midway.databases.length, 1);
      assert.deepEqual(midway.databases[0].migrations, MIGRATIONS, "the migrations ran before the code");
      assert.equal(midway.scripts.length, 0);
      await api.clearFaults();
      // Workers Builds (the Deploy button) runs it with CI set: no prompt, ADMIN_TOKEN not generated into kept logs.
      const resumed = await deploy(api, gateway, [], { CI: "true", ZUDDL_SIGNING_SECRET: "" });
      assert.equal(resumed.code, 0, resumed.output);
      const state = await api.state();
      assert.equal(state.databases.length, 1);
      assert.deepEqual(state.queues.map((q) => q.queue_name).sort(), [...QUEUES].sort());
      assert.deepEqual(state.buckets.map((b) => b.name), [BUCKET]);
      assert.equal(creations(state).length, 5, "one database, three queues and one bucket, each created once over both runs");
      assert.equal(state.scripts.length, 1);
      assert.deepEqual(state.scripts[0].secretNames, ["SEISMIC_SIGNING_SECRET"]);
      assert.match(resumed.stdout, /migrations: none to apply/);
      assert.match(resumed.stdout, /! secret ADMIN_TOKEN is not set: npx wrangler secret put ADMIN_TOKEN/);
      assert.match(resumed.stdout, /! secret ZUDDL_SIGNING_SECRET is not set/);
      assertNoSecretIn(resumed.output);
    } finally {
      await api.close();
    }
  });

  const apiErrors = () => scenario("API errors and no sign-in are told as what to do, never as a stack trace", async () => {
    const api = await startCloudflareApi();
    try {
      const signedOut = await deploy(api, gateway, [], { CLOUDFLARE_API_TOKEN: "not-a-valid-token" });
      assertToldPlainly(signedOut, /not signed in to Cloudflare[\s\S]*npx wrangler login/);
      await api.fault({ method: "GET", path: "/d1/database$", status: 403, code: 10000, message: "Authentication error", times: 100 });
      const refused = await deploy(api, gateway);
      assertToldPlainly(refused, /listing D1 databases failed:[\s\S]*Authentication error[\s\S]*API token/);
      assert.doesNotMatch(refused.output, /\u001b\[/, "no colour codes in what the operator reads");
      const state = await api.state();
      assert.deepEqual([state.databases, state.scripts], [[], []], "nothing done after the refusal");
      // A secret listing that fails for another reason than "no such Worker" is not "no secrets": it stops the run.
      await api.clearFaults();
      await api.fault({ method: "GET", path: "/secrets$", status: 403, code: 10000, message: "Forbidden: the token may not read Workers Scripts", times: 100 });
      const forbidden = await deploy(api, gateway);
      assertToldPlainly(forbidden, /listing the Worker's secrets failed:[\s\S]*may not read Workers Scripts/);
      assert.deepEqual((await api.state()).scripts, [], "nothing deployed, no secret overwritten");
      // A new account's R2 answers 10042 until it is enabled in the dashboard: said before anything is created.
      await api.clearFaults();
      await api.fault({ method: "GET", path: "/r2/buckets/", status: 403, code: 10042, message: "Please enable R2 through the Cloudflare Dashboard.", times: 100 });
      const noR2 = await deploy(api, gateway);
      assertToldPlainly(noR2, /reading R2 bucket edgehook-bodies failed:[\s\S]*enable R2[\s\S]*→ R2 is not enabled on this account: enable it once in the Cloudflare dashboard/);
      const untouched = await api.state();
      assert.deepEqual([untouched.databases, untouched.buckets, untouched.scripts], [[], [], []], "nothing created");
    } finally {
      await api.close();
    }
  });

  await Promise.all([dryRunOnNewAccount(), oneAccountInTurn(), stoppedMidway(), apiErrors()]);
} finally {
  await gateway.stop();
}

mkdirSync(join(root, "test-artifacts"), { recursive: true });
writeFileSync(join(root, "test-artifacts/deploy.json"), JSON.stringify({ results }, null, 2));
const failed = results.filter((r) => !r.ok).length;
console.log(`deploy: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
