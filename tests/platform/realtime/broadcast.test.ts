// Broadcast through the gateway's Realtime with the real realtime-js: from
// clients (self, ack), from the REST API, and from SQL (realtime.send,
// realtime.broadcast_changes), public and private channels.
import { assert, assertEquals, assertMatch } from "../../support/assert.ts";
import { userToken } from "../../support/stack.ts";
import { client, closeAll, connectDb, realtimeTest, sleep, stack, subscribed, waitFor } from "./_lib.ts";

const topic = (what: string) => `${what}-${crypto.randomUUID().slice(0, 8)}`;

for (const vsn of ["2.0.0", "1.0.0"] as const) {
  Deno.test({
    name: `broadcast (${vsn}): a client's message reaches the others, itself only with self, and ack answers ok`,
    ...realtimeTest,
    async fn() {
      const t = topic("chat");
      const [a, b, c] = [await client(undefined, vsn), await client(undefined, vsn), await client(undefined, vsn)];
      try {
        const got: Record<string, unknown[]> = { a: [], b: [], c: [] };
        const chA = a.channel(t, { config: { broadcast: { self: true, ack: true } } })
          .on("broadcast", { event: "say" }, (m) => got.a.push(m.payload));
        const chB = b.channel(t).on("broadcast", { event: "say" }, (m) => got.b.push(m.payload));
        const chC = c.channel(t).on("broadcast", { event: "say" }, (m) => got.c.push(m.payload));
        await Promise.all([subscribed(chA), subscribed(chB), subscribed(chC)]);

        assertEquals(await chA.send({ type: "broadcast", event: "say", payload: { text: "héllo ✓", n: 1 } }), "ok");
        await chC.send({ type: "broadcast", event: "say", payload: { text: "from c" } });
        await chB.send({ type: "broadcast", event: "other", payload: { text: "not listened to" } });
        assert(
          await waitFor(() => got.b.length === 2 && got.a.length === 2 && got.c.length === 1),
          JSON.stringify(got),
        );
        await sleep(200);
        assertEquals(got.b, [{ text: "héllo ✓", n: 1 }, { text: "from c" }]);
        assertEquals(got.a, [{ text: "héllo ✓", n: 1 }, { text: "from c" }]); // self: true
        assertEquals(got.c, [{ text: "héllo ✓", n: 1 }]); // self: false
      } finally {
        await closeAll(a, b, c);
      }
    },
  });
}

Deno.test({
  name: "broadcast: realtime.send from SQL reaches subscribers of the topic, public and private apart",
  ...realtimeTest,
  async fn() {
    const sql = connectDb();
    const t = topic("sql");
    const user = crypto.randomUUID();
    const policy = `rt_test_${crypto.randomUUID().replace(/-/g, "").slice(0, 10)}`;
    // Private channels: this user may read topic t, as an app's policy would say.
    await sql.unsafe(`create policy ${policy} on realtime.messages for select to authenticated
      using (realtime.topic() = '${t}' and auth.uid() = '${user}')`);
    // Two clients: realtime-js keeps one channel per topic name per client.
    const c = await client(await userToken(user));
    const d = await client(await userToken(user));
    try {
      const pub: unknown[] = [], priv: unknown[] = [];
      await subscribed(c.channel(t).on("broadcast", { event: "news" }, (m) => pub.push(m.payload)));
      await subscribed(
        d.channel(t, { config: { private: true } }).on("broadcast", { event: "news" }, (m) => priv.push(m.payload)),
      );
      await sql`select realtime.send(${sql.json({ to: "public" })}, 'news', ${t}, false)`;
      await sql`select realtime.send(${sql.json({ to: "private" })}, 'news', ${t}, true)`;
      assert(await waitFor(() => pub.length >= 1 && priv.length >= 1), JSON.stringify({ pub, priv }));
      await sleep(200);
      assertEquals(pub, [{ to: "public" }]);
      assertEquals(priv, [{ to: "private" }]);
    } finally {
      await closeAll(c, d);
      await sql.unsafe(`drop policy if exists ${policy} on realtime.messages`);
      await sql.end({ timeout: 5 });
    }
  },
});

Deno.test({
  name: "broadcast: a trigger calling realtime.broadcast_changes sends the row change to a private channel",
  ...realtimeTest,
  async fn() {
    const sql = connectDb();
    const t = topic("changes");
    const table = `rt_bc_${crypto.randomUUID().replace(/-/g, "").slice(0, 10)}`;
    await sql.unsafe(`
      create table public.${table} (id int primary key, body text);
      create function public.${table}_notify() returns trigger language plpgsql security definer set search_path = '' as $$
      begin
        perform realtime.broadcast_changes('${t}', tg_op, tg_op, tg_table_name, tg_table_schema, new, old);
        return null;
      end $$;
      create trigger ${table}_notify after insert or update or delete on public.${table}
        for each row execute function public.${table}_notify();
    `);
    const c = await client(stack.serviceKey); // the service role passes private-channel checks
    try {
      const got: any[] = [];
      await subscribed(c.channel(t, { config: { private: true } }).on("broadcast", { event: "*" }, (m) => got.push(m)));
      await sql.unsafe(`insert into public.${table} values (1, 'one'); update public.${table} set body = 'uno'`);
      assert(await waitFor(() => got.length >= 2), JSON.stringify(got));
      assertEquals(got[0].event, "INSERT");
      assertEquals(got[0].payload.operation, "INSERT");
      assertEquals(got[0].payload.record, { id: 1, body: "one" });
      assertEquals(got[0].payload.old_record, null);
      assertEquals(got[1].payload.record, { id: 1, body: "uno" });
      assertEquals(got[1].payload.old_record, { id: 1, body: "one" });
      assertEquals([got[1].payload.schema, got[1].payload.table], ["public", table]);
    } finally {
      await closeAll(c);
      await sql.unsafe(`drop table if exists public.${table}; drop function if exists public.${table}_notify()`);
      await sql.end({ timeout: 5 });
    }
  },
});

