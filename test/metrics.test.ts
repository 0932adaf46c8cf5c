/**
 * GET /admin/metrics (#12): Prometheus text, read back with a real Prometheus text parser, and
 * its counts checked against what the test sent, through the Worker's real handlers.
 */
import { env } from "cloudflare:workers";
import parsePrometheusTextFormat, { type Family } from "parse-prometheus-text-format";
import { describe, expect, it } from "vitest";
import { accept, consume, downstream, events, useDeliveryHarness } from "./delivery-harness";
import { ADMIN, hmacHex, send, sendWith, seismicBody, uniqueId, webhookRequest, zuddlBody, zuddlRequest } from "./helpers";

useDeliveryHarness();

async function scrapeText(): Promise<string> {
  const response = await send(new Request("https://edgehook.test/admin/metrics", { headers: ADMIN }));
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  return response.text();
}

async function scrape(): Promise<Family[]> {
  return parsePrometheusTextFormat(await scrapeText());
}

function family(families: Family[], name: string): Family {
  const found = families.find((f) => f.name === name);
  if (!found) throw new Error(`no ${name} in the scrape`);
  return found;
}

/** A counter's value for the sample whose labels include `labels` (0 when it has none yet). */
function value(families: Family[], name: string, labels: Record<string, string>): number {
  const sample = family(families, name).metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  return Number(sample?.value ?? 0);
}

