/**
 * Writes `items` in one go; if that fails, one by one, so one item D1 refuses costs only itself.
 * Returns the items whose own write failed (each reported to `failed`).
 */
export async function writeAllOrEach<T>(
  items: T[], write: (items: T[]) => Promise<unknown>, failed: (item: T | null, err: unknown) => void,
): Promise<Set<T>> {
  try {
    await write(items);
    return new Set();
  } catch (err) {
    failed(null, err);
  }
  const unwritten = new Set<T>();
  for (const item of items) {
    await write([item]).catch((err: unknown) => {
      failed(item, err);
      unwritten.add(item);
    });
  }
  return unwritten;
}
