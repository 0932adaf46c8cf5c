/**
 * Runs a destination's transform (transforms/<name>.js) on an event, in an isolate of its own
 * through the Worker Loader: no network (`globalOutbound: null`, and `fetch` replaced so that
 * trying it fails the run), no bindings (`env: {}`), CPU bounded by the loader (`limits.cpuMs`),
 * and here the wall-clock time (the run is aborted past it) and the result's size. The isolate's
 * id is a hash of the purpose (deliveries or previews), the destination and the code it runs, so a
 * deploy with new code never runs the old one, and a preview never shares a delivery's isolate.
 *
 * A failure has a kind from a small closed set and a message that never quotes the payload (nor
 * the transform's own error message, which could), only what failed and where in the transform.
 * What the code itself answered (it threw, its result is not JSON or too large, it reached for the
 * network) is final: the same code gives the same answer. A passing fault (a timeout, the
 * runtime's CPU or memory limit, a loader that could not run it) is a failed attempt, retried.
 */
import type { TransformEvent } from "../../transforms/transform";
import { numberVar, type Env } from "../env";
import { HttpError } from "../errors";
import { maxBodyBytes, readBoundedBody } from "../receive/body";
import { bytesToHex } from "../crypto";
import type { ClosedDelivery } from "../store/deliveries";
import { bodyJson, sourceOf, type EventRow } from "../store/events";
import type { Destination } from "./destinations";
import { limiter } from "./limiter";
import { transformSource } from "./transform-source";

export const TRANSFORM_FAILURES = [
  "transform_error", "transform_timeout", "transform_memory", "transform_invalid_result", "transform_too_large", "transform_network", "transform_unavailable",
] as const;
export type TransformFailure = (typeof TRANSFORM_FAILURES)[number];

/** Failures that say nothing about the code: another attempt (with backoff) may well succeed. */
const PASSING_FAILURES: ReadonlySet<TransformFailure> = new Set(["transform_timeout", "transform_memory", "transform_unavailable"]);

/**
 * The runtime's own words when it stops an isolate at a limit (workerd's "exceeded" errors). Only
 * these, matched whole: the transform's own errors never reach the gateway as thrown errors (the
 * runner answers them), and a message it wrote must never pass for a resource failure.
 */
const CPU_EXCEEDED = new Set(["Worker exceeded CPU time limit."]);
const MEMORY_EXCEEDED = new Set(["Worker has exceeded memory limit.", "Worker exceeded memory limit."]);

/** What a transform's default export receives: its one definition is the transforms' own contract. */
export type { TransformEvent };

export type TransformResult =
  | { outcome: "body"; body: string; durationMs: number }
  | { outcome: "skip"; durationMs: number }
  | { outcome: "failed"; kind: TransformFailure; message: string; durationMs: number };

/** Which runs share an isolate: deliveries', or previews' (whose state must never reach a forward). */
export type TransformPurpose = "delivery" | "preview";

export interface TransformLimits {
  cpuMs: number;
  timeoutMs: number;
  /** The largest body a transform may return: the largest a forward carries (MAX_BODY_BYTES). */
  maxBytes: number;
}

/** Runs destination `destination`'s transform `name` on an event. */
export type TransformRunner = (destination: string, name: string, event: TransformEvent) => Promise<TransformResult>;

const DEFAULT_CPU_MS = 50;
const DEFAULT_TIMEOUT_MS = 100;
/** The loaded worker's runtime: the gateway's own compatibility date. */
const COMPATIBILITY_DATE = "2026-10-23";
/** Distinct Dynamic Workers one invocation may have requests in flight to (Cloudflare's limit). */
const MAX_TRANSFORMS_IN_FLIGHT = 4;

/**
 * Evaluated before the transform (the runner imports it first), so what the runner relies on is
 * captured, and bound, before the transform's code could change it; and `fetch` is replaced by one
 * that marks every run in flight. One isolate may serve several runs at once (another batch, a
 * preview), and code a transform left running outside a run (a timer, a loop started at load)
 * would otherwise hide its fetch: any fetch while runs of this code are in flight fails them all.
 */
