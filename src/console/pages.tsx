/** The console's HTML, server-rendered with Hono's JSX: no client framework, a few lines of script. */
import type { Child, FC } from "hono/jsx";
import { raw } from "hono/html";
import { DEFAULT_CIRCUIT_FAILURES, DEFAULT_CIRCUIT_PROBE_SECONDS } from "../deliver/destinations";
import type { AlertsView, AuditRecordView, DestinationView, PreviewView, SourceView } from "../admin/schemas";
import { AUDIT_ACTIONS } from "../store/audit";
import type { DestinationHealth } from "../store/charts";
import type { AttemptRow, DeliveryRow } from "../store/deliveries";
import type { PayloadView } from "../admin/schemas";
import type { EventRow, EventSummary } from "../store/events";
import { MAX_QUERY_CHARS } from "../store/search";
import type { QuarantineRow, QuarantineSummary } from "../store/quarantine";
import { DestinationCharts, successRate, TimelineChart, type Timeline } from "./charts";

const STYLE = `
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center}
header a{color:#fff}header nav{display:flex;gap:1rem;flex:1}
main{padding:1rem 1.2rem;max-width:1200px}
a:focus,button:focus,input:focus,select:focus{outline:3px solid #f5a623;outline-offset:2px}
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:.35rem .5rem;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
form.filters{display:flex;flex-wrap:wrap;gap:.6rem;align-items:flex-end;margin:.6rem 0}
form.filters label{display:flex;flex-direction:column;font-size:12px}
input,select,button{font:inherit;padding:.25rem .4rem}button{cursor:pointer}
.status-delivered,.status-gone,.state-active{color:#17803d}.state-paused,.status-held{color:#5b4bb7}.state-open{color:#c0262d}.status-failed,.status-pending,.status-queued,.status-received{color:#a86400}.status-dead{color:#c0262d}
.cards{display:flex;gap:1rem;margin:.6rem 0}.card{background:#fff;padding:.6rem 1rem;border:1px solid #e3e6ea}
.card strong{display:block;font-size:22px}
pre{background:#fff;border:1px solid #e3e6ea;padding:.8rem;overflow:auto;max-height:40rem}
.error{color:#c0262d}.note{color:#17803d}form.inline{display:inline-block;margin-right:.6rem}
.charts{display:flex;flex-wrap:wrap;gap:1rem;margin:.6rem 0}
figure.chart{flex:1 1 560px;max-width:680px;margin:0;background:#fff;border:1px solid #e3e6ea;padding:.4rem .6rem}
figure.chart figcaption{font-weight:600}svg.chart{width:100%;height:auto}
svg text{font-size:11px;fill:#555}
`;

export const Layout: FC<{ title: string; children?: Child }> = ({ title, children }) => (
  <html lang="en">
    <head>
      <meta charset="utf-8" />
      <meta name="viewport" content="width=device-width, initial-scale=1" />
      <title>{title} · edgehook</title>
      <style>{raw(STYLE)}</style>
    </head>
    <body>
      <header>
        <strong>edgehook</strong>
        <nav aria-label="Console">
          <a href="/console">Events</a>
          <a href="/console/dead">Dead letters &amp; quarantine</a>
          <a href="/console/destinations">Destinations</a>
          <a href="/console/sources">Sources</a>
          <a href="/console/audit">Audit log</a>
        </nav>
        <form method="post" action="/console/logout">
          <button type="submit">Sign out</button>
        </form>
      </header>
      <main>
        <h1>{title}</h1>
        {children}
      </main>
    </body>
  </html>
);

export const LoginPage: FC<{ error?: string }> = ({ error }) => (
  <html lang="en">
    <head>
      <meta charset="utf-8" />
      <title>Sign in · edgehook</title>
      <style>{raw(STYLE)}</style>
    </head>
    <body>
      <main>
        <h1>edgehook console</h1>
        {error && <p class="error" role="alert">{error}</p>}
        <form method="post" action="/console/login">
          <label for="token">Admin token</label>{" "}
          <input id="token" name="token" type="password" autocomplete="current-password" required autofocus />{" "}
          <button type="submit">Sign in</button>
        </form>
      </main>
    </body>
  </html>
);

const time = (ms: number | null) => (ms === null ? "–" : new Date(ms).toISOString().replace("T", " ").slice(0, 19));
const Status: FC<{ status: string }> = ({ status }) => <span class={`status-${status}`}>{status}</span>;

