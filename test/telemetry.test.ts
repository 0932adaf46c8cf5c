/**
 * Telemetry never changes an outcome: an Analytics Engine binding that throws (as
 * writeDataPoint does on oversized blobs) costs neither the answer nor the delivery, what goes
 * into data points, log lines and labels is bounded, and the failures are counted instead.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { accept, admin, consume, deliveries, downstream, events, useDeliveryHarness } from "./delivery-harness";
import { ADMIN, hmacHex, send, sendWith, seismicBody, webhookRequest } from "./helpers";

useDeliveryHarness();

const ONLY_ALPHA = [{ name: "alpha", url: "https://alpha.test/hook" }];

/** What Analytics Engine does with a data point it cannot take: a TypeError, thrown at the caller. */
const throwingMetrics = {
  writeDataPoint: () => {
    throw new TypeError("writeDataPoint(): blobs total size exceeds the limit");
  },
} as unknown as AnalyticsEngineDataset;

/** A dataset that keeps what it is given, and throws as the real one does past its limits. */
function strictMetrics() {
  const points: AnalyticsEngineDataPoint[] = [];
  const utf8 = (text: string | ArrayBuffer | null) => (typeof text === "string" ? new TextEncoder().encode(text).byteLength : (text?.byteLength ?? 0));
  const dataset = {
    writeDataPoint(point?: AnalyticsEngineDataPoint) {
      const blobBytes = (point?.blobs ?? []).reduce<number>((sum, blob) => sum + utf8(blob), 0);
      if (blobBytes > 16_384 || (point?.indexes ?? []).some((index) => utf8(index) > 96)) throw new TypeError("data point too large");
      if (point) points.push(point);
    },
  } as AnalyticsEngineDataset;
  return { dataset, points };
}

async function telemetryFailures(): Promise<number> {
  const response = await send(new Request("https://edgehook.test/admin/metrics", { headers: ADMIN }));
  const line = (await response.text()).split("\n").find((l) => l.startsWith("edgehook_telemetry_failures_total"));
  return Number(line?.split(" ").at(-1) ?? 0);
}

const signedSeismic = async (body: string) => webhookRequest("seismic", body, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, body) });

describe("telemetry", () => {
  it("a throwing METRICS binding on the request path: the event is still accepted, and the failure is counted", async () => {
    const before = await telemetryFailures();
    const response = await sendWith(await signedSeismic(seismicBody()), { METRICS: throwingMetrics, EVENTS_QUEUE: events.queue });
    expect(response.status).toBe(200);
    expect(events.accepted).toHaveLength(1);
    expect(await telemetryFailures()).toBe(before + 1);
  });

  it("a throwing METRICS binding in the consumer: the round is recorded delivered once, and never forwarded again", async () => {
    const alpha = downstream("https://alpha.test/hook");
    const key = await accept(await signedSeismic(seismicBody()));
    const first = await consume(events.accepted, { DESTINATIONS: ONLY_ALPHA, METRICS: throwingMetrics });
    expect(first.acked).toEqual(["msg-0"]);
    expect((await deliveries(key)).alpha).toMatchObject({ status: "delivered", attempts: 1 });
    // The queue hands the message over again (at least once): nothing is forwarded twice.
    await consume(events.accepted, { DESTINATIONS: ONLY_ALPHA, METRICS: throwingMetrics });
    expect(alpha).toHaveLength(1);
  });

  it("a 20,000-character type is accepted and stored as sent, but bounded in the answer, the request's log line and every data point", async () => {
    const type = `V${"x".repeat(20_000)}`;
    const { dataset, points } = strictMetrics();
    const alpha = downstream("https://alpha.test/hook");
    const logged = vi.spyOn(console, "log");
    const response = await sendWith(await signedSeismic(seismicBody({ version: type })), { METRICS: dataset, EVENTS_QUEUE: events.queue });
    expect(response.status).toBe(200);
    const answer = (await response.json()) as { id: string; type: string; knownType: boolean };
    expect(answer.knownType).toBe(false);
    expect(answer.type.length).toBeLessThanOrEqual(256);
    expect(type.startsWith(answer.type.slice(0, 200))).toBe(true);
    for (const [line] of logged.mock.calls) expect(String(line).length).toBeLessThan(4096);
    logged.mockRestore();
    await consume(events.accepted, { DESTINATIONS: ONLY_ALPHA, METRICS: dataset });
    expect(alpha).toHaveLength(1);
    const stored = await env.DB.prepare("SELECT type FROM events WHERE key = ?").bind(answer.id).first<{ type: string }>();
    expect(stored?.type).toBe(type);
    expect(points).toHaveLength(2);
    for (const point of points) for (const blob of point.blobs ?? []) expect(String(blob).length).toBeLessThanOrEqual(256);
  });

  it("the type label of edgehook_events_total is the type's name only when a schema knows it; any other type counts as `other`", async () => {
    const scrape = async () => (await send(new Request("https://edgehook.test/admin/metrics", { headers: ADMIN }))).text();
    for (const version of [`Unknown${crypto.randomUUID()}`, `Unknown${crypto.randomUUID()}`, "ContentManagerCreateFileV1"]) {
      await accept(await signedSeismic(seismicBody({ version })));
    }
    await consume(events.accepted, { DESTINATIONS: [] });
    const text = await scrape();
    expect(text).not.toMatch(/type="Unknown/);
    expect(text).toMatch(/edgehook_events_total\{[^}]*type="other"[^}]*\} \d+/);
    expect(text).toMatch(/edgehook_events_total\{[^}]*type="ContentManagerCreateFileV1"[^}]*outcome="accepted"\} \d+/);
  });
});

