/**
 * The delivery-path test harness: downstream URLs mocked at the network edge with msw, both
 * queues captured so a test drives the consumer message by message, and the Worker's real
 * queue, fetch and scheduled handlers run against real D1 with bindings replaced.
 */
import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { http, HttpResponse } from "msw";
import { setupServer } from "msw/native";
import { afterAll, afterEach, beforeAll, beforeEach, expect } from "vitest";
import type { Env, QueuedEvent } from "../src/env";
import { recordingQueue } from "./faults";
import { ADMIN, handlers, runQueue, sendWith } from "./helpers";

export const SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
export const server = setupServer();

export interface Received {
  url: string;
  headers: Headers;
  body: string;
}

/** A downstream that answers each request with the next status in `statuses` (the last repeats). */
export function downstream(url: string, statuses: (number | [number, Record<string, string>])[] = [200]) {
  const received: Received[] = [];
  server.use(
    http.post(url, async ({ request }) => {
      // Decoded keeping a byte-order mark, so a test sees the bytes exactly as forwarded.
      const body = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true }).decode(await request.arrayBuffer());
      received.push({ url: request.url, headers: request.headers, body });
      const next = statuses[Math.min(received.length - 1, statuses.length - 1)]!;
      const [status, headers] = Array.isArray(next) ? next : [next, {}];
      return new HttpResponse(null, { status, headers });
    }),
  );
  return received;
}

export const DESTINATIONS = [
  { name: "alpha", url: "https://alpha.test/hook", secret: "DEST_ALPHA_SECRET" },
  { name: "beta", url: "https://beta.test/hook", providers: ["seismic"] },
  { name: "gamma", url: "https://gamma.test/hook", types: ["ContentManager*"] },
];

export let events: ReturnType<typeof recordingQueue<QueuedEvent>>;
export let deadLetters: ReturnType<typeof recordingQueue<QueuedEvent>>;
export let bindings: Partial<Env>;

/** Registers the harness's hooks in the calling test file. */
export function useDeliveryHarness(): void {
  beforeAll(() => server.listen({ onUnhandledRequest: "error" }));
  afterEach(() => server.resetHandlers());
  afterAll(() => server.close());
  beforeEach(() => {
    // Capture both queues: these tests drive the consumer themselves, message by message.
    events = recordingQueue();
    deadLetters = recordingQueue();
    bindings = { DESTINATIONS, DEST_ALPHA_SECRET: SECRET_A, EVENTS_QUEUE: events.queue, DEAD_LETTER_QUEUE: deadLetters.queue, MAX_DELIVERY_ATTEMPTS: "3" };
  });
}

export async function accept(request: Request): Promise<string> {
  const response = await sendWith(request, bindings);
  expect(response.status).toBe(200);
  return ((await response.json()) as { id: string }).id;
}

/**
 * Runs the Worker's queue handler on these messages and reports what it acked and retried. A
 * message's id is its position (`msg-0`, …), so passing the same list again redelivers the same
 * messages; `ids` names them otherwise (copies of one event are different messages).
 */
export async function consume(
  messages: QueuedEvent[], extra: Partial<Env> = {}, { queue = "edgehook-events", ids, attempts }: { queue?: string; ids?: string[]; attempts?: number } = {},
) {
  return runQueue(queue, messages.map((body, i) => ({ id: ids?.[i] ?? `msg-${i}`, body, attempts })), { ...bindings, ...extra });
}

export async function deliveries(key: string) {
  const { results } = await env.DB.prepare("SELECT * FROM deliveries WHERE event_key = ? ORDER BY destination").bind(key).all<Record<string, unknown>>();
  return Object.fromEntries(results.map((r) => [r.destination as string, r]));
}

/** Moves every scheduled retry of an event into the past, as waiting would. */
export async function makeDue(key: string) {
  await env.DB.prepare("UPDATE deliveries SET next_attempt_at = 0 WHERE event_key = ? AND next_attempt_at IS NOT NULL").bind(key).run();
}

export async function admin(method: string, path: string, extra: Partial<Env> = {}) {
  return sendWith(new Request(`https://edgehook.test${path}`, { method, headers: ADMIN }), { ...bindings, ...extra });
}

/** Runs the Worker's cron handler as if it fired at `at`. */
export async function runCron(at: Date, extra: Partial<Env> = {}): Promise<void> {
  const ctx = createExecutionContext();
  await handlers.scheduled!(createScheduledController({ scheduledTime: at, cron: "*/5 * * * *" }), { ...env, ...bindings, ...extra } as Env, ctx);
  await waitOnExecutionContext(ctx);
}

/**
 * A downstream whose first request waits until the test calls `finish` (`started` resolves once
 * it is waiting), answered `first`; later requests get `later` at once. Counts every request.
 */
export function heldDownstream(url: string, first: number, later = 200) {
  let started!: () => void;
  const waiting = new Promise<void>((resolve) => (started = resolve));
  let finish!: () => void;
  const gate = new Promise<void>((resolve) => (finish = resolve));
  const state = { calls: 0, waiting, finish: () => finish() };
  server.use(
    http.post(url, async () => {
      if (++state.calls > 1) return new HttpResponse(null, { status: later });
      started();
      await gate;
      return new HttpResponse(null, { status: first });
    }),
  );
  return state;
}