export interface EventFilterValues {
  q?: string;
  provider?: string;
  source?: string;
  type?: string;
  status?: string;
  tenant?: string;
  eventId?: string;
  since?: string;
  until?: string;
}

export const EventLog: FC<{
  filters: EventFilterValues;
  /** The source names served now, for the source filter. */
  sources: string[];
  events: EventSummary[];
  nextCursor: string | null;
  counts: { hour: number; day: number; deadDeliveries: number };
  hour: Timeline;
  day: Timeline;
  /** Payload search is on (SEARCH): the log has a search box. */
  search: boolean;
  /** Why the filters could not be used (a search with no word, a bad time): the table is empty. */
  error?: string;
}> = ({ filters, sources, search, events, nextCursor, counts, hour, day, error }) => {
  const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v) as [string, string][]);
  return (
    <Layout title="Events">
      <section class="cards" aria-label="Counts" aria-live="polite">
        <div class="card">Received, last hour<strong id="count-hour">{counts.hour}</strong></div>
        <div class="card">Received, last day<strong id="count-day">{counts.day}</strong></div>
        <div class="card">Dead deliveries &amp; failed transforms<strong id="count-dead">{counts.deadDeliveries}</strong></div>
      </section>
      <div class="charts">
        <TimelineChart id="chart-hour" caption="Last hour, 5-minute buckets" {...hour} />
        <TimelineChart id="chart-day" caption="Last day, 1-hour buckets" {...day} />
      </div>
      <form class="filters" method="get" action="/console" role="search">
        {search && (
          <label for="f-q">Payload contains<input id="f-q" name="q" type="search" value={filters.q ?? ""} maxlength={MAX_QUERY_CHARS} aria-describedby="f-q-hint" /></label>
        )}
        <label for="f-provider">Provider<select id="f-provider" name="provider">
          {["", "seismic", "zuddl"].map((p) => <option value={p} selected={filters.provider === p}>{p || "any"}</option>)}
        </select></label>
        <label for="f-source">Source<select id="f-source" name="source">
          {/* A source no longer served still names its stored events: kept as an option while it is the filter. */}
          {["", ...sources, ...(filters.source && !sources.includes(filters.source) ? [filters.source] : [])].map((s) => (
            <option value={s} selected={(filters.source ?? "") === s}>{s || "any"}</option>
          ))}
        </select></label>
        <label for="f-type">Type<input id="f-type" name="type" value={filters.type ?? ""} /></label>
        <label for="f-status">Status<select id="f-status" name="status">
          {["", "received", "queued", "delivered", "failed", "dead"].map((s) => <option value={s} selected={filters.status === s}>{s || "any"}</option>)}
        </select></label>
        <label for="f-tenant">Tenant<input id="f-tenant" name="tenant" value={filters.tenant ?? ""} /></label>
        <label for="f-since">From<input id="f-since" name="since" type="datetime-local" value={filters.since ?? ""} /></label>
        <label for="f-until">To<input id="f-until" name="until" type="datetime-local" value={filters.until ?? ""} /></label>
        <label for="f-event">Event id<input id="f-event" name="eventId" value={filters.eventId ?? ""} /></label>
        <button type="submit">Filter</button>
      </form>
      {search ? (
        <p id="f-q-hint">Payload search finds events whose payload contains every word, for example an email, a content id or a session title.</p>
      ) : (
        <p>Payload search is off on this gateway (the SEARCH var turns it on).</p>
      )}
      {error && <p class="error" role="alert">{error}</p>}
      <table>
        <caption>Newest first</caption>
        <thead><tr><th scope="col">Received</th><th scope="col">Provider</th><th scope="col">Source</th><th scope="col">Type</th><th scope="col">Tenant</th><th scope="col">Status</th><th scope="col">Event</th></tr></thead>
        <tbody>
          {events.map((e) => (
            <tr>
              <td>{time(e.received_at)}</td>
              <td>{e.provider}</td>
              <td>{e.source ?? e.provider}</td>
              <td>{e.type}{e.known_type ? "" : " (unknown type)"}</td>
              <td>{e.tenant ?? "–"}</td>
              <td><Status status={e.status} /></td>
              <td><a href={`/console/events/${e.key}`}>{e.event_id}</a></td>
            </tr>
          ))}
        </tbody>
      </table>
      {events.length === 0 && !error && <p>No events match.</p>}
      {nextCursor && <p><a href={`/console?${query}${query.size ? "&" : ""}cursor=${encodeURIComponent(nextCursor)}`}>Older events →</a></p>}
      <script>{raw(LIVE_COUNTS)}</script>
    </Layout>
  );
};

