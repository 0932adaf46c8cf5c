/**
 * Transforms through the real consumer: each runs in a Worker Loader isolate (the vitest pool's
 * own loader), the forward carries what it returns and is signed over that, null skips, and every
 * way a transform can fail stops that one delivery with its kind, never another destination or
 * event, counted and alerted. The hostile ones live in test/fixtures/transforms (vitest.config.ts).
 */
import { env } from "cloudflare:workers";
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import type { AlertMessage } from "../src/env";
import { runTransform, transformRunner, type TransformEvent } from "../src/deliver/transform";
import { transformSource } from "../src/deliver/transform-source";
import { recordingQueue, sleep } from "./faults";
import { accept, admin, bindings, consume, deliveries, downstream, events, makeDue, SECRET_A, useDeliveryHarness } from "./delivery-harness";
import { ADMIN, expectNoLogLineWith, seismicBody, seismicRequest, sendWith, storedEvent, zuddlBody, zuddlRequest } from "./helpers";
import zuddlSample from "./fixtures/zuddl-time-spent-in-session.json";
import livesendSample from "./fixtures/seismic-livesend-session-summary-v3.json";

useDeliveryHarness();
const PAYLOAD_CANARY = "payload-canary-7f3a9e";
const logged = expectNoLogLineWith(PAYLOAD_CANARY);

const unique = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;

/** A destination per transform (plus one without), each at its own URL. */
function destinations(transforms: (string | null)[]) {
  return transforms.map((transform) => {
    const name = unique(transform ?? "plain");
    return { name, url: `https://${name}.test/hook`, secret: "DEST_ALPHA_SECRET", ...(transform && { transform }) };
  });
}

async function metrics(): Promise<string> {
  return (await admin("GET", "/admin/metrics")).text();
}

