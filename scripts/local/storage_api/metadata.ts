// storage.buckets and storage.objects (scripts/local/baseline.sql), read and
// written as the caller: each unit of work is one transaction that first
// takes the caller's role and JWT claims (as PostgREST does), so RLS policies
// on storage.objects decide. Bucket lookups made on the way to an object
// (its limits, whether it is public) are the server's own and bypass RLS, as
// Supabase Storage's are.

import postgres from "postgres";
import type { Claims } from "./jwt.ts";
import { fromPostgres } from "./errors.ts";

export type Sql = ReturnType<typeof postgres>;
export type Tx = postgres.TransactionSql;

/** The roles a token may act as; anything else is refused before SQL sees it. */
export const API_ROLES = ["anon", "authenticated", "service_role"] as const;
export type ApiRole = (typeof API_ROLES)[number];

export interface Caller {
  role: ApiRole;
  claims: Claims;
  /** `sub` when it is a uuid (a signed-in user), else null. */
  userId: string | null;
}

export interface BucketRow {
  id: string;
  name: string;
  owner: string | null;
  owner_id: string | null;
  public: boolean;
  file_size_limit: number | null;
  allowed_mime_types: string[] | null;
  created_at: Date;
  updated_at: Date;
}

export interface ObjectRow {
  id: string;
  bucket_id: string;
  name: string;
  owner: string | null;
  owner_id: string | null;
  metadata: Record<string, unknown> | null;
  user_metadata: Record<string, unknown> | null;
  version: string | null;
  created_at: Date;
  updated_at: Date;
  last_accessed_at: Date;
}

export class Metadata {
  readonly sql: Sql;
  constructor(dbUrl: string) {
    // bigint sizes come back as numbers: no bucket limit or object size nears 2^53.
    this.sql = postgres(dbUrl, {
      max: 8,
      onnotice: () => {},
      types: { bigint: postgres.BigInt },
      connection: { application_name: "edgeworks-storage-api" },
    });
  }

  /** `fn` inside one transaction run as `caller`; Postgres refusals become Storage errors. */
  async asCaller<T>(caller: Caller, fn: (tx: Tx) => Promise<T>): Promise<T> {
    try {
      return await this.sql.begin(async (tx) => {
        await tx`select set_config('role', ${caller.role}, true),
                        set_config('request.jwt.claims', ${JSON.stringify(caller.claims)}, true),
                        set_config('request.jwt.claim.sub', ${caller.userId ?? ""}, true),
                        set_config('request.jwt.claim.role', ${caller.role}, true)`;
        return await fn(tx);
      }) as T;
    } catch (e) {
      fromPostgres(e);
    }
  }

  /**
   * Whether `caller` may insert this object row, without keeping it: the
   * insert runs and is rolled back. For work whose row is written later
   * (signed upload URLs, resumable uploads), refused up front as Supabase does.
   */
  async mayInsert(caller: Caller, bucket: string, name: string, upsert: boolean): Promise<void> {
    const rollback = new Error("rollback");
    try {
      await this.asCaller(caller, async (tx) => {
        await insertObject(tx, { bucket, name, owner: caller.userId, metadata: {}, userMetadata: null, upsert });
        throw rollback;
      });
    } catch (e) {
      if (e !== rollback) throw e;
    }
  }

  async bucket(id: string): Promise<BucketRow | null> {
    const rows = await this.sql<BucketRow[]>`select * from storage.buckets where id = ${id}`;
    return rows[0] ?? null;
  }

  /** An object's row regardless of policies (signed URLs and public buckets need no caller). */
  async objectRow(bucket: string, name: string): Promise<ObjectRow | null> {
    const rows = await this.sql<ObjectRow[]>`
      select * from storage.objects where bucket_id = ${bucket} and name = ${name}`;
    return rows[0] ?? null;
  }

  async close(): Promise<void> {
    await this.sql.end({ timeout: 2 });
  }
}

/**
 * Inserts (or with `upsert`, replaces) an object row. No RETURNING: reading
 * the row back would need a SELECT policy, which an upload does not (on
 * Supabase an upload needs INSERT only; an upsert also SELECT and UPDATE).
 */
export async function insertObject(
  tx: Tx,
  o: {
    bucket: string;
    name: string;
    owner: string | null;
    metadata: Record<string, unknown>;
    userMetadata: Record<string, unknown> | null;
    upsert: boolean;
  },
): Promise<void> {
  const id = crypto.randomUUID();
  const meta = tx.json(o.metadata as postgres.JSONValue);
  const user = o.userMetadata === null ? null : tx.json(o.userMetadata as postgres.JSONValue);
  if (o.upsert) {
    await tx`insert into storage.objects (id, bucket_id, name, owner, owner_id, metadata, user_metadata, version)
             values (${id}, ${o.bucket}, ${o.name}, ${o.owner}, ${o.owner}, ${meta}, ${user}, ${crypto.randomUUID()})
             on conflict (bucket_id, name) do update
               set owner = excluded.owner, owner_id = excluded.owner_id, metadata = excluded.metadata,
                   user_metadata = excluded.user_metadata, version = excluded.version,
                   updated_at = now(), last_accessed_at = now()`;
  } else {
    await tx`insert into storage.objects (id, bucket_id, name, owner, owner_id, metadata, user_metadata, version)
             values (${id}, ${o.bucket}, ${o.name}, ${o.owner}, ${o.owner}, ${meta}, ${user}, ${crypto.randomUUID()})`;
  }
}
