/**
 * The console's SVG charts rendered from known data: axes, tick and time labels, legend, hover
 * titles, and bars whose sizes match the values.
 */
import { jsx } from "hono/jsx";
import { describe, expect, it } from "vitest";
import { DestinationCharts, niceTicks, TimelineChart } from "../src/console/charts";
import { select } from "./html";

/** A component's markup, as the console's pages render it. */
const markup = async (node: ReturnType<typeof jsx>) => String(await node.toString());

const HOUR = 3_600_000;
const START = Date.UTC(2026, 10, 23, 9, 0);

describe("niceTicks", () => {
  it("steps 1, 2 or 5 × 10^n from 0 past the maximum, whole numbers only", () => {
    expect(niceTicks(0)).toEqual([0, 1]);
    expect(niceTicks(1)).toEqual([0, 1]);
    expect(niceTicks(7)).toEqual([0, 2, 4, 6, 8]);
    expect(niceTicks(10)).toEqual([0, 5, 10]);
    expect(niceTicks(95)).toEqual([0, 50, 100]);
    expect(niceTicks(1234)).toEqual([0, 500, 1000, 1500]);
  });
});

describe("TimelineChart", () => {
  const buckets = [
    { start: START, received: 10, delivered: 6, failed: 2 },
    { start: START + HOUR, received: 0, delivered: 0, failed: 0 },
    { start: START + 2 * HOUR, received: 4, delivered: 3, failed: 1 },
  ];
  const render = () => markup(jsx(TimelineChart, { id: "t", caption: "Test day", buckets, bucketMs: HOUR }));

  it("has both axes with tick values and time labels, a legend, and a summary for screen readers", async () => {
    const found = await select(await render(), ["svg", ".axis-y text.tick", ".axis-x text.tick", ".axis-title", ".legend text", "figcaption"]);
    expect(found.svg![0]!.attributes).toMatchObject({ role: "img", "aria-label": "Test day: 14 events received, 9 deliveries succeeded, 3 failed or dead" });
    expect(found["figcaption"]![0]!.text).toBe("Test day");
    expect(found[".axis-y text.tick"]!.map((e) => e.text)).toEqual(["0", "5", "10"]);
    expect(found[".axis-x text.tick"]!.map((e) => e.text)).toEqual(["09:00", "10:00", "11:00", "12:00"]);
    expect(found[".axis-title"]!.map((e) => e.text)).toEqual(["count", "time (UTC)"]);
    expect(found[".legend text"]!.map((e) => e.text)).toEqual(["events received", "deliveries succeeded", "failed or dead"]);
  });

  it("shows each bucket's values on hover and draws bars to scale", async () => {
    const found = await select(await render(), [".bucket title", ".bucket rect:not(.hover)"]);
    expect(found[".bucket title"]!.map((e) => e.text)).toEqual([
      "2026-11-23 09:00–10:00 UTC: 10 events received, 6 deliveries succeeded, 2 failed or dead",
      "2026-11-23 10:00–11:00 UTC: 0 events received, 0 deliveries succeeded, 0 failed or dead",
      "2026-11-23 11:00–12:00 UTC: 4 events received, 3 deliveries succeeded, 1 failed or dead",
    ]);
    // Three bars a bucket: received, succeeded, failed stacked on succeeded. The axis tops at 10.
    const heights = found[".bucket rect:not(.hover)"]!.map((e) => Number(e.attributes.height));
    const full = heights[0]!;
    expect(full).toBeGreaterThan(100);
    expect(heights.map((h) => Math.round((h / full) * 10))).toEqual([10, 6, 2, 0, 0, 0, 4, 3, 1]);
    const [received, succeeded, failed] = found[".bucket rect:not(.hover)"]!.map((e) => e.attributes);
    expect(Number(failed!.y) + Number(failed!.height)).toBeCloseTo(Number(succeeded!.y)); // stacked
    expect(Number(received!.y) + Number(received!.height)).toBeCloseTo(Number(succeeded!.y) + Number(succeeded!.height)); // one baseline
  });
});

describe("DestinationCharts", () => {
  const health = [
    { destination: "alpha", forwards: 200, succeeded: 190, p95Ms: 340 },
    { destination: "slow", forwards: 4, succeeded: 1, p95Ms: 1200 },
  ];
  const render = () => markup(jsx(DestinationCharts, { destinations: ["alpha", "quiet", "slow"], health }));

  it("charts success rate and p95 per configured destination, in their order, with axes, legend and hover detail", async () => {
    const found = await select(await render(), ["#chart-success .axis-y text", "#chart-success .axis-x text.tick", "#chart-success .value", "#chart-success title", "#chart-p95 .axis-x text.tick", "#chart-p95 .value", "#chart-p95 title", ".legend text", ".axis-title"]);
    expect(found["#chart-success .axis-y text"]!.map((e) => e.text)).toEqual(["alpha", "quiet", "slow"]);
    expect(found["#chart-success .axis-x text.tick"]!.map((e) => e.text)).toEqual(["0", "25", "50", "75", "100"]);
    expect(found["#chart-success .value"]!.map((e) => e.text)).toEqual(["95%", "no forwards", "25%"]);
    expect(found["#chart-success title"]!.map((e) => e.text)).toEqual([
      "alpha: 190 of 200 forwards answered 2xx (95%)",
      "quiet: no forwards in the last 24 hours",
      "slow: 1 of 4 forwards answered 2xx (25%)",
    ]);
    expect(found["#chart-p95 .axis-x text.tick"]!.map((e) => e.text)).toEqual(["0", "500", "1000", "1500"]);
    expect(found["#chart-p95 .value"]!.map((e) => e.text)).toEqual(["340 ms", "no forwards", "1200 ms"]);
    expect(found["#chart-p95 title"]![0]!.text).toBe("alpha: 95% of 200 forwards took at most 340 ms");
    expect(found[".legend text"]!.map((e) => e.text)).toEqual(["forwards answered 2xx, %", "95th percentile of forward time, ms"]);
    expect(found[".axis-title"]!.map((e) => e.text)).toEqual(["% of forwards", "milliseconds"]);
  });

  it("draws each bar to scale against its axis", async () => {
    const found = await select(await render(), ["#chart-p95 .row rect:not(.hover)", "#chart-p95 .axis-x line"]);
    const [alpha, slow] = found["#chart-p95 .row rect:not(.hover)"]!.map((e) => Number(e.attributes.width));
    expect(found["#chart-p95 .row rect:not(.hover)"]).toHaveLength(2); // none for the destination without forwards
    expect(alpha! / slow!).toBeCloseTo(340 / 1200);
    const gridlines = found["#chart-p95 .axis-x line"]!.map((e) => Number(e.attributes.x1));
    expect(slow!).toBeCloseTo((1200 / 1500) * (gridlines[3]! - gridlines[0]!)); // ticks 0, 500, 1000, 1500
  });

  it("says so when there is nothing to chart", async () => {
    expect(await markup(jsx(DestinationCharts, { destinations: [], health: [] }))).toBe("<p>No destinations configured.</p>");
  });
});