describe("transforms", () => {
  it("forwards the transformed body, signed over it, and the stored event is unchanged", async () => {
    const [echo, plain] = destinations(["test-echo", null]);
    bindings.DESTINATIONS = [echo, plain];
    const echoed = downstream(echo!.url);
    const original = downstream(plain!.url);
    const body = seismicBody({ data: { contentId: "c-1", teamSiteId: "1" } });
    const key = await accept(await seismicRequest(body));
    await consume(events.accepted);

    expect(original[0]!.body).toBe(body);
    const forwarded = echoed[0]!;
    expect(forwarded.headers.get("content-type")).toBe("application/json");
    const verified = new Webhook(SECRET_A).verify(forwarded.body, Object.fromEntries(forwarded.headers)) as Record<string, unknown>;
    const sent = JSON.parse(body) as { id: string; tenantId: string; occurredAt: string };
    expect(verified).toEqual({
      seen: {
        provider: "seismic", source: "seismic", type: "ContentManagerCreateFileV1", eventId: sent.id, tenant: sent.tenantId,
        occurredAt: sent.occurredAt, receivedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      },
      payload: JSON.parse(body),
    });
    expect(forwarded.headers.get("webhook-id")).toBe(key);
    // The signature covers the transformed body, not the original.
    expect(() => new Webhook(SECRET_A).verify(body, Object.fromEntries(forwarded.headers))).toThrow();
    expect((await storedEvent(key))?.body).toBe(body);
    expect(await deliveries(key)).toMatchObject({ [echo!.name]: { status: "delivered" }, [plain!.name]: { status: "delivered" } });
  });

  it("skips a destination whose transform returns null, with the reason transform", async () => {
    const [skip, plain] = destinations(["test-skip", null]);
    bindings.DESTINATIONS = [skip, plain];
    const skipped = downstream(skip!.url);
    downstream(plain!.url);
    const key = await accept(await seismicRequest(seismicBody()));
    const result = await consume(events.accepted);
    expect(result.acked).toEqual(["msg-0"]);
    expect(skipped).toHaveLength(0);
    expect(await deliveries(key)).toMatchObject({ [skip!.name]: { status: "skipped", last_error: "skipped: transform" }, [plain!.name]: { status: "delivered" } });
    const event = (await (await admin("GET", `/admin/events/${key}`)).json()) as { event: { status: string } };
    expect(event.event.status).toBe("delivered");
  });

  it.each([
    ["test-throws", "transform_error", /^transform_error: transforms\/test-throws\.js threw TypeError at transforms\/test-throws\.js:3:\d+; replay once it is fixed$/],
    ["test-load-cpu", "transform_error", /^transform_error: transforms\/test-load-cpu\.js threw Error at transforms\/test-load-cpu\.js:3:\d+ while it loaded; replay once it is fixed$/],
    ["test-huge", "transform_too_large", /^transform_too_large: transforms\/test-huge\.js returned more than 1048576 bytes/],
    ["test-fetch", "transform_network", /^transform_network: transforms\/test-fetch\.js tried to reach the network/],
    ["test-undefined", "transform_invalid_result", /^transform_invalid_result: transforms\/test-undefined\.js returned undefined/],
    ["test-bigint", "transform_invalid_result", /^transform_invalid_result: transforms\/test-bigint\.js returned a value that is not JSON \(TypeError\)/],
    ["test-no-default", "transform_invalid_result", /^transform_invalid_result: transforms\/test-no-default\.js has no default export function/],
  ])("%s stops only its own delivery, as %s, quoting no payload; not retried, counted, alerted once", async (transform, kind, message) => {
    const alerts = recordingQueue<AlertMessage>();
    const [failing, echo, plain] = destinations([transform, "test-echo", null]);
    Object.assign(bindings, { DESTINATIONS: [failing, echo, plain], ALERT_URL: "https://alerts.test/hook", ALERTS_QUEUE: alerts.queue });
    const reached = downstream(failing!.url);
    const echoed = downstream(echo!.url);
    const original = downstream(plain!.url);
    // Two events in one batch: neither the other destinations nor the other event notice.
    const keys = [
      await accept(await seismicRequest(seismicBody({ data: { note: PAYLOAD_CANARY } }))),
      await accept(await zuddlRequest(zuddlBody({ note: PAYLOAD_CANARY }))),
    ];
    const result = await consume(events.accepted);
    expect(result.acked.sort()).toEqual(["msg-0", "msg-1"]);
    expect(result.retried).toEqual([]);
    expect(reached).toHaveLength(0);
    expect(echoed).toHaveLength(2);
    expect(original).toHaveLength(2);
    for (const key of keys) {
      const rows = await deliveries(key);
      expect(rows[failing!.name]).toMatchObject({ status: "transform_failed", attempts: 0, next_attempt_at: null });
      expect(rows[failing!.name]!.last_error).toMatch(message);
      expect(String(rows[failing!.name]!.last_error)).not.toContain(PAYLOAD_CANARY);
      expect(rows[echo!.name]).toMatchObject({ status: "delivered" });
      expect(rows[plain!.name]).toMatchObject({ status: "delivered" });
    }
    // Not retried: a redelivery of the messages forwards nothing more to it.
    await consume(events.accepted);
    expect(reached).toHaveLength(0);
    const scraped = await metrics();
    expect(scraped).toContain(`edgehook_transform_failures_total{destination="${failing!.name}",kind="${kind}"} 2`);
    expect(Number(/^edgehook_transform_failed (\d+)$/m.exec(scraped)![1])).toBeGreaterThanOrEqual(2);
    // One alert for the destination, whatever the count (the rest wait for the cooldown).
    expect(alerts.accepted.filter((m) => m.alert.subject === failing!.name)).toEqual([{ alert: { kind: "transform_failed", subject: failing!.name }, due: expect.any(Number) }]);
    const view = (await (await admin("GET", `/admin/deliveries?destination=${failing!.name}`)).json()) as { deliveries: { status: string; lastError: string }[] };
    expect(view.deliveries.map((d) => d.status)).toEqual(["transform_failed", "transform_failed"]);
    expect(JSON.stringify(view)).not.toContain(PAYLOAD_CANARY);
    expect(logged().join("\n")).toContain("transform_failed");
  });

  it("a transform that tampers with its globals harms only its own answer", async () => {
    const [tamper, echo] = destinations(["test-tamper", "test-echo"]);
    bindings.DESTINATIONS = [tamper, echo];
    const tampered = downstream(tamper!.url);
    const echoed = downstream(echo!.url);
    const key = await accept(await seismicRequest(seismicBody()));
    await consume(events.accepted.splice(0));
    // Its isolate keeps what it broke (same code, same isolate), and the next run is unharmed.
    await accept(await zuddlRequest(zuddlBody()));
    await consume(events.accepted.splice(0));
    // Its replaced JSON and Response are not the runner's: what it returned is forwarded as JSON.
    expect(tampered.map((r) => JSON.parse(r.body) as unknown)).toEqual([{ tampered: "ContentManagerCreateFileV1" }, { tampered: "TIME_SPENT_IN_SESSION" }]);
    expect(echoed).toHaveLength(2);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(await deliveries(key)).toMatchObject({ [tamper!.name]: { status: "delivered" }, [echo!.name]: { status: "delivered" } });
  });

  it.each([
    ["test-hide-fetch", "through the runner's guard module or the global's prototype"],
    ["test-fetch-outside", "from code it started at load, outside the run"],
    ["test-fetch-tojson", "while its result is serialised"],
  ])("%s cannot hide a fetch %s", async (transform) => {
    const [hiding, echo] = destinations([transform, "test-echo"]);
    bindings.DESTINATIONS = [hiding, echo];
    const reached = downstream(hiding!.url);
    downstream(echo!.url);
    const key = await accept(await seismicRequest(seismicBody({ data: { note: PAYLOAD_CANARY } })));
    await consume(events.accepted);
    expect(reached).toHaveLength(0);
    const rows = await deliveries(key);
    expect(rows[hiding!.name]).toMatchObject({ status: "transform_failed" });
    expect(rows[hiding!.name]!.last_error).toMatch(/^transform_network: /);
    expect(rows[echo!.name]).toMatchObject({ status: "delivered" });
  });

  it("a transform that replaces what the runner reads a run with still gets each event, not a stale one", async () => {
    const [poison] = destinations(["test-poison-request"]);
    bindings.DESTINATIONS = [poison];
    const forwarded = downstream(poison!.url);
    await accept(await seismicRequest(seismicBody()));
    await consume(events.accepted.splice(0));
    await accept(await zuddlRequest(zuddlBody()));
    await consume(events.accepted.splice(0));
    expect(forwarded.map((r) => JSON.parse(r.body) as unknown)).toEqual([{ type: "ContentManagerCreateFileV1" }, { type: "TIME_SPENT_IN_SESSION" }]);
  });

  it("runs one transform one event at a time, so a run's time limit is its own, never a queue behind the batch's other events; each destination in an isolate of its own", async () => {
    const [first, second] = destinations(["test-concurrency", "test-concurrency"]);
    bindings.DESTINATIONS = [first, second];
    const forwarded = [downstream(first!.url), downstream(second!.url)];
    for (let i = 0; i < 5; i++) await accept(await seismicRequest(seismicBody()));
    const result = await consume(events.accepted);
    expect(result.acked).toHaveLength(5);
    for (const received of forwarded) {
      const answers = received.map((r) => JSON.parse(r.body) as { most: number; seen: number });
      expect(answers.map((a) => a.most)).toEqual([1, 1, 1, 1, 1]);
      // Two destinations naming one transform never share an isolate (nor what a run leaves in it).
      expect(answers.map((a) => a.seen).sort()).toEqual([1, 2, 3, 4, 5]);
    }
  });

  it("a replay after the fix delivers a transform_failed delivery", async () => {
    const [failing] = destinations(["test-throws"]);
    bindings.DESTINATIONS = [failing];
    const reached = downstream(failing!.url);
    const key = await accept(await seismicRequest(seismicBody()));
    await consume(events.accepted);
    expect((await deliveries(key))[failing!.name]).toMatchObject({ status: "transform_failed" });
    const event = (await (await admin("GET", `/admin/events/${key}`)).json()) as { event: { status: string } };
    expect(event.event.status).toBe("dead");

    // The fix: same destination, now with a transform that works.
    bindings.DESTINATIONS = [{ ...failing!, transform: "test-echo" }];
    events.accepted.splice(0);
    const replay = await admin("POST", `/admin/replay?status=transform_failed&destination=${failing!.name}`);
    expect(await replay.json()).toMatchObject({ replayed: 1 });
    await consume(events.accepted);
    expect(reached).toHaveLength(1);
    expect((await deliveries(key))[failing!.name]).toMatchObject({ status: "delivered" });
  });

  it("the README's examples: a flat CRM contact from Zuddl, one chat line from a Seismic LiveSend summary", async () => {
    const [crm, chat] = destinations(["crm-contact", "chat-line"]);
    bindings.DESTINATIONS = [crm, chat];
    const contacts = downstream(crm!.url);
    const lines = downstream(chat!.url);
    await accept(await zuddlRequest(JSON.stringify(zuddlSample)));
    await accept(await seismicRequest(JSON.stringify(livesendSample)));
    await consume(events.accepted);
    expect(contacts.map((r) => JSON.parse(r.body) as unknown)).toEqual([
      {
        email: "jane.smith@example.com", first_name: "Jane", last_name: "Smith", company: "Zuddl", job_title: "Senior Software Engineer",
        country: "United States", phone: "+1-2125551234", event_name: "Huddle with zuddl.", session_title: "Session 1", minutes_in_session: 123,
        source_event_id: "a912a64f-8865-4289-9024-9a120792c3d8", occurred_at: "2023-10-01T12:00:00Z",
      },
    ]);
    expect(lines.map((r) => JSON.parse(r.body) as unknown)).toEqual([
      { text: "[email protected] viewed Demo Content for 16 min 6 s from Charlotte, United States (LiveSend, 0 of 1 viewed)" },
    ]);
  });
});

