/**
 * Counters that count right: edgehook_events_total counts each webhook request once, as what it
 * came to. A redelivered large body (stored by the request path, with no owner) is a duplicate,
 * and a payload released from quarantine stays counted as the `quarantined` request it was.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { QueuedEvent } from "../src/env";
import { recordingQueue } from "./faults";
import { ADMIN, consumeAll, hmacHex, send, sendWith, seismicBody, uniqueId, webhookRequest } from "./helpers";

const BASE = "https://edgehook.test";

/** edgehook_events_total for provider seismic, summed over types, by outcome. */
async function seismicCounts(): Promise<Record<string, number>> {
  const text = await (await send(new Request(`${BASE}/admin/metrics`, { headers: ADMIN }))).text();
  const counts: Record<string, number> = {};
  for (const [, labels, value] of text.matchAll(/^edgehook_events_total\{([^}]*)\} (\S+)$/gm)) {
    if (!labels!.includes('provider="seismic"')) continue;
    const outcome = /outcome="([^"]+)"/.exec(labels!)![1]!;
    counts[outcome] = (counts[outcome] ?? 0) + Number(value);
  }
  return counts;
}

const delta = (before: Record<string, number>, after: Record<string, number>) =>
  Object.fromEntries(["accepted", "duplicate", "quarantined"].map((outcome) => [outcome, (after[outcome] ?? 0) - (before[outcome] ?? 0)]));

const signed = async (body: string) => webhookRequest("seismic", body, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, body) });

describe("edgehook_events_total", () => {
  it("counts a provider's redelivery of a large body (stored before any message) as a duplicate", async () => {
    const body = seismicBody({ data: { contentId: "x".repeat(130_000), teamSiteId: "1" } });
    const before = await seismicCounts();
    const queue = recordingQueue<QueuedEvent>();
    for (let i = 0; i < 2; i++) expect((await sendWith(await signed(body), { EVENTS_QUEUE: queue.queue })).status).toBe(200);
    await consumeAll(queue.accepted, { DESTINATIONS: [] });
    expect(delta(before, await seismicCounts())).toEqual({ accepted: 1, duplicate: 1, quarantined: 0 });
  });

  it("counts a payload released from quarantine once, as the quarantined request it was, not again as accepted", async () => {
    const body = seismicBody({ id: uniqueId("seismic"), version: "livesend-session-summary-v3", data: { InteractionId: 7 } });
    const before = await seismicCounts();
    expect((await send(await signed(body))).status).toBe(422);
    const { id } = (await env.DB.prepare("SELECT id FROM quarantine ORDER BY id DESC LIMIT 1").first<{ id: number }>())!;
    const queue = recordingQueue<QueuedEvent>();
    const released = await sendWith(new Request(`${BASE}/admin/quarantine/${id}/release?force=true`, { method: "POST", headers: ADMIN }), { EVENTS_QUEUE: queue.queue });
    expect(released.status).toBe(200);
    await consumeAll(queue.accepted, { DESTINATIONS: [] });
    expect(delta(before, await seismicCounts())).toEqual({ accepted: 0, duplicate: 0, quarantined: 1 });
  });
});
