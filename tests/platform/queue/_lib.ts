// Shared helpers for the job queue tests (tests/platform/queue/*.test.ts).
//
// Direct SQL goes through porsager's postgres client to EDGEWORKS_DB_URL, a
// database where scripts/local/baseline.sql and supabase/migrations/*.sql were
// applied. PostgREST tests use SUPABASE_URL (the gateway), SUPABASE_ANON_KEY,
// SUPABASE_SERVICE_ROLE_KEY and EDGEWORKS_JWT_SECRET (HS256, to mint user tokens).
// Every test makes its own queue names, so files can share one database.

import assert from "node:assert/strict";
import postgres from "postgres"; // npm:postgres@3.4.9 via deno.json
import { userAccessToken } from "../../../scripts/local/jwt.ts";

export type Sql = ReturnType<typeof postgres>;

export const DB_URL = Deno.env.get("EDGEWORKS_DB_URL") ?? "";
export const SUPABASE_URL = (Deno.env.get("SUPABASE_URL") ?? "").replace(/\/+$/, "");
export const ANON_KEY = Deno.env.get("SUPABASE_ANON_KEY") ?? "";
export const SERVICE_KEY = Deno.env.get("SUPABASE_SERVICE_ROLE_KEY") ?? "";
export const JWT_SECRET = Deno.env.get("EDGEWORKS_JWT_SECRET") ?? "";
export const HAVE_REST = !!(SUPABASE_URL && ANON_KEY && SERVICE_KEY && JWT_SECRET && DB_URL);

if (!DB_URL) {
  throw new Error(
    "EDGEWORKS_DB_URL is not set: point it at a database with the queue migration applied",
  );
}

export function connect(max = 4): Sql {
  return postgres(DB_URL, {
    max,
    onnotice: () => {},
    connection: { application_name: "edgeworks-queue-tests" },
  });
}

/** A queue name no other test (or run) uses. */
export function queueName(label: string): string {
  const rnd = crypto.randomUUID().replaceAll("-", "").slice(0, 10);
  return `t_${label}_${rnd}`.toLowerCase().slice(0, 56);
}

/** Runs `fn` with a fresh connection pool, closed afterwards. */
export function dbTest(name: string, fn: (sql: Sql) => Promise<void>, max = 4) {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const sql = connect(max);
      try {
        await fn(sql);
      } finally {
        await sql.end({ timeout: 5 });
      }
    },
  });
}

export interface JobRow {
  id: string;
  seq: string;
  queue: string;
  kind: string;
  payload: unknown;
  priority: number;
  status: string;
  attempts: number;
  max_attempts: number;
  run_at: Date;
  pending_dependencies: number;
  worker_id: string | null;
  lease_token: string | null;
  lease_expires_at: Date | null;
  progress: number;
  result: unknown;
  last_error: string | null;
  dedup_key: string | null;
  owner_id: string | null;
  completed_at: Date | null;
  // bigint: a string from the driver.
  fair_position: string;
}

export interface EnqueueOptions {
  payload?: unknown;
  priority?: number;
  delayMs?: number;
  maxAttempts?: number;
  dedupKey?: string | null;
  dependsOn?: string[] | null;
  owner?: string | null;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  orderingKey?: string | null;
}

export async function enqueue(
  sql: Sql,
  queue: string,
  kind: string,
  o: EnqueueOptions = {},
): Promise<JobRow> {
  const [row] = await sql<JobRow[]>`
    select * from public.enqueue_job(
      p_queue => ${queue}, p_kind => ${kind},
      p_payload => ${sql.json((o.payload ?? {}) as never)},
      p_priority => ${o.priority ?? 0}, p_delay_ms => ${o.delayMs ?? 0},
      p_max_attempts => ${o.maxAttempts ?? 5}, p_dedup_key => ${o.dedupKey ?? null},
      p_depends_on => ${o.dependsOn ?? null}::uuid[], p_owner => ${o.owner ?? null}::uuid,
      p_backoff_base_ms => ${o.backoffBaseMs ?? 1000},
      p_backoff_cap_ms => ${o.backoffCapMs ?? 600000},
      p_ordering_key => ${o.orderingKey ?? null})`;
  return row;
}

export async function claim(
  sql: Sql,
  worker: string,
  queues: string[],
  batch = 1,
  leaseSeconds = 60,
  kinds: string[] | null = null,
): Promise<JobRow[]> {
  // A plain array (porsager's Result subclass does not deep-equal []).
  return [
    ...await sql<JobRow[]>`
    select * from public.claim_jobs(
      p_worker => ${worker}, p_queues => ${queues}::text[], p_kinds => ${kinds}::text[],
      p_batch => ${batch}, p_lease_seconds => ${leaseSeconds})`,
  ];
}

export async function complete(
  sql: Sql,
  job: { id: string; lease_token: string | null },
  result: unknown = { ok: true },
): Promise<JobRow> {
  const [row] = await sql<JobRow[]>`
    select * from public.complete_job(${job.id}::uuid, ${job.lease_token}::uuid,
                                      ${sql.json(result as never)})`;
  return row;
}

export async function fail(
  sql: Sql,
  job: { id: string; lease_token: string | null },
  error: string,
  retryable = true,
  retryAfterMs: number | null = null,
): Promise<JobRow> {
  const [row] = await sql<JobRow[]>`
    select * from public.fail_job(${job.id}::uuid, ${job.lease_token}::uuid, ${error},
                                  ${retryable}, ${retryAfterMs}::int)`;
  return row;
}