describe("transform configuration", () => {
  it("a transform that names no file is an error naming field and rule", async () => {
    const name = unique("missing");
    const config = { DESTINATIONS: [{ name, url: "https://missing.test/hook", transform: "no-such-transform" }] };
    const view = (await (await admin("GET", "/admin/destinations", config)).json()) as { valid: boolean; errors: string[] };
    expect(view).toEqual({
      valid: false,
      errors: [`DESTINATIONS[0] (${name}).transform: names no file in transforms/ (each transform is transforms/<name>.js, deployed with the Worker)`],
    });
    const health = await sendWith(new Request("https://edgehook.test/healthz"), config);
    expect(health.status).toBe(503);
    // Everything that acts on DESTINATIONS refuses it the same way: a replay is not accepted only to be held.
    const replay = await admin("POST", "/admin/replay?status=transform_failed", config);
    expect(replay.status).toBe(503);
    expect(await replay.json()).toMatchObject({ error: { code: "invalid_destinations" } });
    const preview = await sendWith(new Request(`https://edgehook.test/admin/destinations/${name}/preview`, {
      method: "POST", headers: { ...ADMIN, "content-type": "application/json" }, body: JSON.stringify({ provider: "zuddl", payload: zuddlSample }),
    }), config);
    expect(preview.status).toBe(503);
  });

  it("a transform without the LOADER binding is an error; destinations without one work as before", async () => {
    const [withTransform, plain] = destinations(["test-echo", null]);
    const view = (await (await admin("GET", "/admin/destinations", { DESTINATIONS: [withTransform], LOADER: undefined })).json()) as { errors: string[] };
    expect(view.errors).toEqual([
      `DESTINATIONS[0] (${withTransform!.name}).transform: needs the LOADER Worker Loader binding (wrangler.toml [[worker_loaders]]; a plan with Dynamic Workers)`,
    ]);
    bindings.DESTINATIONS = [plain];
    const received = downstream(plain!.url);
    const body = seismicBody();
    await accept(await seismicRequest(body));
    await consume(events.accepted, { LOADER: undefined });
    expect(received.map((r) => r.body)).toEqual([body]);
  });

  it("a name that could be a path is refused by the rule, not looked up", async () => {
    const view = (await (await admin("GET", "/admin/destinations", { DESTINATIONS: [{ name: "x", url: "https://x.test/hook", transform: "../src/index" }] })).json()) as { errors: string[] };
    expect(view.errors).toEqual(["DESTINATIONS[0] (x).transform: must name a file in transforms/ without .js: 1-64 lowercase letters, digits, - or _"]);
  });
});

