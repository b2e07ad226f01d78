// Presence, token checks and reconnection through the gateway's Realtime
// with the real realtime-js.
import { assert, assertEquals, assertMatch } from "../../support/assert.ts";
import { signJwt, userToken } from "../../support/stack.ts";
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

const keysOf = (state: Record<string, unknown[]>) => Object.keys(state).sort();

Deno.test({
  name: "presence: two tracked clients see each other, and one that leaves or disconnects is dropped",
  ...realtimeTest,
  async fn() {
    const t = `room-${crypto.randomUUID().slice(0, 8)}`;
    const [a, b, c] = [await client(), await client(), await client(undefined, "1.0.0")];
    try {
      const chA = a.channel(t, { config: { presence: { key: "alice" } } });
      const chB = b.channel(t, { config: { presence: { key: "bob" } } });
      const chC = c.channel(t, { config: { presence: { key: "carol" } } });
      const leaves: string[] = [];
      chA.on("presence", { event: "sync" }, () => {}).on("presence", { event: "leave" }, ({ key }) => leaves.push(key));
      chB.on("presence", { event: "sync" }, () => {});
      chC.on("presence", { event: "sync" }, () => {});
      await Promise.all([subscribed(chA), subscribed(chB), subscribed(chC)]);
      assertEquals(await chA.track({ name: "Alice" }), "ok");
      assertEquals(await chB.track({ name: "Bob" }), "ok");
      assertEquals(await chC.track({ name: "Carol" }), "ok");
      assert(await waitFor(() => keysOf(chA.presenceState()).length === 3), JSON.stringify(chA.presenceState()));
      assertEquals(keysOf(chB.presenceState()), ["alice", "bob", "carol"]);
      assertEquals((chA.presenceState().bob[0] as any).name, "Bob");

      // Leaving the channel drops bob.
      await chB.unsubscribe();
      assert(await waitFor(() => !("bob" in chA.presenceState())), JSON.stringify(chA.presenceState()));
      // A socket that goes away drops carol.
      c.realtime.disconnect();
      assert(await waitFor(() => !("carol" in chA.presenceState())), JSON.stringify(chA.presenceState()));
      assertEquals(keysOf(chA.presenceState()), ["alice"]);
      assertEquals(leaves.sort(), ["bob", "carol"]);

      // untrack removes the caller's own entry.
      assertEquals(await chA.untrack(), "ok");
      assert(await waitFor(() => keysOf(chA.presenceState()).length === 0), JSON.stringify(chA.presenceState()));
    } finally {
      await closeAll(a, b, c);
    }
  },
});

Deno.test({
  name: "auth: a join with a bad or expired token is refused with InvalidJWTToken and receives nothing",
  ...realtimeTest,
  async fn() {
    const sql = connectDb();
    const table = tableName("rt_auth");
    const drop = await scratchTable(sql, table);
    const user = crypto.randomUUID();
    const now = Math.floor(Date.now() / 1000);
    const bad = {
      tampered: (await userToken(user)).slice(0, -3) + "AAA",
      "wrong secret": await userToken(user, { secret: "not-the-stack-secret-0123456789abcdef" }),
      expired: await signJwt({ sub: user, role: "authenticated", aud: "authenticated", iat: now - 100, exp: now - 60 }),
      "not a JWT": "nonsense",
    };
    const clients = [];
    try {
      const got: unknown[] = [];
      for (const [what, token] of Object.entries(bad)) {
        const c = await client(token);
        clients.push(c);
        const err = await subscribed(
          c.channel(`auth-${what}`).on("postgres_changes", { event: "*", schema: "public", table }, (p) => got.push(p))
            .on("broadcast", { event: "x" }, (p) => got.push(p)),
        ).then(() => null, (e) => e);
        assert(err, `${what}: the join succeeded`);
        assertEquals(err.status, "CHANNEL_ERROR", what);
        assertMatch(err.message, /InvalidJWTToken/, what);
      }
      await sql`insert into ${sql(table)} (owner, body) values (${user}, 'secret')`;
      for (const what of Object.keys(bad)) {
        await sql`select realtime.send(${sql.json({ leak: true })}, 'x', ${`auth-${what}`}, false)`;
      }
      await sleep(500);
      assertEquals(got, []);

      // A bad apikey is refused at the socket itself.
      const r = await fetch(`${stack.url}/realtime/v1/websocket?apikey=nonsense&vsn=2.0.0`, {
        headers: {
          upgrade: "websocket",
          connection: "upgrade",
          "sec-websocket-key": btoa("0123456789abcdef"),
          "sec-websocket-version": "13",
        },
      });
      await r.body?.cancel();
      assertEquals(r.status, 401);
    } finally {
      await closeAll(...clients);
      await drop();
      await sql.end({ timeout: 5 });
    }
  },
});

Deno.test({
  name: "auth: a channel whose access_token is refreshed with a bad token is closed by the server",
  ...realtimeTest,
  async fn() {
    const c = await client(await userToken(crypto.randomUUID()));
    try {
      const states: string[] = [];
      const ch = c.channel(`refresh-${crypto.randomUUID().slice(0, 8)}`);
      const system: any[] = [];
      ch.on("system", {}, (p) => system.push(p));
      await subscribed(ch);
      ch.subscribe((s) => states.push(s));
      await c.realtime.setAuth("forged.token.value");
      assert(await waitFor(() => ch.state === "closed"), `channel state ${ch.state}`);
      assert(system.some((p) => p.status === "error" && /InvalidJWTToken/.test(p.message)), JSON.stringify(system));
    } finally {
      await closeAll(c);
    }
  },
});

Deno.test({
  name: "reconnect: after the socket drops, the client rejoins and receives changes again",
  ...realtimeTest,
  async fn() {
    const sql = connectDb();
    const table = tableName("rt_reconnect");
    const drop = await scratchTable(sql, table);
    const user = crypto.randomUUID();
    const c = await client(await userToken(user));
    try {
      const bodies: string[] = [];
      const ch = c.channel("reconnect").on(
        "postgres_changes",
        { event: "INSERT", schema: "public", table },
        (p: any) => bodies.push(p.new.body),
      );
      await subscribed(ch);
      await sql`insert into ${sql(table)} (owner, body) values (${user}, 'before')`;
      assert(await waitFor(() => bodies.length === 1), JSON.stringify(bodies));

      // Drop the connection under the client (not a clean disconnect), as a network failure would.
      const socket = (c.realtime as any).socketAdapter.getSocket();
      const opened = new Promise<void>((resolve) => socket.onOpen(() => resolve()));
      socket.conn.close(4000, "test drops the connection");
      await opened; // realtime-js reconnects after its backoff (1 s first)
      assert(await waitFor(() => ch.state === "joined", 15_000), `channel state ${ch.state}`);
      await sql`insert into ${sql(table)} (owner, body) values (${user}, 'after')`;
      assert(await waitFor(() => bodies.length === 2), JSON.stringify(bodies));
      assertEquals(bodies, ["before", "after"]);
    } finally {
      await closeAll(c);
      await drop();
      await sql.end({ timeout: 5 });
    }
  },
});
