/**
 * Outbound headers with secrets: `${NAME}` filled in from the secret binding NAME at send time,
 * and the value never anywhere else (admin API, console, /healthz, metrics, logs). Reserved
 * headers and missing bindings are configuration errors naming field and rule, never a value.
 */
import { env } from "cloudflare:workers";
import { afterEach, describe, expect, it, vi } from "vitest";
import { accept, admin, bindings, consume, downstream, events, makeDue, useDeliveryHarness } from "./delivery-harness";
import { sendWith, seismicBody, seismicRequest } from "./helpers";

useDeliveryHarness();
afterEach(() => vi.restoreAllMocks());

const TOKEN = "tok_9f3c2a7b5d1e4c6a8b0d2f4e6a8c0b2d";
const KEY = "key-4a8c2e6f0b3d7a1c5e9f";

/** Every line the Worker writes to the console while `work` runs. */
async function logsOf(work: () => Promise<unknown>): Promise<string> {
  const lines: string[] = [];
  for (const method of ["log", "error", "warn", "info", "debug"] as const) {
    vi.spyOn(console, method).mockImplementation((...args: unknown[]) => lines.push(args.map(String).join(" ")));
  }
  await work();
  vi.restoreAllMocks();
  return lines.join("\n");
}

describe("outbound headers", () => {
  it("fills ${NAME} from the secret binding at send time, and the value appears in no output", async () => {
    const name = `crm-${crypto.randomUUID().slice(0, 8)}`;
    Object.assign(bindings, {
      DESTINATIONS: [{ name, url: "https://crm.test/hook", headers: { Authorization: "Bearer ${CRM_TOKEN}", "X-Api-Key": "${CRM_KEY}", "X-Team": "sales" } }],
      CRM_TOKEN: TOKEN,
      CRM_KEY: KEY,
    });
    const crm = downstream("https://crm.test/hook", [500, 200]);
    const logs = await logsOf(async () => {
      const key = await accept(await seismicRequest(seismicBody()));
      await consume(events.accepted); // fails once (its error is logged and recorded)
      await makeDue(key);
      await consume(events.accepted);
    });
    expect(logs).toContain("\"queue\":\"deliver\"");
    expect(crm).toHaveLength(2);
    for (const forward of crm) {
      expect(forward.headers.get("authorization")).toBe(`Bearer ${TOKEN}`);
      expect(forward.headers.get("x-api-key")).toBe(KEY);
      expect(forward.headers.get("x-team")).toBe("sales");
    }

    const outputs = [
      logs,
      await (await admin("GET", "/admin/destinations")).text(),
      await (await admin("GET", "/admin/metrics")).text(),
      await (await admin("GET", "/admin/openapi.json")).text(),
      await (await admin("GET", `/admin/deliveries?destination=${name}`)).text(),
      await (await sendWith(new Request("https://edgehook.test/healthz"), bindings)).text(),
      JSON.stringify(await env.DB.prepare("SELECT * FROM deliveries WHERE destination = ?").bind(name).all()),
      JSON.stringify(await env.DB.prepare("SELECT * FROM delivery_attempts WHERE destination = ?").bind(name).all()),
    ];
    for (const output of outputs) {
      expect(output).not.toContain(TOKEN);
      expect(output).not.toContain(KEY);
    }
    const listed = (await (await admin("GET", "/admin/destinations")).json()) as { destinations: { name: string; config: { headers: unknown } }[] };
    expect(listed.destinations.find((d) => d.name === name)!.config.headers).toEqual([
      { name: "Authorization", bindings: ["CRM_TOKEN"] },
      { name: "X-Api-Key", bindings: ["CRM_KEY"] },
      { name: "X-Team", bindings: [] },
    ]);
  });

  it("refuses reserved headers and missing or unusable bindings as configuration errors, naming field and rule only", async () => {
    const pasted = "s3cr3t-pasted-as-a-name-0123456789";
    const DESTINATIONS = [
      { name: "a", url: "https://a.test/", headers: { "Content-Type": "text/plain", "Webhook-Signature": "x", "x-edgehook-Pasted-Secret-0123": "y", Host: "h" } },
      { name: "b", url: "https://b.test/", headers: { Authorization: "Bearer ${MISSING_TOKEN}", [pasted]: "v", "X-Ok": "${LINE_BREAK}", "X-Quote": "${CURLY}" } },
      { name: "c", url: "https://c.test/", headers: { "X-Key": 42 } },
    ];
    const response = await admin("GET", "/admin/destinations", { DESTINATIONS, LINE_BREAK: "one\r\nInjected: two", CURLY: "it’s-a-pasted-secret" });
    const body = (await response.json()) as { valid: boolean; errors: string[] };
    expect(body.errors).toEqual([
      "DESTINATIONS[0] (a).headers.content-type: is reserved (webhook-*, x-edgehook-*, content-type, host and content-length are set by edgehook)",
      "DESTINATIONS[0] (a).headers[1]: is reserved (webhook-*, x-edgehook-*, content-type, host and content-length are set by edgehook)",
      "DESTINATIONS[0] (a).headers[2]: is reserved (webhook-*, x-edgehook-*, content-type, host and content-length are set by edgehook)",
      "DESTINATIONS[0] (a).headers.host: is reserved (webhook-*, x-edgehook-*, content-type, host and content-length are set by edgehook)",
      "DESTINATIONS[1] (b).headers[0]: a ${NAME} in its value names a secret binding that is not set (NAME: A-Z, 0-9, _)",
      "DESTINATIONS[1] (b).headers[2]: its value (with its secrets filled in) must be one line of at most 8192 printable ASCII characters",
      "DESTINATIONS[1] (b).headers[3]: its value (with its secrets filled in) must be one line of at most 8192 printable ASCII characters",
      "DESTINATIONS[2] (c).headers: must be a table of at most 20 header names to text values, in which ${NAME} stands for the secret binding NAME",
    ]);
    const text = JSON.stringify(body);
    for (const secret of ["MISSING_TOKEN", "Injected", "pasted-secret", pasted]) expect(text.toLowerCase()).not.toContain(secret.toLowerCase());
    const health = await sendWith(new Request("https://edgehook.test/healthz"), { DESTINATIONS });
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ destinations: { valid: false, errors: 8 } });
  });
});