describe("transform preview", () => {
  async function preview(name: string, body: unknown) {
    return sendWith(
      new Request(`https://edgehook.test/admin/destinations/${name}/preview`, { method: "POST", headers: { ...ADMIN, "content-type": "application/json" }, body: JSON.stringify(body) }),
      bindings,
    );
  }

  it("answers the transformed body of a stored event, or of a pasted payload, and forwards nothing", async () => {
    const [crm] = destinations(["crm-contact"]);
    bindings.DESTINATIONS = [crm];
    const reached = downstream(crm!.url);
    const key = await accept(await zuddlRequest(JSON.stringify(zuddlSample)));
    await consume(events.accepted.splice(0), { DESTINATIONS: [] });

    const stored = await preview(crm!.name, { eventId: key });
    expect(stored.status).toBe(200);
    expect(await stored.json()).toMatchObject({
      destination: crm!.name, transform: "crm-contact", eventId: key, outcome: "body", body: { email: "jane.smith@example.com", minutes_in_session: 123 },
    });
    const pasted = await preview(crm!.name, { provider: "zuddl", payload: zuddlSample });
    expect(await pasted.json()).toMatchObject({ eventId: null, outcome: "body", body: { source_event_id: zuddlSample.actionId } });
    const skipped = await preview(crm!.name, { provider: "seismic", payload: livesendSample });
    expect(await skipped.json()).toMatchObject({ outcome: "skipped" });
    expect(reached).toHaveLength(0);
  });

  it("runs in an isolate of its own: nothing a preview leaves there reaches the deliveries' runs", async () => {
    const [counting] = destinations(["test-concurrency"]);
    bindings.DESTINATIONS = [counting];
    const forwarded = downstream(counting!.url);
    const previewed = await preview(counting!.name, { provider: "zuddl", payload: zuddlSample });
    expect(await previewed.json()).toMatchObject({ outcome: "body", body: { seen: 1 } });
    await accept(await seismicRequest(seismicBody()));
    await consume(events.accepted);
    // The delivery's isolate has seen only its own run.
    expect(forwarded.map((r) => (JSON.parse(r.body) as { seen: number }).seen)).toEqual([1]);
  });

  it("answers a failure with its kind, never the payload; and refuses what it cannot preview", async () => {
    const [failing, plain] = destinations(["test-throws", null]);
    bindings.DESTINATIONS = [failing, plain];
    const failed = await preview(failing!.name, { provider: "zuddl", payload: { ...zuddlSample, note: PAYLOAD_CANARY } });
    const text = await failed.text();
    expect(JSON.parse(text)).toMatchObject({ outcome: "failed", error: { kind: "transform_error", message: expect.stringMatching(/threw TypeError at transforms\/test-throws\.js:3:/) } });
    expect(text).not.toContain(PAYLOAD_CANARY);

    expect((await preview(plain!.name, { eventId: "evt_x" })).status).toBe(400);
    expect((await preview("nobody", { eventId: "evt_x" })).status).toBe(404);
    expect((await preview(failing!.name, { eventId: "evt_missing" })).status).toBe(404);
    expect((await preview(failing!.name, { something: "else" })).status).toBe(400);
    const mismatch = await preview(failing!.name, { provider: "zuddl", payload: { action: 7 } });
    expect(mismatch.status).toBe(422);
  });
});