/** Refreshes the counts every 5 seconds (the session cookie goes along). */
const LIVE_COUNTS = `
setInterval(async () => {
  const r = await fetch("/console/stats.json", { credentials: "same-origin" });
  if (!r.ok) return;
  const s = await r.json();
  for (const k of ["hour", "day", "dead"]) document.getElementById("count-" + k).textContent = s[k];
}, 5000);`;

/** What a destination's transform made of the event (the Preview action); nothing was forwarded. */
const PreviewResult: FC<{ preview: PreviewView }> = ({ preview }) => (
  <section aria-label={`Preview for ${preview.destination}`}>
    <h3>Preview for {preview.destination} (transforms/{preview.transform}.js, {Math.round(preview.durationMs)} ms): nothing was forwarded</h3>
    {preview.outcome === "body" && <pre tabindex={0} aria-label="Transformed body">{JSON.stringify(preview.body, null, 2)}</pre>}
    {preview.outcome === "skipped" && <p role="status">Skipped: the transform returned null, so this destination would not get this event.</p>}
    {preview.error && <p class="error" role="status">{preview.error.kind}: {preview.error.message}</p>}
  </section>
);

export const EventPage: FC<{
  event: EventRow; deliveries: DeliveryRow[]; attempts: AttemptRow[]; destinations: string[]; transformed: string[]; preview?: PreviewView; notice?: string; canOperate: boolean;
}> = ({ event, deliveries, attempts, destinations, transformed, preview, notice, canOperate }) => {
  let pretty = event.body;
  try {
    pretty = JSON.stringify(JSON.parse(event.body), null, 2);
  } catch {
    // shown as stored
  }
  return (
    <Layout title={`${event.provider} · ${event.type}`}>
      {notice && <p class="note" role="status">{notice}</p>}
      <table>
        <tbody>
          <tr><th scope="row">Gateway id</th><td>{event.key}</td></tr>
          <tr><th scope="row">Provider event id</th><td>{event.event_id}</td></tr>
          <tr><th scope="row">Source</th><td>{event.source ?? event.provider}</td></tr>
          <tr><th scope="row">Type</th><td>{event.type}{event.known_type ? "" : " (unknown type)"}</td></tr>
          <tr><th scope="row">Tenant</th><td>{event.tenant ?? "–"}</td></tr>
          <tr><th scope="row">Occurred at (as sent)</th><td>{event.occurred_at ?? "–"}</td></tr>
          <tr><th scope="row">Received</th><td>{time(event.received_at)}</td></tr>
          <tr><th scope="row">Verified with</th><td>{event.verified_with === "old" ? "the old (previous) secret" : "the current secret"}</td></tr>
          <tr><th scope="row">Status</th><td><Status status={event.status} /></td></tr>
          {event.forced === 1 && <tr><th scope="row">Forced</th><td class="error">released from quarantine as it was, without passing validation</td></tr>}
          {event.last_error !== null && <tr><th scope="row">Last error</th><td class="error" role="status">{event.last_error}</td></tr>}
        </tbody>
      </table>
      <h2>Deliveries</h2>
      {canOperate && (
        <form method="post" action={`/console/events/${event.key}/replay`}>
          <label for="replay-destination">Replay to</label>{" "}
          <select id="replay-destination" name="destination">
            <option value="">all routed destinations</option>
            {destinations.map((d) => <option value={d}>{d}</option>)}
          </select>{" "}
          <button type="submit">Replay</button>
        </form>
      )}
      {canOperate && transformed.length > 0 && (
        <section aria-label="Transforms">
          <h3>Transforms</h3>
          {transformed.map((d) => (
            <form method="post" action={`/console/events/${event.key}/preview`} class="inline">
              <input type="hidden" name="destination" value={d} />
              <button type="submit" aria-label={`Preview the transform of ${d}`}>Preview {d}</button>
            </form>
          ))}
          {preview && <PreviewResult preview={preview} />}
        </section>
      )}
      {deliveries.length === 0 && <p>No deliveries (no destination routes this event).</p>}
      {deliveries.map((d) => (
        <section aria-label={`Deliveries to ${d.destination}`}>
          <h3>{d.destination}: <Status status={d.status} /> after {d.attempts} attempt{d.attempts === 1 ? "" : "s"}</h3>
          <table>
            <thead><tr><th scope="col">Attempt</th><th scope="col">At</th><th scope="col">Status code</th><th scope="col">Took</th><th scope="col">Error</th></tr></thead>
            <tbody>
              {attempts.filter((a) => a.destination === d.destination).map((a) => (
                <tr><td>{a.attempt}</td><td>{time(a.started_at)}</td><td>{a.status_code ?? "–"}</td><td>{a.duration_ms} ms</td><td>{a.error ?? ""}</td></tr>
              ))}
            </tbody>
          </table>
          {d.next_attempt_at && <p>Next attempt {time(d.next_attempt_at)}</p>}
        </section>
      ))}
      <h2>Payload</h2>
      <pre tabindex={0} aria-label="Payload">{pretty}</pre>
    </Layout>
  );
};

