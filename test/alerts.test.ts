/**
 * Alerts through the Worker's real handlers: noted where things break, coalesced in D1, sent by
 * the alerts queue's consumer to a receiver mocked with msw (Slack text or JSON, signed with
 * Standard Webhooks), retried while the receiver is down, and counted in /admin/metrics.
 */
import { env } from "cloudflare:workers";
import { http, HttpResponse } from "msw";
import { Webhook } from "standardwebhooks";
import { beforeEach, describe, expect, it } from "vitest";
import { ALERT_KINDS } from "../src/alerts/notify";
import type { AlertMessage, QueuedEvent } from "../src/env";
import { accept, admin, bindings, consume, downstream, events, makeDue, runCron, SECRET_A, server, useDeliveryHarness } from "./delivery-harness";
import { faultyD1, recordingQueue } from "./faults";
import { countRows, expectNoLogLineWith, runQueue, sendWith, seismicBody, seismicRequest } from "./helpers";

useDeliveryHarness();

const ALERT_URL = "https://alerts.test/hook";
let alerts: ReturnType<typeof recordingQueue<AlertMessage>>;

beforeEach(() => {
  alerts = recordingQueue<AlertMessage>();
  Object.assign(bindings, { ALERT_URL, ALERT_FORMAT: "json", ALERTS_QUEUE: alerts.queue, CONSOLE_URL: "https://edgehook.example/console" });
});

/** An alert receiver answering each POST with the next status (the last repeats). */
function receiver(statuses: number[] = [200]) {
  const received: { headers: Headers; body: string }[] = [];
  let calls = 0;
  server.use(
    http.post(ALERT_URL, async ({ request }) => {
      const status = statuses[Math.min(calls++, statuses.length - 1)]!;
      if (status === 200) received.push({ headers: request.headers, body: await request.text() });
      return new HttpResponse(null, { status });
    }),
  );
  return received;
}

/** Runs the alerts queue's consumer on what was scheduled so far. */
async function sendAlerts(ids = "a") {
  const scheduled = alerts.accepted.splice(0);
  return { scheduled, result: await runAlerts(scheduled.map((body, i) => ({ id: `${ids}-${i}`, body }))) };
}

function runAlerts(messages: { id: string; body: AlertMessage; attempts?: number }[]) {
  return runQueue("edgehook-alerts", messages.map((m) => ({ ...m, body: m.body as unknown as QueuedEvent })), bindings);
}

const uniqueName = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
const pendingOf = async (kind: string, subject: string) =>
  (await env.DB.prepare("SELECT pending FROM alerts WHERE kind = ? AND subject = ?").bind(kind, subject).first<{ pending: number }>())?.pending;
const parsed = (received: { body: string }[]) => received.map((r) => JSON.parse(r.body) as Record<string, unknown>);
const scheduledFor = (subject: string) => alerts.accepted.filter((m) => m.alert.subject === subject);
const INVALID_DESTINATIONS = [{ name: "x", url: "ftp://nope" }];

