// What the Storage API tests share: supabase-js clients for the service role
// and for users, test buckets made (and removed) through the bucket API, and
// direct looks at storage.objects to prove what was or was not stored.
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { createUser, need, stack, type TestUser, withDb } from "../../support/stack.ts";
import { presignUrl } from "../../../scripts/local/sigv4.ts";

const NO_SESSION = { auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false } };

export function serviceClient(): SupabaseClient {
  return createClient(stack.url, stack.serviceKey, NO_SESSION);
}

/** A client acting as `user`, as an app's would after sign-in. */
export function userClient(user: TestUser): SupabaseClient {
  return createClient(stack.url, stack.anonKey, {
    ...NO_SESSION,
    global: { headers: { Authorization: `Bearer ${user.token}` } },
  });
}

export function anonClient(): SupabaseClient {
  return createClient(stack.url, stack.anonKey, NO_SESSION);
}

export { createUser };

/** A bucket of its own for one test, created through the bucket API (service role). */
export async function withBucket<T>(
  options: { public?: boolean; fileSizeLimit?: number | string; allowedMimeTypes?: string[] },
  fn: (bucket: string) => Promise<T>,
): Promise<T> {
  const admin = serviceClient();
  const bucket = `t-${crypto.randomUUID().slice(0, 13)}`;
  const { error } = await admin.storage.createBucket(bucket, { public: options.public ?? false, ...options });
  if (error) throw new Error(`createBucket: ${error.message}`);
  try {
    return await fn(bucket);
  } finally {
    await admin.storage.emptyBucket(bucket);
    const { error: delError } = await admin.storage.deleteBucket(bucket);
    if (delError) console.error(`deleteBucket ${bucket}: ${delError.message}`);
  }
}

/**
 * Policies on storage.objects for one bucket, as an app's migration would
 * write them: signed-in users may read and write only under a first folder
 * named by their own id. Dropped afterwards.
 */
export async function withOwnFolderPolicy<T>(bucket: string, fn: () => Promise<T>): Promise<T> {
  const tag = bucket.replace(/-/g, "_");
  const rule = `bucket_id = '${bucket}' and (storage.foldername(name))[1] = auth.uid()::text`;
  await withDb(async (sql) => {
    await sql.unsafe(`create policy own_${tag}_select on storage.objects for select to authenticated using (${rule})`);
    await sql.unsafe(
      `create policy own_${tag}_insert on storage.objects for insert to authenticated with check (${rule})`,
    );
    await sql.unsafe(
      `create policy own_${tag}_update on storage.objects for update to authenticated using (${rule}) with check (${rule})`,
    );
    await sql.unsafe(`create policy own_${tag}_delete on storage.objects for delete to authenticated using (${rule})`);
  }, 1);
  try {
    return await fn();
  } finally {
    await withDb(async (sql) => {
      for (const op of ["select", "insert", "update", "delete"]) {
        await sql.unsafe(`drop policy if exists own_${tag}_${op} on storage.objects`);
      }
    }, 1);
  }
}

/** Rows in storage.objects for `bucket` (read as the database owner, so RLS hides nothing). */
export async function storedNames(bucket: string): Promise<string[]> {
  return await withDb(async (sql) => {
    const rows = await sql<
      { name: string }[]
    >`select name from storage.objects where bucket_id = ${bucket} order by name`;
    return rows.map((r) => r.name);
  }, 1);
}

export async function rowOf(bucket: string, name: string): Promise<Record<string, any> | undefined> {
  return await withDb(async (sql) => {
    const rows = await sql`select * from storage.objects where bucket_id = ${bucket} and name = ${name}`;
    return rows[0];
  }, 1);
}

export function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let at = 0; at < n; at += 65536) crypto.getRandomValues(out.subarray(at, Math.min(n, at + 65536)));
  return out;
}

/** The bytes under bucket/key in the S3 server, read through the S3 endpoint; null when there are none. */
export async function s3Bytes(bucket: string, key: string): Promise<Uint8Array | null> {
  const url = await presignUrl({
    method: "GET",
    url: `${need("S3_ENDPOINT")}/${bucket}/${key}`,
    credentials: { accessKeyId: need("S3_ACCESS_KEY_ID"), secretAccessKey: need("S3_SECRET_ACCESS_KEY") },
    region: need("S3_REGION"),
    expiresSecs: 60,
  });
  const r = await fetch(url);
  if (r.status === 404) {
    await r.body?.cancel();
    return null;
  }
  if (!r.ok) throw new Error(`S3 GET ${bucket}/${key}: ${r.status} ${await r.text()}`);
  return new Uint8Array(await r.arrayBuffer());
}
