/**
 * The JSONPath filter dialect Seismic documents for its subscriptions (Goessner's JSONPath
 * as implemented by Newtonsoft's SelectTokens), so operators can reuse their expressions:
 *   $  @  .name  ['name']  [0]  *  ..  [?(expr)]  with == != < <= > >= && || ! and ( ).
 * A filter matches an event when the path selects anything. Parsed once into a tree and
 * evaluated without eval/new Function (both forbidden on Workers). Payload traversal and
 * equality use explicit stacks, so a deeply nested payload cannot overflow the stack (only
 * the expression's own nesting recurses, and the parser caps it).
 *
 * Every evaluation runs on a budget of work (#9.7): `$..*..*..*` is cubic in the payload's
 * depth, so without one a 6 KB event could stall a consumer or exhaust its memory. Running out
 * is a result, not an exception: the event does not match, and the caller records why.
 *
 * Semantics copied from Newtonsoft: `..[?(e)]` tests the node itself and every descendant
 * (so `$.data..[?(@.contentId == 'foo')]` matches when data.contentId is 'foo'); comparing a
 * string with a number or boolean compares their text (`@.teamSiteId == '1'` matches 1);
 * a comparison with a missing value is false, whatever the operator. One difference: two
 * containers (path against path) are equal when they are equal JSON values, key order aside,
 * where Newtonsoft finds containers never equal.
 */

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Container = Json[] | { [key: string]: Json };

type Step =
  | { kind: "child"; name: string }
  | { kind: "index"; index: number }
  | { kind: "wildcard" }
  | { kind: "scan"; name: string | null } // `..name`, or `..*` / `..[*]` when null
  | { kind: "filter"; expr: Expr; scan: boolean };

type Operand = { kind: "path"; root: "$" | "@"; steps: Step[] } | { kind: "literal"; value: Json };
type Comparator = "==" | "!=" | "<" | "<=" | ">" | ">=";
type Expr =
  | { kind: "or" | "and"; left: Expr; right: Expr }
  | { kind: "not"; expr: Expr }
  | { kind: "compare"; op: Comparator; left: Operand; right: Operand }
  | { kind: "exists"; operand: Operand };

export class JsonPathError extends Error {
  constructor(message: string, readonly position: number) {
    super(`${message} at position ${position}`);
    this.name = "JsonPathError";
  }
}

/**
 * Nodes one evaluation may visit: each payload node a scan, wildcard or filter reaches, each
 * step of a path inside a filter, each pair an equality of containers compares, and (so a long
 * expression is paid for too) each sub-expression tested. The costliest Seismic doc example spends 676 on a 5 KB sample
 * event; a `..[?( )]` filter pays about 3 per node, so 100,000 covers a ~1 MB event of typical
 * shape, and takes about 5-7 ms of CPU in Node whatever the filter (`$..*..*..*` included).
 */
export const DEFAULT_BUDGET = 100_000;

/** The expression nesting (brackets, `!`, filters in filters) the parser accepts: evaluation recurses on it. */
const MAX_NESTING = 32;

/** A filter that could not decide (out of budget, or failing) counts as no match, with a reason to record. */
export type Evaluation = { spent: number } & (
  | { outcome: "match" }
  | { outcome: "no_match" }
  | { outcome: "budget_exceeded" | "failed"; reason: string }
);

export interface CompiledFilter {
  source: string;
  /** Never throws. */
  evaluate(document: unknown, budget?: number): Evaluation;
}

/** Parses an expression; throws JsonPathError naming the position of the first problem. */
export function compileFilter(source: string): CompiledFilter {
  const steps = new Parser(source).rootPath();
  return { source, evaluate: (document, budget = DEFAULT_BUDGET) => evaluate(steps, document as Json, budget) };
}

