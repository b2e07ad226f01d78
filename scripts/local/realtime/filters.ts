// postgres_changes filters as realtime-js sends them (`column=op.value`) and
// as Supabase Realtime evaluates them against a changed row. Pure.

export type FilterOp = "eq" | "neq" | "lt" | "lte" | "gt" | "gte" | "in";
export interface Filter {
  column: string;
  op: FilterOp;
  values: string[]; // one value, or the list of `in`
}

const OPS = new Set<FilterOp>(["eq", "neq", "lt", "lte", "gt", "gte", "in"]);

/** Parses `col=op.value` / `col=in.(a,b,"c,d")`; throws with a reason on anything else. */
export function parseFilter(text: string): Filter {
  const m = /^([^=]+)=([a-z]+)\.(.*)$/s.exec(text);
  if (!m) throw new Error(`invalid filter ${JSON.stringify(text)}: expected column=operator.value`);
  const [, column, op, raw] = m;
  if (!OPS.has(op as FilterOp)) throw new Error(`invalid filter operator ${op}: one of ${[...OPS].join(", ")}`);
  if (op !== "in") return { column, op: op as FilterOp, values: [raw] };
  const inner = /^\((.*)\)$/s.exec(raw);
  if (!inner) throw new Error(`invalid filter ${JSON.stringify(text)}: in takes a list in parentheses`);
  return { column, op: "in", values: splitList(inner[1]) };
}

/** Comma-separated, each item optionally double-quoted (then it may hold commas). */
function splitList(s: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i <= s.length) {
    if (s[i] === '"') {
      const end = s.indexOf('"', i + 1);
      if (end < 0) throw new Error("unterminated quote in an in-list");
      out.push(s.slice(i + 1, end));
      i = end + 1;
      while (i < s.length && s[i] !== ",") i++;
      i++;
    } else {
      let end = s.indexOf(",", i);
      if (end < 0) end = s.length;
      const item = s.slice(i, end).trim();
      if (item !== "" || end < s.length) out.push(item);
      i = end + 1;
    }
  }
  return out;
}

/**
 * Whether the row's value for the filter's column passes. Numbers compare
 * as numbers, everything else as its text (as Postgres would for text, uuid
 * and ISO timestamps); a missing column or SQL null never passes.
 */
export function matches(f: Filter, row: Record<string, unknown>): boolean {
  if (!(f.column in row)) return false;
  const v = row[f.column];
  if (v === null || v === undefined) return false;
  const cmp = (want: string): number => {
    if (typeof v === "number") {
      const n = Number(want);
      if (want.trim() === "" || Number.isNaN(n)) return NaN;
      return v === n ? 0 : v < n ? -1 : 1;
    }
    const s = typeof v === "string" ? v : typeof v === "boolean" ? String(v) : JSON.stringify(v);
    return s === want ? 0 : s < want ? -1 : 1;
  };
  switch (f.op) {
    case "eq":
      return cmp(f.values[0]) === 0;
    case "neq": {
      const c = cmp(f.values[0]);
      return !Number.isNaN(c) && c !== 0;
    }
    case "lt":
      return cmp(f.values[0]) < 0;
    case "lte":
      return cmp(f.values[0]) <= 0;
    case "gt":
      return cmp(f.values[0]) > 0;
    case "gte":
      return cmp(f.values[0]) >= 0;
    case "in":
      return f.values.some((x) => cmp(x) === 0);
  }
}