describe("GET /admin/metrics", () => {
  it("lists every family with its type, before anything happened to it", async () => {
    const families = await scrape();
    const types = Object.fromEntries(families.map((f) => [f.name, f.type]));
    expect(types).toMatchObject({
      edgehook_events_total: "COUNTER",
      edgehook_deliveries_total: "COUNTER",
      edgehook_attempts_total: "COUNTER",
      edgehook_forward_duration_seconds: "HISTOGRAM",
      edgehook_pending: "GAUGE",
      edgehook_held: "GAUGE",
      edgehook_dead: "GAUGE",
      edgehook_transform_failed: "GAUGE",
      edgehook_quarantined: "GAUGE",
    });
  });

  it("counts refused and quarantined requests exactly, and refusals never label a path we do not serve", async () => {
    const before = await scrape();
    const refused = { source: "seismic", provider: "seismic", outcome: "refused" };
    const quarantined = { source: "seismic", provider: "seismic", outcome: "quarantined" };
    for (let i = 0; i < 3; i++) {
      const response = await send(webhookRequest("seismic", seismicBody(), { "x-seismic-signature": "0".repeat(64) }));
      expect(response.status).toBe(401);
    }
    await send(webhookRequest("evil\"provider", "{}"));
    const malformed = `{"id":"${uniqueId()}",`;
    expect((await send(webhookRequest("seismic", malformed, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, malformed) }))).status).toBe(400);

    const after = await scrape();
    expect(value(after, "edgehook_events_total", refused) - value(before, "edgehook_events_total", refused)).toBe(3);
    expect(value(after, "edgehook_events_total", quarantined) - value(before, "edgehook_events_total", quarantined)).toBe(1);
    expect(value(after, "edgehook_events_total", { provider: "unknown", outcome: "refused" })).toBeGreaterThanOrEqual(1);
    expect(family(after, "edgehook_events_total").metrics.every((m) => !m.labels?.provider?.includes("evil"))).toBe(true);
    expect(Number(family(after, "edgehook_quarantined").metrics[0]!.value)).toBeGreaterThanOrEqual(1);
  });

  it("never goes down when retention purges the rows it counted", async () => {
    const malformed = `{"id":"${uniqueId()}",`;
    await send(webhookRequest("seismic", malformed, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, malformed) }));
    const labels = { provider: "seismic", outcome: "quarantined" };
    const before = value(await scrape(), "edgehook_events_total", labels);
    await env.DB.prepare("DELETE FROM quarantine").run();
    expect(value(await scrape(), "edgehook_events_total", labels)).toBe(before);
  });

  it("writes one Analytics Engine data point per webhook request when METRICS is bound", async () => {
    const points: AnalyticsEngineDataPoint[] = [];
    const METRICS = { writeDataPoint: (point?: AnalyticsEngineDataPoint) => void (point && points.push(point)) } as AnalyticsEngineDataset;
    await sendWith(webhookRequest("seismic", seismicBody(), { "x-seismic-signature": "0".repeat(64) }), { METRICS });
    expect(points).toEqual([{ indexes: ["seismic"], blobs: ["seismic", "", "refused", "invalid_signature", "seismic"], doubles: [401, expect.any(Number)] }]);
    const accepted = seismicBody();
    await sendWith(webhookRequest("seismic", accepted, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, accepted) }), { METRICS });
    expect(points[1]).toEqual({ indexes: ["seismic"], blobs: ["seismic", "ContentManagerCreateFileV1", "accepted", "accepted:queued", "seismic"], doubles: [200, expect.any(Number)] });
  });

  it("counts attempts, final deliveries and forward durations per destination, and writes a data point per attempt", async () => {
    const name = `metered-${crypto.randomUUID().slice(0, 8)}`;
    const destinations = [{ name, url: "https://metered.test/hook" }];
    downstream("https://metered.test/hook", [500, 200]);
    const points: AnalyticsEngineDataPoint[] = [];
    const METRICS = { writeDataPoint: (point?: AnalyticsEngineDataPoint) => void (point && points.push(point)) } as AnalyticsEngineDataset;
    const key = await accept(await zuddlRequest(zuddlBody()));
    await consume(events.accepted, { DESTINATIONS: destinations, METRICS });
    await env.DB.prepare("UPDATE deliveries SET next_attempt_at = 0 WHERE event_key = ?").bind(key).run();
    await consume(events.accepted, { DESTINATIONS: destinations, METRICS });

    const text = await scrapeText();
    const families = parsePrometheusTextFormat(text);
    expect(value(families, "edgehook_attempts_total", { destination: name, result: "failed" })).toBe(1);
    expect(value(families, "edgehook_attempts_total", { destination: name, result: "delivered" })).toBe(1);
    expect(value(families, "edgehook_deliveries_total", { destination: name, status: "delivered" })).toBe(1);
    // The parser keeps a labelled histogram's family and type but not its per-label samples, so those are read off the lines.
    expect(family(families, "edgehook_forward_duration_seconds").type).toBe("HISTOGRAM");
    const samples = (suffix: string) =>
      [...text.matchAll(new RegExp(`^edgehook_forward_duration_seconds_${suffix}\\{destination="${name}"(?:,le="([^"]+)")?\\} (\\S+)$`, "gm"))].map(([, le, v]) => [le, Number(v)] as const);
    expect(samples("count")).toEqual([[undefined, 2]]);
    const buckets = samples("bucket");
    expect(buckets.map(([le]) => le)).toEqual(["0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "+Inf"]);
    expect(buckets.at(-1)![1]).toBe(2);
    // Cumulative: each bucket holds at least as many as the one before.
    const counts = buckets.map(([, n]) => n);
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    expect(points.map((p) => p.blobs!.slice(0, 2))).toEqual([[name, "failed"], [name, "delivered"]]);
  });

  it("counts each stored event accepted once and every other copy as a duplicate, owners' retries not at all", async () => {
    // A type no schema knows is counted as `other` (a bounded label), so this counts by difference.
    const type = `MetricsTypeV${crypto.randomUUID().slice(0, 8)}`;
    const labels = (outcome: string) => ({ provider: "seismic", type: "other", outcome });
    const before = await scrape();
    const body = seismicBody({ version: type });
    const other = seismicBody({ version: type });
    for (const b of [body, body, other]) await accept(webhookRequest("seismic", b, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, b) }));
    // Two copies of `body` and one `other` in one batch; then the two owners' messages come back (their retries).
    const batch = events.accepted.slice(-3);
    await consume(batch, { DESTINATIONS: [] });
    await consume([batch[0]!, batch[2]!], { DESTINATIONS: [] }, { ids: ["msg-0", "msg-2"] });
    // A provider redelivery of `body`, later: one more duplicate.
    await accept(webhookRequest("seismic", body, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, body) }));
    await consume(events.accepted.slice(-1), { DESTINATIONS: [] }, { ids: ["later-copy"] });
    const families = await scrape();
    const counted = (outcome: string) => value(families, "edgehook_events_total", labels(outcome)) - value(before, "edgehook_events_total", labels(outcome));
    expect(counted("accepted")).toBe(2);
    expect(counted("duplicate")).toBe(2);
  });
});
