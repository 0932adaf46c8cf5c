/** Test helpers: sign like the providers do, and call the Worker's real handlers. */
import { createExecutionContext, createMessageBatch, getQueueResult, waitOnExecutionContext } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { afterEach, beforeEach, expect, vi, type MockInstance } from "vitest";
import worker from "../src/index";
import type { Env, QueuedEvent } from "../src/env";
import { readBodies, type BodyHolder } from "../src/store/bodies";
import { recordAdmin } from "./api-contract";
import { recordingQueue } from "./faults";

/** The entry point as the runtime sees it (our handlers ignore the execution context). */
export const handlers: ExportedHandler<Env, QueuedEvent> = worker;

export const ADMIN = { authorization: `Bearer ${env.ADMIN_TOKEN}` };

/** Hex HMAC-SHA256, computed here independently of src/receive/signature.ts. */
export async function hmacHex(secret: string, body: string | Uint8Array): Promise<string> {
  const enc = new TextEncoder();
  const key = await crypto.subtle.importKey("raw", enc.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await crypto.subtle.sign("HMAC", key, typeof body === "string" ? enc.encode(body) : body);
  return [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

let counter = 0;
/** A unique id per call, so tests sharing one D1 never collide. */
export const uniqueId = (prefix = "evt") => `${prefix}-${Date.now().toString(36)}-${(counter++).toString(36)}-${crypto.randomUUID()}`;

export function seismicBody(overrides: Record<string, unknown> = {}): string {
  return JSON.stringify({
    id: uniqueId("seismic"),
    version: "ContentManagerCreateFileV1",
    occurredAt: "2024-03-31T09:13:57.948Z",
    tenantId: "234b9f0d-853d-4210-b5d2-b0574e003fcc",
    tenantName: "demo",
    application: "DemoService",
    productArea: "Demo",
    data: { contentId: "foo", teamSiteId: "1" },
    ...overrides,
  });
}

export function zuddlBody(overrides: Record<string, unknown> = {}): string {
  return JSON.stringify({
    action: "TIME_SPENT_IN_SESSION",
    actionId: uniqueId("zuddl"),
    actor: { id: "h212a64f", type: "USER" },
    actionCreatedAt: "2023-10-01T12:00:00Z",
    event: { id: "3c90c3cc", organizationId: "org-1", name: "Huddle" },
    session: { id: "d5e31ba5", title: "Session 1" },
    timeSpentInMinutes: 123,
    ...overrides,
  });
}

export function webhookRequest(provider: string, body: BodyInit, headers: Record<string, string> = {}): Request {
  return new Request(`https://edgehook.test/webhooks/${provider}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
  });
}

/** A Seismic delivery signed with the current secret (or the headers given). */
export async function seismicRequest(body: string, headers?: Record<string, string>): Promise<Request> {
  return webhookRequest("seismic", body, headers ?? { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, body) });
}

export async function zuddlRequest(body: string, headers?: Record<string, string>): Promise<Request> {
  return webhookRequest("zuddl", body, headers ?? { "x-webhook-signature": `sha256=${await hmacHex(env.ZUDDL_SIGNING_SECRET!, body)}` });
}

/** A Seismic-looking POST whose body is a stream (no Content-Length), with a well-formed, wrong signature. */
export function streamingRequest(body: ReadableStream<Uint8Array>): Request {
  return new Request("https://edgehook.test/webhooks/seismic", {
    method: "POST",
    headers: { "content-type": "application/json", "x-seismic-signature": "0".repeat(64) },
    body,
    duplex: "half",
  } as RequestInit);
}

/** Through the deployed entry point, with the test environment's real bindings. Admin answers are checked against the API's description. */
export async function send(request: Request): Promise<Response> {
  return recordAdmin(request, await exports.default.fetch(request));
}

/** Through the same handler with bindings replaced (faults, other secrets, other limits). */
export async function sendWith(request: Request, bindings: Partial<Env>): Promise<Response> {
  const ctx = createExecutionContext();
  const response = await worker.fetch(request, { ...env, ...bindings } as Env, ctx);
  await waitOnExecutionContext(ctx);
  return recordAdmin(request, response);
}

/** A message as the queue hands it to the consumer: the same id on every redelivery. */
export interface Delivered {
  id: string;
  body: QueuedEvent;
  attempts?: number;
}

/** Runs the Worker's queue handler on these messages and reports what it acked and retried. */
export async function runQueue(queue: string, messages: Delivered[], bindings: Partial<Env> = {}) {
  const batch = createMessageBatch<QueuedEvent>(
    queue,
    messages.map(({ id, body, attempts = 1 }) => ({ id, timestamp: new Date(), attempts, body })),
  );
  const ctx = createExecutionContext();
  await handlers.queue!(batch, { ...env, ...bindings } as Env, ctx);
  const result = await getQueueResult(batch, ctx);
  return { acked: result.explicitAcks, retried: result.retryMessages, ackAll: result.ackAll, retryBatch: result.retryBatch };
}

/**
 * Through the fetch handler, then the queue handler on what it enqueued, so the event is stored
 * (and delivered) when this returns rather than after the queue's batch window.
 */
export async function sendAndConsume(request: Request, bindings: Partial<Env> = {}): Promise<Response> {
  const events = recordingQueue<QueuedEvent>();
  const response = await sendWith(request, { ...bindings, EVENTS_QUEUE: events.queue });
  await consumeAll(events.accepted, bindings);
  return response;
}

/** Runs the consumer on messages a test captured, each under a fresh message id. */
export async function consumeAll(bodies: QueuedEvent[], bindings: Partial<Env> = {}) {
  return runQueue("edgehook-events", bodies.map((body) => ({ id: crypto.randomUUID(), body })), bindings);
}

export async function errorOf(response: Response): Promise<{ code: string; message: string; path?: string }> {
  const body = (await response.json()) as { error: { code: string; message: string; path?: string } };
  return body.error;
}

export async function adminGet<T>(path: string): Promise<T> {
  const response = await send(new Request(`https://edgehook.test${path}`, { headers: ADMIN }));
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return (await response.json()) as T;
}

/**
 * An event's row as D1 has it, with its body read from R2 where it is kept there (as the Worker
 * reads it, its own object or its segment): a test of what was stored sees the bytes that were signed, wherever they are.
 */
export async function storedEvent(key: string): Promise<Record<string, unknown> | null> {
  const row = await env.DB.prepare("SELECT * FROM events WHERE key = ?").bind(key).first<BodyHolder & Record<string, unknown>>();
  // A body R2 has no object for stays as D1 has it ('').
  if (row) await readBodies(env.BODIES, [row]);
  return row;
}

/** The quarantine row kept for these bytes (found by their SHA-256, as the Worker keys it), with the bytes from R2 where they are kept. */
export async function quarantinedRow(body: string | Uint8Array): Promise<{ id: number; reason: string; provider: string; body: Uint8Array; body_in_r2: number } | null> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", typeof body === "string" ? new TextEncoder().encode(body) : body));
  const sha = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
  const row = await env.DB.prepare("SELECT id, reason, provider, body, body_in_r2 FROM quarantine WHERE body_sha256 = ?").bind(sha).first<{ id: number; reason: string; provider: string; body: ArrayBuffer; body_in_r2: number }>();
  if (!row) return null;
  const bytes = row.body_in_r2 ? await (await env.BODIES.get(`quarantine/${row.provider}/${sha}`))!.arrayBuffer() : row.body;
  return { ...row, body: new Uint8Array(bytes) };
}

export async function countRows(sql: string, ...params: unknown[]): Promise<number> {
  const row = await env.DB.prepare(sql).bind(...params).first<{ n: number }>();
  return row?.n ?? 0;
}

/**
 * Registers hooks that fail a test in which the Worker logged a line containing `text` (a
 * secret's stand-in). Returns what the running test has logged so far.
 */
export function expectNoLogLineWith(text: string): () => string[] {
  let logged: MockInstance[] = [];
  // Every line the Worker logged during the test: the request log, the consumer's error line.
  const lines = () => logged.flatMap((spy) => spy.mock.calls.map((args) => args.map(String).join(" ")));
  beforeEach(() => {
    logged = [vi.spyOn(console, "log"), vi.spyOn(console, "error"), vi.spyOn(console, "warn")];
  });
  afterEach(() => {
    const written = lines();
    vi.restoreAllMocks();
    for (const line of written) expect(line).not.toContain(text);
  });
  return lines;
}