const GUARD = `
const uncurry = (fn) => Function.prototype.call.bind(fn);
const add = uncurry(Set.prototype.add);
const remove = uncurry(Set.prototype.delete);
const each = uncurry(Set.prototype.forEach);
const exec = uncurry(RegExp.prototype.exec);
const text = String;
const inFlight = new Set();
class NetworkRefused extends Error {}
const refuse = () => {
  each(inFlight, (run) => { run.network = true; });
  throw new NetworkRefused("transforms have no network");
};
// Wherever fetch is found, on the global or its prototypes, it is the refusing one.
for (let scope = globalThis; scope; scope = Object.getPrototypeOf(scope)) {
  if (scope === globalThis || Object.hasOwn(scope, "fetch")) Object.defineProperty(scope, "fetch", { value: refuse, writable: false, configurable: false });
}
const IDENTIFIER = /^[A-Za-z_$][\\w$]{0,63}$/;
const LINE = /transform\\.js:(\\d+):(\\d+)/;
export const guard = Object.freeze({
  begin: () => { const run = { __proto__: null, network: false }; add(inFlight, run); return run; },
  end: (run) => { remove(inFlight, run); },
  stringify: JSON.stringify, parse: JSON.parse, Response, requestText: uncurry(Request.prototype.text),
  isError: (e) => e instanceof Error,
  ownName: (e) => { try { const n = e.name; return typeof n === "string" && exec(IDENTIFIER, n) !== null ? n : "Error"; } catch { return "Error"; } },
  where: (e) => { try { const m = exec(LINE, text(e.stack)); return m ? ":" + m[1] + ":" + m[2] : ""; } catch { return ""; } },
});
`;

/**
 * The loaded worker's entry: one POST per run, {file, maxChars, event} as JSON in (nothing read
 * from headers a transform could redefine), the body (200), a skip (204) or a failure (422) out.
 * Response options have no prototype, so a polluted Object.prototype cannot add to them.
 */
const RUNNER = `
import { guard } from "./guard.js";
const failed = (kind, message) => new guard.Response(guard.stringify({ kind, message }), { __proto__: null, status: 422 });
const described = (err, file) => (guard.isError(err) ? guard.ownName(err) + " at " + file + guard.where(err) : "a non-Error value");
// Imported on the first run, not with the runner: a module that throws while it loads is the
// transform's own error (answered as such), never a runtime failure whose text it chose.
let loaded = null;
const load = () => (loaded ??= import("./transform.js").then((module) => ({ ok: true, transform: module.default }), (error) => ({ ok: false, error })));
/** The transform's answer for one event: the body, a skip or a failure. */
async function answer(transform, event, file, maxChars) {
  let result;
  try {
    result = await transform(event);
  } catch (err) {
    return failed("transform_error", file + " threw " + described(err, file));
  }
  if (result === null) return new guard.Response(null, { __proto__: null, status: 204 });
  let text;
  try {
    text = guard.stringify(result);
  } catch (err) {
    return failed("transform_invalid_result", file + " returned a value that is not JSON (" + (guard.isError(err) ? guard.ownName(err) : "error") + ")");
  }
  if (typeof text !== "string") return failed("transform_invalid_result", file + " returned undefined, a function or a symbol: return a JSON value, or null to skip");
  if (text.length > maxChars) return failed("transform_too_large", file + " returned more than " + maxChars + " bytes");
  return new guard.Response(text, { __proto__: null, headers: { __proto__: null, "content-type": "application/json" } });
}
export default {
  async fetch(request) {
    const { file, maxChars, event } = guard.parse(await guard.requestText(request));
    // In flight from its module's load until its result is serialised: a fetch at load, or from a getter or toJSON, is this run's too.
    const run = guard.begin();
    let response;
    try {
      const { ok, transform, error } = await load();
      if (!ok) response = failed("transform_error", file + " threw " + described(error, file) + " while it loaded");
      else if (typeof transform !== "function") response = failed("transform_invalid_result", file + " has no default export function");
      else response = await answer(transform, event, file, maxChars);
    } finally {
      guard.end(run);
    }
    return run.network ? failed("transform_network", file + " tried to reach the network (transforms have none)") : response;
  },
};
`;

export function transformLimits(env: Env): TransformLimits {
  return {
    cpuMs: numberVar(env.TRANSFORM_CPU_MS, DEFAULT_CPU_MS),
    timeoutMs: numberVar(env.TRANSFORM_TIMEOUT_MS, DEFAULT_TIMEOUT_MS),
    maxBytes: maxBodyBytes(env),
  };
}

/** What the loader builds a transform's isolate from. */
function workerCode(source: string, cpuMs: number): WorkerLoaderWorkerCode {
  return {
    compatibilityDate: COMPATIBILITY_DATE,
    mainModule: "runner.js",
    modules: { "runner.js": RUNNER, "guard.js": GUARD, "transform.js": source },
    globalOutbound: null,
    env: {},
    limits: { cpuMs },
  };
}

/** Per isolate: the loader's id for each purpose, destination, transform and the code built for it. */
const ids = new Map<string, Promise<string>>();