/** Deliveries an operator replays: a status's rows, with a bulk Replay of that status. */
const ReplayableDeliveries: FC<{ status: "dead" | "transform_failed"; title: string; noun: string; intro?: string; rows: DeliveryRow[]; canOperate: boolean }> = ({ status, title, noun, intro, rows, canOperate }) => (
  <>
    <h2>{title}</h2>
    {intro && <p>{intro}</p>}
    {canOperate && (
      <form method="post" action="/console/replay">
        <input type="hidden" name="status" value={status} />
        <label for={`bulk-${status}`}>Replay {noun} to</label>{" "}
        <select id={`bulk-${status}`} name="destination">
          <option value="">every destination</option>
          {[...new Set(rows.map((d) => d.destination))].map((d) => <option value={d}>{d}</option>)}
        </select>{" "}
        <button type="submit">Replay {noun} (up to 100)</button>
      </form>
    )}
    <table>
      <thead><tr><th scope="col">Event</th><th scope="col">Destination</th><th scope="col">Attempts</th><th scope="col">Last error</th><th scope="col">Updated</th></tr></thead>
      <tbody>
        {rows.map((d) => (
          <tr><td><a href={`/console/events/${d.event_key}`}>{d.event_key}</a></td><td>{d.destination}</td><td>{d.attempts}</td><td>{d.last_error ?? ""}</td><td>{time(d.updated_at)}</td></tr>
        ))}
      </tbody>
    </table>
    {rows.length === 0 && <p>No {noun}.</p>}
  </>
);

export const DeadPage: FC<{ dead: DeliveryRow[]; transformFailed: DeliveryRow[]; quarantined: QuarantineSummary[]; olderQuarantined: string | null; notice?: string; canOperate: boolean }> = ({ dead, transformFailed, quarantined, olderQuarantined, notice, canOperate }) => (
  <Layout title="Dead letters & quarantine">
    {notice && <p class="note" role="status">{notice}</p>}
    <ReplayableDeliveries status="dead" title="Dead deliveries" noun="dead deliveries" rows={dead} canOperate={canOperate} />
    <ReplayableDeliveries
      canOperate={canOperate}
      status="transform_failed"
      title="Failed transforms"
      noun="failed transforms"
      intro="Deliveries whose destination's transform failed (the kind starts the error). They are not retried: fix the transform, deploy, then replay them."
      rows={transformFailed}
    />
    <h2>Quarantined payloads</h2>
    <p>
      Signed bodies that could not be accepted (bad JSON or a schema mismatch), kept so nothing genuine is lost.
      Release validates one again with the current schemas and delivers it if it passes; its page can also release it as it is.
    </p>
    <table>
      <thead><tr><th scope="col">Last received</th><th scope="col">Provider</th><th scope="col">Reason</th><th scope="col">At path</th><th scope="col">Error</th><th scope="col">Bytes</th><th scope="col">Times</th><th scope="col">Payload</th><th scope="col">Release</th></tr></thead>
      <tbody>
        {quarantined.map((q) => (
          <tr>
            <td>{time(q.last_received_at)}</td><td>{q.provider}</td><td>{q.reason}</td><td><code>{q.path ?? "–"}</code></td><td>{q.error}</td><td>{q.bytes}</td><td>{q.attempts}</td>
            <td><a href={`/console/quarantine/${q.id}`}>View #{q.id}</a></td>
            <td><Released item={q} canOperate={canOperate} /></td>
          </tr>
        ))}
      </tbody>
    </table>
    {quarantined.length === 0 && <p>Nothing quarantined.</p>}
    {olderQuarantined && <p><a href={`/console/dead?quarantineCursor=${encodeURIComponent(olderQuarantined)}`}>Older quarantined payloads →</a></p>}
  </Layout>
);

