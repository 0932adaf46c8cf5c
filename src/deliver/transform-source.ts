/**
 * The source of each transform, `transforms/<name>.js`, as text: wrangler uploads every file
 * there as a text module beside the Worker (`[[rules]]` and `find_additional_modules` in
 * wrangler.toml), so adding a transform is adding the file. It is imported by a name built at
 * run time, which the bundler cannot follow, so the code is never bundled into (or run in) the
 * gateway: only the Worker Loader runs it (transform.ts). The vitest pool reads the same rules.
 */
import { TRANSFORM_NAME, type DestinationsResult } from "./destinations";

/** `/transforms/<name>.js`: from the bundle's root under wrangler, from the project's root under Vite. */
const moduleOf = (name: string) => ["", "transforms", `${name}.js`].join("/");

/** Per isolate: a deploy brings new isolates, so a file's text never changes under one. */
const sources = new Map<string, Promise<string | null>>();

/** The transform's source, or null when no such file was deployed. */
export function transformSource(name: string): Promise<string | null> {
  let source = sources.get(name);
  if (!source) {
    source = TRANSFORM_NAME.test(name)
      ? import(/* @vite-ignore */ moduleOf(name)).then(
          (module: { default?: unknown }) => (typeof module.default === "string" ? module.default : null),
          () => null,
        )
      : Promise.resolve(null);
    sources.set(name, source);
  }
  return source;
}

/**
 * DESTINATIONS as loadDestinations reads it, plus what it cannot check synchronously: that each
 * transform named is a file in transforms/. A missing one is a configuration error like any other.
 */
export async function withTransformsChecked(config: DestinationsResult): Promise<DestinationsResult> {
  if (!config.ok) return config;
  const found = await Promise.all(
    config.destinations.map(async ({ name, transform }, index) =>
      transform && (await transformSource(transform)) === null
        ? `DESTINATIONS[${index}] (${name}).transform: names no file in transforms/ (each transform is transforms/<name>.js, deployed with the Worker)`
        : null,
    ),
  );
  const errors = found.filter((error) => error !== null);
  return errors.length ? { ok: false, errors: errors } : config;
}
