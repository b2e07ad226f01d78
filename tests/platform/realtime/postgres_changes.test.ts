// postgres_changes through the gateway's Realtime with the real realtime-js:
// changes come from the WAL, and each subscriber gets a change only if a
// SELECT of the row under their own role and claims returns it (RLS).
import { assert, assertEquals } from "../../support/assert.ts";
import { userToken } from "../../support/stack.ts";
import {
  client,
  closeAll,
  connectDb,
  realtimeTest,
  scratchTable,
  sleep,
  stack,
  subscribed,
  tableName,
  waitFor,
} from "./_lib.ts";

interface Got {
  eventType: string;
  new: Record<string, any>;
  old: Record<string, any>;
  at: number;
}

Deno.test({
  name: "postgres_changes: a user receives their own inserts and updates within 1 s and never another user's",
  ...realtimeTest,
  async fn() {
    const sql = connectDb();
    const table = tableName("rt_rls");
    const drop = await scratchTable(sql, table);
    const alice = crypto.randomUUID(), bob = crypto.randomUUID();
    const a = await client(await userToken(alice));
    const b = await client(await userToken(bob), "1.0.0"); // both serializers see the same rule
    try {
      const got: Record<string, Got[]> = { alice: [], bob: [] };
      for (const [who, c] of [["alice", a], ["bob", b]] as const) {
        await subscribed(
          c.channel(`rls-${who}`).on("postgres_changes", { event: "*", schema: "public", table }, (p: any) => {
            got[who].push({ eventType: p.eventType, new: p.new, old: p.old, at: performance.now() });
          }),
        );
      }
      const commit = async (q: Promise<unknown>) => {
        await q;
        return performance.now();
      };
      const tInsA = await commit(sql`insert into ${sql(table)} (owner, body) values (${alice}, 'a1')`);
      await commit(sql`insert into ${sql(table)} (owner, body) values (${bob}, 'b1')`);
      const tUpdA = await commit(sql`update ${sql(table)} set body = 'a2' where owner = ${alice}`);
      await commit(sql`update ${sql(table)} set body = 'b2' where owner = ${bob}`);

      assert(await waitFor(() => got.alice.length >= 2 && got.bob.length >= 2, 3000), JSON.stringify(got));
      await sleep(300); // room for a wrongly delivered extra event to show up
      assertEquals(got.alice.map((g) => [g.eventType, g.new.body, g.new.owner]), [
        ["INSERT", "a1", alice],
        ["UPDATE", "a2", alice],
      ]);
      assertEquals(got.bob.map((g) => [g.eventType, g.new.body, g.new.owner]), [
        ["INSERT", "b1", bob],
        ["UPDATE", "b2", bob],
      ]);
      // Commit (as seen by the writer) to delivery.
      assert(got.alice[0].at - tInsA < 1000, `insert delivered after ${got.alice[0].at - tInsA} ms`);
      assert(got.alice[1].at - tUpdA < 1000, `update delivered after ${got.alice[1].at - tUpdA} ms`);
      // Types as realtime-js converts them from the columns the server sends.
      assertEquals(typeof got.alice[0].new.id, "number");
      assertEquals(got.alice[1].old, { id: got.alice[0].new.id });
    } finally {
      await closeAll(a, b);
      await drop();
      await sql.end({ timeout: 5 });
    }
  },
});

