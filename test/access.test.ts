/**
 * Sign-in through Cloudflare Access and roles, through the Worker's real fetch: JWTs signed with
 * keys generated here, the team's key set served by msw at <team>/cdn-cgi/access/certs, every
 * refusal answered with its JSON error, and the webhooks never behind any of it.
 */
import { env } from "cloudflare:workers";
import { http, HttpResponse } from "msw";
import { SignJWT } from "jose";
import { describe, expect, it, vi } from "vitest";
import type { Env } from "../src/env";
import { accessTeam, assertion, AUDIENCE, OPERATOR, SERVICE_TOKEN, STRANGER, VIEWER } from "./access-harness";
import { accept, bindings, consume, events, server, useDeliveryHarness } from "./delivery-harness";
import { ADMIN, errorOf, expectNoLogLineWith, seismicBody, seismicRequest, sendWith } from "./helpers";
import { select } from "./html";

useDeliveryHarness();
// No log line may carry a JWT: every one starts with the base64 of `{"`.
expectNoLogLineWith("eyJ");

const BASE = "https://edgehook.test";

const call = (path: string, headers: Record<string, string>, extra: Partial<Env>, method = "GET") =>
  sendWith(new Request(`${BASE}${path}`, { method, headers, redirect: "manual" }), { ...bindings, ...extra });

async function refusal(response: Response) {
  return { status: response.status, error: await errorOf(response), wwwAuthenticate: response.headers.get("www-authenticate") };
}

