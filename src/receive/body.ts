import { numberVar, type Env } from "../env";
import { HttpError } from "../errors";

const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
/**
 * The ceiling on MAX_BODY_BYTES, whatever the var says. Bodies are in R2 (which takes 5 GB in one
 * write), so memory sets it: an isolate has 128 MB, the request path holds a body about three
 * times (bytes, text, parsed JSON) and a forward once more, and a queue batch reads at most 8 MiB
 * of bodies from R2 (deliver/consumer.ts): 8 MiB keeps one body's request within a quarter of it.
 */
export const MAX_BODY_BYTES_CEILING = 8 * 1024 * 1024;

/** The largest body edgehook takes, and so the largest a forward carries: MAX_BODY_BYTES, within the ceiling. */
export function maxBodyBytes(env: Pick<Env, "MAX_BODY_BYTES">): number {
  return Math.min(MAX_BODY_BYTES_CEILING, numberVar(env.MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES));
}

/**
 * Reads a request body up to `maxBytes`, refusing larger ones with 413 before buffering
 * more than the limit: a declared Content-Length is checked first, then the stream is
 * counted as it arrives (a sender may omit or understate the length). A body still
 * trickling in after `timeoutMs` is cut off with 408, so the answer stays inside the
 * providers' deadline.
 */
export async function readBoundedBody(request: Pick<Request, "headers" | "body">, maxBytes: number, timeoutMs: number): Promise<Uint8Array> {
  const tooLarge = () => new HttpError(413, "body_too_large", `request body exceeds ${maxBytes} bytes`);
  const declared = Number(request.headers.get("content-length"));
  if (declared > maxBytes) throw tooLarge();
  if (!request.body) return new Uint8Array(0);

  const reader = request.body.getReader();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    reader.cancel().catch(() => undefined);
  }, timeoutMs);
  const chunks: Uint8Array[] = [];
  let received = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (timedOut) throw new HttpError(408, "body_timeout", `request body not received within ${timeoutMs} ms`);
      if (done) break;
      received += value.byteLength;
      if (received > maxBytes) {
        await reader.cancel().catch(() => undefined);
        throw tooLarge();
      }
      chunks.push(value);
    }
  } finally {
    clearTimeout(timer);
  }
  if (chunks.length === 1) return chunks[0]!;
  const body = new Uint8Array(received);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Decodes UTF-8 and parses JSON; throws HttpError 400 naming what was wrong. */
export function parseJsonBody(body: Uint8Array): { text: string; json: unknown } {
  if (body.byteLength === 0) throw new HttpError(400, "empty_body", "request body is empty");
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    throw new HttpError(400, "invalid_utf8", "request body is not valid UTF-8");
  }
  try {
    // A leading byte-order mark is kept in the stored text (forwarded byte for byte) but not parsed.
    return { text, json: JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text) };
  } catch (err) {
    throw new HttpError(400, "malformed_json", `request body is not valid JSON: ${(err as Error).message}`);
  }
}

/** JSON media types: application/json and any +json suffix. */
export function isJsonContentType(contentType: string | null): boolean {
  if (contentType === null) return true; // some senders omit it; the body is still checked as JSON
  const mediaType = contentType.split(";")[0]!.trim().toLowerCase();
  return mediaType === "application/json" || mediaType.endsWith("+json");
}
