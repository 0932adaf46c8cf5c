/**
 * The console through the Worker's real handler: sign-in (and its slow-down), pages, replay,
 * quarantine release, cross-origin form posts refused, and what it never leaks.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { QueuedEvent } from "../src/env";
import { DESTINATION_HEALTH_SQL } from "../src/store/charts";
import { recordingQueue } from "./faults";
import { consumeAll, countRows, errorOf, quarantinedRow, send, sendAndConsume, sendWith, seismicBody, seismicRequest } from "./helpers";
import { select } from "./html";

const BASE = "https://edgehook.test";
/** What a browser sends with a form post from the console's own pages. */
const SAME_ORIGIN = { origin: BASE };

async function signIn(token = env.ADMIN_TOKEN!, headers: Record<string, string> = {}): Promise<Response> {
  return send(new Request(`${BASE}/console/login`, { method: "POST", headers: { ...SAME_ORIGIN, ...headers }, body: new URLSearchParams({ token }), redirect: "manual" }));
}

async function session(): Promise<string> {
  const response = await signIn();
  expect(response.status).toBe(303);
  const cookie = response.headers.get("set-cookie")!;
  expect(cookie).toMatch(/HttpOnly/i);
  expect(cookie).toMatch(/SameSite=Strict/i);
  expect(cookie).toMatch(/Secure/i);
  expect(cookie).not.toContain(env.ADMIN_TOKEN!);
  return cookie.split(";")[0]!;
}

/** A page; a POST is a form post from the console's own pages unless `init.headers` are given instead. */
const page = (path: string, cookie: string, init: RequestInit & { headers?: Record<string, string> } = {}, bindings = {}) =>
  sendWith(new Request(`${BASE}${path}`, { ...init, headers: { cookie, ...(init.headers ?? (init.method === "POST" ? SAME_ORIGIN : {})) }, redirect: "manual" }), bindings);