/** Bytes that are not UTF-8 cannot become an event: events are stored and forwarded as text. */
const releasable = (item: QuarantineSummary) => item.released_at === null && item.reason !== "invalid_utf8";

/** Where a released payload went, or the button that validates and releases it (for an operator). */
const Released: FC<{ item: QuarantineSummary; canOperate: boolean }> = ({ item, canOperate }) => {
  if (item.released_at !== null) {
    return <>released {time(item.released_at)}{item.forced ? " (forced)" : ""} as <a href={`/console/events/${item.event_key}`}>{item.event_key}</a></>;
  }
  if (!releasable(item)) return <>not releasable: not UTF-8</>;
  if (!canOperate) return <>not released</>;
  return (
    <form method="post" action={`/console/quarantine/${item.id}/release`}>
      <button type="submit" aria-label={`Release quarantined payload #${item.id}`}>Release</button>
    </form>
  );
};

export const QuarantinePage: FC<{ item: QuarantineRow; payload: PayloadView; canOperate: boolean; error?: { message: string; path?: string } }> = ({ item, payload, canOperate, error }) => (
  <Layout title={`Quarantined payload #${item.id}`}>
    {error && (
      <div class="error" role="alert">
        <p>Not released: {error.message}{error.path && <> (at <code>{error.path}</code>)</>}</p>
      </div>
    )}
    <table>
      <tbody>
        <tr><th scope="row">Provider</th><td>{item.provider}</td></tr>
        <tr><th scope="row">Source</th><td>{item.source ?? item.provider}</td></tr>
        <tr><th scope="row">Reason</th><td>{item.reason}</td></tr>
        <tr><th scope="row">At path</th><td><code>{item.path ?? "–"}</code></td></tr>
        <tr><th scope="row">Error</th><td>{item.error}</td></tr>
        <tr><th scope="row">First received</th><td>{time(item.first_received_at)}</td></tr>
        <tr><th scope="row">Last received</th><td>{time(item.last_received_at)}</td></tr>
        <tr><th scope="row">Times received</th><td>{item.attempts}</td></tr>
        <tr><th scope="row">Size</th><td>{item.bytes} bytes, {item.content_type}</td></tr>
        <tr><th scope="row">Verified with</th><td>{item.verified_with === "old" ? "the old (previous) secret" : "the current secret"}</td></tr>
        <tr><th scope="row">SHA-256</th><td><code>{item.body_sha256}</code></td></tr>
        <tr><th scope="row">Released</th><td><Released item={item} canOperate={canOperate} /></td></tr>
      </tbody>
    </table>
    {canOperate && releasable(item) && (
      <form method="post" action={`/console/quarantine/${item.id}/release`}>
        <p>
          <button type="submit">Release (validate again)</button>{" "}
          <button type="submit" name="force" value="true">Release as it is (forced)</button>
        </p>
        <p>A forced release delivers the payload unvalidated and marks the event as forced.</p>
      </form>
    )}
    <h2>Payload</h2>
    {payload.payloadFormat === "base64" && <p>Not UTF-8 text; shown as base64.</p>}
    <pre tabindex={0} aria-label="Payload">{payload.payloadFormat === "json" ? JSON.stringify(payload.payload, null, 2) : String(payload.payload)}</pre>
  </Layout>
);

