/**
 * Runs `work` when fewer than `limit` earlier calls are still running (and fewer than `perKey` of
 * its key's). A freed slot goes to the key (a destination) with the fewest calls running, the
 * earliest caller first among equals, so a slow destination holding its calls open never queues
 * another's behind all of its own: each destination with work waiting gets its share of the slots.
 */
export type Limiter = <T>(key: string, work: () => Promise<T>) => Promise<T>;

export function limiter(limit: number, perKey = limit): Limiter {
  const running = new Map<string, number>();
  let total = 0;
  const waiting: { key: string; start: () => void }[] = [];
  const next = () => {
    if (total >= limit) return;
    let chosen = -1;
    for (let i = 0; i < waiting.length; i++) {
      const count = running.get(waiting[i]!.key) ?? 0;
      if (count < perKey && (chosen === -1 || count < (running.get(waiting[chosen]!.key) ?? 0))) chosen = i;
    }
    if (chosen === -1) return;
    const { key, start } = waiting.splice(chosen, 1)[0]!;
    // Counted when chosen, not when the caller resumes: the slot is taken at once.
    total++;
    running.set(key, (running.get(key) ?? 0) + 1);
    start();
  };
  return async (key, work) => {
    await new Promise<void>((start) => {
      waiting.push({ key, start });
      next();
    });
    try {
      return await work();
    } finally {
      total--;
      running.set(key, running.get(key)! - 1);
      next();
    }
  };
}