function evaluate(steps: Step[], document: Json, limit: number): Evaluation {
  const budget = new Budget(limit);
  try {
    const selected = select(steps, document, document, budget);
    return { outcome: selected.length > 0 ? "match" : "no_match", spent: budget.spent };
  } catch (err) {
    if (err instanceof OutOfBudget) {
      return { outcome: "budget_exceeded", spent: budget.spent, reason: `filter exceeded its budget of ${limit} nodes` };
    }
    // A bug must cost one destination this event, not the whole batch; the name only, as a message may quote payload data.
    return { outcome: "failed", spent: budget.spent, reason: `filter evaluation failed (${err instanceof Error ? err.name : typeof err})` };
  }
}

/** Unwinds an evaluation the moment its budget runs out; evaluate() turns it into a result. */
class OutOfBudget extends Error {}

class Budget {
  spent = 0;
  constructor(private readonly limit: number) {}

  /** Pays for one node before it is visited or kept, so no intermediate list can outgrow the budget. */
  spend(): void {
    this.spent++;
    if (this.spent > this.limit) throw new OutOfBudget();
  }
}

class Parser {
  private pos = 0;
  private depth = 0;
  constructor(private readonly text: string) {}

  rootPath(): Step[] {
    this.skipSpace();
    if (!this.eat("$")) throw this.error("expected the path to start with $");
    const steps = this.steps();
    this.skipSpace();
    // The position, not the character: configuration errors never quote configuration text (#9.6).
    if (this.pos < this.text.length) throw this.error("unexpected character");
    return steps;
  }

  private steps(): Step[] {
    const steps: Step[] = [];
    for (;;) {
      if (this.eat("..")) {
        if (this.peek() === "[") {
          const bracket = this.bracket(true);
          steps.push(bracket);
        } else if (this.eat("*")) {
          steps.push({ kind: "scan", name: null });
        } else {
          steps.push({ kind: "scan", name: this.name() });
        }
      } else if (this.eat(".")) {
        steps.push(this.eat("*") ? { kind: "wildcard" } : { kind: "child", name: this.name() });
      } else if (this.peek() === "[") {
        steps.push(this.bracket(false));
      } else {
        return steps;
      }
    }
  }

  private bracket(scan: boolean): Step {
    this.expect("[");
    this.skipSpace();
    let step: Step;
    if (this.eat("?")) {
      this.skipSpace();
      this.expect("(");
      const expr = this.nested(() => this.or());
      this.skipSpace();
      this.expect(")");
      step = { kind: "filter", expr, scan };
    } else if (this.eat("*")) {
      step = scan ? { kind: "scan", name: null } : { kind: "wildcard" };
    } else if (this.peek() === "'" || this.peek() === '"') {
      const name = this.quoted();
      step = scan ? { kind: "scan", name } : { kind: "child", name };
    } else {
      const start = this.pos;
      const digits = /^-?\d+/.exec(this.text.slice(this.pos));
      if (!digits || scan) throw this.error("expected ?(…), *, a quoted name or an index", start);
      this.pos += digits[0].length;
      step = { kind: "index", index: Number(digits[0]) };
    }
    this.skipSpace();
    this.expect("]");
    return step;
  }

  private or(): Expr {
    let left = this.and();
    while (this.skipSpace(), this.eat("||")) left = { kind: "or", left, right: this.and() };
    return left;
  }

  private and(): Expr {
    let left = this.unary();
    while (this.skipSpace(), this.eat("&&")) left = { kind: "and", left, right: this.unary() };
    return left;
  }

  private unary(): Expr {
    this.skipSpace();
    if (this.text.startsWith("!=", this.pos)) throw this.error("unexpected !=");
    if (this.eat("!")) return { kind: "not", expr: this.nested(() => this.unary()) };
    if (this.eat("(")) {
      const expr = this.nested(() => this.or());
      this.skipSpace();
      this.expect(")");
      return expr;
    }
    const left = this.operand();
    this.skipSpace();
    const op = (["==", "!=", "<=", ">=", "<", ">"] as const).find((candidate) => this.text.startsWith(candidate, this.pos));
    if (!op) {
      if (left.kind === "literal") throw this.error("expected a comparison after a literal");
      return { kind: "exists", operand: left };
    }
    this.pos += op.length;
    this.skipSpace();
    return { kind: "compare", op, left, right: this.operand() };
  }