describe("Access sign-in on the admin API", () => {
  it("lets an operator in by the email claim: reads and changes state, and fetches the team's keys once", async () => {
    const team = await accessTeam(server);
    const jwt = await team.token(OPERATOR);
    expect((await call("/admin/events", assertion(jwt), team.bindings)).status).toBe(200);
    // Past the role check to the route itself: no such destination.
    const pause = await call("/admin/destinations/nope/pause", assertion(jwt), team.bindings, "POST");
    expect(pause.status).toBe(404);
    expect((await errorOf(pause)).code).toBe("unknown_destination");
    expect((await call("/admin/stats", assertion(await team.token(OPERATOR.toUpperCase())), team.bindings)).status).toBe(200);
    expect(team.fetches()).toBe(1);
  });

  it("compares identities by ASCII case only: an address with the Kelvin sign (U+212A) is not the operator whose address has a k", async () => {
    const team = await accessTeam(server);
    const bindings = { ...team.bindings, OPERATORS: "kate@example.com", VIEWERS: "" };
    const impostor = await call("/admin/events", assertion(await team.token("\u212Aate@example.com")), bindings);
    expect(impostor.status).toBe(403);
    expect((await call("/admin/events", assertion(await team.token("KATE@example.com")), bindings)).status).toBe(200);
  });

  it("lets a service token in by its common_name, with the role its client id is given", async () => {
    const team = await accessTeam(server);
    const jwt = await team.token(null, { claims: { common_name: SERVICE_TOKEN } });
    expect((await call("/admin/destinations/nope/resume", assertion(jwt), team.bindings, "POST")).status).toBe(404);
  });

  it("gives a viewer (by *@domain) the reads and answers 403 naming the operator role to every change", async () => {
    const team = await accessTeam(server);
    const headers = assertion(await team.token(VIEWER));
    for (const path of ["/admin/events", "/admin/deliveries", "/admin/metrics", "/admin/destinations", "/admin/openapi.json"]) {
      expect((await call(path, headers, team.bindings)).status, path).toBe(200);
    }
    for (const path of ["/admin/destinations/alpha/pause", "/admin/destinations/alpha/resume", "/admin/destinations/alpha/preview", "/admin/replay?status=dead", "/admin/events/evt_x/replay", "/admin/quarantine/1/release"]) {
      const response = await call(path, headers, team.bindings, "POST");
      expect(response.status, path).toBe(403);
      expect(await response.json(), path).toEqual({ error: { code: "forbidden", message: expect.stringContaining("operator"), role: "operator" } });
    }
    // Nothing was paused.
    expect(await env.DB.prepare("SELECT count(*) AS n FROM destination_state WHERE destination = 'alpha'").first("n")).toBe(0);
  });

  it("gives an identity in neither list nothing: 403 naming the viewer role; a subdomain is not the domain", async () => {
    const team = await accessTeam(server);
    for (const who of [STRANGER, "jane@sub.viewers.example", "viewers.example"]) {
      const response = await call("/admin/events", assertion(await team.token(who)), team.bindings);
      expect(response.status, who).toBe(403);
      expect(await errorOf(response), who).toMatchObject({ code: "forbidden", role: "viewer" });
    }
    // Assigned nothing at all: nobody gets in.
    const nobody = { ...team.bindings, OPERATORS: "", VIEWERS: "" };
    expect((await call("/admin/events", assertion(await team.token(OPERATOR)), nobody)).status).toBe(403);
  });

  it("refuses a request without a JWT, and the admin token, with 401 access_token_missing", async () => {
    const team = await accessTeam(server);
    for (const headers of [{}, ADMIN]) {
      expect(await refusal(await call("/admin/events", headers, team.bindings))).toMatchObject({
        status: 401,
        error: { code: "access_token_missing" },
        wwwAuthenticate: expect.stringContaining("Cf-Access-Jwt-Assertion"),
      });
    }
    expect(team.fetches()).toBe(0);
  });

  it("refuses an expired JWT, one without exp, and one for another application or team, each with its 401", async () => {
    const team = await accessTeam(server);
    const cases: [string, Promise<string>, string][] = [
      ["expired", team.token(OPERATOR, { expiresIn: -10 }), "access_token_expired"],
      ["no exp", team.token(OPERATOR, { expiresIn: null }), "access_token_invalid"],
      ["other aud", team.token(OPERATOR, { audience: "another-application-aud" }), "access_token_wrong_audience"],
      ["other team", team.token(OPERATOR, { issuer: "https://other.cloudflareaccess.com" }), "access_token_wrong_issuer"],
    ];
    for (const [what, jwt, code] of cases) {
      expect(await refusal(await call("/admin/events", assertion(await jwt), team.bindings)), what).toMatchObject({ status: 401, error: { code } });
    }
  });

  it("refuses a JWT signed with another key under the team's key id, and one under a key id the team does not publish", async () => {
    const team = await accessTeam(server);
    const forger = await team.otherKeys();
    const forged = await team.token(OPERATOR, { keys: forger });
    expect(await refusal(await call("/admin/events", assertion(forged), team.bindings))).toMatchObject({ status: 401, error: { code: "access_token_invalid" } });
    const unknown = await team.token(OPERATOR, { keys: forger, kid: "not-published" });
    expect(await refusal(await call("/admin/events", assertion(unknown), team.bindings))).toMatchObject({ status: 401, error: { code: "access_key_unknown" } });
  });

  it("refuses what is not an RS256 JWT: garbage, an HS256 token keyed with the AUD tag, an unsigned one", async () => {
    const team = await accessTeam(server);
    const hs256 = await new SignJWT({ email: OPERATOR })
      .setProtectedHeader({ alg: "HS256" })
      .setIssuer(team.origin)
      .setAudience(AUDIENCE)
      .setExpirationTime("1h")
      .sign(new TextEncoder().encode(AUDIENCE));
    const unsigned = `${btoa(JSON.stringify({ alg: "none" }))}.${btoa(JSON.stringify({ email: OPERATOR, iss: team.origin, aud: AUDIENCE }))}.`;
    for (const jwt of ["not-a-jwt", hs256, unsigned]) {
      expect(await refusal(await call("/admin/events", assertion(jwt), team.bindings)), jwt).toMatchObject({ status: 401, error: { code: "access_token_invalid" } });
    }
  });

  it("refuses a valid JWT that names nobody (no email, no common_name)", async () => {
    const team = await accessTeam(server);
    const response = await call("/admin/events", assertion(await team.token(null)), team.bindings);
    expect(await refusal(response)).toMatchObject({ status: 401, error: { code: "access_token_no_identity" } });
  });

  it("answers 503 access_keys_unavailable with Retry-After when the key endpoint is unreachable or answers no key set", async () => {
    for (const answer of [() => HttpResponse.error(), () => new HttpResponse("oops", { status: 500 }), () => HttpResponse.json({ keys: "none" })]) {
      const team = await accessTeam(server);
      server.use(http.get(team.certsUrl, answer));
      const response = await call("/admin/events", assertion(await team.token(OPERATOR)), team.bindings);
      expect(response.status).toBe(503);
      expect(response.headers.get("retry-after")).toBeTruthy();
      expect((await errorOf(response)).code).toBe("access_keys_unavailable");
    }
  });

  it("follows a key rotation: a token under a new key fetches the keys again, at most once per 30 s cooldown", async () => {
    const team = await accessTeam(server);
    expect((await call("/admin/events", assertion(await team.token(OPERATOR)), team.bindings)).status).toBe(200);
    await team.rotate();
    const rotated = assertion(await team.token(OPERATOR));
    // Within the cooldown the cached keys stand: an unknown key id cannot make the Worker refetch on every request.
    expect(await refusal(await call("/admin/events", rotated, team.bindings))).toMatchObject({ status: 401, error: { code: "access_key_unknown" } });
    expect(team.fetches()).toBe(1);
    vi.useFakeTimers({ now: Date.now() + 31_000, toFake: ["Date"] });
    try {
      expect((await call("/admin/events", rotated, team.bindings)).status).toBe(200);
    } finally {
      vi.useRealTimers();
    }
    expect(team.fetches()).toBe(2);
  });

  it("accepts a loopback http team origin, so the whole flow runs locally", async () => {
    const team = await accessTeam(server, "http://127.0.0.1:8788");
    expect((await call("/admin/events", assertion(await team.token(OPERATOR)), team.bindings)).status).toBe(200);
  });
});

