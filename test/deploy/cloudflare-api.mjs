// A local stand-in for the Cloudflare API: only the endpoints that `npm run deploy` makes wrangler
// call (sign-in, D1, Queues, R2 buckets, Workers scripts and their settings), with the shapes wrangler expects
// (as workers-sdk's own test mocks answer them). D1 databases are real SQLite (node:sqlite), so a
// migration that does not run fails here as it would there. Everything it was asked is recorded
// for the test to read (GET /__standin/state), and faults can be injected (POST /__standin/fault).
import { createServer } from "node:http";
import { randomUUID } from "node:crypto";
import { DatabaseSync } from "node:sqlite";
import { unstable_splitSqlQuery } from "wrangler";

export const ACCOUNT_ID = "0123456789abcdef0123456789abcdef";
export const API_TOKEN = "standin-api-token";
export const SUBDOMAIN = "standin";

const ok = (result, extra = {}) => ({ status: 200, body: { success: true, errors: [], messages: [], result, ...extra } });
const fail = (status, code, message) => ({ status, body: { success: false, errors: [{ code, message }], messages: [], result: null } });
const page = (items) => ok(items, { result_info: { page: 1, per_page: 1000, count: items.length, total_count: items.length, total_pages: 1 } });

export function startCloudflareApi() {
  const state = {
    requests: [],
    unknown: [],
    databases: new Map(),
    queues: new Map(),
    buckets: new Map(),
    scripts: new Map(),
    faults: [],
  };

  function executeSql(db, sql, params = []) {
    const statements = unstable_splitSqlQuery(sql);
    return statements.map((text) => {
      const started = Date.now();
      const statement = db.sqlite.prepare(text);
      const returnsRows = statement.columns().length > 0;
      const args = statements.length === 1 ? params : [];
      const results = returnsRows ? statement.all(...args) : [];
      const run = returnsRows ? { changes: 0, lastInsertRowid: 0 } : statement.run(...args);
      return { results, success: true, meta: { duration: Date.now() - started, changes: Number(run.changes), last_row_id: Number(run.lastInsertRowid), rows_read: results.length, rows_written: Number(run.changes), changed_db: !returnsRows, size_after: 0 } };
    });
  }

  const databaseInfo = (db) => ({ uuid: db.uuid, name: db.name, created_at: db.createdAt, version: "production", num_tables: 0, file_size: 0, running_in_region: "WEUR" });
  const queueInfo = (q) => ({ queue_id: q.id, queue_name: q.name, created_on: q.createdAt, modified_on: q.createdAt, producers: [], producers_total_count: 0, consumers: q.consumers, consumers_total_count: q.consumers.length, settings: {} });
  const bucketInfo = (b) => ({ name: b.name, creation_date: b.createdAt, location: "WEUR", storage_class: "Standard" });
  const findDatabase = (idOrName) => [...state.databases.values()].find((d) => d.uuid === idOrName || d.name === idOrName);
  const findQueue = (idOrName) => [...state.queues.values()].find((q) => q.id === idOrName || q.name === idOrName);

  /** [method, pattern, handler(match, request)] — first match wins. */
  const routes = [
    ["GET", /^\/user\/tokens\/verify$/, () => ok({ id: "token", status: "active" })],
    ["GET", /^\/accounts\/[^/]+\/tokens\/verify$/, () => ok({ id: "token", status: "active" })],
    ["GET", /^\/user$/, () => ok({ id: "user", email: "operator@example.com" })],
    ["GET", /^\/memberships$/, () => page([{ id: "m1", account: { id: ACCOUNT_ID, name: "Stand-in account" }, status: "accepted" }])],
    ["GET", /^\/accounts$/, () => page([{ id: ACCOUNT_ID, name: "Stand-in account" }])],

    // D1
    ["GET", /^\/accounts\/[^/]+\/d1\/database$/, (m, req) => {
      const name = req.query.get("name");
      return page([...state.databases.values()].filter((d) => !name || d.name === name).map(databaseInfo));
    }],
    ["POST", /^\/accounts\/[^/]+\/d1\/database$/, (m, req) => {
      if (findDatabase(req.json.name)) return fail(400, 7502, "A database with that name already exists");
      const db = { uuid: randomUUID(), name: req.json.name, createdAt: new Date().toISOString(), sqlite: new DatabaseSync(":memory:") };
      state.databases.set(db.uuid, db);
      return ok(databaseInfo(db));
    }],
    ["GET", /^\/accounts\/[^/]+\/d1\/database\/([^/]+)$/, ([, id]) => {
      const db = findDatabase(decodeURIComponent(id));
      return db ? ok(databaseInfo(db)) : fail(404, 7404, "The database could not be found");
    }],
    ["POST", /^\/accounts\/[^/]+\/d1\/database\/([^/]+)\/(query|raw)$/, ([, id, kind], req) => {
      const db = findDatabase(decodeURIComponent(id));
      if (!db) return fail(404, 7404, "The database could not be found");
      const batch = Array.isArray(req.json.batch) ? req.json.batch : [req.json];
      try {
        const results = batch.flatMap((q) => executeSql(db, q.sql, q.params ?? []));
        if (kind === "raw") return ok(results.map((r) => ({ ...r, results: { columns: Object.keys(r.results[0] ?? {}), rows: r.results.map((row) => Object.values(row)) } })));
        return ok(results);
      } catch (err) {
        return fail(400, 7500, `${err.message}: SQLITE_ERROR`);
      }
    }],

    // Queues
    ["GET", /^\/accounts\/[^/]+\/queues$/, (m, req) => {
      const name = req.query.get("name");
      return page([...state.queues.values()].filter((q) => !name || q.name === name).map(queueInfo));
    }],
    ["POST", /^\/accounts\/[^/]+\/queues$/, (m, req) => {
      if (findQueue(req.json.queue_name)) return fail(400, 11009, "A queue with this name already exists");
      const queue = { id: randomUUID().replaceAll("-", ""), name: req.json.queue_name, createdAt: new Date().toISOString(), consumers: [] };
      state.queues.set(queue.id, queue);
      return ok(queueInfo(queue));
    }],
    ["GET", /^\/accounts\/[^/]+\/queues\/([^/]+)$/, ([, id]) => {
      const queue = findQueue(decodeURIComponent(id));
      return queue ? ok(queueInfo(queue)) : fail(404, 11000, "Queue does not exist");
    }],
    ["GET", /^\/accounts\/[^/]+\/queues\/([^/]+)\/consumers$/, ([, id]) => {
      const queue = findQueue(decodeURIComponent(id));
      return queue ? ok(queue.consumers) : fail(404, 11000, "Queue does not exist");
    }],
    ["POST", /^\/accounts\/[^/]+\/queues\/([^/]+)\/consumers$/, ([, id], req) => {
      const queue = findQueue(decodeURIComponent(id));
      if (!queue) return fail(404, 11000, "Queue does not exist");
      const consumer = { consumer_id: randomUUID().replaceAll("-", ""), type: "worker", ...req.json, script: req.json.script_name, created_on: new Date().toISOString() };
      queue.consumers.push(consumer);
      return ok(consumer);
    }],
    ["PUT", /^\/accounts\/[^/]+\/queues\/([^/]+)\/consumers\/([^/]+)$/, ([, id, consumerId], req) => {
      const queue = findQueue(decodeURIComponent(id));
      const index = queue?.consumers.findIndex((c) => c.consumer_id === consumerId) ?? -1;
      if (index < 0) return fail(404, 11000, "Consumer does not exist");
      queue.consumers[index] = { ...queue.consumers[index], ...req.json, script: req.json.script_name };
      return ok(queue.consumers[index]);
    }],

    // R2: buckets are named, not numbered; the list is cursor-paged (one page here).
    ["GET", /^\/accounts\/[^/]+\/r2\/buckets$/, () => ok({ buckets: [...state.buckets.values()].map(bucketInfo) }, { result_info: { cursor: "", per_page: 20 } })],
    ["GET", /^\/accounts\/[^/]+\/r2\/buckets\/([^/]+)$/, ([, name]) => {
      const bucket = state.buckets.get(decodeURIComponent(name));
      return bucket ? ok(bucketInfo(bucket)) : fail(404, 10006, "The specified bucket does not exist.");
    }],
    ["POST", /^\/accounts\/[^/]+\/r2\/buckets$/, (m, req) => {
      const name = req.json.name;
      if (typeof name !== "string" || !/^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/.test(name)) return fail(400, 10005, "The specified bucket name is not valid.");
      if (state.buckets.has(name)) return fail(409, 10004, "The bucket you tried to create already exists, and you own it.");
      const bucket = { name, createdAt: new Date().toISOString() };
      state.buckets.set(name, bucket);
      return ok(bucketInfo(bucket));
    }],

    // `r2 bucket info` asks the analytics API for the bucket's size: none recorded here.
    ["POST", /^\/graphql$/, () => ({ status: 200, body: { data: { viewer: { accounts: [{ r2StorageAdaptiveGroups: [] }] } }, errors: null } })],

    // Workers
    ["GET", /^\/accounts\/[^/]+\/workers\/subdomain$/, () => ok({ subdomain: SUBDOMAIN })],
    ["GET", /^\/accounts\/[^/]+\/workers\/scripts$/, () => ok([...state.scripts.values()].map((s) => ({ id: s.name, migration_tag: s.migrationTag, created_on: s.createdAt, modified_on: s.modifiedAt })))],
    ["GET", /^\/accounts\/[^/]+\/workers\/services\/([^/]+)$/, ([, name]) => {
      const script = state.scripts.get(name);
      return script
        ? ok({ id: name, default_environment: { environment: "production", script: { id: name, migration_tag: script.migrationTag, last_deployed_from: "wrangler" } } })
        : fail(404, 10090, "This Worker does not exist on your account.");
    }],
    ["GET", /^\/accounts\/[^/]+\/workers\/scripts\/([^/]+)\/settings$/, ([, name]) => {
      const script = state.scripts.get(name);
      return script ? ok({ bindings: script.bindings, compatibility_date: script.compatibilityDate }) : fail(404, 10007, "This Worker does not exist on your account.");
    }],
    ["GET", /^\/accounts\/[^/]+\/workers\/scripts\/([^/]+)\/secrets$/, ([, name]) => {
      const script = state.scripts.get(name);
      return script ? ok([...script.secrets.keys()].map((n) => ({ name: n, type: "secret_text" }))) : fail(404, 10007, "This Worker does not exist on your account.");
    }],
    ["GET", /^\/accounts\/[^/]+\/workers\/scripts\/([^/]+)\/deployments$/, ([, name]) => {
      const script = state.scripts.get(name);
      if (!script) return fail(404, 10007, "This Worker does not exist on your account.");
      return ok({ deployments: [{ id: script.deploymentId, source: "wrangler", strategy: "percentage", created_on: script.modifiedAt, versions: [{ version_id: script.versionId, percentage: 100 }] }] });
    }],
    ["PUT", /^\/accounts\/[^/]+\/workers\/scripts\/([^/]+)$/, ([, name], req) => upload(name, req)],
    // A Worker that exists gets a new version, then a deployment of it (wrangler's versions API).
    ["POST", /^\/accounts\/[^/]+\/workers\/scripts\/([^/]+)\/versions$/, async ([, name], req) => {
      const uploaded = await upload(name, req);
      if (!uploaded.body.success) return uploaded;
      const script = state.scripts.get(name);
      return ok({ id: script.versionId, number: script.uploads, resources: { script: { etag: uploaded.body.result.etag }, bindings: script.bindings }, startup_time_ms: 1 });
    }],
    ["POST", /^\/accounts\/[^/]+\/workers\/scripts\/([^/]+)\/deployments$/, ([, name]) => {
      const script = state.scripts.get(name);
      return script ? ok({ id: script.deploymentId, source: "wrangler", strategy: "percentage", versions: [{ version_id: script.versionId, percentage: 100 }] }) : fail(404, 10007, "This Worker does not exist on your account.");
    }],
    ["PATCH", /^\/accounts\/[^/]+\/workers\/scripts\/([^/]+)\/script-settings$/, () => ok({})],
    ["GET", /^\/accounts\/[^/]+\/workers\/workers\/([^/]+)$/, ([, name]) => {
      const script = state.scripts.get(name);
      return script ? ok({ id: name, name, subdomain: { enabled: script.workersDev, previews_enabled: false } }) : fail(404, 10007, "This Worker does not exist on your account.");
    }],
    ["PATCH", /^\/accounts\/[^/]+\/workers\/workers\/([^/]+)$/, ([, name], req) => {
      const script = state.scripts.get(name);
      if (!script) return fail(404, 10007, "This Worker does not exist on your account.");
      if (req.json.subdomain) script.workersDev = req.json.subdomain.enabled ?? script.workersDev;
      return ok({ id: name, name, subdomain: { enabled: script.workersDev, previews_enabled: false } });
    }],
    ["GET", /^\/accounts\/[^/]+\/workers\/scripts\/([^/]+)\/subdomain$/, ([, name]) => ok({ enabled: state.scripts.get(name)?.workersDev ?? false, previews_enabled: false })],
    ["POST", /^\/accounts\/[^/]+\/workers\/scripts\/([^/]+)\/subdomain$/, ([, name], req) => {
      const script = state.scripts.get(name);
      if (script) script.workersDev = req.json.enabled;
      return ok({ enabled: req.json.enabled, previews_enabled: false });
    }],
    ["PUT", /^\/accounts\/[^/]+\/workers\/scripts\/([^/]+)\/schedules$/, ([, name], req) => {
      const script = state.scripts.get(name);
      if (script) script.schedules = req.json.map((s) => s.cron);
      return ok({ schedules: req.json });
    }],
    ["GET", /^\/accounts\/[^/]+\/workers\/durable_objects\/namespaces$/, () => page([])],
  ];

  async function upload(name, req) {
    const form = await new Request("http://standin/", { method: "PUT", headers: { "content-type": req.headers["content-type"] }, body: req.raw }).formData();
    const part = form.get("metadata");
    const metadata = JSON.parse(typeof part === "string" ? part : await part.text());
    // As Cloudflare refuses it: a Worker bound to a bucket the account does not have.
    const unknownBucket = (metadata.bindings ?? []).find((b) => b.type === "r2_bucket" && !state.buckets.has(b.bucket_name));
    if (unknownBucket) return fail(400, 10085, `R2 bucket '${unknownBucket.bucket_name}' not found. Please use a different name and try again.`);
    const now = new Date().toISOString();
    const script = state.scripts.get(name) ?? { name, createdAt: now, secrets: new Map(), migrationTag: null, schedules: [], workersDev: false, uploads: 0 };
    if (metadata.migrations) {
      if ((metadata.migrations.old_tag ?? null) !== script.migrationTag) return fail(400, 10079, `migration tag precondition failed; current tag is ${script.migrationTag}`);
      script.migrationTag = metadata.migrations.new_tag;
      script.migrationSteps = metadata.migrations.steps;
    }
    const kept = new Set(metadata.keep_bindings ?? []);
    if (!kept.has("secret_text")) script.secrets.clear();
    for (const binding of metadata.bindings ?? []) if (binding.type === "secret_text") script.secrets.set(binding.name, binding.text);
    // `inherit`: the binding stays what the previous version had (a provisioned database, queue).
    const previous = new Map((script.bindings ?? []).map((b) => [b.name, b]));
    const inherited = (b) => (b.type === "inherit" ? previous.get(b.name) : b);
    if ((metadata.bindings ?? []).some((b) => b.type === "inherit" && !previous.has(b.name) && !script.secrets.has(b.name))) {
      return fail(400, 10021, "inherit binding is invalid: the previous version has no such binding");
    }
    script.bindings = [
      ...(metadata.bindings ?? []).map(inherited).filter((b) => b && b.type !== "secret_text"),
      ...[...script.secrets.keys()].map((n) => ({ type: "secret_text", name: n })),
    ];
    script.compatibilityDate = metadata.compatibility_date;
    script.mainModule = metadata.main_module;
    script.modules = [...form.keys()].filter((k) => k !== "metadata");
    script.modifiedAt = now;
    script.uploads++;
    script.versionId = randomUUID();
    script.deploymentId = randomUUID();
    state.scripts.set(name, script);
    return ok({ id: name, etag: randomUUID(), handlers: ["fetch", "queue", "scheduled"], modified_on: now, created_on: script.createdAt, migration_tag: script.migrationTag, startup_time_ms: 1, deployment_id: script.deploymentId });
  }

  /** A snapshot for assertions: values of secrets only as the test needs them, compared, never printed. */
  function snapshot() {
    return {
      requests: state.requests,
      unknown: state.unknown,
      databases: [...state.databases.values()].map((d) => ({
        ...databaseInfo(d),
        tables: d.sqlite.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all().map((r) => r.name),
        migrations: (() => {
          try {
            return d.sqlite.prepare("SELECT name FROM d1_migrations ORDER BY id").all().map((r) => r.name);
          } catch {
            return [];
          }
        })(),
      })),
      queues: [...state.queues.values()].map(queueInfo),
      buckets: [...state.buckets.values()].map(bucketInfo),
      scripts: [...state.scripts.values()].map(({ secrets, ...s }) => ({ ...s, secretNames: [...secrets.keys()] })),
    };
  }

  const server = createServer(async (request, response) => {
    const chunks = [];
    for await (const chunk of request) chunks.push(chunk);
    const raw = Buffer.concat(chunks);
    const url = new URL(request.url, "http://standin");
    const path = url.pathname.replace(/^\/client\/v4/, "");
    const send = ({ status, body }) => response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    if (path === "/__standin/state") return send({ status: 200, body: snapshot() });
    if (path === "/__standin/secret") return send({ status: 200, body: { value: state.scripts.get(url.searchParams.get("script"))?.secrets.get(url.searchParams.get("name")) ?? null } });
    if (path === "/__standin/fault") {
      state.faults.push(JSON.parse(raw.toString()));
      return send({ status: 200, body: { ok: true } });
    }
    if (path === "/__standin/clear-faults") {
      state.faults = [];
      return send({ status: 200, body: { ok: true } });
    }
    if (path === "/__standin/reset-log") {
      state.requests = [];
      state.unknown = [];
      return send({ status: 200, body: { ok: true } });
    }
    state.requests.push(`${request.method} ${path}`);
    if (request.headers.authorization !== `Bearer ${API_TOKEN}`) return send(fail(403, 10000, "Authentication error"));
    const fault = state.faults.find((f) => f.method === request.method && new RegExp(f.path).test(path) && f.times > 0);
    if (fault) {
      fault.times--;
      return send(fail(fault.status, fault.code, fault.message));
    }
    const isMultipart = (request.headers["content-type"] ?? "").startsWith("multipart/");
    const req = { query: url.searchParams, headers: request.headers, raw, json: !isMultipart && raw.length ? JSON.parse(raw.toString()) : {} };
    for (const [method, pattern, handle] of routes) {
      const match = method === request.method && pattern.exec(path);
      if (match) {
        try {
          return send(await handle(match, req));
        } catch (err) {
          return send(fail(500, 10013, `stand-in error: ${err.message}`));
        }
      }
    }
    state.unknown.push(`${request.method} ${path}`);
    return send(fail(404, 7003, `No route for that URI (the stand-in does not serve ${request.method} ${path})`));
  });

  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}/client/v4`,
        state: async () => (await fetch(`http://127.0.0.1:${port}/__standin/state`)).json(),
        secret: async (script, name) => (await (await fetch(`http://127.0.0.1:${port}/__standin/secret?script=${script}&name=${name}`)).json()).value,
        fault: (fault) => fetch(`http://127.0.0.1:${port}/__standin/fault`, { method: "POST", body: JSON.stringify(fault) }),
        resetLog: () => fetch(`http://127.0.0.1:${port}/__standin/reset-log`),
        clearFaults: () => fetch(`http://127.0.0.1:${port}/__standin/clear-faults`),
        close: () => new Promise((done) => {
          server.close(done);
          server.closeAllConnections();
        }),
      });
    });
  });
}
