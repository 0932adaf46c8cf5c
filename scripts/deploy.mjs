#!/usr/bin/env node
// `npm run deploy`: from a fresh clone to a live gateway, and safe to run again.
//   npm run deploy                          # sign-in check, D1 + migrations, secrets, deploy (+ queues, R2 bucket), live checks
//   npm run deploy -- --dry-run             # the plan only: what would be created, which secrets are missing
//   npm run deploy -- --replace-secret NAME # set NAME again (repeatable); otherwise a set secret is kept
// Provider secrets come from environment variables of the same name, or a hidden prompt; with CI
// set (or no terminal) nothing is asked and missing secrets are warnings. EDGEHOOK_URL: the
// gateway's public origin when it is not the workers.dev one (a custom domain), for the URLs
// printed and the live checks. See README "Deploying".
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { unstable_readConfig } from "wrangler";
import { checkLive } from "./deploy/check.mjs";
import { ADMIN_TOKEN, askHidden, expectedSecrets, newAdminToken, tables, withoutSecrets, withSecretsFile } from "./deploy/secrets.mjs";
import { DeployError, failure, root, wrangler } from "./deploy/wrangler.mjs";

const say = (line = "") => process.stdout.write(`${line}\n`);
const interactive = !process.env.CI && process.stdin.isTTY === true;

/** `--dry-run` and `--replace-secret NAME…`; anything else is refused, so a typo never deploys for real. */
function readArgs(argv) {
  // `npm run deploy --dry-run` (no `--`) hands the flag to npm, which sets npm_config_dry_run instead.
  const options = { dryRun: process.env.npm_config_dry_run === "true", replace: new Set() };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--dry-run") options.dryRun = true;
    else if (argv[i] === "--replace-secret" && /^[A-Z][A-Z0-9_]*$/.test(argv[i + 1] ?? "")) options.replace.add(argv[++i]);
    else throw new DeployError(`unknown argument ${JSON.stringify(argv[i])}`, "the options are --dry-run and --replace-secret NAME (after `--`: npm run deploy -- --dry-run)");
  }
  return options;
}

let dryRun = false;
let replace = new Set();
/** Every wrangler step runs with the secrets' names taken out of its environment (only the secrets file carries values). */
let run = wrangler;

async function main() {
  ({ dryRun, replace } = readArgs(process.argv.slice(2)));
  const config = unstable_readConfig({ config: join(root, "wrangler.toml") }, { hideWarnings: true });
  const database = config.d1_databases.find((d) => d.binding === "DB");
  const queues = [...new Set([...config.queues.producers.map((q) => q.queue), ...config.queues.consumers.map((q) => q.queue)])];
  const buckets = config.r2_buckets.map((b) => b.bucket_name);
  const secrets = expectedSecrets(config.vars);
  const known = new Set([...secrets.required, ...secrets.optional]);
  const unknown = [...replace].filter((name) => !known.has(name));
  if (unknown.length) throw new DeployError(`--replace-secret ${unknown.join(", ")}: not a secret this configuration reads`, `the secrets it reads: ${[...known].join(", ")}`);
  const wranglerEnv = withoutSecrets(process.env, [...known]);
  run = (args, options) => wrangler(args, { env: wranglerEnv, ...options });

  say(`edgehook: deploying Worker "${config.name}"${dryRun ? " (dry run: nothing is changed)" : ""}`);
  const account = await signedIn();
  say(`✓ signed in${account ? ` (account ${account})` : ""}`);

  const state = await readState(database.database_name, queues, buckets);
  const missing = {
    required: secrets.required.filter((name) => !state.secrets.has(name) || replace.has(name)),
    optional: secrets.optional.filter((name) => !state.secrets.has(name) || replace.has(name)),
  };
  printPlan(database.database_name, queues, buckets, state, missing);
  if (dryRun) return 0;

  if (!state.database) {
    await run(["d1", "create", database.database_name], { step: `creating D1 database ${database.database_name}` });
    say(`✓ created D1 database ${database.database_name}`);
  }
  // Before the code: the new Worker never serves against an older schema. (Events a Worker accepts
  // before its tables exist wait in the queue and are stored once they do: README "Deploying".)
  const applied = await run(["d1", "migrations", "apply", "DB", "--remote"], { step: "applying the D1 migrations" });
  say(/No migrations to apply/i.test(applied.stdout) ? "✓ migrations: none to apply" : `✓ migrations applied: ${migrationNames(applied.stdout).join(", ") || "(see above)"}`);

  const values = await gatherSecrets(missing);
  const deployArgs = ["deploy"];
  const deployed = await withSecretsFile(values, async (file) => {
    if (Object.keys(values).length) deployArgs.push("--secrets-file", file);
    return run(deployArgs, { step: "wrangler deploy", show: true });
  });
  const set = Object.keys(values);
  say(`✓ deployed${set.length ? `; secrets set: ${set.join(", ")}` : "; no secret changed"}`);
  // Shown only once it is set: a run that failed before never showed a token that does not work.
  if (values[ADMIN_TOKEN] && !process.env[ADMIN_TOKEN]) say(`ADMIN_TOKEN generated (shown once; keep it in your password manager): ${values[ADMIN_TOKEN]}`);

  const url = (process.env.EDGEHOOK_URL ?? workersDevUrl(deployed.stdout) ?? "").replace(/\/$/, "");
  // A secret asked to be replaced but given no value keeps the one it has.
  const stillMissing = missing.required.filter((name) => !(name in values) && !state.secrets.has(name));
  printNextSteps(url, config.vars, stillMissing);
  if (!url) {
    say("! no workers.dev URL was printed (workers_dev off?): set EDGEHOOK_URL to the gateway's origin and run again for the live checks");
    return 1;
  }
  say();
  say(`Checking the live gateway at ${url}:`);
  const checks = await checkLive(url, { waitMs: Number(process.env.EDGEHOOK_CHECK_WAIT_MS ?? 60_000) });
  for (const check of checks) say(`${check.ok ? "✓" : "✘"} ${check.name}: ${check.detail}`);
  return checks.every((check) => check.ok) ? 0 : 1;
}

