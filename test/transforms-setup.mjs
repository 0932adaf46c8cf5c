/**
 * Vitest global setup: the hostile and probing transforms the tests name (`transform =
 * "test-throws"`) live in test/fixtures/transforms, never in transforms/, so a deploy never carries
 * them. For the run they are linked into transforms/ (git ignores transforms/test-*), where the
 * pool finds them exactly as wrangler finds a real transform; the links go when the run ends.
 */
import { mkdirSync, readdirSync, rmSync, symlinkSync } from "node:fs";
import path from "node:path";

const root = path.join(import.meta.dirname, "..");
const fixtures = path.join(root, "test/fixtures/transforms");
const target = path.join(root, "transforms");

const linked = () => readdirSync(fixtures).filter((file) => /^test-[a-z0-9-]+\.js$/.test(file));

function unlinkAll() {
  for (const file of linked()) rmSync(path.join(target, file), { force: true });
}

export default function setup() {
  mkdirSync(target, { recursive: true });
  unlinkAll();
  for (const file of linked()) symlinkSync(path.join(fixtures, file), path.join(target, file));
  return unlinkAll;
}
