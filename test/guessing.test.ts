/**
 * No unauthenticated writes, and no free guessing: wrong admin tokens, through the bearer guard
 * or the console's sign-in form, are throttled per client without a D1 write (or any D1 call),
 * and an ADMIN_TOKEN too short to resist guessing is refused as configuration.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Env } from "../src/env";
import { faultyD1 } from "./faults";
import { errorOf, sendWith } from "./helpers";

const BASE = "https://edgehook.test";

/** The test D1, counting every round trip made through it. */
function countingD1() {
  let calls = 0;
  const db = faultyD1(env.DB, () => undefined, () => void calls++);
  return { db, calls: () => calls };
}

const bearer = (token: string, ip: string) => new Request(`${BASE}/admin/events`, { headers: { authorization: `Bearer ${token}`, "cf-connecting-ip": ip } });
const signIn = (token: string, ip: string) =>
  new Request(`${BASE}/console/login`, { method: "POST", headers: { origin: BASE, "cf-connecting-ip": ip }, body: new URLSearchParams({ token }), redirect: "manual" });

/** A fresh address per test: the limiter's counts outlive a test. */
const address = () => `198.18.${Math.floor(Math.random() * 255)}.${Math.floor(Math.random() * 255)}`;

async function guess(make: (token: string, ip: string) => Request, bindings: Partial<Env>) {
  const ip = address();
  const { db, calls } = countingD1();
  const statuses: number[] = [];
  let last: Response | undefined;
  for (let i = 0; i < 1000; i++) {
    last = await sendWith(make(`wrong-${i}-${"x".repeat(32)}`, ip), { ...bindings, DB: db });
    statuses.push(last.status);
  }
  // Even the right token: a client that used up its failures learns nothing until the window ends.
  const right = await sendWith(make(env.ADMIN_TOKEN!, ip), { ...bindings, DB: db });
  return { statuses, last: last!, right, d1Calls: calls() };
}

describe("guessing the admin token", () => {
  for (const [name, make] of [["bearer token", bearer], ["console sign-in", signIn]] as const) {
    it(`1,000 wrong ${name}s from one address cost no D1 call; past the limit they are 429 with Retry-After`, async () => {
      const { statuses, last, right, d1Calls } = await guess(make, {});
      expect(d1Calls).toBe(0);
      // The binding's window is aligned to the clock: one that turns over before the limit is
      // reached lets at most one more limit's worth through; after it, every answer is 429.
      const refusedFrom = statuses.indexOf(429);
      expect(refusedFrom).toBeGreaterThanOrEqual(5);
      expect(refusedFrom).toBeLessThanOrEqual(10);
      expect(statuses.slice(0, refusedFrom).every((s) => s === 401)).toBe(true);
      expect(statuses.slice(refusedFrom).every((s) => s === 429)).toBe(true);
      expect(Number(last.headers.get("retry-after"))).toBeGreaterThan(0);
      expect(Number(last.headers.get("retry-after"))).toBeLessThanOrEqual(60);
      expect(right.status).toBe(429);
    });
  }

  it("is throttled in the isolate when the rate limiting binding is absent", async () => {
    const { statuses, d1Calls } = await guess(bearer, { AUTH_FAILURES: undefined });
    expect(d1Calls).toBe(0);
    expect(statuses.filter((s) => s === 401)).toHaveLength(5);
    expect(statuses.at(-1)).toBe(429);
  });

  it("another address is not held up by one that is throttled", async () => {
    await guess(bearer, {});
    expect((await sendWith(bearer(env.ADMIN_TOKEN!, address()), {})).status).toBe(200);
  });
});

describe("an ADMIN_TOKEN too short to resist guessing", () => {
  const short = { ADMIN_TOKEN: "short-token-1234" };

  it("is refused by the admin API and the console with 503 admin_token_too_short, never echoed", async () => {
    const api = await sendWith(new Request(`${BASE}/admin/events`, { headers: { authorization: `Bearer ${short.ADMIN_TOKEN}` } }), short);
    expect(api.status).toBe(503);
    const text = await api.clone().text();
    expect(text).not.toContain(short.ADMIN_TOKEN);
    expect(await errorOf(api)).toMatchObject({ code: "admin_token_too_short" });
    const login = await sendWith(signIn(short.ADMIN_TOKEN, address()), short);
    expect(login.status).toBe(503);
    expect(await login.text()).not.toContain(short.ADMIN_TOKEN);
  });

  it("makes /healthz degraded", async () => {
    const health = await sendWith(new Request(`${BASE}/healthz`), short);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: "degraded", admin: { valid: false } });
    const fine = await sendWith(new Request(`${BASE}/healthz`), {});
    expect(await fine.json()).toMatchObject({ status: "ok", admin: { valid: true } });
  });
});