describe("the request log line", () => {
  it("is not written for an accepted event (Workers Logs has the invocation, D1 the event), and is for a refusal", async () => {
    const logged = vi.spyOn(console, "log");
    const lines = () => logged.mock.calls.map(([line]) => JSON.parse(String(line)) as { path?: string; status?: number; outcome?: string });
    expect((await sendWith(await signedSeismic(seismicBody()), { EVENTS_QUEUE: events.queue })).status).toBe(200);
    expect(lines().filter((line) => line.path === "/webhooks/seismic")).toEqual([]);
    expect((await sendWith(new Request("https://edgehook.test/webhooks/seismic", { method: "POST", body: seismicBody(), headers: { "content-type": "application/json", "x-seismic-signature": "0".repeat(64) } }), {})).status).toBe(401);
    expect(lines()).toEqual([expect.objectContaining({ path: "/webhooks/seismic", status: 401, outcome: "invalid_signature" })]);
    logged.mockRestore();
  });

  it("the consumer writes a line per batch, and one per event only when a forward did not succeed", async () => {
    const alpha = downstream("https://alpha.test/hook", [200, 500]);
    const first = await accept(await signedSeismic(seismicBody()));
    const second = await accept(await signedSeismic(seismicBody()));
    const logged = vi.spyOn(console, "log");
    await consume(events.accepted, { DESTINATIONS: ONLY_ALPHA }, { ids: ["ok", "fails"] });
    const text = logged.mock.calls.map(([line]) => String(line)).join("\n");
    logged.mockRestore();
    expect(alpha).toHaveLength(2);
    expect(text).toContain('"outcome":"batch"');
    // The first forward to arrive was answered 200, the second 500 (their order is the runtime's).
    const [succeeded, refused] = alpha.map((r) => r.headers.get("webhook-id"));
    expect([succeeded, refused].sort()).toEqual([first, second].sort());
    expect(text).toContain(`"eventKey":"${refused}"`);
    expect(text).not.toContain(`"eventKey":"${succeeded}"`);
  });

  it("a delivery held for its paused destination gets no line of its own: the batch's line counts it under its destination", async () => {
    const both = [...ONLY_ALPHA, { name: "beta", url: "https://beta.test/hook" }];
    const alpha = downstream("https://alpha.test/hook");
    expect((await admin("POST", "/admin/destinations/beta/pause", { DESTINATIONS: both })).status).toBe(200);
    const keys = [await accept(await signedSeismic(seismicBody())), await accept(await signedSeismic(seismicBody()))];
    const logged = vi.spyOn(console, "log");
    await consume(events.accepted, { DESTINATIONS: both });
    const lines = logged.mock.calls.map(([line]) => JSON.parse(String(line)) as { outcome?: string; eventKey?: string; held?: Record<string, number> });
    logged.mockRestore();
    expect(alpha).toHaveLength(2);
    for (const key of keys) expect((await deliveries(key)).beta?.status).toBe("held");
    expect(lines.filter((line) => line.eventKey !== undefined)).toEqual([]);
    expect(lines.filter((line) => line.outcome === "batch").map((line) => line.held)).toEqual([{ beta: 2 }]);
  });
});
