// `-- --smoke`: every benchmark runs at a size that takes seconds, so one that breaks fails CI
// (.ci/run). It checks that each produced numbers, never what they are: these machines are noisy.
export const smoke = process.argv.includes("--smoke");

const checked = [];

/** Records that benchmark `name` produced these figures; each must be a finite number. */
export function produced(name, figures) {
  const missing = Object.entries(figures).filter(([, value]) => typeof value !== "number" || !Number.isFinite(value)).map(([key]) => key);
  checked.push({ name, missing });
}

/** In smoke mode: says what ran, and exits non-zero if a benchmark produced no number somewhere. */
export function reportSmoke(expected) {
  if (!smoke) return;
  const names = checked.map((c) => c.name);
  const absent = expected.filter((name) => !names.includes(name));
  const broken = checked.filter((c) => c.missing.length);
  for (const c of broken) console.error(`bench smoke: ${c.name} produced no number for ${c.missing.join(", ")}`);
  for (const name of absent) console.error(`bench smoke: ${name} did not run`);
  console.log(`bench smoke: ${checked.length - broken.length}/${expected.length} benchmarks ran and produced numbers`);
  if (broken.length || absent.length) process.exitCode = 1;
}
