/**
 * Previews a destination's transform on a stored event or a pasted payload, for the operator API
 * and the console: the same runner and limits as a forward, in an isolate of its own, and nothing
 * is forwarded or recorded.
 */
import { Value } from "@sinclair/typebox/value";
import { transformEvent, transformRunner, type TransformEvent } from "../deliver/transform";
import type { Env } from "../env";
import { HttpError } from "../errors";
import { findProvider, providers } from "../providers";
import { maxBodyBytes, parseJsonBody, readBoundedBody } from "../receive/body";
import { configuredDestinations, requireEvent } from "./operations";
import { PreviewRequest, type PreviewView } from "./schemas";

const BODY_TIMEOUT_MS = 5_000;

/** Reads a preview request's JSON body: an event's id, or a provider and its payload. */
export async function previewRequest(request: Request, env: Env): Promise<PreviewRequest> {
  const { json } = parseJsonBody(await readBoundedBody(request, maxBodyBytes(env), BODY_TIMEOUT_MS));
  if (!Value.Check(PreviewRequest, json)) {
    throw new HttpError(400, "invalid_preview", 'the body must be {"eventId": "evt_…"} or {"provider": "seismic" | "zuddl", "payload": {…}[, "source": "…"]}');
  }
  return json;
}

export async function previewTransform(env: Env, name: string, request: PreviewRequest): Promise<PreviewView> {
  const destination = configuredDestinations(env).find((d) => d.name === name);
  if (!destination) throw new HttpError(404, "unknown_destination", `no destination named "${name}" in DESTINATIONS`);
  if (!destination.transform) throw new HttpError(400, "no_transform", `destination "${name}" has no transform: it forwards the original body`);
  const { event, eventId } = "eventId" in request
    ? { event: transformEvent(await requireEvent(env, request.eventId)), eventId: request.eventId }
    : { event: pastedEvent(request), eventId: null };
  // In an isolate of its own: what a preview leaves there never reaches a forward.
  const result = await transformRunner(env, "preview")(destination.name, destination.transform, event);
  const base = { destination: name, transform: destination.transform, eventId, durationMs: result.durationMs };
  switch (result.outcome) {
    case "body":
      return { ...base, outcome: "body", body: JSON.parse(result.body) as unknown };
    case "skip":
      return { ...base, outcome: "skipped" };
    case "failed":
      return { ...base, outcome: "failed", error: { kind: result.kind, message: result.message } };
  }
}

/** A pasted payload as its provider's schema reads it (422 schema_mismatch, with the path, when it does not fit). */
function pastedEvent(request: Extract<PreviewRequest, { provider: string }>): TransformEvent {
  const provider = findProvider(request.provider);
  if (!provider) throw new HttpError(400, "unknown_provider", `provider must be one of: ${providers.map((p) => p.name).join(", ")}`);
  const parsed = provider.parse(request.payload);
  return {
    provider: provider.name, source: request.source ?? provider.name, type: parsed.type, eventId: parsed.eventId, tenant: parsed.tenant,
    occurredAt: parsed.occurredAt, receivedAt: new Date().toISOString(), payload: request.payload,
  };
}
