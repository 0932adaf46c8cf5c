/**
 * The billable operations of the Worker's bindings, counted as Cloudflare bills them, for the
 * storage and cost benchmark (bench/storage.mjs) through the counting entry
 * (bench/counting-worker.ts): D1 rows read and written (each result's meta, which local D1
 * reports from the same SQLite engine) and statements; R2 class A (put, list, multipart) and
 * class B (get, head) operations, deletes apart (R2 does not bill them); Queue messages written,
 * read and acknowledged, and their 64 KB billing units; Durable Object requests (each call on a
 * stub); Analytics Engine data points. Only `npm run bench` builds this; the Worker counts nothing.
 */

/** Queues bill every 64 KB of a message written, read or deleted as one operation. */
const QUEUE_BILLING_UNIT_BYTES = 64 * 1024;

export const usage = {
  invocations: { webhooks: 0, otherFetch: 0, queue: 0, scheduled: 0 },
  /** Wall time of every invocation, ms (workerd gives a Worker no CPU clock). */
  invocationMs: 0,
  d1: { statements: 0, rowsRead: 0, rowsWritten: 0 },
  /** Rows written by statement (its SQL's start): where the writes go. */
  d1RowsWrittenBySql: {} as Record<string, number>,
  r2: { classA: 0, classB: 0, deletes: 0, bytesPut: 0 },
  queues: { messagesWritten: 0, unitsWritten: 0, messagesRead: 0, unitsRead: 0, messagesAcked: 0, unitsAcked: 0, messagesRetried: 0 },
  durableObjects: { requests: 0 },
  analyticsEngine: { dataPoints: 0 },
};

const utf8 = new TextEncoder();
/** A message's billing units: its body as JSON (what the producer sends), in 64 KB units, at least one. */
const unitsOf = (body: unknown): number => Math.max(1, Math.ceil(utf8.encode(JSON.stringify(body) ?? "").length / QUEUE_BILLING_UNIT_BYTES));

interface RowCounts {
  meta?: { rows_read?: number; rows_written?: number };
}

/** A statement's SQL, its whitespace collapsed, cut short enough to name it in a table. */
const statementName = (sql: string) => sql.replace(/\s+/g, " ").trim().slice(0, 70);

/** Adds the rows a D1 result (or a batch's results, one per statement of `sql`) read and wrote. */
export function countRows(result: RowCounts | RowCounts[], sql: string[]): void {
  for (const [i, one] of (Array.isArray(result) ? result : [result]).entries()) {
    const written = one.meta?.rows_written ?? 0;
    usage.d1.rowsRead += one.meta?.rows_read ?? 0;
    usage.d1.rowsWritten += written;
    if (written) {
      const name = statementName(sql[i] ?? "");
      usage.d1RowsWrittenBySql[name] = (usage.d1RowsWrittenBySql[name] ?? 0) + written;
    }
  }
}

const R2_CLASS_A = new Set(["put", "list", "createMultipartUpload", "resumeMultipartUpload"]);
const R2_CLASS_B = new Set(["get", "head"]);

/** The bucket with each operation counted by its billing class. */
export function countedBucket(bucket: R2Bucket): R2Bucket {
  return new Proxy(bucket, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (typeof value !== "function" || typeof prop !== "string") return value;
      return (...args: unknown[]) => {
        if (R2_CLASS_A.has(prop)) usage.r2.classA++;
        else if (R2_CLASS_B.has(prop)) usage.r2.classB++;
        else if (prop === "delete") usage.r2.deletes += Array.isArray(args[0]) ? args[0].length : 1;
        if (prop === "put" && args[1] instanceof Uint8Array) usage.r2.bytesPut += args[1].byteLength;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

/** The producer binding with every message sent counted, with its billing units. */
export function countedQueue<T>(queue: Queue<T>): Queue<T> {
  const written = (bodies: unknown[]) => {
    usage.queues.messagesWritten += bodies.length;
    for (const body of bodies) usage.queues.unitsWritten += unitsOf(body);
  };
  return {
    send: (body: T, options?: QueueSendOptions) => {
      written([body]);
      return queue.send(body, options);
    },
    sendBatch: (messages: Iterable<MessageSendRequest<T>>, options?: QueueSendBatchOptions) => {
      const list = [...messages];
      written(list.map((m) => m.body));
      return queue.sendBatch(list, options);
    },
  } as Queue<T>;
}

/**
 * Runs `handle` on the batch with every message delivered counted as read, and, once it returns,
 * every one it did not retry as acknowledged (deleted); a batch whose handler throws is retried whole.
 */
export async function countedBatch<T>(batch: MessageBatch<T>, handle: (batch: MessageBatch<T>) => Promise<void>): Promise<void> {
  const retried = new Set<string>();
  for (const message of batch.messages) {
    usage.queues.messagesRead++;
    usage.queues.unitsRead += unitsOf(message.body);
  }
  const messages = batch.messages.map((message) => new Proxy(message, {
    get(target, prop) {
      if (prop === "retry") {
        return (options?: QueueRetryOptions) => {
          retried.add(target.id);
          target.retry(options);
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }));
  const counted = new Proxy(batch, {
    get(target, prop) {
      if (prop === "messages") return messages;
      if (prop === "retryAll") {
        return (options?: QueueRetryOptions) => {
          for (const message of batch.messages) retried.add(message.id);
          target.retryAll(options);
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  try {
    await handle(counted);
  } catch (err) {
    for (const message of batch.messages) retried.add(message.id);
    throw err;
  } finally {
    for (const message of batch.messages) {
      if (retried.has(message.id)) usage.queues.messagesRetried++;
      else {
        usage.queues.messagesAcked++;
        usage.queues.unitsAcked += unitsOf(message.body);
      }
    }
  }
}

/** Properties of a Durable Object stub that are not calls to the object. */
const NOT_A_REQUEST = new Set(["then", "id", "name"]);

/** The namespace with each call on its stubs (fetch or RPC) counted as one Durable Object request. */
export function countedNamespace<N extends object>(namespace: N): N {
  const countedStub = (stub: object) => new Proxy(stub, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (typeof value !== "function" || typeof prop !== "string" || NOT_A_REQUEST.has(prop)) return value;
      return (...args: unknown[]) => {
        usage.durableObjects.requests++;
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return new Proxy(namespace, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (typeof value !== "function") return value;
      if (prop === "get" || prop === "getByName") return (...args: unknown[]) => countedStub((value as (...a: unknown[]) => object).apply(target, args));
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });
}

/**
 * The Analytics Engine dataset, its data points counted: wrangler.toml binds none (METRICS is
 * optional), so without one this stands in for it, to count what a deployment with it bound writes.
 */
export function countedDataset(dataset: AnalyticsEngineDataset | undefined): AnalyticsEngineDataset {
  return {
    writeDataPoint(point?: AnalyticsEngineDataPoint) {
      usage.analyticsEngine.dataPoints++;
      dataset?.writeDataPoint(point);
    },
  };
}