describe("roles in the API's description", () => {
  it("names the role of every operation, and the router enforces exactly that one", async () => {
    const team = await accessTeam(server);
    const headers = assertion(await team.token(VIEWER));
    const document = (await (await call("/admin/openapi.json", headers, team.bindings)).json()) as {
      paths: Record<string, Record<string, { "x-required-role": string; description: string }>>;
    };
    const operatorOnly: string[] = [];
    for (const [path, item] of Object.entries(document.paths)) {
      for (const [method, operation] of Object.entries(item)) {
        expect(operation.description).toContain(`Needs the ${operation["x-required-role"]} role`);
        const response = await call(path.replace(/\{\w+\}/g, "1"), headers, team.bindings, method.toUpperCase());
        expect(response.status === 403, `${method} ${path}`).toBe(operation["x-required-role"] === "operator");
        if (operation["x-required-role"] === "operator") operatorOnly.push(`${method.toUpperCase()} ${path}`);
      }
    }
    expect(operatorOnly.sort()).toEqual([
      "POST /admin/destinations/{name}/pause",
      "POST /admin/destinations/{name}/preview",
      "POST /admin/destinations/{name}/resume",
      "POST /admin/events/{id}/replay",
      "POST /admin/quarantine/{id}/release",
      "POST /admin/replay",
    ]);
  });
});

describe("Access configuration mistakes", () => {
  const mistakes: [string, Partial<Env>, string][] = [
    ["only the team domain", { ACCESS_TEAM_DOMAIN: "https://secret-team.cloudflareaccess.com", ACCESS_AUD: "" }, "ACCESS_AUD"],
    ["only the AUD", { ACCESS_TEAM_DOMAIN: "", ACCESS_AUD: "secret-aud-value" }, "ACCESS_TEAM_DOMAIN"],
    ["an http team domain", { ACCESS_TEAM_DOMAIN: "http://secret-team.cloudflareaccess.com", ACCESS_AUD: "secret-aud-value" }, "ACCESS_TEAM_DOMAIN"],
    ["a team domain with a path", { ACCESS_TEAM_DOMAIN: "https://secret-team.cloudflareaccess.com/cdn-cgi", ACCESS_AUD: "secret-aud-value" }, "ACCESS_TEAM_DOMAIN"],
    ["a stray wildcard in OPERATORS", { ACCESS_TEAM_DOMAIN: "https://secret-team.cloudflareaccess.com", ACCESS_AUD: "secret-aud-value", OPERATORS: "ops@example.com, secret*" }, "OPERATORS"],
  ];

  it("are reported by /healthz and by a 503 access_misconfigured naming the variable, never its value; the admin token does not get in", async () => {
    for (const [what, config, variable] of mistakes) {
      const health = await call("/healthz", {}, config);
      expect(health.status, what).toBe(503);
      expect(((await health.json()) as { access: unknown }).access, what).toEqual({ configured: true, valid: false });
      for (const path of ["/admin/events", "/console"]) {
        const response = await call(path, ADMIN, config);
        expect(response.status, `${what} ${path}`).toBe(503);
        const error = await errorOf(response);
        expect(error.code, what).toBe("access_misconfigured");
        expect(error.message, what).toContain(variable);
        expect(error.message, what).not.toMatch(/secret/);
      }
    }
  });

  it("/healthz reports Access off, and on and valid", async () => {
    const health = async (extra: Partial<Env>) => ((await (await call("/healthz", {}, extra)).json()) as { status: string; access: unknown });
    expect(await health({})).toMatchObject({ status: "ok", access: { configured: false, valid: true } });
    const team = await accessTeam(server);
    // The admin token's length no longer matters once Access signs people in.
    expect(await health({ ...team.bindings, ADMIN_TOKEN: "short" })).toMatchObject({ status: "ok", access: { configured: true, valid: true } });
  });
});

