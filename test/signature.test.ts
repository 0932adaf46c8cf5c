import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { bytesToHex, decodeHexSignature, hmacSha256, tokensEqual } from "../src/crypto";
import { verifyAny } from "../src/receive/signature";
import { errorOf, hmacHex, send, sendWith, seismicBody, webhookRequest, zuddlBody } from "./helpers";

// Known answers computed with `openssl dgst -sha256 -hmac <secret>` over these exact bytes.
const SEISMIC_KAT_BODY = '{"id":"kat-1","version":"DemoEventV1","occurredAt":"2024-03-31T09:13:57.948Z","tenantId":"t","data":{"name":"Zoë 🚀 東京"}}';
const SEISMIC_KAT = {
  current: "2e8082b88bb8d1376d4cf92fc844b5c877288701dfaaad564ea6fc1e588e147e", // test-seismic-current
  old: "c06d014feba68c7b29dd36aea024aadd7e67da872bb48ef1ead85c723c20198f", // test-seismic-old
};
const ZUDDL_KAT_BODY = '{"action":"TIME_SPENT_IN_SESSION","actionId":"kat-2","actor":{"id":"u","type":"USER"},"actionCreatedAt":"2023-10-01T12:00:00Z","session":{"id":"s","title":"Café ☕"},"timeSpentInMinutes":5}';
const ZUDDL_KAT = {
  current: "4c1e82460323bc51ac9e41de208ded169f811f29ffffa755cd138f4eb17ea872", // test-zuddl-current
  old: "e70ed8a379ca165afe201bc11a408881a685974548acafac124a94486fa6fd4e", // test-zuddl-old
};
const utf8 = (s: string) => new TextEncoder().encode(s);

describe("HMAC known answers", () => {
  it("matches RFC-style vector for a plain body", async () => {
    expect(bytesToHex(await hmacSha256("key", utf8("hello")))).toBe("9307b3b915efb5171ff14d8cb55fbcc798c6c0ef1456d66ded1a6aa723a58b7b");
  });

  it("signs the raw UTF-8 bytes of a Unicode Seismic body", async () => {
    expect(bytesToHex(await hmacSha256(env.SEISMIC_SIGNING_SECRET!, utf8(SEISMIC_KAT_BODY)))).toBe(SEISMIC_KAT.current);
    expect(bytesToHex(await hmacSha256(env.SEISMIC_SIGNING_SECRET_OLD!, utf8(SEISMIC_KAT_BODY)))).toBe(SEISMIC_KAT.old);
  });

  it("signs the raw UTF-8 bytes of a Unicode Zuddl body", async () => {
    expect(bytesToHex(await hmacSha256(env.ZUDDL_SIGNING_SECRET!, utf8(ZUDDL_KAT_BODY)))).toBe(ZUDDL_KAT.current);
  });

  it("accepts the Seismic vector through the handler, upper- or lower-case", async () => {
    for (const signature of [SEISMIC_KAT.current, SEISMIC_KAT.current.toUpperCase()]) {
      const response = await send(webhookRequest("seismic", SEISMIC_KAT_BODY, { "x-seismic-signature": signature }));
      expect(response.status).toBe(200);
    }
  });

  it("accepts the Zuddl vector through the handler, prefixed or bare", async () => {
    for (const signature of [`sha256=${ZUDDL_KAT.current}`, ZUDDL_KAT.old]) {
      const response = await send(webhookRequest("zuddl", ZUDDL_KAT_BODY, { "x-webhook-signature": signature }));
      expect(response.status).toBe(200);
    }
  });
});

