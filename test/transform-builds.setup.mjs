/**
 * Vitest's global setup (in Node, before the tests): runs scripts/transforms.mjs, as the build
 * does, on each directory of test/fixtures/transform-builds, and hands each run's exit code and
 * error output to test/transform-build.test.ts (the tests themselves run in workerd, which
 * cannot start a process).
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const root = path.join(import.meta.dirname, "..");
const fixtures = "test/fixtures/transform-builds";

/** @param {{ provide: (key: string, value: unknown) => void }} project Vitest's TestProject */
export default function setup(project) {
  const out = mkdtempSync(path.join(tmpdir(), "transform-builds-"));
  try {
    const builds = Object.fromEntries(readdirSync(path.join(root, fixtures)).map((dir) => {
      const run = spawnSync(process.execPath, ["scripts/transforms.mjs", "--out", path.join(out, `${dir}.ts`), `${fixtures}/${dir}`], { cwd: root, encoding: "utf8" });
      return [dir, { status: run.status, stderr: run.stderr }];
    }));
    project.provide("transformBuilds", builds);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}
