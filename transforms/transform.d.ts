/**
 * What every transform in this folder receives and may return. A transform is an ES module whose
 * default export takes the event and returns the body to forward (any JSON value), or null to skip
 * the destination for this event. It runs in an isolate of its own: no network, no bindings.
 * `// @ts-check` and a JSDoc `@type {import("./transform").Transform}` let `npm run typecheck` check it.
 */
export interface TransformEvent {
  /** "seismic" or "zuddl". */
  provider: string;
  /** The source (path) it arrived through: the provider's name for its built-in source. */
  source: string;
  /** Seismic's `version`, Zuddl's `action`. */
  type: string;
  /** The provider's id for the event (Seismic `id`, Zuddl `actionId`). */
  eventId: string;
  tenant: string | null;
  /** As the provider sent it (not reformatted). */
  occurredAt: string | null;
  /** When edgehook received it, ISO 8601. */
  receivedAt: string;
  /** The payload as received, parsed; null if it is not JSON (released from quarantine as it was). */
  payload: unknown;
}

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export type Transform = (event: TransformEvent) => Json | Promise<Json>;
