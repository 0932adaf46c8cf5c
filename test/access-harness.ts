/**
 * A Cloudflare Access team as the tests run it: an RS256 key pair generated here, its key set
 * served the way Access serves it (`{"keys":[…], "public_cert":…, "public_certs":[…]}` at
 * <team>/cdn-cgi/access/certs, mocked with msw), and JWTs signed with it as Access signs them.
 * Each team has an origin of its own, so the Worker's per-isolate key cache never carries one
 * test's keys into another.
 */
import { exportJWK, generateKeyPair, SignJWT, type JWTPayload } from "jose";
import { http, HttpResponse } from "msw";
import type { setupServer } from "msw/native";
import type { Env } from "../src/env";

export const AUDIENCE = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2";
export const OPERATOR = "ops@example.com";
export const VIEWER = "jane@viewers.example";
export const SERVICE_TOKEN = "88bf3b6d86161464f6509f7219099e57.access";
export const STRANGER = "mallory@elsewhere.example";

type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;

export interface TokenOptions {
  claims?: JWTPayload;
  /** Another key pair than the team's (a forgery), under the team's key id unless `kid` says otherwise. */
  keys?: KeyPair;
  kid?: string;
  audience?: string;
  issuer?: string;
  /** seconds from now; negative: already expired; null: no exp claim at all */
  expiresIn?: number | null;
}

export async function accessTeam(server: ReturnType<typeof setupServer>, origin = `https://team-${crypto.randomUUID().slice(0, 8)}.cloudflareaccess.com`) {
  const signing = { keys: await generateKeyPair("RS256", { extractable: true }), kid: "" };
  const published: Awaited<ReturnType<typeof exportJWK>>[] = [];
  /** A new signing key, published beside the previous ones, as Access does when it rotates. */
  async function rotate() {
    signing.keys = await generateKeyPair("RS256", { extractable: true });
    signing.kid = crypto.randomUUID().replaceAll("-", "");
    published.push({ ...(await exportJWK(signing.keys.publicKey)), kid: signing.kid, alg: "RS256", use: "sig" });
  }
  await rotate();
  const certsUrl = `${origin}/cdn-cgi/access/certs`;
  let fetches = 0;
  server.use(
    http.get(certsUrl, () => {
      fetches++;
      // Access publishes the same keys as PEM certificates too; the Worker reads only `keys`.
      const certs = published.map(({ kid }) => ({ kid, cert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n" }));
      return HttpResponse.json({ keys: published, public_cert: certs.at(-1), public_certs: certs });
    }),
  );
  const bindings: Partial<Env> = { ACCESS_TEAM_DOMAIN: origin, ACCESS_AUD: AUDIENCE, OPERATORS: `${OPERATOR}, ${SERVICE_TOKEN}`, VIEWERS: "*@viewers.example" };

  /** A JWT as Access issues it to a signed-in person (`email`) or, with `claims.common_name`, to a service token. */
  async function token(email: string | null, options: TokenOptions = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const jwt = new SignJWT({ ...(email === null ? {} : { email }), type: "app", identity_nonce: "6ei69kawdKzMIAPF", ...options.claims })
      .setProtectedHeader({ alg: "RS256", kid: options.kid ?? signing.kid, typ: "JWT" })
      .setIssuer(options.issuer ?? origin)
      .setAudience(options.audience ?? AUDIENCE)
      .setIssuedAt(now - 60)
      .setNotBefore(now - 60)
      .setSubject(crypto.randomUUID());
    if (options.expiresIn !== null) jwt.setExpirationTime(now + (options.expiresIn ?? 3600));
    return jwt.sign((options.keys ?? signing.keys).privateKey);
  }

  return { origin, certsUrl, bindings, token, rotate, fetches: () => fetches, otherKeys: () => generateKeyPair("RS256", { extractable: true }) };
}

/** The header Access adds to every request it lets through. */
export const assertion = (jwt: string) => ({ "cf-access-jwt-assertion": jwt });
