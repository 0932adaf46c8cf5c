/** Vite's `?raw` imports: fixture files as exact text (signatures are over exact bytes). */
declare module "*?raw" {
  const text: string;
  export default text;
}

/** Vite's `import.meta.glob`, as far as the tests use it (eager raw text). */
interface ImportMeta {
  glob(pattern: string, options: { query: "?raw"; import: "default"; eager: true }): Record<string, unknown>;
}