Deno.test({
  name: "postgres_changes: eq, in and gt filters deliver only the rows whose column passes",
  ...realtimeTest,
  async fn() {
    const sql = connectDb();
    const table = tableName("rt_filter");
    const drop = await scratchTable(sql, table);
    const alice = crypto.randomUUID();
    const c = await client(await userToken(alice));
    try {
      const seen: Record<string, number[]> = { eq: [], in: [], gt: [], neq: [], lte: [] };
      const ch = c.channel("filters");
      for (
        const [k, filter] of [["eq", "n=eq.5"], ["in", "n=in.(1,3)"], ["gt", "n=gt.4"], ["neq", "n=neq.2"], [
          "lte",
          "n=lte.2",
        ]]
      ) {
        ch.on(
          "postgres_changes",
          { event: "INSERT", schema: "public", table, filter },
          (p: any) => seen[k].push(p.new.n),
        );
      }
      await subscribed(ch);
      for (let n = 1; n <= 6; n++) await sql`insert into ${sql(table)} (owner, body, n) values (${alice}, 'x', ${n})`;
      assert(await waitFor(() => seen.neq.length >= 5, 3000), JSON.stringify(seen));
      await sleep(200);
      const sorted = (xs: number[]) => [...xs].sort((x, y) => x - y);
      assertEquals(sorted(seen.eq), [5]);
      assertEquals(sorted(seen.in), [1, 3]);
      assertEquals(sorted(seen.gt), [5, 6]);
      assertEquals(sorted(seen.neq), [1, 3, 4, 5, 6]);
      assertEquals(sorted(seen.lte), [1, 2]);
    } finally {
      await closeAll(c);
      await drop();
      await sql.end({ timeout: 5 });
    }
  },
});

Deno.test({
  name: "postgres_changes: a delete on an RLS table reaches subscribers as its primary key only",
  ...realtimeTest,
  async fn() {
    const sql = connectDb();
    const table = tableName("rt_delete");
    const drop = await scratchTable(sql, table);
    await sql.unsafe(`alter table public.${table} replica identity full`);
    const alice = crypto.randomUUID();
    const c = await client(await userToken(alice));
    try {
      const deletes: any[] = [];
      await subscribed(
        c.channel("deletes").on(
          "postgres_changes",
          { event: "DELETE", schema: "public", table },
          (p) => deletes.push(p),
        ),
      );
      const [row] = await sql`insert into ${sql(table)} (owner, body) values (${alice}, 'gone') returning id`;
      await sql`delete from ${sql(table)} where id = ${row.id}`;
      assert(await waitFor(() => deletes.length === 1, 3000), "no delete event");
      assertEquals(deletes[0].eventType, "DELETE");
      assertEquals(deletes[0].old, { id: Number(row.id) });
      assertEquals(deletes[0].new, {});
    } finally {
      await closeAll(c);
      await drop();
      await sql.end({ timeout: 5 });
    }
  },
});

Deno.test({
  name: "postgres_changes: tables outside the supabase_realtime publication send nothing",
  ...realtimeTest,
  async fn() {
    const sql = connectDb();
    const table = tableName("rt_unpub");
    const drop = await scratchTable(sql, table);
    await sql.unsafe(`alter publication supabase_realtime drop table public.${table}`);
    const alice = crypto.randomUUID();
    const c = await client(await userToken(alice));
    try {
      const got: unknown[] = [];
      await subscribed(
        c.channel("unpub").on("postgres_changes", { event: "*", schema: "public", table }, (p) => got.push(p)),
      );
      await sql`insert into ${sql(table)} (owner, body) values (${alice}, 'x')`;
      await sleep(500);
      assertEquals(got.length, 0);
    } finally {
      await closeAll(c);
      await drop();
      await sql.end({ timeout: 5 });
    }
  },
});

Deno.test({
  name: "postgres_changes: a table without a primary key sends its changes to the service role only",
  ...realtimeTest,
  async fn() {
    const sql = connectDb();
    const table = tableName("rt_nopk");
    await sql.unsafe(`create table public.${table} (body text);
      grant select on public.${table} to authenticated;
      alter publication supabase_realtime add table public.${table};`);
    const service = await client(stack.serviceKey);
    const user = await client(await userToken(crypto.randomUUID()));
    try {
      const got: Record<string, unknown[]> = { service: [], user: [] };
      for (const [who, c] of [["service", service], ["user", user]] as const) {
        await subscribed(
          c.channel(`nopk-${who}`).on("postgres_changes", { event: "INSERT", schema: "public", table }, (p: any) => {
            got[who].push(p.new.body);
          }),
        );
      }
      await sql`insert into ${sql(table)} (body) values ('x')`;
      assert(await waitFor(() => got.service.length === 1), JSON.stringify(got));
      await sleep(300);
      assertEquals(got, { service: ["x"], user: [] });
    } finally {
      await closeAll(service, user);
      await sql.unsafe(`drop table if exists public.${table}`);
      await sql.end({ timeout: 5 });
    }
  },
});