/** What a transform sees, for the runner's own tests. */
const anEvent: TransformEvent = {
  provider: "seismic", source: "seismic", type: "t", eventId: "e", tenant: null, occurredAt: null, receivedAt: new Date(0).toISOString(), payload: null,
};

/**
 * A stand-in for the platform's Worker Loader (the outside world here): each run's request is
 * answered by `answer`, and the loader counts the requests in flight at once, across isolates.
 */
function fakeLoader(answer: (signal: AbortSignal | null | undefined) => Promise<Response>) {
  const counts = { inFlight: 0, most: 0 };
  const entrypoint = {
    async fetch(_url: string, init?: RequestInit) {
      counts.inFlight++;
      counts.most = Math.max(counts.most, counts.inFlight);
      try {
        return await answer(init?.signal);
      } finally {
        counts.inFlight--;
      }
    },
  };
  const loader = { get: () => ({ getEntrypoint: () => entrypoint }), load: () => ({ getEntrypoint: () => entrypoint }) } as unknown as WorkerLoader;
  return { loader, counts };
}

describe("a passing fault is a failed attempt, not a verdict", () => {
  it("a run past TRANSFORM_TIMEOUT_MS is retried with backoff, counted as an attempt, recorded with its kind, and dead after the last attempt", async () => {
    const [slow, echo] = destinations(["test-slow", "test-echo"]);
    bindings.DESTINATIONS = [slow, echo];
    const reached = downstream(slow!.url);
    downstream(echo!.url);
    const key = await accept(await seismicRequest(seismicBody()));
    const first = await consume(events.accepted);
    expect(first.retried).toEqual([{ msgId: "msg-0" }]);
    const rows = await deliveries(key);
    expect(rows[slow!.name]).toMatchObject({ status: "failed", attempts: 1 });
    expect(rows[slow!.name]!.next_attempt_at).toBeGreaterThan(Date.now());
    expect(rows[slow!.name]!.last_error).toMatch(/^transform_timeout: transforms\/test-slow\.js ran longer than 100 ms$/);
    expect(rows[echo!.name]).toMatchObject({ status: "delivered" });
    const { event: view } = (await (await admin("GET", `/admin/events/${key}`)).json()) as { event: { status: string; deliveries: { destination: string; history: { error: string | null }[] }[] } };
    expect(view.status).toBe("failed");
    expect(view.deliveries.find((d) => d.destination === slow!.name)!.history.map((h) => h.error)).toEqual([expect.stringMatching(/^transform_timeout: /)]);
    expect(await metrics()).toContain(`edgehook_transform_failures_total{destination="${slow!.name}",kind="transform_timeout"} 1`);

    // MAX_DELIVERY_ATTEMPTS is 3 in the harness: two more rounds, then dead (never transform_failed).
    for (let round = 2; round <= 3; round++) {
      await makeDue(key);
      await consume(events.accepted);
    }
    expect((await deliveries(key))[slow!.name]).toMatchObject({ status: "dead", attempts: 3 });
    expect(reached).toHaveLength(0);
    // Not the destination's failure: its circuit never counted these.
    const control = await env.DB.prepare("SELECT failures FROM destination_state WHERE destination = ?").bind(slow!.name).first<{ failures: number }>();
    expect(control?.failures ?? 0).toBe(0);
  });

  it("a loader that cannot run the transform is a failed attempt, kind transform_unavailable", async () => {
    const [echo] = destinations(["test-echo"]);
    bindings.DESTINATIONS = [echo];
    const reached = downstream(echo!.url);
    const { loader } = fakeLoader(() => Promise.reject(new Error("Network connection lost.")));
    const key = await accept(await seismicRequest(seismicBody()));
    const result = await consume(events.accepted, { LOADER: loader });
    expect(result.retried).toEqual([{ msgId: "msg-0" }]);
    const row = (await deliveries(key))[echo!.name]!;
    expect(row).toMatchObject({ status: "failed", attempts: 1 });
    expect(row.last_error).toBe("transform_unavailable: transforms/test-echo.js could not run (Error)");
    // Once the loader is back, the retry delivers it.
    await makeDue(key);
    await consume(events.accepted);
    expect(reached).toHaveLength(1);
    expect((await deliveries(key))[echo!.name]).toMatchObject({ status: "delivered", attempts: 2 });
  });

  it("reads the runtime's own CPU and memory errors; text a transform could write is never a resource failure", async () => {
    const limits = { cpuMs: 50, timeoutMs: 1000, maxBytes: 1000 };
    const kindOf = async (message: string) => {
      const { loader } = fakeLoader(() => Promise.reject(new Error(message)));
      return runTransform(loader, { destination: "d", name: "x", source: "export default () => null;" }, anEvent, limits);
    };
    expect(await kindOf("Worker exceeded CPU time limit.")).toMatchObject({ kind: "transform_timeout", message: "transforms/x.js used more than 50 ms of CPU" });
    expect(await kindOf("Worker has exceeded memory limit.")).toMatchObject({ kind: "transform_memory", message: "transforms/x.js ran out of memory" });
    expect(await kindOf("Worker exceeded memory limit.")).toMatchObject({ kind: "transform_memory" });
    for (const lookalike of ["cpu", "out of memory", "my CPU time limit"]) {
      expect(await kindOf(lookalike)).toMatchObject({ kind: "transform_unavailable", message: "transforms/x.js could not run (Error)" });
    }
  });

  it("stops a run at its time limit, so what it does late never fails the next run of its isolate", async () => {
    const [late] = destinations(["test-late"]);
    bindings.DESTINATIONS = [late];
    const forwarded = downstream(late!.url);
    // The first outlives the 300 ms limit and fetches at 450 ms, while the second (250 ms) would be in flight.
    const slow = await accept(await seismicRequest(seismicBody({ data: { waitMs: 450, fetchLate: true } })));
    const next = await accept(await seismicRequest(seismicBody({ data: { waitMs: 250 } })));
    await consume(events.accepted, { TRANSFORM_TIMEOUT_MS: "300" });
    expect((await deliveries(slow))[late!.name]).toMatchObject({ status: "failed" });
    expect((await deliveries(next))[late!.name]).toMatchObject({ status: "delivered" });
    expect(forwarded.map((r) => JSON.parse(r.body) as unknown)).toEqual([{ waited: 250 }]);
  });

  it("keeps a timed-out run's slot until the run has ended: never more than 4 isolates in flight", async () => {
    // Runs that ignore the abort and end 200 ms later (and one rejects): their slots stay taken until then.
    let runs = 0;
    const { loader, counts } = fakeLoader(async () => {
      await sleep(200);
      if (++runs === 1) throw new Error("late");
      return new Response("{}");
    });
    const run = transformRunner({ ...env, LOADER: loader, TRANSFORM_TIMEOUT_MS: "50" });
    const started = Date.now();
    const results = await Promise.all(["a", "b", "c", "d", "e"].map((destination) => run(destination, "test-echo", anEvent)));
    expect(results.map((r) => r.outcome === "failed" && r.kind)).toEqual(Array(5).fill("transform_timeout"));
    expect(counts.most).toBe(4);
    // The fifth started only when one of the first four had ended.
    expect(Date.now() - started).toBeGreaterThanOrEqual(200);
  });
});

