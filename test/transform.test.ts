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
import { recordingQueue } from "./faults";
import { accept, admin, bindings, consume, deliveries, downstream, events, SECRET_A, useDeliveryHarness } from "./delivery-harness";
import { ADMIN, expectNoLogLineWith, seismicBody, seismicRequest, sendWith, zuddlBody, zuddlRequest } from "./helpers";
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
    const stored = await env.DB.prepare("SELECT body FROM events WHERE key = ?").bind(key).first<{ body: string }>();
    expect(stored?.body).toBe(body);
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
    ["test-slow", "transform_timeout", /^transform_timeout: transforms\/test-slow\.js ran longer than 100 ms/],
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