/** `wrangler whoami --json` exits non-zero when nobody is signed in (or when the API cannot be reached). */
async function signedIn() {
  const who = await run(["whoami", "--json"], { step: "checking the Cloudflare sign-in", allowFailure: true });
  if (who.code !== 0 && /fetch failed|ECONNREFUSED|ENOTFOUND|ETIMEDOUT|EAI_AGAIN/.test(`${who.stdout}${who.stderr}`)) throw failure("checking the Cloudflare sign-in", who);
  if (who.code !== 0) {
    throw new DeployError(
      "not signed in to Cloudflare",
      "run `npx wrangler login` (a browser opens), or set CLOUDFLARE_API_TOKEN (and CLOUDFLARE_ACCOUNT_ID) for a token with Workers Scripts, D1, Queues and Workers R2 Storage edit rights; then `npm run deploy` again",
    );
  }
  const info = JSON.parse(who.stdout.slice(who.stdout.indexOf("{")));
  const accounts = info.accounts ?? [];
  if (!process.env.CLOUDFLARE_ACCOUNT_ID && accounts.length > 1) {
    throw new DeployError(`this sign-in reaches ${accounts.length} accounts`, "set CLOUDFLARE_ACCOUNT_ID to the one to deploy to, then `npm run deploy` again");
  }
  return process.env.CLOUDFLARE_ACCOUNT_ID ?? accounts[0]?.id ?? null;
}

/**
 * What exists already: the database, the queues, the R2 buckets, the Worker's secret names (read at
 * once: each is a wrangler process of its own), and for the plan of a dry run, the migrations not
 * yet applied (a real run's next step applies them and says which).
 */
async function readState(databaseName, queues, buckets) {
  const [databases, listed, bucketInfos, secretList] = await Promise.all([
    run(["d1", "list", "--json"], { step: "listing D1 databases" }),
    run(["queues", "list"], { step: "listing queues" }),
    // Looked up by name, as wrangler deploy does before it creates one: `r2 bucket list` shows only
    // the first page of an account's buckets.
    Promise.all(buckets.map((name) => run(["r2", "bucket", "info", name, "--json"], { step: `reading R2 bucket ${name}`, allowFailure: true }))),
    run(["secret", "list", "--format", "json"], { step: "listing the Worker's secrets", allowFailure: true }),
  ]);
  // No Worker yet: no secrets either. Any other failure stops the run: taken for "none set", it would overwrite them all.
  const noWorker = secretList.code !== 0 && /code: 10007\]|does not exist on your account|not found/i.test(`${secretList.stdout}${secretList.stderr}`);
  if (secretList.code !== 0 && !noWorker) throw failure("listing the Worker's secrets", secretList);
  const database = JSON.parse(databases.stdout).find((d) => d.name === databaseName) ?? null;
  const existingQueues = new Set(queues.filter((name) => new RegExp(`(^|[\\s│|])${name}([\\s│|]|$)`, "m").test(listed.stdout)));
  // 10006: no such bucket. Any other failure stops the run, as a failed listing does.
  const bucketMissing = (info) => info.code !== 0 && /code: 10006\]/.test(`${info.stdout}${info.stderr}`);
  bucketInfos.forEach((info, i) => {
    if (info.code !== 0 && !bucketMissing(info)) throw failure(`reading R2 bucket ${buckets[i]}`, info);
  });
  const existingBuckets = new Set(buckets.filter((name, i) => bucketInfos[i].code === 0));
  const secrets = new Set(noWorker ? [] : JSON.parse(secretList.stdout.slice(secretList.stdout.indexOf("["))).map((s) => s.name));
  const files = readdirSync(join(root, "migrations")).filter((f) => f.endsWith(".sql")).sort();
  let pending = null;
  if (!database) pending = files;
  else if (dryRun) {
    // Read, not `d1 migrations list`, which creates wrangler's d1_migrations table when it is missing.
    const applied = await run(["d1", "execute", "DB", "--remote", "--json", "--command", "SELECT name FROM d1_migrations"], { step: "reading the applied migrations", allowFailure: true });
    if (applied.code !== 0 && !/no such table/i.test(`${applied.stdout}${applied.stderr}`)) throw failure("reading the applied migrations", applied);
    const names = new Set(applied.code === 0 ? JSON.parse(applied.stdout.slice(applied.stdout.indexOf("["))).flatMap((r) => r.results.map((row) => row.name)) : []);
    pending = files.filter((f) => !names.has(f));
  }
  return { database, queues: existingQueues, buckets: existingBuckets, secrets, workerExists: !noWorker, pending };
}

