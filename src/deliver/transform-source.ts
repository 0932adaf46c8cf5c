/**
 * The source of each transform, `transforms/<name>.js`, as text: scripts/transforms.mjs writes
 * them all into transforms.generated.ts (wrangler.toml's `[build] command`, before every
 * `wrangler dev` and deploy), so adding a transform is adding the file. The code is only ever a
 * string in the gateway, never evaluated there: the Worker Loader runs it (transform.ts).
 */
import { transformSources } from "./transforms.generated";

/** A transform's name: its file's in transforms/ without `.js` (never a path). scripts/transforms.mjs keeps the same rule. */
export const TRANSFORM_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/** The transform's source, or null when transforms/ has no such file. */
export function transformSource(name: string): string | null {
  if (!TRANSFORM_NAME.test(name) || !Object.hasOwn(transformSources, name)) return null;
  return transformSources[name] ?? null;
}