describe("the webhooks with Access configured", () => {
  it("take signed events without any JWT, even while the Access settings are wrong", async () => {
    const team = await accessTeam(server);
    for (const extra of [team.bindings, { ACCESS_TEAM_DOMAIN: "http://nope.example", ACCESS_AUD: "" }]) {
      const response = await sendWith(await seismicRequest(seismicBody()), { ...bindings, ...extra });
      expect(response.status).toBe(200);
    }
    expect(team.fetches()).toBe(0);
  });
});

describe("the console with Access configured", () => {
  const browser = (jwt: string) => ({ cookie: `CF_Authorization=${jwt}` });

  it("signs a browser in by its CF_Authorization cookie, and hides from a viewer what only an operator may do", async () => {
    const team = await accessTeam(server);
    const key = await accept(await seismicRequest(seismicBody()));
    // Stored, and delivered nowhere: no downstream is mocked here.
    await consume(events.accepted, { DESTINATIONS: [] });
    const destinations = { ...team.bindings, DESTINATIONS: [{ name: "alpha", url: "https://alpha.test/hook" }] };
    const buttons = ['form[action$="/replay"] button', 'form[action$="/pause"] button'];
    const seen = async (who: string) => {
      const headers = browser(await team.token(who));
      const pages = await Promise.all([`/console/events/${key}`, "/console/dead", "/console/destinations"].map((path) => call(path, headers, destinations)));
      expect(pages.map((page) => page.status)).toEqual([200, 200, 200]);
      const [onEvent, onDead, onList] = await Promise.all(pages.map(async (page) => select(await page.text(), buttons)));
      return { replay: onEvent![buttons[0]!]!.length, bulkReplay: onDead![buttons[0]!]!.length, pause: onList![buttons[1]!]!.length };
    };
    expect(await seen(OPERATOR)).toEqual({ replay: 1, bulkReplay: 2, pause: 1 });
    expect(await seen(VIEWER)).toEqual({ replay: 0, bulkReplay: 0, pause: 0 });
  });

  it("answers a viewer's form post with 403 naming the operator role, and changes nothing", async () => {
    const team = await accessTeam(server);
    const destinations = { ...team.bindings, DESTINATIONS: [{ name: "alpha", url: "https://alpha.test/hook" }] };
    const response = await call("/console/destinations/alpha/pause", { ...browser(await team.token(VIEWER)), origin: BASE }, destinations, "POST");
    expect(response.status).toBe(403);
    expect(await errorOf(response)).toMatchObject({ code: "forbidden", role: "operator" });
    expect(await env.DB.prepare("SELECT count(*) AS n FROM destination_state WHERE destination = 'alpha'").first("n")).toBe(0);
    const operator = await call("/console/destinations/alpha/pause", { ...browser(await team.token(OPERATOR)), origin: BASE }, destinations, "POST");
    expect(operator.status).toBe(303);
  });

  it("refuses a browser without a valid Access cookie, and an admin-token session, with a JSON 401", async () => {
    const team = await accessTeam(server);
    // A session made with the admin token while Access was off.
    const signIn = await sendWith(
      new Request(`${BASE}/console/login`, { method: "POST", headers: { origin: BASE }, body: new URLSearchParams({ token: env.ADMIN_TOKEN! }), redirect: "manual" }),
      bindings,
    );
    const session = signIn.headers.get("set-cookie")!.split(";")[0]!;
    for (const cookie of [session, `CF_Authorization=${await team.token(OPERATOR, { expiresIn: -10 })}`]) {
      const response = await call("/console", { cookie }, team.bindings);
      expect(response.status, cookie).toBe(401);
      expect((await errorOf(response)).code, cookie).toMatch(/^access_token_(missing|expired)$/);
    }
  });

  it("does not serve the token form: /console/login goes to /console, and sign-out to Access's own", async () => {
    const team = await accessTeam(server);
    const login = await call("/console/login", {}, team.bindings);
    expect([login.status, login.headers.get("location")]).toEqual([303, "/console"]);
    const posted = await sendWith(
      new Request(`${BASE}/console/login`, { method: "POST", headers: { origin: BASE }, body: new URLSearchParams({ token: env.ADMIN_TOKEN! }), redirect: "manual" }),
      { ...bindings, ...team.bindings },
    );
    expect([posted.status, posted.headers.get("location"), posted.headers.get("set-cookie")]).toEqual([303, "/console", null]);
    const logout = await call("/console/logout", { origin: BASE }, team.bindings, "POST");
    expect([logout.status, logout.headers.get("location")]).toEqual([303, "/cdn-cgi/access/logout"]);
  });
});