/**
 * A hash of the purpose, the destination, the transform's name and all the loader builds from:
 * new code, a new limit or a new runtime is a new isolate; destinations sharing a transform never
 * share one, nor do previews and deliveries.
 */
function codeId(purpose: TransformPurpose, destination: string, name: string, code: WorkerLoaderWorkerCode): Promise<string> {
  const made = JSON.stringify([purpose, destination, name, code]);
  let id = ids.get(made);
  if (!id) {
    id = sha256Hex(made).then((hex) => `transform:${name}:${hex}`);
    ids.set(made, id);
  }
  return id;
}

async function sha256Hex(text: string): Promise<string> {
  return bytesToHex(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text))));
}

/** Per isolate: each source's code hash. */
const codeHashes = new Map<string, Promise<string>>();

/** Which code made a forward's body, recorded with its attempt: the first 16 hex digits of the source's SHA-256. */
export function transformCodeHash(source: string): Promise<string> {
  let hash = codeHashes.get(source);
  if (!hash) {
    hash = sha256Hex(source).then((hex) => hex.slice(0, 16));
    codeHashes.set(source, hash);
  }
  return hash;
}

/**
 * A runner bound to this deployment's loader, transforms and limits, for one consumer batch (or
 * one preview). Each isolate's JavaScript runs one thing at a time, so concurrent runs would only
 * queue inside it: one isolate's runs go one after another here (each one's time limit is then
 * its own, not a wait behind the batch's other events), and at most 4 isolates run at once:
 * Cloudflare's limit of Dynamic Workers with requests in flight per invocation. A run's answer can
 * come before its slot is free: one that timed out keeps its slot until its request has ended.
 */
export function transformRunner(env: Env, purpose: TransformPurpose = "delivery"): TransformRunner {
  const limits = transformLimits(env);
  const slots = limiter(MAX_TRANSFORMS_IN_FLIGHT, 1);
  return async (destination, name, event) => {
    const source = transformSource(name);
    // The configuration check refuses both before a forward gets here (destinations.ts).
    if (!env.LOADER) return { outcome: "failed", kind: "transform_unavailable", message: "no Worker Loader binding (LOADER) to run it", durationMs: 0 };
    if (source === null) return { outcome: "failed", kind: "transform_unavailable", message: `transforms/${name}.js is not deployed`, durationMs: 0 };
    const loader = env.LOADER;
    return new Promise<TransformResult>((resolve, reject) => {
      slots(`${destination}\n${name}`, async () => {
        const run = await startTransform(loader, { purpose, destination, name, source }, event, limits);
        resolve(run.result);
        await run.ended;
      }).catch(reject);
    });
  };
}

/** One run of a destination's transform on an event: its answer, and when its request has ended. */
export async function runTransform(
  loader: WorkerLoader, spec: { destination: string; name: string; source: string; purpose?: TransformPurpose }, event: TransformEvent, limits: TransformLimits,
): Promise<TransformResult> {
  const run = await startTransform(loader, { purpose: "delivery", ...spec }, event, limits);
  await run.ended;
  return run.result;
}

/**
 * Starts a run in the isolate for its purpose, destination and code. Past TRANSFORM_TIMEOUT_MS its
 * request is aborted (the runtime then stops the run's pending work: a late fetch never happens)
 * and the answer is a timeout at once; `ended` resolves only when the request has settled, and
 * never rejects (a late failure is the timed-out run's, already answered).
 */
