/**
 * The JSONPath filter dialect Seismic documents for its subscriptions (Goessner's JSONPath
 * as implemented by Newtonsoft's SelectTokens), so operators can reuse their expressions:
 *   $  @  .name  ['name']  [0]  *  ..  [?(expr)]  with == != < <= > >= && || ! and ( ).
 * A filter matches an event when the path selects anything. Parsed once into a tree and
 * evaluated without eval/new Function (both forbidden on Workers), iteratively so a deeply
 * nested payload cannot overflow the stack.
 *
 * Semantics copied from Newtonsoft: `..[?(e)]` tests the node itself and every descendant
 * (so `$.data..[?(@.contentId == 'foo')]` matches when data.contentId is 'foo'); comparing a
 * string with a number or boolean compares their text (`@.teamSiteId == '1'` matches 1);
 * a comparison with a missing value is false, whatever the operator.
 */

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

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

export interface CompiledFilter {
  source: string;
  matches(document: unknown): boolean;
}

/** Parses an expression; throws JsonPathError naming the position of the first problem. */
export function compileFilter(source: string): CompiledFilter {
  const parser = new Parser(source);
  const steps = parser.rootPath();
  return { source, matches: (document) => select(steps, document as Json, document as Json).length > 0 };
}

class Parser {
  private pos = 0;
  constructor(private readonly text: string) {}

  rootPath(): Step[] {
    this.skipSpace();
    if (!this.eat("$")) throw this.error("expected the path to start with $");
    const steps = this.steps();
    this.skipSpace();
    if (this.pos < this.text.length) throw this.error(`unexpected "${this.text[this.pos]}"`);
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
      const expr = this.or();
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
    if (this.eat("!")) return { kind: "not", expr: this.unary() };
    if (this.eat("(")) {
      const expr = this.or();
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

function isContainer(value: Json): value is Json[] | { [key: string]: Json } {
  return typeof value === "object" && value !== null;
}

function children(value: Json): Json[] {
  if (Array.isArray(value)) return value;
  return isContainer(value) ? Object.values(value) : [];
}

/** The node and all its descendants, depth-first, without recursion. */
function descendantsAndSelf(value: Json): Json[] {
  const out: Json[] = [];
  const stack: Json[] = [value];
  while (stack.length) {
    const node = stack.pop()!;
    out.push(node);
    const kids = children(node);
    for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i]!);
  }
  return out;
}

function hasOwn(value: Json, name: string): value is { [key: string]: Json } {
  return isContainer(value) && !Array.isArray(value) && Object.hasOwn(value, name);
}

function select(steps: Step[], start: Json, root: Json): Json[] {
  let current: Json[] = [start];
  for (const step of steps) {
    const next: Json[] = [];
    for (const node of current) {
      switch (step.kind) {
        case "child":
          if (hasOwn(node, step.name)) next.push(node[step.name]!);
          break;
        case "index":
          if (Array.isArray(node)) {
            const item = node[step.index < 0 ? node.length + step.index : step.index];
            if (item !== undefined) next.push(item);
          }
          break;
        case "wildcard":
          next.push(...children(node));
          break;
        case "scan":
          for (const each of descendantsAndSelf(node)) {
            if (step.name === null) {
              if (each !== node) next.push(each);
            } else if (hasOwn(each, step.name)) {
              next.push(each[step.name]!);
            }
          }
          break;
        case "filter":
          for (const candidate of step.scan ? descendantsAndSelf(node) : children(node)) {
            if (test(step.expr, candidate, root)) next.push(candidate);
          }
          break;
      }
    }
    current = next;
  }
  return current;
}

function test(expr: Expr, current: Json, root: Json): boolean {
  switch (expr.kind) {
    case "or":
      return test(expr.left, current, root) || test(expr.right, current, root);
    case "and":
      return test(expr.left, current, root) && test(expr.right, current, root);
    case "not":
      return !test(expr.expr, current, root);
    case "exists":
      return resolve(expr.operand, current, root) !== undefined;
    case "compare": {
      const left = resolve(expr.left, current, root);
      const right = resolve(expr.right, current, root);
      if (left === undefined || right === undefined) return false;
      return compare(expr.op, left, right);
    }
  }
}

function resolve(operand: Operand, current: Json, root: Json): Json | undefined {
  if (operand.kind === "literal") return operand.value;
  return select(operand.steps, operand.root === "@" ? current : root, root)[0];
}

function compare(op: Comparator, left: Json, right: Json): boolean {
  // Newtonsoft compares a string with a number or boolean by their text.
  if (typeof left === "string" && (typeof right === "number" || typeof right === "boolean")) right = String(right);
  if (typeof right === "string" && (typeof left === "number" || typeof left === "boolean")) left = String(left);
  switch (op) {
    case "==":
      return equal(left, right);
    case "!=":
      return !equal(left, right);
    default: {
      if (typeof left !== typeof right || (typeof left !== "number" && typeof left !== "string")) return false;
      const l = left as number | string;
      const r = right as number | string;
      return op === "<" ? l < r : op === "<=" ? l <= r : op === ">" ? l > r : l >= r;
    }
  }
}

function equal(left: Json, right: Json): boolean {
  if (isContainer(left) || isContainer(right)) return JSON.stringify(left) === JSON.stringify(right);
  return left === right;
}
