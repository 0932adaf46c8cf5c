/**
 * Writes `items` in one go; if that fails, one by one, so one item D1 refuses costs only itself.
 * `written`, when given, says which items the failed batch wrote after all (it committed, and
 * only its answer was lost): those are not written again. Returns the items whose own write
 * failed (each reported to `failed`).
 */
export async function writeAllOrEach<T>(
  items: T[], write: (items: T[]) => Promise<unknown>, failed: (item: T | null, err: unknown) => void,
  written: (items: T[]) => Promise<Set<T>> = async () => new Set(),
): Promise<Set<T>> {
  try {
    await write(items);
    return new Set();
  } catch (err) {
    failed(null, err);
  }
  const done = await written(items).catch(() => new Set<T>());
  const unwritten = new Set<T>();
  for (const item of items) {
    if (done.has(item)) continue;
    await write([item]).catch((err: unknown) => {
      failed(item, err);
      unwritten.add(item);
    });
  }
  return unwritten;
}