describe("what a transform's attempt records", () => {
  it("each attempt names the transform code that made its body: the first 16 hex digits of the source's SHA-256", async () => {
    const [echo, plain] = destinations(["test-echo", null]);
    bindings.DESTINATIONS = [echo, plain];
    downstream(echo!.url);
    downstream(plain!.url);
    const key = await accept(await seismicRequest(seismicBody()));
    await consume(events.accepted);
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(transformSource("test-echo")!)));
    const hash = [...digest.slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
    const { event: view } = (await (await admin("GET", `/admin/events/${key}`)).json()) as { event: { deliveries: { destination: string; history: { transformCode: string | null }[] }[] } };
    const history = Object.fromEntries(view.deliveries.map((d) => [d.destination, d.history.map((h) => h.transformCode)]));
    expect(history).toEqual({ [echo!.name]: [hash], [plain!.name]: [null] });
  });

  it("what else a transform can reach: the runtime's modules through import(), a refused socket, and a Cache API with nothing behind it here", async () => {
    const [probe] = destinations(["test-capabilities"]);
    bindings.DESTINATIONS = [probe];
    const forwarded = downstream(probe!.url);
    await accept(await seismicRequest(seismicBody()));
    await consume(events.accepted);
    expect(forwarded.map((r) => JSON.parse(r.body) as unknown)).toEqual([{
      sockets: "function",
      // Refused by globalOutbound: null, but not watched by the guard: the run succeeds.
      connect: expect.stringContaining("not permitted to access the internet"),
      workersEnv: [],
      caches: "object",
      cachePut: "No Cache was configured",
    }]);
  });
});
