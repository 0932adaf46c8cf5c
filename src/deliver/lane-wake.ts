/**
 * Waking lanes (deliver/lane.ts), from the consumer and the cron: apart from the Durable Object's
 * class, so that the request path, the admin API and the benchmarks that bundle them never load it.
 */
import type { Env, LaneProbe, LaneVars } from "../env";
import { lanesWithWork } from "../store/lanes";

/** The vars a lane delivers under: those of the consumer that woke it (the same deploy's). */
const LANE_VARS = [
  "DESTINATIONS", "MAX_DELIVERY_ATTEMPTS", "RETRY_BASE_SECONDS", "RETRY_MAX_SECONDS", "TRANSFORM_CPU_MS", "TRANSFORM_TIMEOUT_MS", "LANE_BUDGET_MS", "MAX_FORWARDS_PER_BATCH",
] as const;

/**
 * Wakes each named destination's lane (handing it its circuit's probe, if `probes` has one);
 * returns the ones woken. A lane that cannot be reached is left to the cron's safety net.
 */
export async function pokeLanes(env: Env, names: string[], probes: Map<string, LaneProbe> = new Map()): Promise<Set<string>> {
  const woken = new Set<string>();
  const namespace = env.LANES;
  if (!namespace) return woken;
  const vars = Object.fromEntries(LANE_VARS.flatMap((name) => (env[name] === undefined ? [] : [[name, env[name]]]))) as LaneVars;
  await Promise.all(
    [...new Set([...names, ...probes.keys()])].map(async (name) => {
      try {
        await namespace.get(namespace.idFromName(name)).poke(name, vars, probes.get(name));
        woken.add(name);
      } catch (err) {
        console.error(JSON.stringify({ queue: "deliver", destination: name, outcome: "lane_wake_failed", error: String(err) }));
      }
    }),
  );
  return woken;
}

/** The cron's safety net: wakes every lane that has unfinished deliveries (a wake-up lost, an alarm that failed for good). */
export async function wakeLanes(env: Env): Promise<{ lanes: number }> {
  const names = await lanesWithWork(env.DB);
  return { lanes: (await pokeLanes(env, names)).size };
}