const AlertsSection: FC<{ alerts: AlertsView }> = ({ alerts }) => (
  <section aria-label="Alerts">
    <h2>Alerts</h2>
    {!alerts.configured && <p>Alerts are off: set the <code>ALERT_URL</code> secret to have them POSTed to Slack, Teams, Mattermost or any JSON receiver.</p>}
    {alerts.configured && !alerts.valid && <p>Nothing is sent until these settings are fixed (what is noted meanwhile waits, and goes out after the fix):</p>}
    {alerts.configured && alerts.valid && (
      <p>
        Sent to <code>ALERT_URL</code> as {alerts.format}{alerts.signed ? ", signed (Standard Webhooks)" : ""}: the first of a burst after {alerts.groupWaitSeconds} s,
        then at most one per kind and subject every {alerts.cooldownSeconds} s.
      </p>
    )}
    {alerts.errors.length > 0 && <div role="alert" class="error"><ul>{alerts.errors.map((e) => <li>{e}</li>)}</ul></div>}
    {alerts.alerts.length > 0 && (
      <table>
        <thead><tr><th scope="col">Kind</th><th scope="col">About</th><th scope="col">Pending</th><th scope="col">Last occurred</th><th scope="col">Next due</th><th scope="col">Last sent</th><th scope="col">Sent / failed</th></tr></thead>
        <tbody>
          {alerts.alerts.map((a) => (
            <tr><td>{a.kind}</td><td>{a.subject}</td><td>{a.pending}</td><td>{a.lastAt ?? "–"}</td><td>{a.dueAt ?? "–"}</td><td>{a.lastSentAt ?? "–"}</td><td>{a.sent} / {a.failed}</td></tr>
          ))}
        </tbody>
      </table>
    )}
  </section>
);

export const DestinationsPage: FC<{ destinations: DestinationView[] | null; errors: string[]; health: DestinationHealth[]; alerts: AlertsView; notice?: string; canOperate: boolean }> = ({
  destinations, errors, health, alerts, notice, canOperate,
}) => {
  const byName = new Map(health.map((h) => [h.destination, h]));
  return (
    <Layout title="Destinations">
      {notice && <p role="status" class="note">{notice}</p>}
      {errors.length > 0 && (
        <div role="alert" class="error"><p>DESTINATIONS is invalid; nothing is delivered until it is fixed:</p><ul>{errors.map((e) => <li>{e}</li>)}</ul></div>
      )}
      <table>
        <thead><tr><th scope="col">Name</th><th scope="col">State</th><th scope="col">Lane</th><th scope="col">Held</th><th scope="col">Last success / failure</th><th scope="col">URL</th><th scope="col">Routes</th><th scope="col">Signed, headers</th><th scope="col">Limits</th><th scope="col">Forwards answered 2xx, last 24 h</th><th scope="col">p95 forward time</th>{canOperate && <th scope="col">Control</th>}</tr></thead>
        <tbody>
          {(destinations ?? []).map((d) => {
            const h = byName.get(d.name);
            const { config } = d;
            return (
              <tr>
                <td>{d.name}</td>
                <td>
                  <span class={`state-${d.state}`}>{d.state}</span>
                  {d.pausedReason && <div>{d.pausedReason}</div>}
                  {d.state === "open" && <div>{d.consecutiveFailures} failures in a row; next probe {d.nextProbeAt ? time(Date.parse(d.nextProbeAt)) : "soon"}</div>}
                </td>
                <td>
                  {d.lane === "own" ? "own lane" : "with the others"}
                  {d.laneSince && <div>since {time(Date.parse(d.laneSince))}: {d.laneReason}</div>}
                </td>
                <td>{d.held}</td>
                <td>{d.lastSuccessAt ? time(Date.parse(d.lastSuccessAt)) : "–"} / {d.lastFailureAt ? time(Date.parse(d.lastFailureAt)) : "–"}</td>
                <td>{config.url}</td>
                <td>
                  providers: {config.providers?.join(", ") ?? "all"}; sources: {config.sources?.join(", ") ?? "all"}; types: {config.types?.join(", ") ?? "all"}
                  {config.filter && <div>filter: <code>{config.filter}</code></div>}
                </td>
                <td>
                  {config.secret ? `yes (${config.secret})` : "no"}
                  {config.headers && <div>headers: {config.headers.map((h) => `${h.name}${h.bindings.length ? ` (${h.bindings.join(", ")})` : ""}`).join("; ")}</div>}
                </td>
                <td>
                  circuit after {config.circuit_failures ?? DEFAULT_CIRCUIT_FAILURES} failures, probe every {config.circuit_probe_seconds ?? DEFAULT_CIRCUIT_PROBE_SECONDS} s
                  {config.rate_per_second !== undefined && <div>at most {config.rate_per_second}/s</div>}
                </td>
                <td>{h ? `${successRate(h)}% of ${h.forwards}` : "no forwards"}</td>
                <td>{h ? `${h.p95Ms} ms` : "–"}</td>
                {canOperate && (
                  <td>
                    <form method="post" action={`/console/destinations/${encodeURIComponent(d.name)}/${d.state === "paused" ? "resume" : "pause"}`}>
                      <button type="submit" aria-label={`${d.state === "paused" ? "Resume" : "Pause"} ${d.name}`}>{d.state === "paused" ? "Resume" : "Pause"}</button>
                    </form>
                  </td>
                )}
              </tr>
            );
          })}
        </tbody>
      </table>
      <DestinationCharts destinations={(destinations ?? []).map((d) => d.name)} health={health} />
      <AlertsSection alerts={alerts} />
    </Layout>
  );
};

