/** Vite's `?raw` imports: fixture files as exact text (signatures are over exact bytes). */
declare module "*?raw" {
  const text: string;
  export default text;
}
