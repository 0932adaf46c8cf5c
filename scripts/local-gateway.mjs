// Starts and stops `wrangler dev` instances for the benchmarks and end-to-end runs: a free
// loopback port, a fresh persistence folder with migrations applied, and bindings from an
// env file we write, so nothing depends on (or changes) a developer's .dev.vars or state.
import { spawn, execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const wrangler = join(root, "node_modules/.bin/wrangler");
const quietEnv = { ...process.env, WRANGLER_SEND_METRICS: "false", CLOUDFLARE_CF_FETCH_ENABLED: "false", NO_COLOR: "1", CI: "1" };

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

/**
 * Starts a Worker under `wrangler dev`.
 *   vars:      bindings written to an env file (objects become JSON text)
 *   config:    wrangler config path (default: the project's wrangler.toml)
 *   persistTo: reuse a persistence folder (a restart); default a fresh one
 *   script:    another entry point with the same config (the e2e fault-injecting wrapper)
 *   port:      a fixed port (a restart keeps its address); default a free one
 */
export async function startWorker({ vars = {}, config = join(root, "wrangler.toml"), persistTo, script, port: fixedPort, migrate = true, log = false } = {}) {
  const dir = persistTo ?? mkdtempSync(join(tmpdir(), "edgehook-state-"));
  const envFile = join(mkdtempSync(join(tmpdir(), "edgehook-vars-")), ".env");
  // wrangler expands ${NAME} in env files (dotenv-expand); `\$` keeps a dollar as it is (a header's ${NAME} is ours to fill).
  const envLine = ([k, v]) => `${k}=${(typeof v === "string" ? v : JSON.stringify(v)).replaceAll("$", "\\$")}`;
  writeFileSync(envFile, Object.entries(vars).map(envLine).join("\n") + "\n");
  if (migrate) {
    // A fresh state starts as a copy of one migrated once per config (each `wrangler d1 migrations
    // apply` is a process of its own, seconds each); a state given back (a restart) is brought up to date.
    if (persistTo) applyMigrations(dir, config);
    else cpSync(migratedState(config), dir, { recursive: true });
  }
  // A start that fails before it answers (a port taken between choosing it and binding it, say) is
  // tried again on new ports, up to 3 times; the last failure says what wrangler printed.
  let port;
  let child;
  for (let attempt = 1; ; attempt++) {
    port = fixedPort ?? (await freePort());
    child = spawn(
      wrangler,
      ["dev", ...(script ? [script] : []), "-c", config, "--ip", "127.0.0.1", "--port", String(port), "--persist-to", dir, "--env-file", envFile,
        "--inspector-port", String(await freePort()), "--show-interactive-dev-session=false", "--log-level", log ? "log" : "warn"],
      { cwd: root, env: quietEnv, stdio: ["ignore", log ? "inherit" : "ignore", "pipe"], detached: true },
    );
    let printed = "";
    child.stderr.on("data", (chunk) => {
      if (log) process.stderr.write(chunk);
      printed = (printed + chunk).slice(-2000);
    });
    const started = await untilAnswers(`http://127.0.0.1:${port}`, child);
    if (started === "ready") break;
    await stopGroup(child);
    if (started === "exited" && fixedPort === undefined && attempt < 3) {
      console.error(`wrangler dev exited with ${child.exitCode} before it answered; starting it again on other ports`);
      continue;
    }
    throw new Error(`${started === "exited" ? `wrangler dev exited with ${child.exitCode}` : "wrangler dev did not start within 60 s"}; it printed:\n${printed}`);
  }
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    port,
    persistTo: dir,
    /** Resident memory (KiB) of the workerd processes started for this Worker. */
    rssKiB: () => workerdPids(child.pid).reduce((sum, pid) => sum + rssOf(pid), 0),
    /** CPU time (ms, user + system) used so far by every process of this `wrangler dev`: workerd and wrangler's Node. */
    cpuMs: () => groupPids(child.pid).reduce((sum, pid) => sum + cpuOf(pid), 0),
    stop: () => stopGroup(child),
  };
}

/**
 * Applies the migrations not yet applied to the local state in `dir`. While a Worker serves that
 * state its D1 may hold the SQLite file's lock for a moment: tried up to 5 times (each migration
 * is applied whole or not at all, and those applied are recorded), then the last error is thrown
 * with what wrangler printed.
 */
export function applyMigrations(dir, config = join(root, "wrangler.toml")) {
  for (let attempt = 1; ; attempt++) {
    try {
      execFileSync(wrangler, ["d1", "migrations", "apply", "DB", "--local", "--persist-to", dir, "-c", config], { cwd: root, env: quietEnv, stdio: ["ignore", "pipe", "pipe"] });
      return;
    } catch (err) {
      if (attempt >= 5) throw new Error(`wrangler d1 migrations apply failed ${attempt} times: ${String(err.stderr ?? "").slice(-1000)}${String(err.stdout ?? "").slice(-1000)}`);
      execFileSync("sleep", ["1"]);
    }
  }
}

/** Per config: a local state with every migration applied, made once per process. */
const migrated = new Map();
function migratedState(config) {
  if (!migrated.has(config)) {
    const dir = mkdtempSync(join(tmpdir(), "edgehook-migrated-"));
    applyMigrations(dir, config);
    migrated.set(config, dir);
  }
  return migrated.get(config);
}

/** Resolves "ready" once the Worker answers /healthz, "exited" if wrangler ends first, "timeout" after 60 s. */
async function untilAnswers(url, child) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) return "exited";
    try {
      const response = await fetch(`${url}/healthz`);
      await response.arrayBuffer();
      return "ready";
    } catch {
      if (Date.now() > deadline) return "timeout";
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
}

/** Stops wrangler and everything it started (its process group): SIGTERM, then SIGKILL after 5 s. */
async function stopGroup(child) {
  const exited = child.exitCode !== null ? Promise.resolve() : new Promise((resolve) => child.once("exit", resolve));
  try {
    process.kill(-child.pid, "SIGTERM");
  } catch {
    return;
  }
  await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5_000))]);
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/** Processes in the process group of the wrangler we started, with their command names. */
function groupProcesses(groupId) {
  const found = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      if (Number(fields[2]) === groupId) found.push({ pid: Number(entry), comm });
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}

const groupPids = (groupId) => groupProcesses(groupId).map((p) => p.pid);
const workerdPids = (groupId) => groupProcesses(groupId).filter((p) => p.comm.startsWith("workerd")).map((p) => p.pid);

/** Clock ticks per second of /proc's CPU times (USER_HZ: 100 on Linux). */
const TICKS_PER_SECOND = 100;

function cpuOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime: fields 14 and 15 of stat, 11 and 12 after the command name.
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
  } catch {
    return 0;
  }
}

function rssOf(pid) {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0;
  }
}