describe("secrets edgehook keeps to itself", () => {
  it("refuses a header that would send the admin token, an alert secret, a source's or a destination's signing secret", async () => {
    const own = ["ADMIN_TOKEN", "ALERT_SECRET", "SEISMIC_SIGNING_SECRET", "ZUDDL_AUTH_TOKEN", "SUMMIT_SECRET", "SIGNING_KEY"];
    const DESTINATIONS = [
      { name: "signed", url: "https://s.test/", secret: "SIGNING_KEY" },
      { name: "leaky", url: "https://l.test/", headers: Object.fromEntries(own.map((binding, i) => [`X-Leak-${i}`, `x \${${binding}}`])) },
      { name: "fine", url: "https://f.test/", headers: { Authorization: "Bearer ${CRM_TOKEN}" } },
    ];
    const response = await admin("GET", "/admin/destinations", {
      DESTINATIONS,
      SOURCES: [{ name: "summit", provider: "zuddl", secret: "SUMMIT_SECRET" }],
      ALERT_SECRET: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
      SUMMIT_SECRET: "summit-secret-value",
      SIGNING_KEY: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
      CRM_TOKEN: TOKEN,
    });
    const body = (await response.json()) as { valid: boolean; errors: string[] };
    expect(body.valid).toBe(false);
    expect(body.errors).toEqual(
      own.map((_, i) => `DESTINATIONS[1] (leaky).headers[${i}]: a \${NAME} in its value names a secret edgehook keeps to itself (ADMIN_TOKEN, ALERT_*, a source's or a destination's signing secret)`),
    );
  });
});
