/**
 * Helpers for the tests of destinations' controls (pause, circuit, release, rate limit), on top
 * of the delivery harness: a destination's state as the admin API shows it, events accepted in
 * order, and a downstream whose answer a test changes as it goes.
 */
import { http, HttpResponse } from "msw";
import { accept, admin, events, server } from "./delivery-harness";
import { sleep } from "./faults";
import { seismicBody, seismicRequest } from "./helpers";

/** A destination name of its own per test: destination state lives in D1 across tests. */
export const uniqueName = (prefix: string) => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;

export interface DestinationState {
  name: string;
  state: string;
  held: number;
  pausedReason: string | null;
  consecutiveFailures: number;
  circuitOpenedAt: string | null;
  nextProbeAt: string | null;
  lastSuccessAt: string | null;
  lastFailureAt: string | null;
}

export async function destinationState(name: string): Promise<DestinationState> {
  const body = (await (await admin("GET", "/admin/destinations")).json()) as { destinations: DestinationState[] };
  return body.destinations.find((d) => d.name === name)!;
}

/** Accepts `count` Seismic events, a few ms apart so "oldest first" has one answer. */
export async function acceptMany(count: number): Promise<string[]> {
  const keys: string[] = [];
  for (let i = 0; i < count; i++) {
    keys.push(await accept(await seismicRequest(seismicBody())));
    await sleep(3);
  }
  return keys;
}

/** A downstream whose answer a test changes as it goes. */
export function switchable(url: string, initial: number) {
  const state = { status: initial, received: [] as { at: number; eventKey: string }[] };
  server.use(
    http.post(url, ({ request }) => {
      state.received.push({ at: Date.now(), eventKey: request.headers.get("webhook-id")! });
      return new HttpResponse(null, { status: state.status });
    }),
  );
  return state;
}

/** What the events queue was sent since the last call. */
export const take = () => events.accepted.splice(0);