async function startTransform(
  loader: WorkerLoader, { purpose, destination, name, source }: { purpose: TransformPurpose; destination: string; name: string; source: string },
  event: TransformEvent, limits: TransformLimits,
): Promise<{ result: TransformResult; ended: Promise<void> }> {
  const file = `transforms/${name}.js`;
  // Before the clock starts: the event's JSON (up to a body's size) is the gateway's work, not the transform's.
  const input = JSON.stringify({ file, maxChars: limits.maxBytes, event });
  const code = workerCode(source, limits.cpuMs);
  const id = await codeId(purpose, destination, name, code);
  const started = Date.now();
  const fail = (kind: TransformFailure, message: string): TransformResult => ({ outcome: "failed", kind, message, durationMs: Date.now() - started });
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | null = null;
  const timedOut = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), limits.timeoutMs)));
  const request = (async () => {
    const worker = loader.get(id, () => code);
    const response = await worker.getEntrypoint().fetch("https://transform.invalid/", { method: "POST", body: input, signal: abort.signal });
    // Read only up to the limit: a transform's answer can be huge.
    const text = await readBoundedBody(response, limits.maxBytes, limits.timeoutMs).then(
      (bytes) => new TextDecoder().decode(bytes),
      (err: unknown) => {
        if (err instanceof HttpError && err.status === 413) return null;
        throw err;
      },
    );
    return { status: response.status, text };
  })();
  const ended = request.then(() => undefined, () => undefined);
  try {
    const answer = await Promise.race([request, timedOut]);
    if (answer === "timeout") {
      abort.abort();
      return { result: fail("transform_timeout", `${file} ran longer than ${limits.timeoutMs} ms`), ended };
    }
    return { result: readAnswer(answer, file, limits, started), ended };
  } catch (err) {
    // Thrown by the runtime, not the transform (the runner answers what the transform throws).
    const message = err instanceof Error ? err.message : "";
    if (CPU_EXCEEDED.has(message)) return { result: fail("transform_timeout", `${file} used more than ${limits.cpuMs} ms of CPU`), ended };
    if (MEMORY_EXCEEDED.has(message)) return { result: fail("transform_memory", `${file} ran out of memory`), ended };
    return { result: fail("transform_unavailable", `${file} could not run (${err instanceof Error ? err.name : "error"})`), ended };
  } finally {
    clearTimeout(timer);
  }
}

/** What the runner answered, checked again here: its isolate ran code we do not trust. */
function readAnswer({ status, text }: { status: number; text: string | null }, file: string, limits: TransformLimits, started: number): TransformResult {
  const durationMs = Date.now() - started;
  if (text === null) return { outcome: "failed", kind: "transform_too_large", message: `${file} returned more than ${limits.maxBytes} bytes`, durationMs };
  if (status === 204) return { outcome: "skip", durationMs };
  if (status === 200 && isJson(text)) return { outcome: "body", body: text, durationMs };
  if (status === 422) {
    const failure = parseFailure(text);
    if (failure) return { outcome: "failed", ...failure, durationMs };
  }
  return { outcome: "failed", kind: "transform_invalid_result", message: `${file} did not answer as a transform does`, durationMs };
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

function parseFailure(text: string): { kind: TransformFailure; message: string } | null {
  try {
    const value = JSON.parse(text) as { kind?: unknown; message?: unknown };
    const kind = TRANSFORM_FAILURES.find((k) => k === value.kind);
    // The runner builds the message from the file's name and an identifier; bounded all the same.
    return kind && typeof value.message === "string" ? { kind, message: value.message.slice(0, 300) } : null;
  } catch {
    return null;
  }
}

/** What a forward carries: the event's own body, or its transform's (and which code made it). */
export interface ForwardBody {
  contentType: string;
  body: string;
  /** transformCodeHash of the transform's source; null: the event's own body. */
  transformCode: string | null;
}

/** A passing fault of a delivery's transform: this attempt failed, without a forward, and is retried. */
export interface TransformFault {
  fault: { kind: TransformFailure; message: string; durationMs: number };
  transformCode: string | null;
}

/** The event as a transform sees it. */
export function transformEvent(event: EventRow): TransformEvent {
  return {
    provider: event.provider, source: sourceOf(event), type: event.type, eventId: event.event_id, tenant: event.tenant,
    occurredAt: event.occurred_at, receivedAt: new Date(event.received_at).toISOString(), payload: bodyJson(event.body)?.json ?? null,
  };
}

/**
 * The body to forward to a destination; or, when its transform skips the event, its delivery is
 * skipped ("transform"); when the transform's own answer is a failure, it is transform_failed with
 * the kind (the same code gives the same answer: a replay after a fix delivers it); and when a
 * passing fault stopped the run, this attempt failed (TransformFault).
 */
export async function forwardBody(event: EventRow, destination: Destination, run: TransformRunner): Promise<ForwardBody | TransformFault | ClosedDelivery> {
  if (!destination.transform) return { contentType: event.content_type, body: event.body, transformCode: null };
  const source = transformSource(destination.transform);
  const transformCode = source === null ? null : await transformCodeHash(source);
  const result = await run(destination.name, destination.transform, transformEvent(event));
  switch (result.outcome) {
    case "body":
      return { contentType: "application/json", body: result.body, transformCode };
    case "skip":
      return { destination: destination.name, status: "skipped", reason: "skipped: transform" };
    case "failed":
      if (PASSING_FAILURES.has(result.kind)) return { fault: { kind: result.kind, message: `${result.kind}: ${result.message}`, durationMs: result.durationMs }, transformCode };
      return { destination: destination.name, status: "transform_failed", reason: `${result.kind}: ${result.message}; replay once it is fixed`, kind: result.kind };
  }
}
