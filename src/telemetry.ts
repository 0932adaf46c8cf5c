/**
 * Telemetry is a side effect that must never change what happens to an event. Workers
 * Analytics Engine's writeDataPoint throws a TypeError (synchronously, at the caller) when an
 * index is over 96 bytes or the blobs together are over 16 KB, and event types come from signed
 * payloads of any length. So every data point goes through `writePoint`, which bounds each
 * value first and swallows what still fails, counting it (edgehook_telemetry_failures_total)
 * in this isolate instead: a failure costs no D1 write of its own (receive/outcomes.ts writes
 * the count with the refusals it gathers).
 */

/** Analytics Engine's limit per index. */
const MAX_INDEX_BYTES = 96;
/**
 * Our limit per blob, and per label or log field taken from a payload: the 20 blobs a data point
 * may carry then stay under Analytics Engine's total for them (5 KB until 2025, 16 KB since).
 */
export const MAX_LABEL_BYTES = 256;

const utf8 = new TextEncoder();
const ELLIPSIS = "…";

/**
 * `text` cut to at most `maxBytes` of UTF-8, never inside a character, ending in "…" when cut.
 * Short text is returned as it is without being encoded (a UTF-16 unit is at most 3 UTF-8 bytes).
 */
export function bounded(text: string, maxBytes = MAX_LABEL_BYTES): string {
  if (text.length * 3 <= maxBytes) return text;
  const room = new Uint8Array(maxBytes);
  if (utf8.encodeInto(text, room).read === text.length) return text;
  // encodeInto stops before a character that does not fit whole, so the cut is always clean.
  const { read } = utf8.encodeInto(text, room.subarray(0, maxBytes - utf8.encode(ELLIPSIS).byteLength));
  return `${text.slice(0, read)}${ELLIPSIS}`;
}

export interface Point {
  index: string;
  blobs: string[];
  doubles: number[];
}

let failures = 0;

/** Writes one data point when a dataset is bound; bounded, and never throws. */
export function writePoint(dataset: AnalyticsEngineDataset | undefined, point: Point): void {
  if (!dataset) return;
  try {
    dataset.writeDataPoint({
      indexes: [bounded(point.index, MAX_INDEX_BYTES)],
      blobs: point.blobs.map((blob) => bounded(blob)),
      doubles: point.doubles,
    });
  } catch {
    failures++;
  }
}

/** The failed writes counted in this isolate since the last call (the caller writes them). */
export function takeTelemetryFailures(): number {
  const taken = failures;
  failures = 0;
  return taken;
}
