// Supabase Realtime for the local stack, served by the gateway:
//   GET  /realtime/v1/websocket?apikey=...&vsn=1.0.0|2.0.0   Phoenix channels
//   POST /realtime/v1/api/broadcast                           {messages: [{topic, event, payload, private?}]}
//   POST /realtime/v1/api/broadcast/<topic>/events/<event>    one message, the body is the payload
// What a channel can do is what Supabase Realtime does for realtime-js:
// postgres_changes (from the WAL, RLS applied per subscriber), broadcast (from
// clients, the REST API and SQL's realtime.send), presence, private channels
// authorised by RLS on realtime.messages, access_token refresh.
// State is in this process: one gateway is one Realtime node.
import postgres from "postgres";
import {
  type Broadcast,
  decodeFrame,
  encodeBroadcast,
  encodeMessage,
  type Message,
  parseVsn,
  type Vsn,
} from "./protocol.ts";
import { type Filter, matches, parseFilter } from "./filters.ts";
import { type Claims, TokenError, verifier } from "./jwt.ts";
import { type Change, type Row, WalReader } from "./wal.ts";

export interface RealtimeConfig {
  dbUrl: string;
  jwtSecret: string;
  /** Replication slot name; unique per stack (the API port makes it so). */
  slot: string;
  pollMs?: number;
}

interface PgSub {
  id: number;
  event: string;
  schema: string;
  table?: string;
  filter?: Filter;
  /** Echoed in the join reply exactly as the client sent it: realtime-js compares them. */
  echo: Record<string, unknown>;
}

interface Conn {
  socket: WebSocket;
  vsn: Vsn;
  apikeyClaims: Claims;
  channels: Map<string, Channel>;
}

interface Channel {
  conn: Conn;
  topic: string; // "realtime:<sub>"
  sub: string;
  joinRef: string | null;
  isPrivate: boolean;
  claims: Claims;
  canWrite: boolean;
  self: boolean;
  ack: boolean;
  presenceEnabled: boolean;
  presenceKey: string;
  presenceRef: string | null;
  pgSubs: PgSub[];
}

interface PresenceEntry {
  channel: Channel;
  meta: Record<string, unknown>;
}

const PREFIX = "realtime:";
const ROLLBACK = Symbol("rollback");

