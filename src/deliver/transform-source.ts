/**
 * The source of each transform, `transforms/<name>.js`, as text: scripts/transforms.mjs writes
 * them all into transforms.generated.ts (wrangler.toml's `[build] command`, before every
 * `wrangler dev` and deploy), so adding a transform is adding the file. The code is only ever a
 * string in the gateway, never evaluated there: the Worker Loader runs it (transform.ts).
 */
import { TRANSFORM_NAME, type DestinationsResult } from "./destinations";
import { transformSources } from "./transforms.generated";

/** The transform's source, or null when transforms/ has no such file. */
export function transformSource(name: string): string | null {
  if (!TRANSFORM_NAME.test(name) || !Object.hasOwn(transformSources, name)) return null;
  return transformSources[name] ?? null;
}

/**
 * DESTINATIONS as loadDestinations reads it, plus that each transform named is a file in
 * transforms/. A missing one is a configuration error like any other.
 */
export function withTransformsChecked(config: DestinationsResult): DestinationsResult {
  if (!config.ok) return config;
  const errors = config.destinations.flatMap(({ name, transform }, index) =>
    transform && transformSource(transform) === null
      ? [`DESTINATIONS[${index}] (${name}).transform: names no file in transforms/ (each transform is transforms/<name>.js, deployed with the Worker)`]
      : [],
  );
  return errors.length ? { ok: false, errors } : config;
}
