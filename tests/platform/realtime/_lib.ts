// Helpers for the Realtime end-to-end tests: real supabase-js clients against
// the running stack's gateway, and a superuser pool for setup and writes.
import { createClient, type RealtimeChannel, type SupabaseClient } from "@supabase/supabase-js";
import { connectDb, type Sql, stack } from "../../support/stack.ts";

export { connectDb, type Sql, stack };

/** Deno's sanitizers would flag the realtime client's heartbeat timers; every test closes its clients itself. */
export const realtimeTest = { sanitizeOps: false, sanitizeResources: false };

/**
 * A client whose Realtime connection carries `token` (a user's access token,
 * or an API key), as an app using third-party auth or a signed-in session does.
 */
export async function client(token: string = stack.anonKey, vsn?: "1.0.0" | "2.0.0"): Promise<SupabaseClient> {
  const c = createClient(stack.url, stack.anonKey, {
    accessToken: () => Promise.resolve(token),
    realtime: vsn ? { vsn } : {},
  });
  // Resolve the token before any join: otherwise the first join can race the
  // token callback and go out with the anon key (realtime-js then sends the
  // token later as an access_token message, and only if the join finished).
  await c.realtime.setAuth();
  return c;
}

export async function closeAll(...clients: SupabaseClient[]): Promise<void> {
  for (const c of clients) {
    await c.removeAllChannels();
    c.realtime.disconnect();
  }
}

/** Subscribes and resolves on SUBSCRIBED; rejects with the status and error otherwise (bounded by the client's 10 s join timeout). */
export function subscribed(channel: RealtimeChannel): Promise<RealtimeChannel> {
  return new Promise((resolve, reject) => {
    let settled = false;
    // subscribe() on a channel already joined never calls back: bound the wait.
    const timer = setTimeout(() => {
      if (!settled) reject(Object.assign(new Error("no subscribe status within 15 s"), { status: "NONE" }));
      settled = true;
    }, 15_000);
    channel.subscribe((status, err) => {
      if (settled) return;
      clearTimeout(timer);
      if (status === "SUBSCRIBED") {
        settled = true;
        resolve(channel);
      } else {
        settled = true;
        reject(Object.assign(new Error(`${status}: ${err?.message ?? ""}`), { status, cause: err }));
      }
    });
  });
}

/** Polls `cond` every 20 ms until it holds or `ms` pass; false on timeout. */
export async function waitFor(cond: () => boolean, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A scratch table `public.<name>` in the supabase_realtime publication, with
 * RLS letting a user read only rows they own, readable by authenticated.
 * Returns a function that drops it.
 */
export async function scratchTable(sql: Sql, name: string): Promise<() => Promise<void>> {
  await sql.unsafe(`
    create table public.${name} (
      id bigint generated always as identity primary key,
      owner uuid not null,
      body text not null,
      n int not null default 0
    );
    alter table public.${name} enable row level security;
    create policy ${name}_own on public.${name} for select to authenticated using (owner = auth.uid());
    grant select on public.${name} to authenticated;
    alter publication supabase_realtime add table public.${name};
  `);
  return async () => {
    await sql.unsafe(`drop table if exists public.${name}`);
  };
}

export function tableName(prefix: string): string {
  return `${prefix}_${crypto.randomUUID().replace(/-/g, "").slice(0, 10)}`;
}