describe("alerts", () => {
  it("sends one alert per kind, each with its count, times and a console link", async () => {
    const received = receiver();
    const name = uniqueName("breaking");
    const deadend = uniqueName("deadend");
    Object.assign(bindings, {
      DESTINATIONS: [
        { name, url: `https://${name}.test/hook`, circuit_failures: 1, circuit_probe_seconds: 5 },
        { name: deadend, url: `https://${deadend}.test/hook`, circuit_failures: 100 },
        // transform_failed: its transform throws on every event.
        { name: uniqueName("transforming"), url: "https://transforming.test/hook", transform: "test-throws" },
      ],
      MAX_DELIVERY_ATTEMPTS: "2",
    });
    const target = downstream(`https://${name}.test/hook`, [500, 200]);
    downstream(`https://${deadend}.test/hook`, [500]);

    // circuit_opened: one failure is the circuit's limit; delivery_dead: the deadend's second attempt is its last.
    const key = await accept(await seismicRequest(seismicBody()));
    const [message] = events.accepted.splice(0);
    await consume([message!]);
    await makeDue(key);
    const [probe] = events.accepted.splice(0);
    expect(probe).toMatchObject({ eventKey: key, probe: name });
    // circuit_closed: the probe succeeds (the deadend's retry goes with it, and dies).
    await consume([probe!], {}, { ids: ["probe"] });
    expect(target).toHaveLength(2);
    // destination_paused and destination_resumed.
    await admin("POST", `/admin/destinations/${name}/pause`);
    await admin("POST", `/admin/destinations/${name}/resume`);
    // payload_quarantined.
    const bad = seismicBody({ version: "livesend-session-summary-v3", data: { InteractionId: 7 } });
    expect((await sendWith(await seismicRequest(bad), bindings)).status).toBe(422);
    // configuration_invalid.
    await accept(await seismicRequest(seismicBody()));
    await consume(events.accepted.splice(0), { DESTINATIONS: [{ name: "x", url: "ftp://nope" }] }, { ids: ["invalid"] });
    // sweep_requeued: that event waits unfinished; a sweep much later finds it.
    await runCron(new Date(Date.now() + 3_600_000), { RECONCILE_AFTER_SECONDS: "60" });
    // dead_letters_received: a message that used up the events queue's retries; our own notice of a
    // dead delivery is not news here (it was delivery_dead).
    await consume([{ eventKey: key, destinations: [deadend] }], {}, { queue: "edgehook-dead-letters", ids: ["notice"] });
    expect(alerts.accepted.filter((m) => m.alert.kind === "dead_letters_received")).toEqual([]);
    await consume([{ eventKey: key }], {}, { queue: "edgehook-dead-letters", ids: ["letter"] });
    // The queue hands the same letter over again: recorded once, so noted once.
    await consume([{ eventKey: key }], {}, { queue: "edgehook-dead-letters", ids: ["letter"], attempts: 2 });

    const { scheduled, result } = await sendAlerts();
    expect(new Set(scheduled.map((m) => m.alert.kind))).toEqual(new Set(ALERT_KINDS));
    expect(result.acked).toHaveLength(scheduled.length);
    const bodies = parsed(received);
    expect(bodies.map((b) => b.kind).sort()).toEqual([...ALERT_KINDS].sort());
    expect(bodies.find((b) => b.kind === "delivery_dead")).toMatchObject({
      subject: deadend, destination: deadend, count: 1, link: "https://edgehook.example/console/dead", firstAt: expect.any(String), lastAt: expect.any(String),
    });
    expect(bodies.find((b) => b.kind === "payload_quarantined")).toMatchObject({ subject: "seismic", destination: null, count: 1 });
    expect(bodies.find((b) => b.kind === "dead_letters_received")).toMatchObject({ subject: "dead-letter queue", count: 1 });
    for (const body of bodies) expect(body.message).toEqual(expect.any(String));
    const metrics = await (await admin("GET", "/admin/metrics")).text();
    expect(metrics).toContain('edgehook_alerts_total{kind="circuit_opened",result="sent"} 1');
  });

  it("coalesces 500 dead deliveries within the cooldown into one alert with count 500, and holds the next for the cooldown", async () => {
    const received = receiver();
    const name = uniqueName("flood");
    Object.assign(bindings, { DESTINATIONS: [{ name, url: `https://${name}.test/hook`, circuit_failures: 1000 }], MAX_DELIVERY_ATTEMPTS: "1", MAX_FORWARDS_PER_BATCH: "100" });
    downstream(`https://${name}.test/hook`, [500]);
    // 500 events stored and pending, delivered (and dead) by 5 queue batches of 100.
    const now = Date.now();
    const keys = Array.from({ length: 500 }, (_, i) => `evt_${name}_${i}`);
    await env.DB.batch(
      keys.map((key, i) =>
        env.DB.prepare(
          `INSERT INTO events (key, provider, event_id, type, known_type, received_at, verified_with, content_type, body, status)
           VALUES (?1, 'seismic', ?1, 'ContentManagerCreateFileV1', 1, ?2, 'current', 'application/json', '{}', 'queued')`,
        ).bind(key, now + i),
      ),
    );
    for (let i = 0; i < 500; i += 100) await consume(keys.slice(i, i + 100).map((eventKey) => ({ eventKey })), {}, { ids: keys.slice(i, i + 100) });
    expect(await countRows("SELECT count(*) AS n FROM deliveries WHERE destination = ? AND status = 'dead'", name)).toBe(500);

    const { scheduled } = await sendAlerts();
    expect(scheduled.filter((m) => m.alert.subject === name)).toEqual([{ alert: { kind: "delivery_dead", subject: name }, due: expect.any(Number) }]);
    const dead = parsed(received).filter((b) => b.subject === name);
    expect(dead).toEqual([expect.objectContaining({ kind: "delivery_dead", count: 500 })]);

    // One more within the cooldown: scheduled for the cooldown's end, not now.
    await consume([{ eventKey: keys[0]! }], {}, { ids: ["again"] }); // already dead: nothing new
    const row = await env.DB.prepare("SELECT * FROM alerts WHERE kind = 'delivery_dead' AND subject = ?").bind(name).first<{ pending: number; last_sent_at: number; due_at: number | null }>();
    expect(row).toMatchObject({ pending: 0, due_at: null });
    await env.DB.prepare("UPDATE deliveries SET status = 'pending', attempts = 0 WHERE event_key = ?").bind(keys[1]).run();
    await consume([{ eventKey: keys[1]! }], {}, { ids: ["one-more"] });
    const after = await env.DB.prepare("SELECT * FROM alerts WHERE kind = 'delivery_dead' AND subject = ?").bind(name).first<{ pending: number; last_sent_at: number; due_at: number }>();
    expect(after!.pending).toBe(1);
    expect(after!.due_at).toBe(after!.last_sent_at + 900_000);
  });

  it("retries while the receiver is down; the alert arrives late with everything noted meanwhile, and the failures are counted", async () => {
    const received = receiver([503, 503, 200]);
    const name = uniqueName("down");
    await admin("POST", `/admin/destinations/${name}/pause`, { DESTINATIONS: [{ name, url: `https://${name}.test/hook` }] });
    const first = alerts.accepted.splice(0);
    const down1 = await runAlerts(first.map((body) => ({ id: "late", body })));
    expect(down1.retried.map((r) => r.msgId)).toEqual(["late"]);
    // Pausing a paused destination changes nothing and notes nothing.
    await admin("POST", `/admin/destinations/${name}/pause`, { DESTINATIONS: [{ name, url: `https://${name}.test/hook` }] });
    expect(await pendingOf("destination_paused", name)).toBe(1);
    // Resumed and paused again while the receiver is down: the resume is its own alert, the pause
    // is noted on the same key, which has its message on the way already.
    await admin("POST", `/admin/destinations/${name}/resume`, { DESTINATIONS: [{ name, url: `https://${name}.test/hook` }] });
    await admin("POST", `/admin/destinations/${name}/pause`, { DESTINATIONS: [{ name, url: `https://${name}.test/hook` }] });
    expect(alerts.accepted.splice(0)).toEqual([{ alert: { kind: "destination_resumed", subject: name }, due: expect.any(Number) }]);
    expect(await pendingOf("destination_paused", name)).toBe(2);
    const down2 = await runAlerts(first.map((body) => ({ id: "late", body, attempts: 2 })));
    expect(down2.retried).toHaveLength(1);
    const up = await runAlerts(first.map((body) => ({ id: "late", body, attempts: 3 })));
    expect(up.acked).toEqual(["late"]);
    expect(parsed(received)).toEqual([expect.objectContaining({ kind: "destination_paused", subject: name, count: 2 })]);
    const listed = (await (await admin("GET", "/admin/alerts")).json()) as { alerts: { kind: string; subject: string; sent: number; failed: number }[] };
    expect(listed.alerts.find((a) => a.subject === name)).toMatchObject({ sent: 1, failed: 2 });
    const metrics = await (await admin("GET", "/admin/metrics")).text();
    expect(metrics).toMatch(/edgehook_alerts_total\{kind="destination_paused",result="failed"\} [2-9]/);
  });

  it("a circuit that half-opened (nothing left to probe with) is alerted closed at its first success", async () => {
    const name = uniqueName("halfopen");
    Object.assign(bindings, { DESTINATIONS: [{ name, url: `https://${name}.test/hook`, circuit_failures: 1 }], MAX_DELIVERY_ATTEMPTS: "1" });
    downstream(`https://${name}.test/hook`, [500, 200]);
    // Its one failure is its last attempt and opens the circuit; with nothing held to probe with, it half-opens.
    await accept(await seismicRequest(seismicBody()));
    await consume(events.accepted.splice(0), {}, { ids: ["fails"] });
    const state = await env.DB.prepare("SELECT opened_at, failures FROM destination_state WHERE destination = ?").bind(name).first();
    expect(state).toMatchObject({ opened_at: null, failures: 1 });
    expect(await pendingOf("circuit_opened", name)).toBe(1);
    expect(await pendingOf("circuit_closed", name)).toBeUndefined();
    await accept(await seismicRequest(seismicBody()));
    await consume(events.accepted.splice(0), {}, { ids: ["succeeds"] });
    expect(await pendingOf("circuit_closed", name)).toBe(1);
  });

  it("an invalid SOURCES is alerted by the cron, whose sources answer 503 meanwhile", async () => {
    const received = receiver();
    const SOURCES = [{ name: "summit", provider: "nope", secret: "SUMMIT_SECRET" }];
    await runCron(new Date(), { SOURCES });
    await runCron(new Date(Date.now() + 300_000), { SOURCES });
    expect(await pendingOf("configuration_invalid", "SOURCES")).toBe(2);
    await runAlerts(alerts.accepted.splice(0).slice(0, 1).map((body) => ({ id: "sources", body })));
    expect(parsed(received)).toEqual([expect.objectContaining({ kind: "configuration_invalid", subject: "SOURCES", count: 2, link: "https://edgehook.example/console/sources" })]);
    expect(String(parsed(received)[0]!.message)).toMatch(/^SOURCES is invalid: the sources it declares answer 503/);
  });

  it("what is noted while an alert is on its way goes in the next one, which says when the first of it came", async () => {
    const name = uniqueName("busy");
    Object.assign(bindings, { DESTINATIONS: [{ name, url: `https://${name}.test/hook` }], ALERT_COOLDOWN_SECONDS: "0.001" });
    const toggle = async (action: "pause" | "resume") => {
      await scheduler.wait(5); // distinct times
      await admin("POST", `/admin/destinations/${name}/${action}`);
    };
    await toggle("pause");
    const times: number[] = [];
    const received: string[] = [];
    server.use(
      http.post(ALERT_URL, async ({ request }) => {
        received.push(await request.text());
        // Paused twice more while the first alert is being sent.
        if (received.length === 1) {
          for (const action of ["resume", "pause", "resume", "pause"] as const) {
            await toggle(action);
            if (action === "pause") times.push(Date.now());
          }
        }
        return new HttpResponse(null, { status: 200 });
      }),
    );
    const first = alerts.accepted.splice(0);
    await runAlerts(first.map((body) => ({ id: "first", body })));
    const row = await env.DB.prepare("SELECT * FROM alerts WHERE kind = 'destination_paused' AND subject = ?").bind(name).first<{ pending: number; first_at: number; last_at: number }>();
    expect(row).toMatchObject({ pending: 2 });
    expect(row!.first_at).toBeLessThan(row!.last_at);
    expect(row!.first_at).toBeGreaterThanOrEqual(times[0]! - 20);
    expect(row!.first_at).toBeLessThan(times[1]!);
    await runAlerts(first.map((body) => ({ id: "second", body })));
    const next = JSON.parse(received.at(-1)!) as { kind: string; count: number; firstAt: string; lastAt: string };
    expect(next).toMatchObject({ kind: "destination_paused", count: 2, firstAt: new Date(row!.first_at).toISOString(), lastAt: new Date(row!.last_at).toISOString() });
  });

  it("an alert sent just before D1 refuses to record it is not sent again", async () => {
    const received = receiver();
    const name = uniqueName("hiccup");
    Object.assign(bindings, { DESTINATIONS: [{ name, url: `https://${name}.test/hook` }] });
    await admin("POST", `/admin/destinations/${name}/pause`);
    let refused = 0;
    const hiccup = faultyD1(env.DB, (sql) => {
      if (sql.includes("sent = sent + 1") && refused++ === 0) throw new Error("D1_ERROR: Network connection lost.");
    });
    const result = await runQueue("edgehook-alerts", alerts.accepted.splice(0).map((body) => ({ id: "once", body: body as unknown as QueuedEvent })), { ...bindings, DB: hiccup });
    expect(refused).toBe(2);
    expect(result.acked).toEqual(["once"]);
    expect(parsed(received)).toEqual([expect.objectContaining({ kind: "destination_paused", subject: name })]);
    expect(await pendingOf("destination_paused", name)).toBe(0);
  });

  it("the cron schedules again alerts whose message was lost, at most 1,000 a run", async () => {
    const now = Date.now();
    const subjects = Array.from({ length: 1_005 }, (_, i) => `lost-${now}-${i}`);
    await env.DB.batch(
      subjects.map((subject, i) =>
        env.DB.prepare("INSERT INTO alerts (kind, subject, pending, first_at, last_at, due_at) VALUES ('delivery_dead', ?1, 1, ?2, ?2, ?2)").bind(subject, now - 3_600_000 + i),
      ),
    );
    const lost = () => alerts.accepted.splice(0).filter((m) => m.alert.subject.startsWith(`lost-${now}-`));
    await runCron(new Date(now));
    expect(lost()).toHaveLength(1_000);
    await runCron(new Date(now + 1_000));
    expect(lost().map((m) => m.alert.subject).sort()).toEqual(subjects.slice(1_000).sort());
  });

  it("sends Slack-compatible text by default, signed with Standard Webhooks when ALERT_SECRET is set", async () => {
    const received = receiver();
    const name = uniqueName("slack");
    Object.assign(bindings, { ALERT_FORMAT: undefined, ALERT_SECRET: SECRET_A, DESTINATIONS: [{ name, url: `https://${name}.test/hook` }] });
    await admin("POST", `/admin/destinations/${name}/pause`);
    await sendAlerts();
    const [alert] = received;
    const body = JSON.parse(alert!.body) as { text: string };
    expect(Object.keys(body)).toEqual(["text"]);
    expect(body.text).toMatch(new RegExp(`^edgehook: ${name} was paused: its deliveries are held until it is resumed, at .+Z\\. <https://edgehook.example/console/destinations\\|Open the console>$`));
    expect(new Webhook(SECRET_A).verify(alert!.body, Object.fromEntries(alert!.headers))).toEqual(body);
    expect(alert!.headers.get("webhook-id")).toMatch(/^alert_[0-9a-f]{24}$/);
  });

  it("reports wrong ALERT_* settings by name and rule, never their values, and sends nothing", async () => {
    const secretUrl = "ftp://hooks.example/T000/B000/XXXXXXXXsecretXXXXXXXX";
    const view = (await (await admin("GET", "/admin/alerts", { ALERT_URL: secretUrl, ALERT_FORMAT: "xml", ALERT_SECRET: "not-a-whsec" })).json()) as { valid: boolean; errors: string[] };
    expect(view).toMatchObject({
      valid: false,
      format: null,
      errors: ["ALERT_URL: must be https (or http to 127.0.0.1/localhost)", "ALERT_FORMAT: must be one of slack, json", "ALERT_SECRET: must be whsec_<base64> (16+ bytes)"],
    });
    expect(JSON.stringify(view)).not.toContain("secret");
    const health = await sendWith(new Request("https://edgehook.test/healthz"), { ALERT_URL: secretUrl });
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ alerts: { configured: true, valid: false, errors: 1 } });
  });

  it("counts the events an invalid DESTINATIONS holds, not the messages: a copy, or an event counted already, adds nothing", async () => {
    const before = (await pendingOf("configuration_invalid", "DESTINATIONS")) ?? 0;
    await accept(await seismicRequest(seismicBody()));
    await accept(await seismicRequest(seismicBody()));
    const [first, second] = events.accepted.splice(0);
    // The queue hands over the first event's message twice in one batch.
    await runQueue("edgehook-events", [{ id: "one", body: first! }, { id: "one-copy", body: first! }, { id: "two", body: second! }], { ...bindings, DESTINATIONS: INVALID_DESTINATIONS });
    expect((await pendingOf("configuration_invalid", "DESTINATIONS")) ?? 0).toBe(before + 2);
    // A later message names the first event again (another copy): it waits already, and was counted.
    await consume([{ eventKey: first!.eventKey }], { DESTINATIONS: INVALID_DESTINATIONS }, { ids: ["again"] });
    expect((await pendingOf("configuration_invalid", "DESTINATIONS")) ?? 0).toBe(before + 2);
  });

  it("an invalid DESTINATIONS is alerted by the cron, once a run, with no event to hold", async () => {
    const received = receiver();
    // Earlier tests noted this key too: start it afresh.
    await env.DB.prepare("DELETE FROM alerts WHERE kind = 'configuration_invalid' AND subject = 'DESTINATIONS'").run();
    await runCron(new Date(), { DESTINATIONS: INVALID_DESTINATIONS });
    await runCron(new Date(Date.now() + 300_000), { DESTINATIONS: INVALID_DESTINATIONS });
    expect(await pendingOf("configuration_invalid", "DESTINATIONS")).toBe(2);
    await runAlerts(scheduledFor("DESTINATIONS").slice(0, 1).map((body) => ({ id: "destinations", body })));
    const [alert] = parsed(received);
    expect(alert).toMatchObject({ kind: "configuration_invalid", subject: "DESTINATIONS", link: "https://edgehook.example/console/destinations" });
    expect(String(alert!.message)).toMatch(/^DESTINATIONS is invalid: nothing is delivered until it is fixed/);
  });

  it("a duplicate message for an alert in its cooldown is acked, not bounced; the scheduled one carries the alert", async () => {
    const received = receiver();
    const name = uniqueName("copied");
    Object.assign(bindings, { DESTINATIONS: [{ name, url: `https://${name}.test/hook` }] });
    await admin("POST", `/admin/destinations/${name}/pause`);
    const [first] = alerts.accepted.splice(0);
    await runAlerts([{ id: "first", body: first! }]);
    expect(parsed(received)).toHaveLength(1);
    // Paused again within the cooldown: its send is scheduled for the cooldown's end.
    await admin("POST", `/admin/destinations/${name}/resume`);
    await admin("POST", `/admin/destinations/${name}/pause`);
    const [scheduled] = alerts.accepted.splice(0).filter((m) => m.alert.kind === "destination_paused" && m.alert.subject === name);
    // The first message again (the queue delivers at least once): a duplicate, in the cooldown.
    const copy = await runAlerts([{ id: "copy", body: first!, attempts: 2 }]);
    expect(copy).toMatchObject({ acked: ["copy"], retried: [] });
    expect(scheduledFor(name)).toEqual([]);
    // The scheduled message, should it come early, stays on its way (once).
    const early = await runAlerts([{ id: "scheduled", body: scheduled! }]);
    const onItsWay = [...early.retried.map(() => scheduled!), ...alerts.accepted.splice(0).filter((m) => m.alert.subject === name)];
    expect(onItsWay).toHaveLength(1);
    // The cooldown ends: it sends the alert; the copy, delivered again, still sends nothing.
    await env.DB.prepare("UPDATE alerts SET last_sent_at = last_sent_at - 900000 WHERE kind = 'destination_paused' AND subject = ?").bind(name).run();
    await runAlerts([{ id: "scheduled", body: onItsWay[0]!, attempts: 2 }]);
    await runAlerts([{ id: "copy", body: first!, attempts: 3 }]);
    expect(parsed(received).map((b) => [b.kind, b.count])).toEqual([["destination_paused", 1], ["destination_paused", 1]]);
  });
});

