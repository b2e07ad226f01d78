// Reads committed changes from the WAL through wal2json (format version 2),
// polling a logical replication slot with pg_logical_slot_get_changes: simple
// (plain SQL, no replication protocol) and robust (a poll that fails is
// retried; nothing is lost while the slot exists).
//
// The slot is TEMPORARY: Postgres drops it when the reader's session ends, so
// a crashed gateway cannot leave a slot behind holding WAL until the disk
// fills. Slots of this name left by older, non-temporary runs are dropped
// at start. The reader's connection is its own (max 1): a temporary slot
// belongs to the session that created it; if that session is lost, the slot
// is recreated (changes committed in between are not delivered; logged).
import postgres from "postgres";

export type Row = Record<string, unknown>;

export interface Change {
  action: "INSERT" | "UPDATE" | "DELETE";
  schema: string;
  table: string;
  /** ISO 8601, the commit's time. */
  commitTimestamp: string;
  columns: { name: string; type: string }[];
  record: Row | null; // INSERT, UPDATE
  oldRecord: Row | null; // UPDATE, DELETE: the replica identity (the primary key unless FULL)
  pk: string[];
}

interface Wal2JsonColumn {
  name: string;
  type: string;
  typeoid?: number;
  value?: unknown;
}
interface Wal2Json {
  action: string;
  schema?: string;
  table?: string;
  timestamp?: string;
  columns?: Wal2JsonColumn[];
  identity?: Wal2JsonColumn[];
  pk?: { name: string }[];
}

const OPTIONS = [
  "format-version",
  "2",
  "include-timestamp",
  "1",
  "include-type-oids",
  "1",
  "include-pk",
  "1",
  "include-transaction",
  "0",
];

export class WalReader {
  private sql: postgres.Sql;
  private typeNames = new Map<number, string>();
  private ready = false;

  constructor(dbUrl: string, readonly slot: string) {
    this.sql = postgres(dbUrl, {
      max: 1,
      onnotice: () => {},
      connection: { application_name: "edgeworks-realtime-wal" },
    });
  }

  async start(): Promise<void> {
    // Same-named slots from a run that crashed before slots were temporary.
    await this.sql`select pg_drop_replication_slot(slot_name) from pg_replication_slots
                   where slot_name = ${this.slot} and not active`;
    await this.sql`select pg_create_logical_replication_slot(${this.slot}, 'wal2json', true)`;
    this.ready = true;
  }

  /** The changes committed since the last poll, in commit order. */
  async poll(maxChanges = 5000): Promise<Change[]> {
    if (!this.ready) await this.start();
    let rows: { data: string }[];
    try {
      rows = await this.sql.unsafe(
        `select data from pg_logical_slot_get_changes($1, null, $2, ${OPTIONS.map((_, i) => `$${i + 3}`).join(", ")})`,
        [this.slot, maxChanges, ...OPTIONS],
      );
    } catch (e) {
      const msg = (e as Error).message;
      if (/does not exist/.test(msg)) {
        console.error(`realtime: replication slot ${this.slot} was lost (${msg}); recreating it`);
        this.ready = false;
      }
      throw e;
    }
    const raw = rows.map((r) => JSON.parse(r.data) as Wal2Json).filter((c) => "IUD".includes(c.action));
    await this.resolveTypes(raw);
    return raw.map((c) => this.toChange(c));
  }

  /** wal2json names types as format_type does ("integer"); realtime-js expects pg_type names ("int4"). */
  private async resolveTypes(changes: Wal2Json[]): Promise<void> {
    const unknown = new Set<number>();
    for (const c of changes) {
      for (const col of [...(c.columns ?? []), ...(c.identity ?? [])]) {
        if (col.typeoid !== undefined && !this.typeNames.has(col.typeoid)) unknown.add(col.typeoid);
      }
    }
    if (unknown.size === 0) return;
    const rows = await this.sql`select oid::int as oid, typname from pg_type where oid = any(${[...unknown]}::oid[])`;
    for (const r of rows) this.typeNames.set(r.oid, r.typname);
  }

  private toChange(c: Wal2Json): Change {
    const action = c.action === "I" ? "INSERT" : c.action === "U" ? "UPDATE" : "DELETE";
    const typeOf = (col: Wal2JsonColumn) => (col.typeoid !== undefined && this.typeNames.get(col.typeoid)) || col.type;
    const rowOf = (cols: Wal2JsonColumn[] | undefined): Row | null => {
      if (!cols) return null;
      const row: Row = {};
      for (const col of cols) row[col.name] = cellValue(typeOf(col), col.value);
      return row;
    };
    const cols = c.columns ?? c.identity ?? [];
    return {
      action,
      schema: c.schema ?? "",
      table: c.table ?? "",
      commitTimestamp: isoTimestamp(c.timestamp),
      columns: cols.map((col) => ({ name: col.name, type: typeOf(col) })),
      record: action === "DELETE" ? null : rowOf(c.columns),
      oldRecord: action === "INSERT" ? null : rowOf(c.identity),
      pk: (c.pk ?? []).map((p) => p.name),
    };
  }

  async stop(): Promise<void> {
    // Ending the session drops the temporary slot.
    await this.sql.end({ timeout: 2 });
  }
}

/** JSON columns arrive as their text; Supabase sends them as JSON values. */
function cellValue(type: string, v: unknown): unknown {
  if ((type === "json" || type === "jsonb") && typeof v === "string") {
    try {
      return JSON.parse(v);
    } catch {
      return v;
    }
  }
  return v === undefined ? null : v;
}

/** "2026-12-01 14:50:00.123456+00" -> "2026-12-01T14:50:00.123Z". */
function isoTimestamp(ts: string | undefined): string {
  if (!ts) return new Date().toISOString();
  const d = new Date(ts.replace(" ", "T").replace(/([+-]\d\d)$/, "$1:00"));
  return Number.isNaN(d.getTime()) ? ts : d.toISOString();
}
