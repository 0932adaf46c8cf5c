/**
 * The console's charts as server-rendered SVG: axes with ticks and labels, a legend, the values
 * printed or on hover (an SVG <title> is the browser's own tooltip). No script and nothing from
 * a CDN, so the console works offline. Times are UTC, as everywhere in the console.
 */
import type { Child, FC } from "hono/jsx";
import type { DestinationHealth, TimelineBucket } from "../store/charts";

interface Series {
  label: string;
  color: string;
}

const RECEIVED: Series = { label: "events received", color: "#3867d6" };
const DELIVERED: Series = { label: "deliveries succeeded", color: "#20bf6b" };
const FAILED: Series = { label: "failed or dead", color: "#eb3b5a" };

const WIDTH = 640;
/** Room for the legend above, tick labels left and below, and the axis title under those. */
const MARGIN = { top: 30, right: 16, bottom: 40, left: 52 };
const GRID = "#e3e6ea";
const INK = "#555";

/**
 * Ticks from 0 to at least `max` in steps of 1, 2 or 5 × 10^n, about `count` of them; whole
 * numbers only, since every chart counts or measures in whole units.
 */
export function niceTicks(max: number, count = 4): number[] {
  const top = Math.max(max, 1);
  const rough = top / count;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = Math.max(1, [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= rough)!);
  return Array.from({ length: Math.ceil(top / step) + 1 }, (_, i) => i * step);
}

const hhmm = (ms: number) => new Date(ms).toISOString().slice(11, 16);
const minute = (ms: number) => new Date(ms).toISOString().slice(0, 16).replace("T", " ");

const Legend: FC<{ series: Series[] }> = ({ series }) => {
  let x = MARGIN.left;
  return (
    <g class="legend">
      {series.map((s) => {
        const at = x;
        // Text is about 6 px a character at this size; the swatch and a gap take 28.
        x += s.label.length * 6 + 28;
        return (
          <g>
            <rect x={at} y={8} width={10} height={10} fill={s.color} />
            <text x={at + 14} y={17}>{s.label}</text>
          </g>
        );
      })}
    </g>
  );
};

/** A chart's frame: an image for assistive technology, described by `summary`, titled by its caption. */
const Frame: FC<{ id: string; caption: string; summary: string; height: number; children?: Child }> = ({ id, caption, summary, height, children }) => (
  <figure class="chart" id={id}>
    <figcaption>{caption}</figcaption>
    <svg class="chart" viewBox={`0 0 ${WIDTH} ${height}`} width={WIDTH} height={height} role="img" aria-label={`${caption}: ${summary}`}>
      {children}
    </svg>
  </figure>
);

/** Consecutive time buckets of `bucketMs` each, oldest first. */
export interface Timeline {
  buckets: TimelineBucket[];
  bucketMs: number;
}

/**
 * Events received and delivery outcomes per time bucket: a bar of events received beside a bar
 * of deliveries that succeeded, with those that failed (or died) stacked on it. Hovering
 * anywhere over a bucket shows its time range and all three values.
 */