describe("console", () => {
  it("sends a visitor without a session to the login form", async () => {
    const response = await send(new Request(`${BASE}/console`, { redirect: "manual" }));
    expect(response.status).toBe(303);
    expect(response.headers.get("location")).toBe("/console/login");
    const login = await send(new Request(`${BASE}/console/login`));
    const html = await login.text();
    expect(html).toContain('<label for="token">Admin token</label>');
    expect(html).toContain('id="token"');
  });

  it("refuses a wrong token and a forged cookie", async () => {
    const wrong = await signIn("not-the-token");
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get("set-cookie")).toBeNull();
    expect(await wrong.text()).toContain("That token is not right.");
    const forged = await page("/console", `edgehook_console=${Math.floor(Date.now() / 1000) + 3600}.AAAA`);
    expect(forged.status).toBe(303);
  });

  it("shows the event log, an event with its payload and which secret verified it, and replays it", async () => {
    const cookie = await session();
    const body = seismicBody({ version: "ConsoleTypeV1" });
    const { id } = (await (await sendAndConsume(await seismicRequest(body))).json()) as { id: string };

    const log = await page(`/console?type=ConsoleTypeV1`, cookie);
    expect(log.status).toBe(200);
    const html = await log.text();
    expect(html).toContain(`href="/console/events/${id}"`);
    expect(html).toMatch(/aria-label="Last hour, 5-minute buckets: [1-9]\d* events received/);
    expect(html).not.toContain(env.ADMIN_TOKEN!);

    const eventPage = await (await page(`/console/events/${id}`, cookie)).text();
    expect(eventPage).toContain("the current secret");
    expect(eventPage).toContain("ConsoleTypeV1");
    expect(eventPage).toContain('<label for="replay-destination">Replay to</label>');

    const events = recordingQueue<QueuedEvent>();
    const destinations = [{ name: "alpha", url: "https://alpha.test/hook" }];
    const replay = await page(`/console/events/${id}/replay`, cookie, { method: "POST", body: new URLSearchParams({ destination: "alpha" }) }, { DESTINATIONS: destinations, EVENTS_QUEUE: events.queue });
    expect(replay.status).toBe(303);
    expect(replay.headers.get("location")).toBe(`/console/events/${id}?replayed=alpha`);
    expect(events.accepted).toEqual([{ eventKey: id }]);
    expect(await env.DB.prepare("SELECT status, pinned FROM deliveries WHERE event_key = ? AND destination = 'alpha'").bind(id).first()).toEqual({ status: "pending", pinned: 1 });
  });

  it("searches payloads from a labelled search box, with the other filters, across pages", async () => {
    const cookie = await session();
    const tag = `talk${crypto.randomUUID().replaceAll("-", "")}`;
    const keys: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { id } = (await (await sendAndConsume(await seismicRequest(seismicBody({ version: "ConsoleSearchV1", data: { contentId: `${tag}-${i}`, teamSiteId: "1" } })))).json()) as { id: string };
      keys.push(id);
    }
    const other = (await (await sendAndConsume(await seismicRequest(seismicBody({ version: "ConsoleSearchV1" })))).json()) as { id: string };

    const empty = await (await page("/console", cookie)).text();
    expect(empty).toContain('<label for="f-q">Payload contains<input id="f-q" name="q" type="search" value="" maxlength="256" aria-describedby="f-q-hint"/></label>');
    expect(empty).toContain('<form class="filters" method="get" action="/console" role="search">');

    // Newest first, ties (the same millisecond) by id.
    const { results } = await env.DB.prepare("SELECT key FROM events WHERE key IN (?, ?, ?) ORDER BY received_at DESC, key DESC").bind(...keys).all<{ key: string }>();
    const [newest, middle, oldest] = results.map((r) => r.key);

    const found = await (await page(`/console?q=${tag}&type=ConsoleSearchV1&limit=2`, cookie)).text();
    expect(found).toContain(`value="${tag}"`);
    expect(found).toContain(`href="/console/events/${newest}"`);
    expect(found).toContain(`href="/console/events/${middle}"`);
    expect(found).not.toContain(`href="/console/events/${other.id}"`);
    // The next page keeps the search and the filters.
    const next = /href="(\/console\?[^"]*cursor=[^"]+)"/.exec(found)![1]!.replaceAll("&amp;", "&");
    expect(next).toContain(`q=${tag}`);
    expect(next).toContain("type=ConsoleSearchV1");
    const older = await (await page(next, cookie)).text();
    expect(older).toContain(`href="/console/events/${oldest}"`);
    expect(older).not.toContain(`href="/console/events/${newest}"`);

    // With SEARCH off there is no box, and the page says how search is turned on.
    const off = await (await page("/console", cookie, {}, { SEARCH: "off" })).text();
    expect(off).not.toContain('id="f-q"');
    expect(off).toContain("Payload search is off on this gateway (the SEARCH var turns it on).");

    // A search the index cannot run is said on the page, beside the box to correct it.
    const refused = await page(`/console?q=${encodeURIComponent('" *')}`, cookie);
    expect(refused.status).toBe(400);
    const html = await refused.text();
    expect(html).toContain('<p class="error" role="alert">q must contain a word with a letter or a digit</p>');
    expect(html).toContain('value="&quot; *"');
  });

  it("lists dead letters, quarantine with the failing path, and destinations with their success rate", async () => {
    const cookie = await session();
    const bad = seismicBody({ version: "livesend-session-summary-v3", data: { InteractionId: 7 } });
    expect((await send(await seismicRequest(bad))).status).toBe(422);
    const dead = await (await page("/console/dead", cookie)).text();
    expect(dead).toContain("<code>$.data.InteractionId</code>");
    const destinations = await (await page("/console/destinations", cookie, {}, { DESTINATIONS: [{ name: "alpha", url: "https://alpha.test/hook" }] })).text();
    expect(destinations).toContain("https://alpha.test/hook");
    const counts = (await (await page("/console/stats.json", cookie)).json()) as Record<string, number>;
    expect(counts.hour).toBeGreaterThan(0);
  });

  it("previews each transform on the event page, forwarding nothing, and refuses a cross-origin preview", async () => {
    const cookie = await session();
    const body = seismicBody({ version: "ConsolePreviewV1", data: { note: "<b>bold</b>" } });
    const { id } = (await (await sendAndConsume(await seismicRequest(body))).json()) as { id: string };
    const bindings = {
      DESTINATIONS: [
        { name: "shaped", url: "https://shaped.test/hook", transform: "test-echo" },
        { name: "broken", url: "https://broken.test/hook", transform: "test-throws" },
        { name: "plain", url: "https://plain.test/hook" },
        // Never routes this (Seismic) event: nothing to preview there.
        { name: "elsewhere", url: "https://elsewhere.test/hook", providers: ["zuddl"], transform: "test-echo" },
      ],
    };
    const eventPage = await (await page(`/console/events/${id}`, cookie, {}, bindings)).text();
    const buttons = 'section[aria-label="Transforms"] button';
    expect((await select(eventPage, [buttons]))[buttons]!.map((b) => b.text)).toEqual(["Preview shaped", "Preview broken"]);

    const shaped = await page(`/console/events/${id}/preview`, cookie, { method: "POST", body: new URLSearchParams({ destination: "shaped" }) }, bindings);
    expect(shaped.status).toBe(200);
    const shown = await shaped.text();
    expect(shown).toContain("Preview for shaped (transforms/test-echo.js");
    expect(shown).toContain("nothing was forwarded");
    expect(shown).toContain("&quot;type&quot;: &quot;ConsolePreviewV1&quot;");
    expect(shown).not.toContain("<b>bold</b>");
    const broken = await (await page(`/console/events/${id}/preview`, cookie, { method: "POST", body: new URLSearchParams({ destination: "broken" }) }, bindings)).text();
    expect(broken).toMatch(/transform_error: transforms\/test-throws\.js threw TypeError at transforms\/test-throws\.js:3:\d+/);

    const forged = await page(`/console/events/${id}/preview`, cookie, { method: "POST", headers: { origin: "https://evil.example" }, body: new URLSearchParams({ destination: "shaped" }) }, bindings);
    expect(forged.status).toBe(403);
    expect(await countRows("SELECT count(*) AS n FROM deliveries WHERE event_key = ?", id)).toBe(0);
  });

  it("lists failed transforms on the Dead page apart from dead deliveries, and replays them in bulk", async () => {
    const cookie = await session();
    const { id } = (await (await sendAndConsume(await seismicRequest(seismicBody({ version: "ConsoleTransformFailedV1" })))).json()) as { id: string };
    const name = `shaped-${crypto.randomUUID().slice(0, 8)}`;
    const error = "transform_error: transforms/test-throws.js threw TypeError at transforms/test-throws.js:3:9; replay once it is fixed";
    await env.DB.prepare(`INSERT INTO deliveries (event_key, destination, status, last_error, updated_at) VALUES (?1, ?2, 'transform_failed', ?3, ?4)`)
      .bind(id, name, error, Date.now()).run();
    const bindings = { DESTINATIONS: [{ name, url: "https://shaped.test/hook", transform: "test-echo" }], EVENTS_QUEUE: recordingQueue<QueuedEvent>().queue };
    const dead = await (await page("/console/dead", cookie, {}, bindings)).text();
    const failed = dead.slice(dead.indexOf("<h2>Failed transforms</h2>"), dead.indexOf("<h2>Quarantined payloads</h2>"));
    expect(failed).toContain(`href="/console/events/${id}"`);
    expect(failed).toContain("transform_error: transforms/test-throws.js threw TypeError");
    expect(dead.slice(0, dead.indexOf("<h2>Failed transforms</h2>"))).not.toContain(`href="/console/events/${id}"`);

    const replayed = await page("/console/replay", cookie, { method: "POST", body: new URLSearchParams({ status: "transform_failed", destination: name }) }, bindings);
    expect(replayed.status).toBe(303);
    expect(await (await page(replayed.headers.get("location")!, cookie, {}, bindings)).text()).toContain("Replay queued for 1 failed transforms.");
    expect(await countRows("SELECT count(*) AS n FROM deliveries WHERE event_key = ? AND destination = ? AND status = 'transform_failed'", id, name)).toBe(0);
  });

  it("shows each destination's state and pauses and resumes it with its buttons, refusing a cross-origin post", async () => {
    const cookie = await session();
    const name = `console-${crypto.randomUUID().slice(0, 8)}`;
    const bindings = { DESTINATIONS: [{ name, url: "https://console-dest.test/hook", rate_per_second: 2 }] };
    const before = await (await page("/console/destinations", cookie, {}, bindings)).text();
    const pauseButton = `button[aria-label="Pause ${name}"]`;
    expect((await select(before, [pauseButton]))[pauseButton]).toHaveLength(1);
    expect(before).toContain("at most 2/s");

    const forged = await page(`/console/destinations/${name}/pause`, cookie, { method: "POST", headers: { origin: "https://evil.example" } }, bindings);
    expect(forged.status).toBe(403);
    expect(await countRows("SELECT count(*) AS n FROM destination_state WHERE destination = ?", name)).toBe(0);

    const paused = await page(`/console/destinations/${name}/pause`, cookie, { method: "POST" }, bindings);
    expect(paused.status).toBe(303);
    const after = await (await page(paused.headers.get("location")!, cookie, {}, bindings)).text();
    expect(after).toContain(`${name} is paused`);
    expect(after).toContain('class="state-paused"');
    const resumeButton = `button[aria-label="Resume ${name}"]`;
    expect((await select(after, [resumeButton]))[resumeButton]).toHaveLength(1);

    const resumed = await page(`/console/destinations/${name}/resume`, cookie, { method: "POST" }, bindings);
    expect(resumed.status).toBe(303);
    expect(await countRows("SELECT count(*) AS n FROM destination_state WHERE destination = ? AND paused_at IS NULL", name)).toBe(1);
    expect((await page(`/console/destinations/nope/pause`, cookie, { method: "POST" }, bindings)).status).toBe(404);
  });

  it("keeps the event log on indexes with 100,000 events in D1", async () => {
    // 100,000 old events (2020), so the rest of this file's counts are untouched.
    await env.DB.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
       INSERT INTO events (key, provider, event_id, type, known_type, tenant, occurred_at, received_at, verified_with, content_type, body, status)
       SELECT 'evt_bulk' || i, CASE i % 2 WHEN 0 THEN 'seismic' ELSE 'zuddl' END, 'bulk-' || i, 'BulkTypeV' || (i % 20), 1,
              'tenant-' || (i % 50), NULL, 1577836800000 + i * 1000, 'current', 'application/json', '{}', 'delivered' FROM n`,
    ).run();
    const plan = async (where: string) => {
      const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN SELECT key FROM events ${where} ORDER BY received_at DESC, key DESC LIMIT 51`).all<{ detail: string }>();
      return results.map((r) => r.detail).join(" / ");
    };
    expect(await plan("")).toMatch(/USING (COVERING )?INDEX events_by_received/);
    expect(await plan("WHERE tenant = 'tenant-7'")).toMatch(/USING (COVERING )?INDEX events_by_tenant/);
    expect(await plan("WHERE provider = 'zuddl' AND type = 'BulkTypeV3'")).toMatch(/USING (COVERING )?INDEX events_by_provider_type/);
    expect(await plan("WHERE status = 'delivered'")).toMatch(/USING (COVERING )?INDEX events_by_status/);

    // Deep pages through the console keep working: follow the cursor ten pages down.
    const cookie = await session();
    let path = "/console?provider=zuddl&limit=200";
    for (let i = 0; i < 10; i++) {
      const html = await (await page(path, cookie)).text();
      const next = /href="(\/console\?[^"]*cursor=[^"]+)"/.exec(html);
      expect(next, `page ${i}`).not.toBeNull();
      path = next![1]!.replaceAll("&amp;", "&");
    }
  }, 60_000);

  it("shows a quarantined payload; a release still failing says where, a forced one opens the event marked forced", async () => {
    const cookie = await session();
    const body = seismicBody({ version: "livesend-session-summary-v3", data: { InteractionId: 9 } });
    expect((await send(await seismicRequest(body))).status).toBe(422);
    const { id } = (await quarantinedRow(body))!;

    const dead = await (await page("/console/dead", cookie)).text();
    expect(dead).toContain(`<a href="/console/quarantine/${id}">View #${id}</a>`);
    expect(dead).toContain(`action="/console/quarantine/${id}/release"`);
    const detail = await (await page(`/console/quarantine/${id}`, cookie)).text();
    expect(detail).toContain("&quot;InteractionId&quot;: 9");
    expect(detail).toContain('<button type="submit" name="force" value="true">Release as it is (forced)</button>');

    const release = (form: Record<string, string>, bindings = {}) =>
      page(`/console/quarantine/${id}/release`, cookie, { method: "POST", body: new URLSearchParams(form) }, bindings);
    const refused = await release({});
    expect(refused.status).toBe(422);
    expect(await refused.text()).toMatch(/role="alert"><p>Not released: still fails validation: [^<]*\(at <code>\$\.data\.InteractionId<\/code>\)/);

    const events = recordingQueue<QueuedEvent>();
    const forced = await release({ force: "true" }, { EVENTS_QUEUE: events.queue });
    expect(forced.status).toBe(303);
    const location = forced.headers.get("location")!;
    expect(location).toMatch(/^\/console\/events\/evt_[0-9a-f]{24}\?released=accepted$/);
    const key = location.slice("/console/events/".length, location.indexOf("?"));
    expect(events.accepted).toEqual([{ eventKey: key, event: expect.objectContaining({ body, forced: true }) }]);
    await consumeAll(events.accepted);
    const eventPage = await (await page(location, cookie)).text();
    expect(eventPage).toContain("Released from quarantine: queued to be stored and delivered.");
    expect(eventPage).toContain("released from quarantine as it was, without passing validation");
    expect(await (await page("/console/dead", cookie)).text()).toContain(`(forced) as <a href="/console/events/${key}">`);
    const again = await release({});
    expect(again.headers.get("location")).toBe(`/console/events/${key}?released=already_released`);
  });

  it("signs out", async () => {
    const cookie = await session();
    const out = await page("/console/logout", cookie, { method: "POST" });
    expect(out.status).toBe(303);
    expect(out.headers.get("set-cookie")).toMatch(/edgehook_console=;|Max-Age=0/);
  });
});