const migrationNames = (text) => [...new Set(text.match(/\b\d{4}_[\w-]+\.sql\b/g) ?? [])];

function printPlan(databaseName, queues, buckets, state, missing) {
  say();
  say("Plan:");
  say(`- D1 database ${databaseName}: ${state.database ? "exists" : "create"}`);
  for (const name of queues) say(`- queue ${name}: ${state.queues.has(name) ? "exists" : "create (wrangler deploy provisions it)"}`);
  for (const name of buckets) say(`- R2 bucket ${name}: ${state.buckets.has(name) ? "exists" : "create (wrangler deploy provisions it)"}`);
  say(`- migrations to apply: ${state.pending === null ? "those not yet applied (listed by the next step)" : state.pending.length ? state.pending.join(", ") : "none"}`);
  say(`- secrets to set: ${missing.required.length ? missing.required.join(", ") : "none missing"}${replace.size ? ` (replacing ${[...replace].join(", ")})` : ""}`);
  if (missing.optional.length) say(`- optional secrets not set (set them from the environment or later with wrangler secret put): ${missing.optional.join(", ")}`);
  say(`- deploy the Worker${state.workerExists ? " (a new version)" : " (first deploy)"}, its queue consumers, Durable Objects and cron`);
  say();
}

/**
 * Values for the missing secrets: each from the environment variable of its name, else (in a
 * terminal) a hidden prompt; ADMIN_TOKEN is generated when neither gives one, and shown once.
 * Optional ones are taken from the environment only. Nothing is echoed.
 */
async function gatherSecrets(missing) {
  const values = {};
  for (const name of [...missing.required, ...missing.optional]) {
    const fromEnv = process.env[name];
    if (fromEnv) values[name] = fromEnv;
  }
  for (const name of missing.required) {
    if (name in values || name === ADMIN_TOKEN) continue;
    if (interactive) {
      const typed = await askHidden(`${name} (hidden; Enter to skip): `);
      if (typed) values[name] = typed;
    }
  }
  if (missing.required.includes(ADMIN_TOKEN) && !(ADMIN_TOKEN in values)) {
    if (process.env.CI) say("! ADMIN_TOKEN is not set: not generated under CI, where logs are kept. Set it with `npx wrangler secret put ADMIN_TOKEN`.");
    else values[ADMIN_TOKEN] = newAdminToken();
  }
  return values;
}

function workersDevUrl(output) {
  return output.match(/https:\/\/[a-z0-9.-]+\.workers\.dev/i)?.[0] ?? null;
}

function printNextSteps(url, vars, stillMissing) {
  const base = url || "https://<your gateway>";
  say();
  say("Next:");
  say(`- Worker: ${base}`);
  say(`- Seismic request URL (event subscription): ${base}/webhooks/seismic`);
  say(`- Zuddl webhook URL: ${base}/webhooks/zuddl`);
  for (const source of tables(vars.SOURCES)) say(`- source ${source.name} (${source.provider}): ${base}/webhooks/${source.name}`);
  say(`- Console: ${base}/console (sign in with ADMIN_TOKEN, or through Cloudflare Access once ACCESS_TEAM_DOMAIN and ACCESS_AUD are set)`);
  if (stillMissing.length) {
    for (const name of stillMissing) say(`! secret ${name} is not set: npx wrangler secret put ${name} (or ${name}=… npm run deploy)`);
  } else say("- every required secret is set");
}

main().then(
  (code) => process.exit(code),
  (err) => {
    // One sentence and what to do: never a stack trace.
    const hint = err instanceof DeployError ? err.hint : "run `npm run deploy` again; if it fails the same way, run the wrangler step by hand to see its log";
    process.stderr.write(`\n✘ ${err instanceof DeployError ? err.message : `unexpected error: ${err?.message ?? err}`}\n  → ${hint}\n`);
    process.exit(1);
  },
);