export const TimelineChart: FC<{ id: string; caption: string } & Timeline> = ({ id, caption, buckets, bucketMs }) => {
  const height = 220;
  const plot = { x: MARGIN.left, y: MARGIN.top, w: WIDTH - MARGIN.left - MARGIN.right, h: height - MARGIN.top - MARGIN.bottom };
  const ticks = niceTicks(Math.max(0, ...buckets.map((b) => Math.max(b.received, b.delivered + b.failed))));
  const top = ticks[ticks.length - 1]!;
  const y = (value: number) => plot.y + plot.h - (value / top) * plot.h;
  const slot = plot.w / buckets.length;
  const bar = slot * 0.4;
  // About six time labels whatever the number of buckets.
  const every = Math.ceil(buckets.length / 6);
  const total = buckets.reduce((sum, b) => ({ received: sum.received + b.received, delivered: sum.delivered + b.delivered, failed: sum.failed + b.failed }), { received: 0, delivered: 0, failed: 0 });
  return (
    <Frame id={id} caption={caption} height={height} summary={`${total.received} events received, ${total.delivered} deliveries succeeded, ${total.failed} failed or dead`}>
      <Legend series={[RECEIVED, DELIVERED, FAILED]} />
      <g class="axis axis-y">
        {ticks.map((t) => (
          <g>
            <line x1={plot.x} x2={plot.x + plot.w} y1={y(t)} y2={y(t)} stroke={GRID} />
            <text class="tick" x={plot.x - 6} y={y(t) + 3} text-anchor="end">{t}</text>
          </g>
        ))}
        <line x1={plot.x} x2={plot.x} y1={plot.y} y2={plot.y + plot.h} stroke={INK} />
        <text class="axis-title" transform={`translate(12 ${plot.y + plot.h / 2}) rotate(-90)`} text-anchor="middle">count</text>
      </g>
      <g class="axis axis-x">
        <line x1={plot.x} x2={plot.x + plot.w} y1={plot.y + plot.h} y2={plot.y + plot.h} stroke={INK} />
        {Array.from({ length: buckets.length + 1 }, (_, i) => i)
          .filter((i) => i % every === 0)
          .map((i) => (
            <g>
              <line x1={plot.x + i * slot} x2={plot.x + i * slot} y1={plot.y + plot.h} y2={plot.y + plot.h + 4} stroke={INK} />
              <text class="tick" x={plot.x + i * slot} y={plot.y + plot.h + 15} text-anchor="middle">{hhmm((buckets[0]?.start ?? 0) + i * bucketMs)}</text>
            </g>
          ))}
        <text class="axis-title" x={plot.x + plot.w / 2} y={height - 4} text-anchor="middle">time (UTC)</text>
      </g>
      {buckets.map((b, i) => {
        const x = plot.x + i * slot + slot * 0.1;
        return (
          <g class="bucket">
            <rect x={x} y={y(b.received)} width={bar} height={y(0) - y(b.received)} fill={RECEIVED.color} />
            <rect x={x + bar} y={y(b.delivered)} width={bar} height={y(0) - y(b.delivered)} fill={DELIVERED.color} />
            <rect x={x + bar} y={y(b.delivered + b.failed)} width={bar} height={y(b.delivered) - y(b.delivered + b.failed)} fill={FAILED.color} />
            {/* On top, the whole bucket's height: hovering anywhere over it shows every value. */}
            <rect class="hover" x={plot.x + i * slot} y={plot.y} width={slot} height={plot.h} fill="transparent">
              <title>{`${minute(b.start)}–${hhmm(b.start + bucketMs)} UTC: ${b.received} events received, ${b.delivered} deliveries succeeded, ${b.failed} failed or dead`}</title>
            </rect>
          </g>
        );
      })}
    </Frame>
  );
};

interface DestinationRow {
  destination: string;
  /** The bar's length in the axis's unit; null: nothing to measure (no forwards). */
  value: number | null;
  /** Printed at the bar's end. */
  label: string;
  /** Shown on hover: the figures behind the value. */
  detail: string;
}