describe("console charts (#12)", () => {
  it("charts events received and delivery outcomes for the last hour and day, in buckets on round times", async () => {
    const cookie = await session();
    expect((await sendAndConsume(await seismicRequest(seismicBody({ version: "ChartTypeV1" })))).status).toBe(200);
    const html = await (await page("/console", cookie)).text();
    const found = await select(html, ["#chart-hour .axis-x text.tick", "#chart-hour .axis-y text.tick", "#chart-hour .legend text", "#chart-hour .bucket title", "#chart-day .axis-x text.tick", "#chart-day .bucket title"]);
    expect(found["#chart-hour .axis-x text.tick"]!.map((e) => e.text)).toHaveLength(7);
    for (const label of found["#chart-hour .axis-x text.tick"]!) expect(label.text).toMatch(/^\d\d:\d[05]$/);
    for (const label of found["#chart-day .axis-x text.tick"]!) expect(label.text).toMatch(/^\d\d:00$/);
    expect(found["#chart-hour .axis-y text.tick"]![0]!.text).toBe("0");
    expect(found["#chart-hour .legend text"]!.map((e) => e.text)).toEqual(["events received", "deliveries succeeded", "failed or dead"]);
    expect(found["#chart-hour .bucket title"]).toHaveLength(12);
    expect(found["#chart-day .bucket title"]).toHaveLength(24);
    // The bucket now is in is the last one, and holds the event just sent.
    expect(found["#chart-hour .bucket title"]!.at(-1)!.text).toMatch(/UTC: [1-9]\d* events received/);
  });

  it("charts each destination's success rate and p95 forward time over the last day, from an index", async () => {
    const now = Date.now();
    // 100 forwards to one destination, 1 to 100 ms; the 10 slowest failed. A day-old one is left out.
    await env.DB.prepare(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
       INSERT INTO delivery_attempts (event_key, destination, attempt, started_at, duration_ms, status_code, error)
       SELECT 'evt_chart' || i, 'chart-dest', 1, ?1 - i * 1000, i, CASE WHEN i > 90 THEN 500 ELSE 200 END, NULL FROM n
       UNION ALL SELECT 'evt_chart_old', 'chart-dest', 1, ?1 - 86400000 - 1, 99999, 200, NULL`,
    ).bind(now).run();
    const { results } = await env.DB.prepare(`EXPLAIN QUERY PLAN ${DESTINATION_HEALTH_SQL}`).bind("chart-dest", now).all<{ detail: string }>();
    // Range searches of that destination's day in the index alone, never a scan of every attempt kept.
    const plan = results.map((r) => r.detail);
    expect(plan.filter((d) => d.includes("delivery_attempts"))).toEqual(
      expect.arrayContaining(["SEARCH delivery_attempts USING COVERING INDEX delivery_attempts_by_destination (destination=? AND started_at>?)"]),
    );
    expect(plan.join(" / ")).not.toMatch(/SCAN delivery_attempts/);
    const destinations = [{ name: "chart-dest", url: "https://chart.test/hook" }, { name: "chart-idle", url: "https://idle.test/hook" }];

    const cookie = await session();
    const html = await (await page("/console/destinations", cookie, {}, { DESTINATIONS: destinations })).text();
    const found = await select(html, ["#chart-success .value", "#chart-success title", "#chart-p95 .value", "#chart-p95 title", "#chart-p95 .axis-x text.tick", "td"]);
    expect(found["#chart-success .value"]!.map((e) => e.text)).toEqual(["90%", "no forwards"]);
    expect(found["#chart-success title"]!.map((e) => e.text)).toEqual(["chart-dest: 90 of 100 forwards answered 2xx (90%)", "chart-idle: no forwards in the last 24 hours"]);
    expect(found["#chart-p95 .value"]!.map((e) => e.text)).toEqual(["95 ms", "no forwards"]);
    expect(found["#chart-p95 title"]!.map((e) => e.text)[0]).toBe("chart-dest: 95% of 100 forwards took at most 95 ms");
    expect(found["#chart-p95 .axis-x text.tick"]!.map((e) => e.text)).toEqual(["0", "50", "100"]);
    expect(found.td!.map((e) => e.text)).toEqual(expect.arrayContaining(["90% of 100", "95 ms"]));
  });
});

describe("console form posts (#9.9)", () => {
  it("refuses a form post from another origin with 403, even with a valid session", async () => {
    const cookie = await session();
    const { id } = (await (await sendAndConsume(await seismicRequest(seismicBody()))).json()) as { id: string };
    const events = recordingQueue<QueuedEvent>();
    const replay = (headers: Record<string, string>) =>
      page(`/console/events/${id}/replay`, cookie, { method: "POST", headers, body: new URLSearchParams({ destination: "alpha" }) }, {
        DESTINATIONS: [{ name: "alpha", url: "https://alpha.test/hook" }],
        EVENTS_QUEUE: events.queue,
      });
    const refused: Record<string, string>[] = [
      { origin: "https://sibling.example.workers.dev", "sec-fetch-site": "same-site" }, // another Worker of the account
      { origin: "https://attacker.example", "sec-fetch-site": "cross-site" },
      { origin: "null" },
      {}, // neither header: not a browser, so not the console
    ];
    for (const headers of refused) {
      const response = await replay(headers);
      expect(response.status, JSON.stringify(headers)).toBe(403);
      expect(await errorOf(response)).toMatchObject({ code: "cross_origin_form" });
    }
    expect(events.accepted).toEqual([]);
    // The console's own pages: the Origin header, or Sec-Fetch-Site alone.
    expect((await replay({ origin: BASE })).status).toBe(303);
    expect((await replay({ "sec-fetch-site": "same-origin" })).status).toBe(303);
    expect(events.accepted).toHaveLength(2);

    const login = await signIn(env.ADMIN_TOKEN!, { origin: "https://sibling.example.workers.dev" });
    expect(login.status).toBe(403);
    expect(login.headers.get("set-cookie")).toBeNull();
    expect((await page("/console/logout", cookie, { method: "POST", headers: { origin: "https://sibling.example.workers.dev" } })).status).toBe(403);
  });

  it("refuses a sign-in form over 4 KiB with 413, declared or streamed", async () => {
    const declared = await signIn("x".repeat(5000));
    expect(declared.status).toBe(413);
    expect(await errorOf(declared)).toMatchObject({ code: "body_too_large" });
    const bytes = new TextEncoder().encode(`token=${"x".repeat(5000)}`);
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes);
        controller.close();
      },
    });
    const streamed = await send(
      new Request(`${BASE}/console/login`, {
        method: "POST", headers: { ...SAME_ORIGIN, "content-type": "application/x-www-form-urlencoded" }, body: stream, duplex: "half", redirect: "manual",
      } as RequestInit),
    );
    expect(streamed.status).toBe(413);
  });

  it("answers 429 with Retry-After past 5 failed sign-ins from one address, then even to the right token, and keeps nothing in D1", async () => {
    const from = { "cf-connecting-ip": "203.0.113.7" };
    const guess = "wrong-guess-" + crypto.randomUUID();
    for (let i = 0; i < 5; i++) expect((await signIn(guess, from)).status).toBe(401);
    expect((await signIn(guess, from)).status).toBe(429);
    const locked = await signIn(env.ADMIN_TOKEN!, from); // even the right token: a locked client learns nothing
    expect(locked.status).toBe(429);
    const wait = Number(locked.headers.get("retry-after"));
    expect(wait).toBeGreaterThan(0);
    expect(wait).toBeLessThanOrEqual(60);
    expect(locked.headers.get("set-cookie")).toBeNull();
    expect(await locked.text()).toContain(`Too many failed sign-ins from your address. Try again in ${wait} second`);
    // Another address signs in; the count is the rate limiting binding's, not a D1 table.
    expect((await signIn(env.ADMIN_TOKEN!, { "cf-connecting-ip": "203.0.113.99" })).status).toBe(303);
    expect(await countRows("SELECT count(*) AS n FROM sqlite_master WHERE name = 'login_failures'")).toBe(0);
  });

  it("a successful sign-in is not counted as a failure", async () => {
    const from = { "cf-connecting-ip": "198.51.100.4" };
    for (let i = 0; i < 4; i++) expect((await signIn("wrong", from)).status).toBe(401);
    expect((await signIn(env.ADMIN_TOKEN!, from)).status).toBe(303);
    expect((await signIn("wrong", from)).status).toBe(401);
    expect((await signIn("wrong", from)).status).toBe(429);
  });

  it("counts an IPv6 client by its /64", async () => {
    for (const ip of ["2001:db8:77:1::1", "2001:db8:77:1::2", "2001:0db8:0077:0001:aaaa:bbbb:cccc:dddd", "2001:db8:77:1:0:0:0:9", "2001:db8:77:1::5"]) {
      expect((await signIn("wrong", { "cf-connecting-ip": ip })).status).toBe(401);
    }
    expect((await signIn("wrong", { "cf-connecting-ip": "2001:db8:77:1::ffff" })).status).toBe(429);
    expect((await signIn("wrong", { "cf-connecting-ip": "2001:db8:77:2::1" })).status).toBe(401);
  });
});
