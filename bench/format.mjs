// How the benchmark tables print figures and goals.

/** A figure with `digits` decimals, or a dash when there is none. */
export const f = (n, digits = 1) => (n === null || n === undefined ? "–" : Number(n).toFixed(digits));

/** A goal's verdict, a miss in bold. */
export const goal = (ok) => (ok ? "met" : "**missed**");
