#!/usr/bin/env node
// `npm run test:browser`: the operator console in headless Chromium (Debian's package, driven by
// playwright-core) against the gateway under `wrangler dev`. Keeps a screenshot of every page in
// test-artifacts/console/. Needs /usr/bin/chromium (.ci/run installs it).
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { chromium } from "playwright-core";
import { freePort, startWorker } from "../../scripts/local-gateway.mjs";

const root = new URL("../..", import.meta.url).pathname;
const shots = join(root, "test-artifacts/console");
mkdirSync(shots, { recursive: true });
const ADMIN = "browser-admin-token-0123456789abcdef";
const SECRET = "browser-seismic-secret";
const results = [];
// The Access application's AUD tag and the two identities the Access part signs in as.
const ACCESS_AUD = "browser-test-access-application-aud";
const OPERATOR = "operator@example.com";
const VIEWER = "viewer@example.com";

// A downstream that records what it receives.
const receiverPort = await freePort();
const received = [];
const receiver = createServer((request, response) => {
  request.resume();
  request.on("end", () => {
    if (request.url === "/broken") return response.writeHead(500).end();
    received.push(request.headers["webhook-id"]);
    response.end("ok");
  });
}).listen(receiverPort, "127.0.0.1");

const gateway = await startWorker({
  vars: {
    SEISMIC_SIGNING_SECRET: SECRET,
    ADMIN_TOKEN: ADMIN,
    DESTINATIONS: [
      { name: "local", url: `http://127.0.0.1:${receiverPort}/hook` },
      { name: "broken", url: `http://127.0.0.1:${receiverPort}/broken`, types: ["BrokenTypeV1"] },
    ],
    MAX_DELIVERY_ATTEMPTS: "1",
    SEARCH: "on",
  },
});
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

/**
 * A chart as a person sees it: a screenshot of it alone, then its axes, tick and time labels,
 * legend and hover titles read from the page. Hovering the middle of a bar must land on an
 * element whose <title> (the browser's tooltip) names the values.
 */
async function checkChart(page, id, { xTicks, yTicks, legend, hovers }) {
  const chart = page.locator(`#${id}`);
  await chart.screenshot({ path: join(shots, `${id}.png`) });
  const read = (selector) => chart.locator(selector).allTextContents();
  const x = await read(".axis-x text.tick");
  const y = await read(".axis-y text.tick");
  assert.ok(x.length >= 2 && x.every((t) => xTicks.test(t)), `${id}: x axis labels ${JSON.stringify(x)}`);
  assert.ok(y.length >= 2 && y.every((t) => yTicks.test(t)), `${id}: y axis labels ${JSON.stringify(y)}`);
  for (const axis of [".axis-x", ".axis-y"]) assert.equal(await chart.locator(`${axis} > line`).count(), 1, `${id}: the ${axis} line`);
  assert.deepEqual(await read(".legend text"), legend, `${id}: legend`);
  assert.equal(await chart.locator("svg[role=img][aria-label]").count(), 1, `${id}: labelled for assistive technology`);
  const titles = await chart.locator(".hover").evaluateAll((els) =>
    els.map((el) => {
      const box = el.getBoundingClientRect();
      const hit = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
      return hit === el ? el.querySelector("title").textContent : null;
    }),
  );
  assert.ok(titles.every((t) => t), `${id}: every hover area is on top and titled`);
  for (const pattern of hovers) assert.ok(titles.some((t) => pattern.test(t)), `${id}: a hover title like ${pattern} among ${JSON.stringify(titles)}`);
}

/** Sends `text` to a gateway's Seismic endpoint, signed as Seismic signs it. */
function sendSigned(gatewayUrl, text) {
  return fetch(`${gatewayUrl}/webhooks/seismic`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-seismic-signature": createHmac("sha256", SECRET).update(text).digest("hex") },
    body: text,
  });
}

/** Reloads the page until `locator` shows (the queue consumer stores and delivers a second or so after the acknowledgement). */
async function reloadUntilShown(page, locator) {
  for (let i = 0; i < 40 && !(await locator.count()); i++) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    await page.reload();
  }
  await locator.first().waitFor();
}

/**
 * A Cloudflare Access team on loopback: an RS256 key pair made here, its public key set served at
 * /cdn-cgi/access/certs as Access serves it, and JWTs signed with it as Access issues them.
 */
