// The secrets a deployed edgehook reads, which of them `npm run deploy` sets, and how their
// values get to wrangler: from the environment or a hidden prompt, into a file only this user can
// read, handed to `wrangler deploy --secrets-file`, and removed whatever happens.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The built-in sources' bindings (src/providers/*.ts `bindings`), alerts', and the admin token. */
export const BUILT_IN_REQUIRED = ["SEISMIC_SIGNING_SECRET", "ZUDDL_SIGNING_SECRET"];
export const BUILT_IN_OPTIONAL = ["SEISMIC_SIGNING_SECRET_OLD", "ZUDDL_SIGNING_SECRET_OLD", "ZUDDL_AUTH_TOKEN", "ALERT_URL", "ALERT_SECRET"];
export const ADMIN_TOKEN = "ADMIN_TOKEN";

const placeholders = (text) => [...String(text).matchAll(/\$\{([A-Z][A-Z0-9_]*)\}/g)].map((m) => m[1]);

/** A [vars] array of tables, given as an array or as JSON text (as src/config.ts reads it); anything else: none. */
export function tables(value) {
  let parsed = value;
  if (typeof value === "string") {
    try {
      parsed = JSON.parse(value);
    } catch {
      return [];
    }
  }
  return Array.isArray(parsed) ? parsed.filter((entry) => entry !== null && typeof entry === "object") : [];
}

/**
 * Every secret binding the configuration names: required (the gateway cannot verify, sign or
 * admit without it) or optional (a rotation's old secret, alerts). SOURCES and DESTINATIONS come
 * from wrangler.toml's [vars], where they name their bindings. A declared source's `token` is
 * required: until it is set, that source refuses every request (src/sources.ts).
 */
export function expectedSecrets(vars) {
  const required = new Set([ADMIN_TOKEN, ...BUILT_IN_REQUIRED]);
  const optional = new Set(BUILT_IN_OPTIONAL);
  for (const source of tables(vars.SOURCES)) {
    for (const name of [source.secret, source.token]) if (typeof name === "string") required.add(name);
    if (typeof source.secret_old === "string") optional.add(source.secret_old);
  }
  for (const destination of tables(vars.DESTINATIONS)) {
    if (typeof destination.secret === "string") required.add(destination.secret);
    for (const value of Object.values(destination.headers ?? {})) for (const name of placeholders(value)) required.add(name);
  }
  for (const name of required) optional.delete(name);
  return { required: [...required], optional: [...optional] };
}

/** 64 hex characters: what the admin API and the console sign-in accept (32 or more). */
export const newAdminToken = () => randomBytes(32).toString("hex");

/** Reads a line from the terminal without showing it. */
export function askHidden(question) {
  return new Promise((resolve) => {
    const { stdin, stdout } = process;
    stdout.write(question);
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding("utf8");
    let value = "";
    const onData = (key) => {
      for (const ch of key) {
        if (ch === "\r" || ch === "\n" || ch === "\u0004") {
          stdin.setRawMode(false);
          stdin.pause();
          stdin.off("data", onData);
          stdout.write("\n");
          resolve(value);
          return;
        }
        if (ch === "\u0003") {
          stdin.setRawMode(false);
          stdout.write("\n");
          process.exit(130);
        }
        if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.on("data", onData);
  });
}

/** Ctrl-C, a kill, a closed terminal: the file goes with the process. */
const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP"];

/**
 * Calls `use(path)` with a JSON file of `values` that only this user can read, in a directory of
 * its own, and removes both afterwards, even when `use` throws or the process is interrupted.
 */
export async function withSecretsFile(values, use) {
  const dir = mkdtempSync(join(tmpdir(), "edgehook-secrets-"));
  const path = join(dir, "secrets.json");
  const remove = () => rmSync(dir, { recursive: true, force: true });
  const onSignal = () => {
    remove();
    process.exit(130);
  };
  for (const signal of SIGNALS) process.once(signal, onSignal);
  try {
    writeFileSync(path, JSON.stringify(values), { mode: 0o600 });
    return await use(path);
  } finally {
    remove();
    for (const signal of SIGNALS) process.off(signal, onSignal);
  }
}

/** The environment without any secret's value in it, for wrangler (it reads secrets only from the file). */
export function withoutSecrets(env, names) {
  const clean = { ...env };
  for (const name of names) delete clean[name];
  return clean;
}
