/**
 * Binding wrappers that make the outside world (D1, the Queue) fail or stall on demand, or count
 * what it is asked. Used only by tests and benchmarks: production code never sees a fault switch.
 */
type Gate = (sql: string) => Promise<void> | void;

/**
 * A D1Database whose statements pass through `gate` (which may throw or wait) first, and which
 * calls `onTransaction` once per round trip (a batch, or one statement on its own).
 */
export function faultyD1(db: D1Database, gate: Gate, onTransaction: () => void = () => undefined): D1Database {
  const inner = new WeakMap<object, { statement: D1PreparedStatement; sql: string }>();
  const wrap = (statement: D1PreparedStatement, sql: string): D1PreparedStatement => {
    const proxy = new Proxy(statement, {
      get(target, prop) {
        if (prop === "bind") return (...values: unknown[]) => wrap(target.bind(...values), sql);
        if (prop === "run" || prop === "first" || prop === "all" || prop === "raw") {
          return async (...args: unknown[]) => {
            await gate(sql);
            onTransaction();
            return (target[prop] as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
        const value = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    inner.set(proxy, { statement, sql });
    return proxy;
  };
  return {
    prepare: (sql: string) => wrap(db.prepare(sql), sql),
    batch: async (statements: D1PreparedStatement[]) => {
      const real = statements.map((s) => inner.get(s)!);
      for (const { sql } of real) await gate(sql);
      onTransaction();
      return db.batch(real.map((r) => r.statement));
    },
    exec: (sql: string) => db.exec(sql),
    withSession: () => {
      throw new Error("not used");
    },
    dump: () => db.dump(),
  } as unknown as D1Database;
}

/** A Queue that records what it accepted and consults `gate` before each send. */
export function faultyQueue<T>(queue: Queue<T>, gate: () => Promise<void> | void) {
  const accepted: T[] = [];
  const wrapped = {
    async send(body: T, options?: QueueSendOptions) {
      await gate();
      await queue.send(body, options);
      accepted.push(body);
    },
    async sendBatch(messages: Iterable<MessageSendRequest<T>>, options?: QueueSendBatchOptions) {
      await gate();
      await queue.sendBatch(messages, options);
      for (const message of messages) accepted.push(message.body);
    },
  } as unknown as Queue<T>;
  return { queue: wrapped, accepted };
}

/**
 * A D1 whose batch reads hand back matching event rows broken: reading their `type` throws, as a
 * bug or a corrupt row would, while the stored row stays intact.
 */
export function breakingEventRows(db: D1Database, breaks: (key: string) => boolean): D1Database {
  return {
    prepare: (sql: string) => db.prepare(sql),
    batch: async (statements: D1PreparedStatement[]) => {
      const results = await db.batch(statements);
      for (const result of results) {
        for (const row of result.results as { key?: unknown; type?: unknown }[]) {
          if (typeof row.key === "string" && "type" in row && breaks(row.key)) {
            Object.defineProperty(row, "type", { get: () => { throw new TypeError("injected: unreadable event row"); } });
          }
        }
      }
      return results;
    },
    exec: (sql: string) => db.exec(sql),
    dump: () => db.dump(),
  } as unknown as D1Database;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A Queue that only records what it is sent (tests then run the consumer on it themselves). */
export function recordingQueue<T>() {
  return faultyQueue<T>({ send: async () => undefined, sendBatch: async () => undefined } as unknown as Queue<T>, () => undefined);
}

/**
 * A D1 whose batches commit and then fail, as if the consumer's isolate died right after D1
 * answered: what was written stays written, and the caller goes no further with it.
 */
export function crashingAfterCommit(db: D1Database): D1Database {
  return {
    prepare: (sql: string) => db.prepare(sql),
    batch: async (statements: D1PreparedStatement[]) => {
      await db.batch(statements);
      throw new Error("the isolate died here");
    },
  } as unknown as D1Database;
}

/** What an R2 call is about to do, for a gate to refuse (throw) or stall (wait). */
export type R2Operation = "put" | "get" | "delete";

/** An R2 bucket whose puts, gets and deletes pass through `gate` (which may throw or wait) first; it counts each call. */
export function faultyR2(bucket: R2Bucket, gate: (operation: R2Operation, key: string) => Promise<void> | void = () => undefined) {
  const calls: Record<R2Operation, number> = { put: 0, get: 0, delete: 0 };
  const wrapped = {
    async put(key: string, value: Parameters<R2Bucket["put"]>[1], options?: R2PutOptions) {
      calls.put++;
      await gate("put", key);
      return bucket.put(key, value, options);
    },
    async get(key: string, options?: R2GetOptions) {
      calls.get++;
      await gate("get", key);
      return bucket.get(key, options);
    },
    async delete(keys: string | string[]) {
      calls.delete++;
      for (const key of [keys].flat()) await gate("delete", key);
      return bucket.delete(keys);
    },
    head: (key: string) => bucket.head(key),
    list: (options?: R2ListOptions) => bucket.list(options),
  } as unknown as R2Bucket;
  return { bucket: wrapped, calls };
}