describe("alerts while an ALERT_* setting is invalid", () => {
  const BAD_SECRET = "whsec_tooshort-leakcheck";
  const logged = expectNoLogLineWith(BAD_SECRET);

  it.each([
    ["ALERT_SECRET", { ALERT_SECRET: BAD_SECRET }, "ALERT_SECRET: must be whsec_<base64> (16+ bytes)"],
    ["ALERT_FORMAT", { ALERT_FORMAT: "xml" }, "ALERT_FORMAT: must be one of slack, json"],
  ])("an invalid %s is refused visibly: nothing is scheduled or sent, the alert waits in D1 and goes out once it is fixed", async (_, wrong, rule) => {
    const received = receiver();
    const name = uniqueName("refused");
    Object.assign(bindings, { DESTINATIONS: [{ name, url: `https://${name}.test/hook` }] });
    // Scheduled while the settings were right; then they break.
    await admin("POST", `/admin/destinations/${name}/pause`);
    const [onItsWay] = alerts.accepted.splice(0);
    Object.assign(bindings, wrong);
    await admin("POST", `/admin/destinations/${name}/resume`);
    expect(scheduledFor(name)).toEqual([]);
    expect(await pendingOf("destination_resumed", name)).toBe(1);
    // The message already on its way sends nothing and is not retried: the alert waits in D1.
    const consumed = await runAlerts([{ id: "on-its-way", body: onItsWay! }]);
    expect(consumed).toMatchObject({ acked: ["on-its-way"], retried: [] });
    expect(received).toEqual([]);
    expect(await pendingOf("destination_paused", name)).toBe(1);
    // The cron, long after, schedules nothing again, and says why, by name and rule.
    await runCron(new Date(Date.now() + 3_600_000));
    await runCron(new Date(Date.now() + 7_200_000));
    expect(scheduledFor(name)).toEqual([]);
    expect(logged().filter((line) => line.includes("alerts_misconfigured") && line.includes(rule)).length).toBeGreaterThanOrEqual(2);
    const health = await sendWith(new Request("https://edgehook.test/healthz"), bindings);
    expect(await health.json()).toMatchObject({ alerts: { configured: true, valid: false, errors: 1 } });
    // Fixed: the next cron run schedules both, and they go out with what was noted meanwhile.
    Object.assign(bindings, { ALERT_SECRET: SECRET_A, ALERT_FORMAT: "json" });
    await runCron(new Date());
    expect(scheduledFor(name).map((m) => m.alert.kind).sort()).toEqual(["destination_paused", "destination_resumed"]);
    await runAlerts(alerts.accepted.splice(0).filter((m) => m.alert.subject === name).map((body, i) => ({ id: `fixed-${i}`, body })));
    expect(parsed(received).map((b) => b.kind).sort()).toEqual(["destination_paused", "destination_resumed"]);
  });
});