  private operand(): Operand {
    const c = this.peek();
    if (c === "@" || c === "$") {
      this.pos++;
      return { kind: "path", root: c, steps: this.steps() };
    }
    if (c === "'" || c === '"') return { kind: "literal", value: this.quoted() };
    const match = /^(-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(this.text.slice(this.pos));
    if (!match) throw this.error("expected @, $, or a literal");
    this.pos += match[0].length;
    return { kind: "literal", value: JSON.parse(match[0]) as Json };
  }

  private name(): string {
    const match = /^[A-Za-z_$][\w$-]*/.exec(this.text.slice(this.pos));
    if (!match) throw this.error("expected a property name");
    this.pos += match[0].length;
    return match[0];
  }

  private quoted(): string {
    const quote = this.text[this.pos]!;
    const start = this.pos++;
    let value = "";
    while (this.pos < this.text.length) {
      const c = this.text[this.pos++]!;
      if (c === quote) return value;
      if (c === "\\" && this.pos < this.text.length) value += this.text[this.pos++];
      else value += c;
    }
    throw this.error("unterminated string", start);
  }

  /** Parses one level deeper, refusing nesting that could overflow the stack here or in evaluation. */
  private nested<T>(parse: () => T): T {
    if (this.depth >= MAX_NESTING) throw this.error(`nested deeper than ${MAX_NESTING} levels`);
    this.depth++;
    try {
      return parse();
    } finally {
      this.depth--;
    }
  }

  private peek(): string | undefined {
    return this.text[this.pos];
  }

  private eat(token: string): boolean {
    if (!this.text.startsWith(token, this.pos)) return false;
    this.pos += token.length;
    return true;
  }

  private expect(token: string): void {
    if (!this.eat(token)) throw this.error(`expected "${token}"`);
  }

  private skipSpace(): void {
    while (this.text[this.pos] === " " || this.text[this.pos] === "\t") this.pos++;
  }

  private error(message: string, at = this.pos): JsonPathError {
    return new JsonPathError(message, at);
  }
}

function isContainer(value: Json): value is Container {
  return typeof value === "object" && value !== null;
}

function children(value: Json): Json[] {
  if (Array.isArray(value)) return value;
  return isContainer(value) ? Object.values(value) : [];
}

/** Visits the node's children, paying for each. */
function eachChild(node: Json, budget: Budget, visit: (child: Json) => void): void {
  for (const child of children(node)) {
    budget.spend();
    visit(child);
  }
}

/** Visits the node and all its descendants depth-first, paying for each, without recursion. */
function walk(start: Json, budget: Budget, visit: (node: Json) => void): void {
  const stack: Json[] = [start];
  while (stack.length) {
    const node = stack.pop()!;
    budget.spend();
    visit(node);
    pushChildrenReversed(node, stack);
  }
}

/** Pushes the children last first, so they pop in document order; no Object.values copy (twice as fast on `..*..*`). */
function pushChildrenReversed(node: Json, stack: Json[]): void {
  if (Array.isArray(node)) {
    for (let i = node.length - 1; i >= 0; i--) stack.push(node[i]!);
  } else if (isContainer(node)) {
    const keys = Object.keys(node);
    for (let i = keys.length - 1; i >= 0; i--) stack.push(node[keys[i]!]!);
  }
}

function hasOwn(value: Json, name: string): value is { [key: string]: Json } {
  return isContainer(value) && !Array.isArray(value) && Object.hasOwn(value, name);
}

function select(steps: Step[], start: Json, root: Json, budget: Budget): Json[] {
  let current: Json[] = [start];
  for (const step of steps) {
    const next: Json[] = [];
    for (const node of current) apply(step, node, root, budget, next);
    current = next;
  }
  return current;
}

/** Appends what `step` selects from `node` to `out`; each node it touches is paid for first. */
function apply(step: Step, node: Json, root: Json, budget: Budget, out: Json[]): void {
  switch (step.kind) {
    case "child":
      budget.spend();
      if (hasOwn(node, step.name)) out.push(node[step.name]!);
      return;
    case "index":
      budget.spend();
      if (Array.isArray(node)) {
        const item = node[step.index < 0 ? node.length + step.index : step.index];
        if (item !== undefined) out.push(item);
      }
      return;
    case "wildcard":
      eachChild(node, budget, (child) => out.push(child));
      return;
    case "scan":
      walk(node, budget, (each) => {
        if (step.name === null) {
          if (each !== node) out.push(each);
        } else if (hasOwn(each, step.name)) {
          out.push(each[step.name]!);
        }
      });
      return;
    case "filter": {
      const check = (candidate: Json) => {
        if (test(step.expr, candidate, root, budget)) out.push(candidate);
      };
      if (step.scan) walk(node, budget, check);
      else eachChild(node, budget, check);
      return;
    }
  }
}

function test(expr: Expr, current: Json, root: Json, budget: Budget): boolean {
  budget.spend();
  switch (expr.kind) {
    case "or":
      return test(expr.left, current, root, budget) || test(expr.right, current, root, budget);
    case "and":
      return test(expr.left, current, root, budget) && test(expr.right, current, root, budget);
    case "not":
      return !test(expr.expr, current, root, budget);
    case "exists":
      return resolve(expr.operand, current, root, budget) !== undefined;
    case "compare": {
      const left = resolve(expr.left, current, root, budget);
      const right = resolve(expr.right, current, root, budget);
      if (left === undefined || right === undefined) return false;
      return compare(expr.op, left, right, budget);
    }
  }
}

function resolve(operand: Operand, current: Json, root: Json, budget: Budget): Json | undefined {
  if (operand.kind === "literal") return operand.value;
  return select(operand.steps, operand.root === "@" ? current : root, root, budget)[0];
}

function compare(op: Comparator, left: Json, right: Json, budget: Budget): boolean {
  // Newtonsoft compares a string with a number or boolean by their text.
  if (typeof left === "string" && (typeof right === "number" || typeof right === "boolean")) right = String(right);
  if (typeof right === "string" && (typeof left === "number" || typeof left === "boolean")) left = String(left);
  switch (op) {
    case "==":
      return equal(left, right, budget);
    case "!=":
      return !equal(left, right, budget);
    default: {
      if (typeof left !== typeof right || (typeof left !== "number" && typeof left !== "string")) return false;
      const l = left as number | string;
      const r = right as number | string;
      return op === "<" ? l < r : op === "<=" ? l <= r : op === ">" ? l > r : l >= r;
    }
  }
}

/** JSON equality (object keys in any order), pair by pair from an explicit stack, paying for each pair. */
function equal(left: Json, right: Json, budget: Budget): boolean {
  budget.spend();
  const pairs: [Json, Json][] = [[left, right]];
  while (pairs.length) {
    const [l, r] = pairs.pop()!;
    if (!isContainer(l) || !isContainer(r)) {
      if (l !== r) return false;
    } else if (!pushChildPairs(l, r, pairs, budget)) {
      return false;
    }
  }
  return true;
}

/** Queues (and pays for) the children of two containers; false when their shapes already differ. */
function pushChildPairs(l: Container, r: Container, pairs: [Json, Json][], budget: Budget): boolean {
  if (Array.isArray(l) || Array.isArray(r)) {
    if (!Array.isArray(l) || !Array.isArray(r) || l.length !== r.length) return false;
    l.forEach((item, i) => {
      budget.spend();
      pairs.push([item, r[i]!]);
    });
    return true;
  }
  // Keys are counted one by one, each paid for: Object.keys on a 6,000-key object, compared
  // against thousands of candidates, would otherwise do unbounded unpaid work.
  const keys: string[] = [];
  for (const key in l) {
    budget.spend();
    keys.push(key);
  }
  let rightKeys = 0;
  for (const _key in r) {
    budget.spend();
    if (++rightKeys > keys.length) return false;
  }
  if (rightKeys !== keys.length) return false;
  for (const key of keys) {
    if (!Object.hasOwn(r, key)) return false;
    budget.spend();
    pairs.push([l[key]!, r[key]!]);
  }
  return true;
}