/** Each source's path, provider and secret bindings (names, and whether each is set; never a value). */
export const SourcesPage: FC<{ sources: SourceView[]; errors: string[] }> = ({ sources, errors }) => {
  const binding = (b: SourceView["bindings"]["secret"] | null) => (b ? <><code>{b.name}</code> {b.set ? "set" : <span class="error">not set</span>}</> : "–");
  return (
    <Layout title="Sources">
      {errors.length > 0 && (
        <div role="alert" class="error">
          <p>SOURCES is invalid; only the built-in sources are served (other paths answer 503, so senders retry) until it is fixed:</p>
          <ul>{errors.map((e) => <li>{e}</li>)}</ul>
        </div>
      )}
      <table>
        <thead><tr><th scope="col">Path</th><th scope="col">Provider</th><th scope="col">Kind</th><th scope="col">Signing secret</th><th scope="col">Old secret</th><th scope="col">Token</th><th scope="col">Receiving</th></tr></thead>
        <tbody>
          {sources.map((s) => (
            <tr>
              <td><code>/webhooks/{s.name}</code></td><td>{s.provider}</td><td>{s.builtIn ? "built-in" : "SOURCES"}</td>
              <td>{binding(s.bindings.secret)}</td><td>{binding(s.bindings.secretOld)}</td><td>{binding(s.bindings.token)}</td>
              <td>{s.configured ? "yes" : <span class="error">no: answers 503 provider_not_configured</span>}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </Layout>
  );
};

export interface AuditFilterValues {
  actor?: string;
  action?: string;
  target?: string;
  since?: string;
  until?: string;
}

/** Who did what: the audit log, newest first, filterable by who, what and time. */
export const AuditPage: FC<{ filters: AuditFilterValues; records: AuditRecordView[]; nextCursor: string | null; error?: string }> = ({ filters, records, nextCursor, error }) => {
  const query = new URLSearchParams(Object.entries(filters).filter(([, v]) => v) as [string, string][]);
  return (
    <Layout title="Audit log">
      <form class="filters" method="get" action="/console/audit" role="search">
        <label for="a-actor">Who<input id="a-actor" name="actor" value={filters.actor ?? ""} /></label>
        <label for="a-action">Action<select id="a-action" name="action">
          {["", ...AUDIT_ACTIONS].map((a) => <option value={a} selected={filters.action === a}>{a || "any"}</option>)}
        </select></label>
        <label for="a-target">Target<input id="a-target" name="target" value={filters.target ?? ""} /></label>
        <label for="a-since">Since<input id="a-since" name="since" type="datetime-local" value={filters.since ?? ""} /></label>
        <label for="a-until">Until<input id="a-until" name="until" type="datetime-local" value={filters.until ?? ""} /></label>
        <button type="submit">Filter</button>
      </form>
      {error && <p role="alert" class="error">{error}</p>}
      <table>
        <thead><tr><th scope="col">At</th><th scope="col">Who</th><th scope="col">Via</th><th scope="col">Role</th><th scope="col">Address</th><th scope="col">Action</th><th scope="col">Target</th><th scope="col">Detail</th><th scope="col">Result</th></tr></thead>
        <tbody>
          {records.map((r) => (
            <tr>
              <td>{r.at}</td><td>{r.actor}</td><td>{r.via}</td><td>{r.role}</td><td>{r.address ?? "–"}</td><td>{r.action}</td><td>{r.target ?? "–"}</td>
              <td>{r.detail ? <code>{JSON.stringify(r.detail)}</code> : "–"}</td>
              <td class={r.result === "ok" ? undefined : "error"}>{r.result}{r.status !== null && ` (${r.status})`}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {records.length === 0 && <p>No records.</p>}
      {nextCursor && <p><a href={`/console/audit?${query}${query.size ? "&" : ""}cursor=${encodeURIComponent(nextCursor)}`}>Older records →</a></p>}
    </Layout>
  );
};