async function startAccessTeam(audience) {
  const { publicKey, privateKey } = await generateKeyPair("RS256");
  const kid = randomUUID();
  const keySet = JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid, alg: "RS256", use: "sig" }] });
  const port = await freePort();
  const server = createServer((request, response) => {
    if (request.url !== "/cdn-cgi/access/certs") return response.writeHead(404).end();
    response.writeHead(200, { "content-type": "application/json" }).end(keySet);
  }).listen(port, "127.0.0.1");
  const origin = `http://127.0.0.1:${port}`;
  return {
    origin,
    token: (email) =>
      new SignJWT({ email, type: "app" })
        .setProtectedHeader({ alg: "RS256", kid, typ: "JWT" })
        .setIssuer(origin)
        .setAudience(audience)
        .setIssuedAt()
        .setExpirationTime("10m")
        .sign(privateKey),
    stop: () => {
      server.close();
      server.closeAllConnections();
    },
  };
}

/** A browser context signed in as `email`: Access's CF_Authorization cookie, as Access sets it after its sign-in. */
async function signedInAs(team, email) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.addCookies([{ name: "CF_Authorization", value: await team.token(email), domain: "127.0.0.1", path: "/" }]);
  return context.newPage();
}

async function step(name, run) {
  try {
    await run();
    results.push({ name, ok: true });
    console.log(`ok   ${name}`);
  } catch (err) {
    results.push({ name, ok: false, error: String(err) });
    console.log(`FAIL ${name}: ${err.stack ?? err}`);
  }
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const eventId = randomUUID();
  const body = readFileSync(join(root, "test/fixtures/seismic-livesend-session-summary-v3.json"), "utf8").replace("e40bbaab-f86e-e62b-d3c9-5104734edb18", eventId);

  await step("a wrong token is refused", async () => {
    await page.goto(`${gateway.url}/console`);
    assert.match(page.url(), /\/console\/login$/);
    await page.getByLabel("Admin token").fill("wrong-token");
    await page.keyboard.press("Enter");
    await page.getByRole("alert").waitFor();
    assert.match(await page.getByRole("alert").innerText(), /not right/);
    await page.screenshot({ path: join(shots, "login-refused.png") });
  });

  await step("log in with the keyboard; the token never appears in a URL", async () => {
    await page.goto(`${gateway.url}/console/login`);
    await page.keyboard.press("Tab"); // focus starts on the token field (autofocus), Tab moves to the button
    await page.getByLabel("Admin token").focus();
    await page.keyboard.type(ADMIN);
    await page.keyboard.press("Enter");
    await page.waitForURL(/\/console$/);
    assert.ok(!page.url().includes(ADMIN));
    const cookies = await context.cookies();
    assert.ok(cookies.every((c) => !c.value.includes(ADMIN)), "the cookie holds a session, not the token");
    await page.screenshot({ path: join(shots, "events-empty.png") });
  });

  await step("a sent event appears in the log", async () => {
    assert.equal((await sendSigned(gateway.url, body)).status, 200);
    await reloadUntilShown(page, page.getByRole("link", { name: eventId }));
    await page.screenshot({ path: join(shots, "events.png"), fullPage: true });
  });

  await step("the events charts have axes, time labels, a legend and values on hover", async () => {
    const legend = ["events received", "deliveries succeeded", "failed or dead"];
    const integer = /^\d+$/;
    await checkChart(page, "chart-hour", { xTicks: /^\d\d:\d[05]$/, yTicks: integer, legend, hovers: [/UTC: 1 events received/] });
    await checkChart(page, "chart-day", { xTicks: /^\d\d:00$/, yTicks: integer, legend, hovers: [/UTC: 1 events received/] });
  });

  await step("search the payloads from the keyboard", async () => {
    // The cron builds the index once SEARCH is on (locally: its handler URL).
    await fetch(`${gateway.url}/cdn-cgi/handler/scheduled`).then((r) => r.arrayBuffer());
    await page.getByLabel("Payload contains").focus();
    await page.keyboard.type(eventId);
    await page.keyboard.press("Enter");
    await page.waitForURL(/[?&]q=/);
    await page.getByRole("link", { name: eventId }).waitFor();
    assert.equal(await page.getByRole("row").count(), 2, "the header and the one event whose payload has that id");
    await page.screenshot({ path: join(shots, "events-search.png"), fullPage: true });
    await page.getByLabel("Payload contains").fill(`${eventId} nowhere-${randomUUID()}`);
    await page.keyboard.press("Enter");
    await page.getByText("No events match.").waitFor();
    await page.goto(`${gateway.url}/console`);
  });

  await step("open it: envelope, payload, which secret, its delivery", async () => {
    await page.getByRole("link", { name: eventId }).click();
    await page.getByText("the current secret").waitFor();
    await page.getByText("livesend-session-summary-v3").first().waitFor();
    // The consumer forwards within a couple of seconds; the page shows the attempt.
    await reloadUntilShown(page, page.getByText(/local: delivered after 1 attempt/));
    await page.screenshot({ path: join(shots, "event.png"), fullPage: true });
  });

  await step("replay it and see the new delivery", async () => {
    const before = received.length;
    await page.getByLabel("Replay to").selectOption("local");
    await page.getByRole("button", { name: "Replay" }).click();
    await page.getByRole("status").waitFor();
    for (let i = 0; i < 20 && !(await page.getByText(/local: delivered after 1 attempt/).count() && received.length > before); i++) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      await page.reload();
    }
    assert.ok(received.length > before, "the receiver got the replay");
    assert.ok((await page.getByRole("row").filter({ hasText: "200" }).count()) >= 2, "two attempts with 200 in the history");
    await page.screenshot({ path: join(shots, "event-replayed.png"), fullPage: true });
  });

  await step("dead letters with bulk replay, and quarantine with the failing path", async () => {
    const post = (text) => sendSigned(gateway.url, text);
    const deadEvent = JSON.stringify({ id: randomUUID(), version: "BrokenTypeV1", occurredAt: "x", tenantId: "t", data: {} });
    assert.equal((await post(deadEvent)).status, 200);
    const quarantined = JSON.stringify({ id: randomUUID(), version: "livesend-session-summary-v3", occurredAt: "x", tenantId: "t", data: { InteractionId: 42 } });
    assert.equal((await post(quarantined)).status, 422);
    await page.getByRole("link", { name: "Dead letters & quarantine" }).click();
    await reloadUntilShown(page, page.getByRole("cell", { name: "broken" }));
    await page.getByRole("cell", { name: "$.data.InteractionId", exact: true }).waitFor();
    await page.screenshot({ path: join(shots, "dead.png"), fullPage: true });
    await page.getByLabel("Replay dead deliveries to").selectOption("broken");
    await page.getByRole("button", { name: /^Replay dead deliveries/ }).click();
    await page.getByRole("status").waitFor();
    assert.match(await page.getByRole("status").innerText(), /Replay queued for 1 dead deliver/);
  });

  await step("destinations and every page's controls are labelled", async () => {
    await page.screenshot({ path: join(shots, "dead.png"), fullPage: true });
    await page.getByRole("link", { name: "Destinations" }).click();
    await page.getByText(`http://127.0.0.1:${receiverPort}/hook`).waitFor();
    await page.screenshot({ path: join(shots, "destinations.png"), fullPage: true });
    // "local" delivered every forward; "broken" answered 500 to its one attempt.
    await checkChart(page, "chart-success", {
      xTicks: /^(0|25|50|75|100)$/, yTicks: /^(local|broken)$/, legend: ["forwards answered 2xx, %"],
      hovers: [/^local: (\d+) of \1 forwards answered 2xx \(100%\)$/, /^broken: 0 of \d+ forwards answered 2xx \(0%\)$/],
    });
    await checkChart(page, "chart-p95", {
      xTicks: /^\d+$/, yTicks: /^(local|broken)$/, legend: ["95th percentile of forward time, ms"],
      hovers: [/^local: 95% of \d+ forwards took at most \d+ ms$/],
    });
    // Every form control on every page has a label.
    for (const path of ["/console", "/console/dead", "/console/destinations"]) {
      await page.goto(`${gateway.url}${path}`);
      const unlabelled = await page.$$eval("input:not([type=hidden]), select", (els) => els.filter((el) => !(el.labels && el.labels.length)).map((el) => el.outerHTML));
      assert.deepEqual(unlabelled, [], `${path} has unlabelled controls`);
    }
  });

  // Cloudflare Access, on a gateway of its own (with Access configured the admin token above is
  // not accepted): a viewer and an operator, each in a browser context of their own.
  const team = await startAccessTeam(ACCESS_AUD);
  let accessGateway;
  try {
    accessGateway = await startWorker({
      vars: {
        SEISMIC_SIGNING_SECRET: SECRET,
        ACCESS_TEAM_DOMAIN: team.origin,
        ACCESS_AUD,
        OPERATORS: OPERATOR,
        VIEWERS: VIEWER,
        // A transform, so the event page has a Preview control to show or hide.
        DESTINATIONS: [{ name: "local", url: `http://127.0.0.1:${receiverPort}/access-hook`, transform: "chat-line" }],
      },
    });
    const consoleUrl = (path) => `${accessGateway.url}/console${path}`;
    const accessEventId = randomUUID();
    assert.equal((await sendSigned(accessGateway.url, body.replace(eventId, accessEventId))).status, 200);
    const quarantined = JSON.stringify({ id: randomUUID(), version: "livesend-session-summary-v3", occurredAt: "x", tenantId: "t", data: { InteractionId: 42 } });
    assert.equal((await sendSigned(accessGateway.url, quarantined)).status, 422);
    const viewer = await signedInAs(team, VIEWER);
    const operator = await signedInAs(team, OPERATOR);
    // The operators' controls, found as the steps above find them (by role and accessible name).
    const controls = (page) => ({
      replay: page.getByRole("button", { name: "Replay", exact: true }),
      preview: page.getByRole("button", { name: /^Preview the transform of / }),
      bulkReplay: page.getByRole("button", { name: /^Replay (dead deliveries|failed transforms)/ }),
      release: page.getByRole("button", { name: /^Release/ }),
      pauseOrResume: page.getByRole("button", { name: /^(Pause|Resume) local$/ }),
    });

    await step("Access viewer: sees the events and an event, and none of the operators' controls", async () => {
      await viewer.goto(consoleUrl(""));
      await reloadUntilShown(viewer, viewer.getByRole("link", { name: accessEventId }));
      await viewer.getByRole("link", { name: accessEventId }).click();
      await viewer.getByText("the current secret").waitFor();
      const hidden = controls(viewer);
      assert.equal(await hidden.replay.count(), 0, "no Replay on the event page");
      assert.equal(await viewer.getByLabel("Replay to").count(), 0, "no Replay destination picker");
      assert.equal(await hidden.preview.count(), 0, "no Preview");
      await viewer.screenshot({ path: join(shots, "viewer-event.png"), fullPage: true });
      await viewer.goto(consoleUrl("/dead"));
      await reloadUntilShown(viewer, viewer.getByRole("cell", { name: "$.data.InteractionId", exact: true }));
      assert.equal(await hidden.bulkReplay.count(), 0, "no bulk Replay");
      assert.equal(await hidden.release.count(), 0, "no Release of the quarantined payload");
      await viewer.goto(consoleUrl("/destinations"));
      await viewer.getByRole("cell", { name: "local", exact: true }).waitFor();
      assert.equal(await hidden.pauseOrResume.count(), 0, "no Pause or Resume");
      await viewer.screenshot({ path: join(shots, "viewer-destinations.png"), fullPage: true });
    });

    await step("Access viewer: a pause posted without the button is refused (403), and the audit log shows it", async () => {
      // A form post from the console's own page (Origin and cookie as a form sends them): only the role refuses it.
      const status = await viewer.evaluate(async () => (await fetch("/console/destinations/local/pause", { method: "POST", body: new URLSearchParams() })).status);
      assert.equal(status, 403);
      await viewer.goto(consoleUrl("/audit"));
      const refused = viewer.getByRole("row").filter({ hasText: VIEWER }).filter({ hasText: "pause" });
      assert.match(await refused.innerText(), /viewer\s+.*forbidden \(403\)/s);
      await viewer.screenshot({ path: join(shots, "viewer-audit.png"), fullPage: true });
    });

    await step("Access operator: sees the controls, pauses and resumes a destination, and the audit log names them", async () => {
      const shown = controls(operator);
      await operator.goto(consoleUrl(""));
      await operator.getByRole("link", { name: accessEventId }).click();
      await shown.replay.waitFor();
      await shown.preview.waitFor();
      await operator.goto(consoleUrl("/dead"));
      assert.equal(await shown.bulkReplay.count(), 2, "bulk Replay of dead deliveries and of failed transforms");
      await shown.release.first().waitFor();
      await operator.goto(consoleUrl("/destinations"));
      await operator.getByRole("button", { name: "Pause local" }).click();
      // Each button posts a form and lands on the page again, which says what was done.
      await operator.getByRole("status").filter({ hasText: "local is paused" }).waitFor();
      await operator.screenshot({ path: join(shots, "operator-destinations.png"), fullPage: true });
      await operator.getByRole("button", { name: "Resume local" }).click();
      await operator.getByRole("status").filter({ hasText: "local is resumed" }).waitFor();
      await operator.goto(consoleUrl("/audit"));
      for (const action of ["pause", "resume"]) {
        const row = operator.getByRole("row").filter({ hasText: OPERATOR }).filter({ has: operator.getByRole("cell", { name: action, exact: true }) });
        assert.match(await row.innerText(), /operator\s+.*\bok\b/s, `the operator's ${action}`);
      }
    });
  } finally {
    await accessGateway?.stop();
    team.stop();
  }
} finally {
  await browser.close();
  await gateway.stop();
  receiver.close();
  receiver.closeAllConnections();
}

writeFileSync(join(root, "test-artifacts/browser.json"), JSON.stringify({ results }, null, 2));
const failed = results.filter((r) => !r.ok).length;
console.log(`browser: ${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
