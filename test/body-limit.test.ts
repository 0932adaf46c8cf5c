/**
 * MAX_BODY_BYTES: bodies are kept in R2, so the limit is no longer D1's 2,000,000 bytes a value;
 * it is capped at MAX_BODY_BYTES_CEILING (8 MiB: an isolate's memory) whatever the var says.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { MAX_BODY_BYTES_CEILING } from "../src/receive/body";
import { errorOf, hmacHex, sendWith, seismicBody, webhookRequest } from "./helpers";

const signedRequest = async (body: string) => webhookRequest("seismic", body, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, body) });

describe("MAX_BODY_BYTES", () => {
  it("may pass D1's 2,000,000 bytes: a 3,000,000-byte body is accepted, its bytes kept in R2 and none in D1", async () => {
    const body = seismicBody({ data: { contentId: "x".repeat(3_000_000), teamSiteId: "1" } });
    const response = await sendWith(await signedRequest(body), { MAX_BODY_BYTES: "5000000" });
    expect(response.status).toBe(200);
    const { id } = await response.json<{ id: string }>();
    const row = await env.DB.prepare("SELECT length(body) AS inD1, body_in_r2 FROM events WHERE key = ?1").bind(id).first<{ inD1: number; body_in_r2: number }>();
    expect(row).toEqual({ inD1: 0, body_in_r2: 1 });
    expect(await (await env.BODIES.get(`events/${id}`))!.text()).toBe(body);
  });

  it(`is capped at ${MAX_BODY_BYTES_CEILING} bytes: a body past it is refused with 413 even when the var allows 20 MB`, async () => {
    const body = seismicBody({ data: { contentId: "x".repeat(MAX_BODY_BYTES_CEILING), teamSiteId: "1" } });
    const response = await sendWith(await signedRequest(body), { MAX_BODY_BYTES: "20000000" });
    expect(response.status).toBe(413);
    expect(await errorOf(response)).toMatchObject({ code: "body_too_large" });
  });
});
