/**
 * The operator API's answers against its own description (#12). The test helpers hand every
 * admin response they produce to `recordAdmin`; test/setup.ts calls `checkRecorded` after each
 * test, which fails the test unless each answer's route and status are in the served
 * /admin/openapi.json, its body validates against the schema documented for that status, and
 * the headers documented as required are there. The validator is @cfworker/json-schema (JSON
 * Schema 2020-12, OpenAPI 3.1's dialect), which runs in workerd: it compiles no code at run time.
 */
import { Validator } from "@cfworker/json-schema";
import { env, exports } from "cloudflare:workers";

/** Where the document's own `#/…` references resolve while validating. */
const DOCUMENT_URI = "https://edgehook.test/admin/openapi.json";

interface Header {
  required?: boolean;
}
interface ResponseObject {
  headers?: Record<string, Header>;
  content?: Record<string, unknown>;
}
export interface OpenApiDocument {
  openapi: string;
  paths: Record<string, Record<string, { responses: Record<string, ResponseObject> }>>;
}

interface Recorded {
  method: string;
  path: string;
  response: Response;
}

const recorded: Recorded[] = [];
/** `METHOD /template status` of every answer checked so far in this test file. */
export const checkedAnswers = new Set<string>();

/** Keeps a copy of an admin answer for the next check; returns the answer untouched. */
export function recordAdmin(request: Request, response: Response): Response {
  const url = new URL(request.url);
  if (url.pathname.startsWith("/admin/")) recorded.push({ method: request.method, path: url.pathname, response: response.clone() });
  return response;
}

let served: Promise<OpenApiDocument> | undefined;

/** The document as the Worker serves it (fetched once per test file). */
export function servedDocument(): Promise<OpenApiDocument> {
  served ??= exports.default
    .fetch(new Request(DOCUMENT_URI, { headers: { authorization: `Bearer ${env.ADMIN_TOKEN}` } }))
    .then(async (response) => {
      if (response.status !== 200) throw new Error(`GET /admin/openapi.json answered ${response.status}`);
      return (await response.json()) as OpenApiDocument;
    });
  return served;
}

/** The documented path template a request path is an instance of, or undefined (not an API route). */
export function templateOf(document: OpenApiDocument, method: string, path: string): string | undefined {
  return Object.keys(document.paths).find(
    (template) => document.paths[template]![method.toLowerCase()] && new RegExp(`^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`).test(path),
  );
}

const pointer = (...segments: string[]) => segments.map((s) => `/${encodeURI(s.replace(/~/g, "~0").replace(/\//g, "~1"))}`).join("");
const validators = new Map<string, Validator>();

function validatorFor(document: OpenApiDocument, template: string, method: string, status: string): Validator {
  const at = pointer("paths", template, method, "responses", status, "content", "application/json", "schema");
  let validator = validators.get(at);
  if (!validator) {
    validator = new Validator({ $ref: `${DOCUMENT_URI}#${at}` }, "2020-12", false);
    validator.addSchema(document as unknown as Parameters<Validator["addSchema"]>[0], DOCUMENT_URI);
    validators.set(at, validator);
  }
  return validator;
}

/** Checks every answer recorded since the last call; returns what does not match the document. */
export async function checkRecorded(): Promise<string[]> {
  const batch = recorded.splice(0);
  if (batch.length === 0) return [];
  const document = await servedDocument();
  const problems: string[] = [];
  for (const { method, path, response } of batch) {
    const template = templateOf(document, method, path);
    if (!template) continue; // not an operator API route: the app's own 404
    const status = String(response.status);
    const what = `${method} ${path} → ${status}`;
    const documented = document.paths[template]![method.toLowerCase()]!.responses[status];
    if (!documented) {
      problems.push(`${what}: status not documented for ${method} ${template}`);
      continue;
    }
    checkedAnswers.add(`${method} ${template} ${status}`);
    for (const [name, header] of Object.entries(documented.headers ?? {})) {
      if (header.required && !response.headers.has(name)) problems.push(`${what}: no ${name} header`);
    }
    const contentType = response.headers.get("content-type") ?? "";
    const mediaTypes = Object.keys(documented.content ?? {});
    if (!mediaTypes.some((type) => contentType.startsWith(type))) {
      problems.push(`${what}: content-type ${contentType}, documented ${mediaTypes.join(" or ")}`);
      continue;
    }
    // Only JSON answers have a schema to hold them to; the metrics text is checked by a Prometheus parser.
    if (!contentType.startsWith("application/json")) continue;
    const result = validatorFor(document, template, method.toLowerCase(), status).validate(await response.json());
    if (!result.valid) {
      // The innermost errors say what is wrong; the outer ones only that a subschema failed.
      const errors = result.errors.filter((e) => !e.error.startsWith("A subschema had errors"));
      problems.push(`${what}: ${errors.map((e) => `${e.instanceLocation} ${e.error}`).join("; ")}`);
    }
  }
  return problems;
}