/** One horizontal bar per destination against a labelled value axis. */
const DestinationChart: FC<{ id: string; caption: string; series: Series; unit: string; ticks: number[]; rows: DestinationRow[] }> = ({ id, caption, series, unit, ticks, rows }) => {
  const rowHeight = 24;
  // Destination names on the left, room for the printed value past the longest bar on the right.
  const plot = { x: 130, y: MARGIN.top, w: WIDTH - 130 - 70, h: rows.length * rowHeight };
  const height = MARGIN.top + plot.h + MARGIN.bottom;
  const top = ticks[ticks.length - 1]!;
  const x = (value: number) => plot.x + (Math.min(value, top) / top) * plot.w;
  return (
    <Frame id={id} caption={caption} height={height} summary={rows.map((r) => `${r.destination} ${r.label}`).join(", ")}>
      <Legend series={[series]} />
      <g class="axis axis-x">
        {ticks.map((t) => (
          <g>
            <line x1={x(t)} x2={x(t)} y1={plot.y} y2={plot.y + plot.h + 4} stroke={GRID} />
            <text class="tick" x={x(t)} y={plot.y + plot.h + 15} text-anchor="middle">{t}</text>
          </g>
        ))}
        <line x1={plot.x} x2={plot.x + plot.w} y1={plot.y + plot.h} y2={plot.y + plot.h} stroke={INK} />
        <text class="axis-title" x={plot.x + plot.w / 2} y={height - 4} text-anchor="middle">{unit}</text>
      </g>
      <g class="axis axis-y">
        <line x1={plot.x} x2={plot.x} y1={plot.y} y2={plot.y + plot.h} stroke={INK} />
        {rows.map((r, i) => (
          <text class="tick" x={plot.x - 6} y={plot.y + i * rowHeight + rowHeight / 2 + 3} text-anchor="end">
            {r.destination.length > 18 ? `${r.destination.slice(0, 17)}…` : r.destination}
          </text>
        ))}
      </g>
      {rows.map((r, i) => {
        const rowY = plot.y + i * rowHeight;
        const end = r.value === null ? plot.x : x(r.value);
        return (
          <g class="row">
            {r.value !== null && <rect x={plot.x} y={rowY + 5} width={end - plot.x} height={rowHeight - 10} fill={series.color} />}
            <text class="value" x={end + 4} y={rowY + rowHeight / 2 + 3}>{r.label}</text>
            <rect class="hover" x={0} y={rowY} width={WIDTH} height={rowHeight} fill="transparent">
              <title>{`${r.destination}: ${r.detail}`}</title>
            </rect>
          </g>
        );
      })}
    </Frame>
  );
};

const PERCENT_TICKS = [0, 25, 50, 75, 100];

/** Forwards a destination answered with a 2xx, as a whole percentage. */
export const successRate = (h: DestinationHealth) => Math.round((h.succeeded / h.forwards) * 100);

/** The two per-destination charts over `health` (the last day's forwards), one bar per configured destination: success rate and p95 forward time. */
export const DestinationCharts: FC<{ destinations: string[]; health: DestinationHealth[] }> = ({ destinations, health }) => {
  const byName = new Map(health.map((h) => [h.destination, h]));
  if (destinations.length === 0) return <p>No destinations configured.</p>;
  const none = "no forwards in the last 24 hours";
  return (
    <div class="charts">
      <DestinationChart
        id="chart-success"
        caption="Success rate per destination, last 24 hours"
        series={{ label: "forwards answered 2xx, %", color: DELIVERED.color }}
        unit="% of forwards"
        ticks={PERCENT_TICKS}
        rows={destinations.map((name) => {
          const h = byName.get(name);
          return h
            ? { destination: name, value: successRate(h), label: `${successRate(h)}%`, detail: `${h.succeeded} of ${h.forwards} forwards answered 2xx (${successRate(h)}%)` }
            : { destination: name, value: null, label: "no forwards", detail: none };
        })}
      />
      <DestinationChart
        id="chart-p95"
        caption="p95 forward time per destination, last 24 hours"
        series={{ label: "95th percentile of forward time, ms", color: RECEIVED.color }}
        unit="milliseconds"
        ticks={niceTicks(Math.max(0, ...health.map((h) => h.p95Ms)))}
        rows={destinations.map((name) => {
          const h = byName.get(name);
          return h
            ? { destination: name, value: h.p95Ms, label: `${h.p95Ms} ms`, detail: `95% of ${h.forwards} forwards took at most ${h.p95Ms} ms` }
            : { destination: name, value: null, label: "no forwards", detail: none };
        })}
      />
    </div>
  );
};
