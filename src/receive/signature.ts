/**
 * HMAC-SHA256 signature checks with WebCrypto, for every provider (the HMAC and the constant-time
 * comparison are src/crypto.ts's).
 *
 * Each configured secret is used once to sign the body; the result is then compared in
 * constant time against every signature the request carries. With the current secret
 * listed first, a normal request costs exactly one HMAC whatever the number of headers.
 */
import type { ConfiguredSecret, SecretSlot } from "../env";
import { hmacSha256, timingSafeEqual } from "../crypto";

export type VerifyResult =
  | { ok: true; slot: SecretSlot }
  | { ok: false; reason: "malformed" | "mismatch" };

/**
 * Accepts when any well-formed signature matches any secret (current first, then old),
 * so a rotation on either side, in either order, loses nothing.
 */
export async function verifyAny(
  body: Uint8Array,
  signatures: readonly Uint8Array[],
  secrets: readonly ConfiguredSecret[],
): Promise<VerifyResult> {
  if (signatures.length === 0) return { ok: false, reason: "malformed" };
  for (const secret of secrets) {
    const expected = await hmacSha256(secret.value, body);
    let matched = false;
    // No early exit: every candidate is compared, so timing says nothing about which matched.
    for (const signature of signatures) matched = timingSafeEqual(signature, expected) || matched;
    if (matched) return { ok: true, slot: secret.slot };
  }
  return { ok: false, reason: "mismatch" };
}
