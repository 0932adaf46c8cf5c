/** Guards for the console's form posts: only from its own pages, and only small. */
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { csrf } from "hono/csrf";
import { HTTPException } from "hono/http-exception";
import type { AppEnv } from "../env";
import { HttpError } from "../errors";

/**
 * SameSite=Strict is not enough: sibling Workers on *.workers.dev are same-site. hono's csrf
 * admits a form post when Sec-Fetch-Site is `same-origin` or Origin is this origin. A post with
 * neither header is refused too: browsers send Origin on every POST, so it is a script, and
 * scripts use the admin API with the bearer token. csrf checks only the content types a page
 * can post cross-origin (forms, text/plain); any other needs a CORS preflight, never granted here.
 */
export function sameOriginForms(): MiddlewareHandler<AppEnv> {
  const check = csrf();
  return async function sameOriginForms(c, next) {
    // csrf as a predicate: it calls its `next` only for a post it admits and throws otherwise,
    // so the console's own handlers run outside it and their errors are never mistaken for its.
    let admitted = false;
    await check(c, async () => {
      admitted = true;
    }).catch((err: unknown) => {
      if (!(err instanceof HTTPException)) throw err;
    });
    if (!admitted) {
      throw new HttpError(403, "cross_origin_form", "console forms are accepted only from the console's own pages (Origin or Sec-Fetch-Site)");
    }
    await next();
  };
}

/** The largest console form is the admin token; refused before reading past this. */
const FORM_MAX_BYTES = 4096;

export function boundedForms(): MiddlewareHandler<AppEnv> {
  return bodyLimit({
    maxSize: FORM_MAX_BYTES,
    onError: () => {
      throw new HttpError(413, "body_too_large", `console forms are at most ${FORM_MAX_BYTES} bytes`);
    },
  });
}