export function realtimeServer(config: RealtimeConfig) {
  const verify = verifier(config.jwtSecret);
  const sql = postgres(config.dbUrl, {
    max: 4,
    onnotice: () => {},
    connection: { application_name: "edgeworks-realtime" },
  });
  const wal = new WalReader(config.dbUrl, config.slot);
  // Channels by "<private>:<sub topic>": public and private channels of one
  // name are apart, as private messages must reach private channels only.
  const byTopic = new Map<string, Set<Channel>>();
  const pgChannels = new Set<Channel>();
  const presence = new Map<string, Map<string, PresenceEntry>>(); // topic key -> phx_ref -> entry
  let stopped = false;

  const topicKey = (isPrivate: boolean, sub: string) => `${isPrivate ? "p" : "a"}:${sub}`;

  function send(conn: Conn, m: Message) {
    if (conn.socket.readyState === WebSocket.OPEN) conn.socket.send(encodeMessage(conn.vsn, m));
  }
  function reply(conn: Conn, m: Message, status: "ok" | "error", response: unknown) {
    send(conn, { join_ref: m.join_ref, ref: m.ref, topic: m.topic, event: "phx_reply", payload: { status, response } });
  }
  function push(ch: Channel, event: string, payload: unknown) {
    send(ch.conn, { join_ref: ch.joinRef, ref: null, topic: ch.topic, event, payload });
  }

  // ---------------------------------------------------------------- auth

  async function claimsOf(token: string): Promise<Claims> {
    return await verify(token);
  }

  /** Read/write rights on a private topic: the app's policies on realtime.messages decide. */
  async function authorize(sub: string, claims: Claims): Promise<{ read: boolean; write: boolean }> {
    let out = { read: false, write: false };
    try {
      await sql.begin(async (tx) => {
        const [r] = await tx`select * from realtime.local_authorize(${sub}, ${String(claims.role)}, ${
          tx.json(claims as any)
        })`;
        out = { read: r.can_read === true, write: r.can_write === true };
        throw ROLLBACK; // the probe rows must not stay
      });
    } catch (e) {
      if (e !== ROLLBACK) throw e;
    }
    return out;
  }

  // ---------------------------------------------------------------- channels

  function subscriptionId(s: { event: string; schema: string; table?: string; filter?: string }): number {
    // Stable per subscription shape, as Supabase's ids are: identical
    // subscriptions share an id, and realtime-js matches on it.
    const text = JSON.stringify([s.event, s.schema, s.table ?? null, s.filter ?? null]);
    let h = 2166136261;
    for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16777619);
    return h >>> 0;
  }

  function parsePgSubs(list: unknown): PgSub[] {
    if (list === undefined || list === null) return [];
    if (!Array.isArray(list)) throw new Error("config.postgres_changes must be a list");
    return list.map((raw: any) => {
      const event = String(raw?.event ?? "");
      if (!["*", "INSERT", "UPDATE", "DELETE"].includes(event.toUpperCase())) {
        throw new Error(`invalid postgres_changes event ${JSON.stringify(raw?.event)}`);
      }
      const schema = typeof raw.schema === "string" ? raw.schema : "public";
      const table = typeof raw.table === "string" && raw.table !== "*" ? raw.table : undefined;
      const filterText = typeof raw.filter === "string" && raw.filter !== "" ? raw.filter : undefined;
      const echo: Record<string, unknown> = {};
      for (const k of ["event", "schema", "table", "filter"]) if (k in raw) echo[k] = raw[k];
      return {
        id: subscriptionId({ event, schema, table: raw.table, filter: raw.filter }),
        event: event.toUpperCase(),
        schema,
        table,
        filter: filterText ? parseFilter(filterText) : undefined,
        echo,
      };
    });
  }

  async function join(conn: Conn, m: Message) {
    const cfg = m.payload?.config ?? {};
    const sub = m.topic.slice(PREFIX.length);
    let claims: Claims;
    try {
      const token = typeof m.payload?.access_token === "string" ? m.payload.access_token : null;
      claims = token ? await claimsOf(token) : conn.apikeyClaims;
    } catch (e) {
      const reason = e instanceof TokenError ? `InvalidJWTToken: ${e.message}` : "InvalidJWTToken";
      return reply(conn, m, "error", { reason });
    }
    let pgSubs: PgSub[];
    try {
      pgSubs = parsePgSubs(cfg.postgres_changes);
    } catch (e) {
      return reply(conn, m, "error", { reason: `Invalid postgres_changes config: ${(e as Error).message}` });
    }
    const isPrivate = cfg.private === true;
    let canWrite = true;
    if (isPrivate) {
      const rights = await authorize(sub, claims);
      if (!rights.read) {
        return reply(conn, m, "error", {
          reason: `Unauthorized: You do not have permissions to read from this Channel topic: ${sub}`,
        });
      }
      canWrite = rights.write;
    }
    const old = conn.channels.get(m.topic);
    if (old) leave(old);
    const ch: Channel = {
      conn,
      topic: m.topic,
      sub,
      joinRef: m.join_ref ?? m.ref,
      isPrivate,
      claims,
      canWrite,
      self: cfg.broadcast?.self === true,
      ack: cfg.broadcast?.ack === true,
      presenceEnabled: cfg.presence?.enabled !== false,
      presenceKey: typeof cfg.presence?.key === "string" && cfg.presence.key !== ""
        ? cfg.presence.key
        : crypto.randomUUID(),
      presenceRef: null,
      pgSubs,
    };
    conn.channels.set(m.topic, ch);
    const key = topicKey(isPrivate, sub);
    if (!byTopic.has(key)) byTopic.set(key, new Set());
    byTopic.get(key)!.add(ch);
    if (pgSubs.length > 0) pgChannels.add(ch);
    const response = pgSubs.length > 0 || cfg.postgres_changes
      ? { postgres_changes: pgSubs.map((s) => ({ ...s.echo, id: s.id })) }
      : {};
    reply(conn, m, "ok", response);
    if (pgSubs.length > 0) {
      push(ch, "system", {
        extension: "postgres_changes",
        channel: sub,
        message: "Subscribed to PostgreSQL",
        status: "ok",
      });
    }
    if (ch.presenceEnabled) push(ch, "presence_state", presenceState(key));
  }

  /** Drops a channel: out of every index, its presence gone (a diff to the others). */
  function leave(ch: Channel) {
    if (ch.conn.channels.get(ch.topic) === ch) ch.conn.channels.delete(ch.topic);
    const key = topicKey(ch.isPrivate, ch.sub);
    byTopic.get(key)?.delete(ch);
    if (byTopic.get(key)?.size === 0) byTopic.delete(key);
    pgChannels.delete(ch);
    untrack(ch);
  }

  /** Ends a channel from the server's side (expired or refused token). */
  function shutDown(ch: Channel, message: string) {
    push(ch, "system", { extension: "system", status: "error", message, channel: ch.sub });
    push(ch, "phx_close", {});
    leave(ch);
  }

  function tokenExpired(ch: Channel, nowSecs = Date.now() / 1000): boolean {
    if (typeof ch.claims.exp === "number" && ch.claims.exp <= nowSecs) {
      shutDown(ch, `Token has expired ${Math.floor(nowSecs - ch.claims.exp)} seconds ago`);
      return true;
    }
    return false;
  }

  // ---------------------------------------------------------------- presence

  function presenceState(key: string): Record<string, { metas: unknown[] }> {
    const state: Record<string, { metas: unknown[] }> = {};
    for (const e of presence.get(key)?.values() ?? []) {
      (state[e.channel.presenceKey] ??= { metas: [] }).metas.push(e.meta);
    }
    return state;
  }

  function presenceDiff(key: string, joins: PresenceEntry[], leaves: PresenceEntry[]) {
    const group = (es: PresenceEntry[]) => {
      const out: Record<string, { metas: unknown[] }> = {};
      for (const e of es) (out[e.channel.presenceKey] ??= { metas: [] }).metas.push(e.meta);
      return out;
    };
    const diff = { joins: group(joins), leaves: group(leaves) };
    for (const ch of byTopic.get(key) ?? []) if (ch.presenceEnabled) push(ch, "presence_diff", diff);
  }

  function track(ch: Channel, payload: unknown) {
    const key = topicKey(ch.isPrivate, ch.sub);
    if (!presence.has(key)) presence.set(key, new Map());
    const entries = presence.get(key)!;
    const ref = crypto.randomUUID();
    const meta: Record<string, unknown> = {
      ...(typeof payload === "object" && payload !== null ? payload as Record<string, unknown> : {}),
      phx_ref: ref,
    };
    const leaves: PresenceEntry[] = [];
    if (ch.presenceRef) {
      const prev = entries.get(ch.presenceRef);
      if (prev) {
        entries.delete(ch.presenceRef);
        leaves.push(prev);
        meta.phx_ref_prev = ch.presenceRef;
      }
    }
    const entry = { channel: ch, meta };
    entries.set(ref, entry);
    ch.presenceRef = ref;
    presenceDiff(key, [entry], leaves);
  }

  function untrack(ch: Channel) {
    if (!ch.presenceRef) return;
    const key = topicKey(ch.isPrivate, ch.sub);
    const entries = presence.get(key);
    const prev = entries?.get(ch.presenceRef);
    ch.presenceRef = null;
    if (!entries || !prev) return;
    entries.delete(prev.meta.phx_ref as string);
    if (entries.size === 0) presence.delete(key);
    presenceDiff(key, [], [prev]);
  }

  // ---------------------------------------------------------------- broadcast

  function broadcast(isPrivate: boolean, sub: string, b: Broadcast, from: Channel | null) {
    for (const ch of byTopic.get(topicKey(isPrivate, sub)) ?? []) {
      if (ch === from && !ch.self) continue;
      if (ch.conn.socket.readyState !== WebSocket.OPEN) continue;
      const frame = encodeBroadcast(ch.conn.vsn, ch.topic, b);
      if (frame !== null) ch.conn.socket.send(frame);
    }
  }

  // ---------------------------------------------------------------- messages

  async function onMessage(conn: Conn, m: Message) {
    if (m.topic === "phoenix") {
      if (m.event === "heartbeat") reply(conn, m, "ok", {});
      return;
    }
    if (m.event === "phx_join") {
      if (!m.topic.startsWith(PREFIX)) return reply(conn, m, "error", { reason: "unmatched topic" });
      return await join(conn, m);
    }
    const ch = conn.channels.get(m.topic);
    if (!ch) return reply(conn, m, "error", { reason: "unmatched topic" });
    switch (m.event) {
      case "phx_leave":
        leave(ch);
        return reply(conn, m, "ok", {});
      case "access_token": {
        const token = m.payload?.access_token;
        if (typeof token !== "string") return;
        try {
          ch.claims = await claimsOf(token);
          if (ch.isPrivate) ch.canWrite = (await authorize(ch.sub, ch.claims)).write;
          reply(conn, m, "ok", {});
        } catch (e) {
          shutDown(ch, e instanceof TokenError ? `InvalidJWTToken: ${e.message}` : "InvalidJWTToken");
        }
        return;
      }
      case "broadcast": {
        if (tokenExpired(ch)) return;
        const p = m.payload ?? {};
        if (ch.isPrivate && !ch.canWrite) {
          if (ch.ack) {
            reply(conn, m, "error", {
              reason: "Unauthorized: You do not have permissions to write to this Channel topic",
            });
          }
          return;
        }
        broadcast(
          ch.isPrivate,
          ch.sub,
          { event: String(p.event ?? ""), payload: p.payload, binary: p.binary === true },
          ch,
        );
        if (ch.ack) reply(conn, m, "ok", {});
        return;
      }
      case "presence": {
        if (tokenExpired(ch)) return;
        if (ch.isPrivate && !ch.canWrite) {
          return reply(conn, m, "error", {
            reason: "Unauthorized: You do not have permissions to track presence on this Channel topic",
          });
        }
        if (m.payload?.event === "track") track(ch, m.payload.payload);
        else if (m.payload?.event === "untrack") untrack(ch);
        return reply(conn, m, "ok", {});
      }
      default:
        return reply(conn, m, "ok", {});
    }
  }

  function closeConn(conn: Conn) {
    for (const ch of [...conn.channels.values()]) leave(ch);
  }

  async function websocket(req: Request, url: URL): Promise<Response> {
    if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return Response.json({ message: "expected a WebSocket upgrade" }, { status: 400 });
    }
    const vsn = parseVsn(url.searchParams.get("vsn"));
    if (!vsn) return Response.json({ message: `unsupported vsn ${url.searchParams.get("vsn")}` }, { status: 400 });
    const apikey = url.searchParams.get("apikey") ?? req.headers.get("apikey");
    if (!apikey) return Response.json({ message: "apikey is required" }, { status: 401 });
    let apikeyClaims: Claims;
    try {
      apikeyClaims = await claimsOf(apikey);
    } catch (e) {
      return Response.json({ message: `InvalidJWTToken: ${(e as Error).message}` }, { status: 401 });
    }
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.binaryType = "arraybuffer";
    const conn: Conn = { socket, vsn, apikeyClaims, channels: new Map() };
    // One message at a time per connection, in order: a join must be done
    // before the broadcast pushed right after it is handled.
    let chain = Promise.resolve();
    socket.onmessage = (ev) => {
      chain = chain.then(async () => {
        let m: Message;
        try {
          m = decodeFrame(vsn, ev.data);
        } catch {
          socket.close(1003, "malformed frame");
          return;
        }
        try {
          await onMessage(conn, m);
        } catch (e) {
          console.error(`realtime: ${m.event} on ${m.topic} failed: ${(e as Error).message}`);
          if (m.ref) reply(conn, m, "error", { reason: "internal error" });
        }
      });
    };
    socket.onclose = () => closeConn(conn);
    socket.onerror = () => {};
    return response;
  }

  // ---------------------------------------------------------------- REST broadcast

  async function restBroadcast(req: Request, url: URL): Promise<Response> {
    if (req.method === "OPTIONS") return new Response(null, { status: 204, headers: cors() });
    if (req.method !== "POST") return json(405, { message: "method not allowed" });
    const bearer = req.headers.get("authorization")?.replace(/^bearer\s+/i, "").trim();
    const token = bearer || req.headers.get("apikey");
    if (!token) return json(401, { message: "apikey or Authorization is required" });
    let claims: Claims;
    try {
      claims = await claimsOf(token);
    } catch (e) {
      return json(401, { message: `InvalidJWTToken: ${(e as Error).message}` });
    }
    let messages: { topic: string; event: string; payload: unknown; private: boolean }[];
    const one = /^\/realtime\/v1\/api\/broadcast\/([^/]+)\/events\/([^/]+)$/.exec(url.pathname);
    try {
      if (one) {
        messages = [{
          topic: decodeURIComponent(one[1]),
          event: decodeURIComponent(one[2]),
          payload: await req.json(),
          private: url.searchParams.get("private") === "true",
        }];
      } else {
        const body = await req.json();
        if (!Array.isArray(body?.messages)) throw new Error("messages must be a list");
        messages = body.messages.map((x: any) => {
          if (typeof x?.topic !== "string" || typeof x?.event !== "string") {
            throw new Error("each message needs a topic and an event");
          }
          return { topic: x.topic, event: x.event, payload: x.payload ?? {}, private: x.private === true };
        });
      }
    } catch (e) {
      return json(400, { message: `invalid body: ${(e as Error).message}` });
    }
    const writable = new Map<string, boolean>();
    for (const msg of messages) {
      if (!msg.private) continue;
      if (!writable.has(msg.topic)) writable.set(msg.topic, (await authorize(msg.topic, claims)).write);
    }
    for (const msg of messages) {
      if (msg.private && !writable.get(msg.topic)) continue; // as Supabase: refused messages are dropped
      broadcast(msg.private, msg.topic, { event: msg.event, payload: msg.payload, binary: false }, null);
    }
    return new Response(null, { status: 202, headers: cors() });
  }

  const cors = () => ({ "access-control-allow-origin": "*" });
  const json = (status: number, body: unknown) => Response.json(body, { status, headers: cors() });

  // ---------------------------------------------------------------- postgres_changes

  async function dispatch(changes: Change[]) {
    const publication = await publishedTables();
    const byTable = new Map<string, Change[]>();
    for (const c of changes) {
      if (c.schema === "realtime" && c.table === "messages") {
        if (c.action === "INSERT" && c.record && c.record.extension === "broadcast") {
          const r = c.record;
          broadcast(r.private === true, String(r.topic), {
            event: String(r.event ?? ""),
            payload: r.payload,
            binary: false,
          }, null);
        }
        continue;
      }
      const name = `${c.schema}.${c.table}`;
      if (!publication.all && !publication.tables.has(name)) continue;
      if (!byTable.has(name)) byTable.set(name, []);
      byTable.get(name)!.push(c);
    }
    for (const list of byTable.values()) await dispatchTable(list);
  }

  async function publishedTables(): Promise<{ all: boolean; tables: Set<string> }> {
    const pub = await sql`select puballtables from pg_publication where pubname = 'supabase_realtime'`;
    const rows = await sql`select schemaname, tablename from pg_publication_tables where pubname = 'supabase_realtime'`;
    return {
      all: pub[0]?.puballtables === true,
      tables: new Set(rows.map((r) => `${r.schemaname}.${r.tablename}`)),
    };
  }

  const subCovers = (s: PgSub, c: Change) =>
    s.schema === c.schema && (s.table === undefined || s.table === c.table) &&
    (s.event === "*" || s.event === c.action);

  async function dispatchTable(changes: Change[]) {
    const [schema, table] = [changes[0].schema, changes[0].table];
    const now = Date.now() / 1000;
    const candidates = [...pgChannels].filter((ch) =>
      ch.conn.socket.readyState === WebSocket.OPEN && !tokenExpired(ch, now) &&
      ch.pgSubs.some((s) => s.schema === schema && (s.table === undefined || s.table === table))
    );
    if (candidates.length === 0) return;
    const regclass = `${quoteIdent(schema)}.${quoteIdent(table)}`;

    // Distinct (role, claims): the RLS question is asked once per identity.
    const identities = new Map<string, { role: string; claims: Claims; index: number }>();
    const identityOf = new Map<Channel, number>();
    for (const ch of candidates) {
      const k = JSON.stringify(ch.claims);
      if (!identities.has(k)) {
        identities.set(k, { role: String(ch.claims.role), claims: ch.claims, index: identities.size + 1 });
      }
      identityOf.set(ch, identities.get(k)!.index);
    }
    const subscribers = [...identities.values()].map((i) => ({ role: i.role, claims: i.claims }));

    // INSERT/UPDATE: visible iff a SELECT of the row by primary key under the
    // subscriber's role and claims returns it.
    const visible = new Set<string>(); // "<identity>:<change index>"
    const pk = changes[0].pk;
    const checked: { key: Row; change: number }[] = [];
    changes.forEach((c, i) => {
      if (c.action !== "DELETE" && c.record && pk.length > 0) {
        checked.push({ key: Object.fromEntries(pk.map((k) => [k, c.record![k]])), change: i });
      }
    });
    // Without a primary key no row can be looked up again: only the service
    // role, which bypasses RLS, gets such a table's changes.
    if (pk.length === 0) {
      for (const ident of identities.values()) {
        if (ident.role !== "service_role") continue;
        changes.forEach((c, i) => c.action !== "DELETE" && visible.add(`${ident.index}:${i}`));
      }
    }
    if (checked.length > 0) {
      const rows = await sql`select subscriber, key_index from realtime.local_visible_rows(
        ${regclass}::regclass, ${pk}::text[], ${sql.json(checked.map((x) => x.key) as any)},
        ${sql.json(subscribers as any)})`;
      for (const r of rows) visible.add(`${r.subscriber}:${checked[r.key_index - 1].change}`);
    }
    // DELETE: the row is gone, so no SELECT can decide; as on Supabase, the
    // primary key alone goes to subscribers whose role may read the table.
    const mayRead = new Map<string, boolean>();
    let rls = false;
    if (changes.some((c) => c.action !== "INSERT")) {
      const roles = [...new Set(subscribers.map((s) => s.role))];
      const rows = await sql`select r.role, has_table_privilege(r.role, ${regclass}::regclass, 'select') as ok,
        (select relrowsecurity from pg_class where oid = ${regclass}::regclass) as rls
        from unnest(${roles}::text[]) r(role)`;
      for (const r of rows) {
        mayRead.set(r.role, r.ok === true);
        rls = r.rls === true;
      }
    }

    changes.forEach((c, i) => {
      const oldRecord = c.oldRecord && rls && c.pk.length > 0
        ? Object.fromEntries(c.pk.filter((k) => k in c.oldRecord!).map((k) => [k, c.oldRecord![k]]))
        : c.oldRecord;
      const data: Record<string, unknown> = {
        schema: c.schema,
        table: c.table,
        commit_timestamp: c.commitTimestamp,
        type: c.action,
        columns: c.columns,
        errors: null,
      };
      if (c.record) data.record = c.record;
      if (oldRecord) data.old_record = oldRecord;
      for (const ch of candidates) {
        const allowed = c.action === "DELETE"
          ? mayRead.get(String(ch.claims.role)) === true
          : visible.has(`${identityOf.get(ch)}:${i}`);
        if (!allowed) continue;
        const row = (c.action === "DELETE" ? oldRecord : c.record) ?? {};
        const ids = ch.pgSubs.filter((s) => subCovers(s, c) && (!s.filter || matches(s.filter, row))).map((s) => s.id);
        if (ids.length > 0) push(ch, "postgres_changes", { ids: [...new Set(ids)], data });
      }
    });
  }

  // ---------------------------------------------------------------- loops

  async function pollLoop() {
    const pollMs = config.pollMs ?? 25;
    let failures = 0;
    while (!stopped) {
      let got = 0;
      try {
        const changes = await wal.poll();
        got = changes.length;
        if (got > 0) await dispatch(changes);
        failures = 0;
      } catch (e) {
        if (stopped) break;
        failures++;
        // Bounded noise: the first failure and every 100th after it.
        if (failures === 1 || failures % 100 === 0) console.error(`realtime: WAL poll failed: ${(e as Error).message}`);
      }
      if (got === 0) {
        await new Promise((r) => setTimeout(r, failures > 0 ? Math.min(5000, pollMs * 2 ** failures) : pollMs));
      }
    }
  }

  // Supabase drops realtime.messages partitions after a few days; locally,
  // delivered messages older than an hour go, so the table stays small.
  const cleanup = setInterval(() => {
    sql`delete from realtime.messages where inserted_at < now() - interval '1 hour'`.catch(() => {});
  }, 60_000);

  const loop = (async () => {
    try {
      await wal.start();
    } catch (e) {
      console.error(`realtime: cannot create replication slot ${config.slot}: ${(e as Error).message}`);
    }
    await pollLoop();
  })();

  return {
    /** Handles /realtime/v1/*, or null for paths it does not own. */
    handle(req: Request): Promise<Response> | null {
      const url = new URL(req.url);
      if (url.pathname === "/realtime/v1/websocket") return websocket(req, url);
      if (url.pathname === "/realtime/v1/api/broadcast" || url.pathname.startsWith("/realtime/v1/api/broadcast/")) {
        return restBroadcast(req, url);
      }
      return null;
    },
    async stop() {
      stopped = true;
      clearInterval(cleanup);
      await loop.catch(() => {});
      await wal.stop().catch(() => {});
      await sql.end({ timeout: 2 }).catch(() => {});
    },
  };
}

function quoteIdent(s: string): string {
  return `"${s.replace(/"/g, '""')}"`;
}
