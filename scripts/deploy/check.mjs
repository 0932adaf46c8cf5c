// After a deploy: is the gateway live? `GET /healthz`, and the request Seismic sends when an
// operator saves the event subscription (a URL-verification challenge), answered within Seismic's
// 3-second deadline. A new workers.dev name can take a little while to resolve, so an unreachable
// Worker is tried again for up to `waitMs`; an answer, right or wrong, is final.
import { randomBytes } from "node:crypto";

/** Seismic: "Responses for verification must be supplied with 3 seconds." */
export const CHALLENGE_DEADLINE_MS = 3_000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function reach(request, waitMs) {
  const until = Date.now() + waitMs;
  for (;;) {
    try {
      const started = Date.now();
      const response = await request();
      if (response.status !== 404 || Date.now() >= until) return { response, ms: Date.now() - started };
    } catch (err) {
      if (Date.now() >= until) return { error: err.cause?.code ?? err.message };
    }
    await sleep(2_000);
  }
}

/** Each check: { name, ok, detail } (detail says what was seen; never a secret: none is sent). */
export async function checkLive(baseUrl, { waitMs = 60_000 } = {}) {
  const checks = [];
  const health = await reach(() => fetch(new URL("/healthz", baseUrl), { signal: AbortSignal.timeout(10_000) }), waitMs);
  if (health.error) checks.push({ name: "GET /healthz", ok: false, detail: `not reachable (${health.error})` });
  else {
    const body = await health.response.json().catch(() => null);
    const notes = body ? reasons(body) : [];
    checks.push({
      name: "GET /healthz",
      // 503 "degraded" means a configuration error (DESTINATIONS, SOURCES, alerts, a short ADMIN_TOKEN): events wait until it is fixed.
      ok: body !== null && health.response.status === 200,
      detail: body ? `${health.response.status} ${body.status}${notes.length ? `: ${notes.join("; ")}` : ""}` : `${health.response.status}, not edgehook's JSON`,
    });
  }
  const challenge = randomBytes(24).toString("base64url");
  const seismic = await reach(
    () => fetch(new URL("/webhooks/seismic", baseUrl), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "verification", challenge }),
      signal: AbortSignal.timeout(10_000),
    }),
    waitMs,
  );
  if (seismic.error) checks.push({ name: "Seismic URL verification", ok: false, detail: `not reachable (${seismic.error})` });
  else {
    const text = await seismic.response.text();
    const answered = seismic.response.status === 200 && text === challenge;
    checks.push({
      name: "Seismic URL verification",
      ok: answered && seismic.ms <= CHALLENGE_DEADLINE_MS,
      detail: answered ? `challenge answered in ${seismic.ms} ms (deadline ${CHALLENGE_DEADLINE_MS} ms)` : `${seismic.response.status}, not the challenge: ${text.slice(0, 200)}`,
    });
  }
  return checks;
}

/** What /healthz says is wrong or missing, in words. */
function reasons(body) {
  const reasons = [];
  for (const [name, provider] of Object.entries(body.providers ?? {})) if (!provider.configured) reasons.push(`${name} has no signing secret`);
  if (body.admin?.configured === false) reasons.push("ADMIN_TOKEN is not set");
  if (body.admin?.valid === false) reasons.push("ADMIN_TOKEN is too short");
  if (body.destinations?.valid === false) reasons.push(`DESTINATIONS has ${body.destinations.errors} error(s)`);
  if (body.sources?.valid === false) reasons.push(`SOURCES has ${body.sources.errors} error(s)`);
  if (body.alerts?.valid === false) reasons.push(`ALERT_* has ${body.alerts.errors} error(s)`);
  return reasons.length || body.status === "ok" ? reasons : ["see GET /healthz"];
}
