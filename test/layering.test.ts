/**
 * The folder layout is the architecture: `app.ts` is the top, and lower modules never
 * import from a higher one. Read from the sources themselves (Vite's raw glob), so a new
 * import that closes a circle fails here.
 */
import { describe, expect, it } from "vitest";

const sources = import.meta.glob("../src/**/*.{ts,tsx}", { query: "?raw", import: "default", eager: true }) as Record<string, string>;

/** Each module's relative imports, resolved to module ids like `src/deliver/consumer`. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const [file, text] of Object.entries(sources)) {
    const id = file.replace(/^\.\.\//, "").replace(/\.tsx?$/, "");
    const dir = id.split("/").slice(0, -1);
    const targets = [...text.matchAll(/^(?:import|export)[^;]*?from\s+"(\.{1,2}\/[^"]+)"/gm)].map(([, spec]) => {
      const parts = [...dir];
      for (const part of spec!.split("/")) {
        if (part === "..") parts.pop();
        else if (part !== ".") parts.push(part);
      }
      const target = parts.join("/");
      return graph.has(`${target}/index`) || `../${target}/index.ts` in sources ? `${target}/index` : target;
    });
    graph.set(id, targets);
  }
  return graph;
}

describe("layering", () => {
  it("reads every source module", () => {
    expect(Object.keys(sources).length).toBeGreaterThan(20);
  });

  it("only the entry point imports app.ts", () => {
    const importers = [...importGraph()].filter(([, targets]) => targets.includes("src/app")).map(([id]) => id);
    expect(importers).toEqual(["src/index"]);
  });

  it("the byte helpers sit below every layer: nothing outside the request path imports its signature module", () => {
    const importers = [...importGraph()].filter(([, targets]) => targets.includes("src/receive/signature")).map(([id]) => id);
    expect(importers.filter((id) => !id.startsWith("src/receive/"))).toEqual([]);
    expect(importGraph().get("src/crypto")).toEqual([]);
  });

  it("has no import cycles", () => {
    const graph = importGraph();
    const cycles: string[] = [];
    const state = new Map<string, "open" | "done">();
    const visit = (id: string, path: string[]) => {
      if (state.get(id) === "done") return;
      if (state.get(id) === "open") {
        cycles.push([...path.slice(path.indexOf(id)), id].join(" → "));
        return;
      }
      state.set(id, "open");
      for (const next of graph.get(id) ?? []) visit(next, [...path, id]);
      state.set(id, "done");
    };
    for (const id of graph.keys()) visit(id, []);
    expect(cycles).toEqual([]);
  });
});
