/**
 * MAX_BODY_BYTES cannot be raised past what one D1 value holds (2,000,000 bytes): a body above
 * it could be accepted but never stored, so the limit is capped there whatever the var says.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { errorOf, hmacHex, sendWith, seismicBody, webhookRequest } from "./helpers";

describe("MAX_BODY_BYTES", () => {
  it("is capped at D1's largest value: a 2,100,000-byte body is refused with 413 even when the var allows 5 MB", async () => {
    const body = seismicBody({ data: { contentId: "x".repeat(2_100_000), teamSiteId: "1" } });
    const request = webhookRequest("seismic", body, { "x-seismic-signature": await hmacHex(env.SEISMIC_SIGNING_SECRET!, body) });
    const response = await sendWith(request, { MAX_BODY_BYTES: "5000000" });
    expect(response.status).toBe(413);
    expect(await errorOf(response)).toMatchObject({ code: "body_too_large" });
  });
});