Deno.test({
  name: "broadcast: a private channel join without a policy allowing it is refused",
  ...realtimeTest,
  async fn() {
    const c = await client(await userToken(crypto.randomUUID()));
    try {
      const err = await subscribed(c.channel(topic("closed"), { config: { private: true } })).then(
        () => null,
        (e) => e,
      );
      assert(err, "the join succeeded");
      assertEquals(err.status, "CHANNEL_ERROR");
      assertMatch(err.message, /Unauthorized: You do not have permissions to read from this Channel topic/);
    } finally {
      await closeAll(c);
    }
  },
});

Deno.test({
  name: "broadcast: the REST endpoint (POST /realtime/v1/api/broadcast) and httpSend deliver to subscribers",
  ...realtimeTest,
  async fn() {
    const t = topic("rest");
    const c = await client();
    try {
      const got: unknown[] = [];
      const ch = c.channel(t).on("broadcast", { event: "ping" }, (m) => got.push(m.payload));
      await subscribed(ch);
      const r = await fetch(`${stack.url}/realtime/v1/api/broadcast`, {
        method: "POST",
        headers: {
          apikey: stack.anonKey,
          authorization: `Bearer ${stack.serviceKey}`,
          "content-type": "application/json",
        },
        body: JSON.stringify({ messages: [{ topic: t, event: "ping", payload: { via: "rest" } }] }),
      });
      await r.body?.cancel();
      assertEquals(r.status, 202);
      const sender = await client();
      try {
        const res = await sender.channel(t).httpSend("ping", { via: "httpSend" });
        assertEquals(res, { success: true });
      } finally {
        await closeAll(sender);
      }
      assert(await waitFor(() => got.length >= 2), JSON.stringify(got));
      assertEquals(got, [{ via: "rest" }, { via: "httpSend" }]);

      const bad = await fetch(`${stack.url}/realtime/v1/api/broadcast`, {
        method: "POST",
        headers: { apikey: "not-a-jwt", "content-type": "application/json" },
        body: JSON.stringify({ messages: [{ topic: t, event: "ping", payload: { via: "bad" } }] }),
      });
      await bad.body?.cancel();
      assertEquals(bad.status, 401);
      await sleep(200);
      assertEquals(got.length, 2);
    } finally {
      await closeAll(c);
    }
  },
});

Deno.test({
  name: "broadcast: on a private channel only callers whose policies allow INSERT on realtime.messages may send",
  ...realtimeTest,
  async fn() {
    const sql = connectDb();
    const t = topic("readonly");
    const reader = crypto.randomUUID();
    const policy = `rt_test_${crypto.randomUUID().replace(/-/g, "").slice(0, 10)}`;
    // The reader may read the topic (join) but has no INSERT policy (cannot write).
    await sql.unsafe(`create policy ${policy} on realtime.messages for select to authenticated
      using (realtime.topic() = '${t}' and auth.uid() = '${reader}')`);
    const readerToken = await userToken(reader);
    const c = await client(readerToken);
    const listener = await client(stack.serviceKey);
    try {
      const got: unknown[] = [];
      await subscribed(
        listener.channel(t, { config: { private: true } }).on("broadcast", { event: "m" }, (m) => got.push(m.payload)),
      );
      const ch = c.channel(t, { config: { private: true, broadcast: { ack: true } } });
      await subscribed(ch);
      assertEquals(await ch.send({ type: "broadcast", event: "m", payload: { from: "reader" } }), "error");
      const post = (token: string, from: string) =>
        fetch(`${stack.url}/realtime/v1/api/broadcast`, {
          method: "POST",
          headers: { apikey: stack.anonKey, authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: JSON.stringify({ messages: [{ topic: t, event: "m", payload: { from }, private: true }] }),
        }).then(async (r) => {
          await r.body?.cancel();
          return r.status;
        });
      assertEquals(await post(readerToken, "reader via REST"), 202); // accepted, and dropped, as Supabase does
      assertEquals(await post(stack.serviceKey, "service via REST"), 202);
      assert(await waitFor(() => got.length >= 1), JSON.stringify(got));
      await sleep(300);
      assertEquals(got, [{ from: "service via REST" }]);
    } finally {
      await closeAll(c, listener);
      await sql.unsafe(`drop policy if exists ${policy} on realtime.messages`);
      await sql.end({ timeout: 5 });
    }
  },
});
