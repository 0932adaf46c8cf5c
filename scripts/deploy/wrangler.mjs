// Runs the project's own wrangler for `npm run deploy`, and turns its failures into one plain
// sentence with what to do: an operator reads "the API token may not create D1 databases", not a
// stack trace.
import { spawn } from "node:child_process";
import { join } from "node:path";

export const root = new URL("../..", import.meta.url).pathname;
const bin = join(root, "node_modules", ".bin", "wrangler");

/** A wrangler command that failed: its own error lines, and what to do about them. */
export class DeployError extends Error {
  constructor(message, hint) {
    super(message);
    this.name = "DeployError";
    this.hint = hint;
  }
}

/**
 * Runs `wrangler args…` and resolves with its output. `show`: its output goes to the terminal
 * too, as it comes. `env`: the child's environment (never prompts: CI is set, so wrangler takes
 * its non-interactive paths and writes nothing back into wrangler.toml). Rejects with a
 * DeployError naming `step` unless `allowFailure`.
 */
export function wrangler(args, { step, show = false, env = process.env, allowFailure = false } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, {
      cwd: root,
      // WRANGLER_LOG_SANITIZE: wrangler's debug log on disk never holds a request body (the secrets file's values).
      env: { ...env, CI: "true", WRANGLER_SEND_METRICS: "false", WRANGLER_LOG_SANITIZE: "true", FORCE_COLOR: "0", NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      if (show) process.stdout.write(chunk);
    });
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
      if (show) process.stderr.write(chunk);
    });
    child.on("error", (err) => reject(new DeployError(`${step}: could not run wrangler (${err.message})`, "run `npm ci` first")));
    child.on("close", (code) => {
      const result = { code, stdout, stderr };
      if (code === 0 || allowFailure) resolve(result);
      else reject(failure(step, result));
    });
  });
}

/** wrangler's `✘ [ERROR]` lines and the API's error codes, without the log file's path. */
export function errorLines({ stdout, stderr }) {
  // wrangler colours its errors even when asked not to.
  const text = `${stderr}\n${stdout}`.replace(/\u001b\[[0-9;]*m/g, "");
  const lines = text.split("\n").map((line) => line.trim()).filter(Boolean);
  const errors = lines.filter((line) => /\[ERROR\]|^A request to the Cloudflare API|\[code: \d+\]/.test(line) && !/Logs were written to/.test(line));
  return errors.length ? errors : lines.slice(-3);
}

/** The API's codes that an operator can act on, and what to do. */
const HINTS = [
  [/code: (10000|9109)\]|Authentication error|Invalid access token/i, "the API token is not valid for this account, or lacks a permission: it needs Workers Scripts Edit, D1 Edit, Queues Edit, Workers R2 Storage Edit and Account Settings Read (or run `npx wrangler login`)"],
  // A new account cannot create a bucket until R2 is turned on, once, in the dashboard.
  [/code: 10042\]/, "R2 is not enabled on this account: enable it once in the Cloudflare dashboard (R2 Object Storage), then run `npm run deploy` again"],
  [/More than one account available|multiple accounts/i, "set CLOUDFLARE_ACCOUNT_ID to the account to deploy to"],
  [/code: 7500|code: 10021/i, "the Worker's code or configuration was refused: read the message above, fix it, and run `npm run deploy` again"],
  [/fetch failed|ECONNREFUSED|ENOTFOUND|ETIMEDOUT/i, "the Cloudflare API could not be reached: check the network (or CLOUDFLARE_API_BASE_URL), then run `npm run deploy` again"],
];

export function failure(step, result) {
  const lines = errorLines(result);
  const text = lines.join("\n");
  const hint = HINTS.find(([pattern]) => pattern.test(`${result.stderr}\n${result.stdout}`))?.[1]
    ?? "fix what the message says, then run `npm run deploy` again: it picks up where this run stopped";
  return new DeployError(`${step} failed:\n  ${text.split("\n").join("\n  ")}`, hint);
}