describe("signature format", () => {
  it("decodes only 64 hex digits", () => {
    expect(decodeHexSignature(SEISMIC_KAT.current)).toHaveLength(32);
    for (const bad of ["", "abc", SEISMIC_KAT.current.slice(1), `${SEISMIC_KAT.current}0`, "z".repeat(64), `sha256=${SEISMIC_KAT.current}`]) {
      expect(decodeHexSignature(bad)).toBeNull();
    }
  });

  it("compares tokens by value, not by prefix", () => {
    expect(tokensEqual("secret-token", "secret-token")).toBe(true);
    expect(tokensEqual("secret-toke", "secret-token")).toBe(false);
    expect(tokensEqual("secret-tokeN", "secret-token")).toBe(false);
    expect(tokensEqual("", "secret-token")).toBe(false);
  });

  it("says which secret matched", async () => {
    const body = utf8("x");
    const secrets = [{ slot: "current", value: "a" }, { slot: "old", value: "b" }] as const;
    const old = await hmacSha256("b", body);
    expect(await verifyAny(body, [old], secrets)).toEqual({ ok: true, slot: "old" });
    expect(await verifyAny(body, [await hmacSha256("c", body)], secrets)).toEqual({ ok: false, reason: "mismatch" });
  });
});

/** Secret rotation: every combination of bindings and headers the two sides can be in. */
describe("rotation matrix", () => {
  const [A, B, C] = ["rotation-secret-A", "rotation-secret-B", "unrelated-secret-C"];
  type Bindings = { current: string; old?: string };
  /** [case, our bindings, header → secret the provider signed it with, accepted] */
  const seismicCases: [string, Bindings, Record<string, string>, boolean][] = [
    ["no rotation", { current: A }, { "x-seismic-signature": A }, true],
    ["we rotated first: provider still signs with old", { current: B, old: A }, { "x-seismic-signature": A }, true],
    ["provider rotated first: its old header matches our current", { current: A }, { "x-seismic-signature": B, "x-seismic-signature-old": A }, true],
    ["both rotated", { current: B, old: A }, { "x-seismic-signature": B, "x-seismic-signature-old": A }, true],
    ["both rotated, only the old header matches", { current: A, old: C }, { "x-seismic-signature": B, "x-seismic-signature-old": A }, true],
    ["rotation finished on our side only", { current: B }, { "x-seismic-signature": B, "x-seismic-signature-old": A }, true],
    ["old header alone, matching our old", { current: B, old: A }, { "x-seismic-signature-old": A }, true],
    ["nothing matches", { current: B, old: A }, { "x-seismic-signature": C, "x-seismic-signature-old": C }, false],
    ["old secret removed too early", { current: B }, { "x-seismic-signature": A }, false],
  ];

  for (const [name, secrets, signedWith, accepted] of seismicCases) {
    it(`seismic: ${name}`, async () => {
      const body = seismicBody();
      const headers: Record<string, string> = {};
      for (const [header, secret] of Object.entries(signedWith)) headers[header] = await hmacHex(secret, body);
      const response = await sendWith(webhookRequest("seismic", body, headers), {
        SEISMIC_SIGNING_SECRET: secrets.current,
        SEISMIC_SIGNING_SECRET_OLD: secrets.old,
      });
      expect(response.status).toBe(accepted ? 200 : 401);
      if (!accepted) expect((await errorOf(response)).code).toBe("invalid_signature");
    });
  }

  const zuddlCases: [string, Bindings, string, boolean][] = [
    ["current secret", { current: A }, A, true],
    ["old secret during rotation", { current: B, old: A }, A, true],
    ["new secret during rotation", { current: B, old: A }, B, true],
    ["old secret after rotation ended", { current: B }, A, false],
  ];

  for (const [name, secrets, signedWith, accepted] of zuddlCases) {
    it(`zuddl: ${name}`, async () => {
      const body = zuddlBody();
      const response = await sendWith(
        webhookRequest("zuddl", body, { "x-webhook-signature": `sha256=${await hmacHex(signedWith, body)}` }),
        { ZUDDL_SIGNING_SECRET: secrets.current, ZUDDL_SIGNING_SECRET_OLD: secrets.old },
      );
      expect(response.status).toBe(accepted ? 200 : 401);
    });
  }
});