export async function jobById(sql: Sql, id: string): Promise<JobRow> {
  const [row] = await sql<JobRow[]>`select * from public.jobs where id = ${id}`;
  return row;
}

/** Makes a due time (run_at) pass without waiting: the tests never sleep. */
export async function makeDue(sql: Sql, id: string): Promise<void> {
  await sql`update public.jobs set run_at = now() - interval '1 millisecond' where id = ${id}`;
}

/** Makes a lease run out without waiting, as if the worker stopped renewing it. */
export async function expireLease(sql: Sql, id: string): Promise<void> {
  await sql`update public.jobs set lease_expires_at = now() - interval '1 second'
             where id = ${id} and status = 'processing'`;
}

/**
 * The plans of every statement `work` runs, functions' inner statements included
 * (auto_explain; with client_min_messages = log they come back as notices), for
 * checking what a queue function reads. `work` runs in one transaction, rolled back
 * with `rollback` (for work that must not outlive the test); `setup` runs first in the
 * same transaction, unlogged.
 */
export async function nestedPlans(
  work: (tx: Sql) => Promise<unknown>,
  options: { setup?: (tx: Sql) => Promise<unknown>; rollback?: boolean } = {},
): Promise<string[]> {
  const plans: string[] = [];
  const own = postgres(DB_URL, {
    max: 1,
    onnotice: (n: { message?: string }) => plans.push(n.message ?? ""),
  });
  const rollback = new Error("rollback");
  try {
    await own.begin(async (tx) => {
      await options.setup?.(tx as unknown as Sql);
      await tx`load 'auto_explain'`;
      await tx`set local auto_explain.log_min_duration = 0`;
      await tx`set local auto_explain.log_nested_statements = on`;
      await tx`set local client_min_messages = log`;
      await work(tx as unknown as Sql);
      if (options.rollback) throw rollback;
    });
  } catch (e) {
    if (e !== rollback) throw e;
  } finally {
    await own.end({ timeout: 5 });
  }
  return plans;
}

/** A table only the queue's security-definer functions reach: RLS on, no API role's rights. */
export async function assertOutOfApiReach(sql: Sql, table: string): Promise<void> {
  const [t] = await sql`
    select c.relrowsecurity as rls,
           has_table_privilege('anon', c.oid, 'select, insert, update, delete') as anon,
           has_table_privilege('authenticated', c.oid, 'select, insert, update, delete') as authenticated,
           has_table_privilege('service_role', c.oid, 'select, insert, update, delete') as service_role
      from pg_class c where c.oid = ${table}::regclass`;
  assert.deepEqual({ ...t }, { rls: true, anon: false, authenticated: false, service_role: false });
}

/** The SQLSTATE a call failed with (throws if it did not fail). */
export async function sqlstate(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code ?? `no code: ${e}`;
  }
  throw new Error("expected the call to fail, it succeeded");
}

/** A user in auth.users (jobs.owner_id references it, as on Supabase). */
export async function createUser(sql: Sql): Promise<string> {
  const id = crypto.randomUUID();
  await sql`insert into auth.users (id, aud, role, email)
            values (${id}, 'authenticated', 'authenticated', ${`${id}@queue-test.local`})`;
  return id;
}

/**
 * Runs `fn` inside a transaction as PostgREST would for a signed-in user:
 * role authenticated and the JWT claims in request.jwt.claims.
 */
export async function asUser<T>(
  sql: Sql,
  userId: string | null,
  fn: (tx: Sql) => Promise<T>,
  role = "authenticated",
): Promise<T> {
  return await sql.begin(async (tx) => {
    const claims = JSON.stringify(userId ? { sub: userId, role, aud: role } : { role });
    await tx`select set_config('request.jwt.claims', ${claims}, true)`;
    if (!["anon", "authenticated", "service_role"].includes(role)) throw new Error(`role ${role}`);
    await tx.unsafe(`set local role ${role}`);
    return await fn(tx as unknown as Sql);
  }) as T;
}

// ---------------------------------------------------------------------------
// PostgREST
// ---------------------------------------------------------------------------

/** A user token like Supabase Auth issues (sub, role, aud, iss, email, exp). */
export async function userJwt(userId: string, ttlSeconds = 600): Promise<string> {
  return await userAccessToken({ secret: JWT_SECRET, apiUrl: SUPABASE_URL, sub: userId, expiresIn: ttlSeconds });
}

export interface RestAnswer {
  status: number;
  body: unknown;
}

/** Calls PostgREST through the gateway as `bearer` (a user JWT or the service key). */
export async function rest(
  path: string,
  bearer: string,
  init: { method?: string; body?: unknown; apikey?: string } = {},
): Promise<RestAnswer> {
  const res = await fetch(`${SUPABASE_URL}/rest/v1${path}`, {
    method: init.method ?? (init.body === undefined ? "GET" : "POST"),
    headers: {
      apikey: init.apikey ?? (bearer === SERVICE_KEY ? SERVICE_KEY : ANON_KEY),
      authorization: `Bearer ${bearer}`,
      "content-type": "application/json",
      accept: "application/json",
    },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  return { status: res.status, body };
}
