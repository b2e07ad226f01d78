// websocket-handler through the gateway: a room per conversation, fan-out
// through Realtime broadcast, typing, owner-only rooms, resume by sequence
// number, validation and the per-connection rate limit, presence.
import { assert, assertEquals } from "../support/assert.ts";
import { eventually, stack, type TestUser, withDb } from "../support/stack.ts";
import { newUser } from "./_lib.ts";

const FN = "websocket-handler";

async function conversation(user: TestUser): Promise<string> {
  const [c] = await withDb((sql) => sql`insert into conversations (user_id, title) values (${user.id}, 'room') returning id`);
  return c.id;
}

class Client {
  frames: any[] = [];
  private waiters: (() => void)[] = [];
  closed: Promise<CloseEvent>;
  constructor(public ws: WebSocket) {
    ws.onmessage = (e) => {
      this.frames.push(JSON.parse(String(e.data)));
      for (const w of this.waiters.splice(0)) w();
    };
    this.closed = new Promise((r) => ws.addEventListener("close", (e) => r(e)));
  }
  send(v: unknown) {
    this.ws.send(typeof v === "string" ? v : JSON.stringify(v));
  }
  async until(pred: (frames: any[]) => boolean, timeoutMs = 10_000): Promise<any[]> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.frames)) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; frames: ${JSON.stringify(this.frames)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
    return this.frames;
  }
  of(type: string) {
    return this.frames.filter((f) => f.type === type);
  }
  async close() {
    this.ws.close(1000);
    await this.closed;
  }
}

function connect(user: TestUser, query: string): Promise<Client | null> {
  const url = `${stack.url.replace(/^http/, "ws")}/functions/v1/${FN}?${query}`;
  return new Promise((resolve) => {
    const ws = new WebSocket(url, ["ai-chat", user.token]);
    const c = new Client(ws);
    ws.onopen = () => resolve(c);
    ws.onerror = () => resolve(null);
  });
}

async function joined(user: TestUser, query: string): Promise<Client> {
  const c = await connect(user, query);
  if (!c) throw new Error("the socket did not open");
  await c.until((f) => f.some((x) => x.type === "welcome"));
  return c;
}

Deno.test("two clients in a room: typing and messages fan out, in sequence", async () => {
  const user = await newUser();
  const room = await conversation(user);
  const a = await joined(user, `conversation_id=${room}`);
  const b = await joined(user, `conversation_id=${room}`);
  try {
    a.send({ type: "typing", typing: true });
    await b.until((f) => f.some((x) => x.type === "typing" && x.typing === true));
    a.send({ type: "message", content: "hello from a", client_id: "a1" });
    await a.until((f) => f.some((x) => x.type === "ack" && x.client_id === "a1"));
    const fromA = (await b.until((f) => f.some((x) => x.type === "message"))).find((x) => x.type === "message");
    assertEquals([fromA.content, fromA.seq, fromA.user_id], ["hello from a", 1, user.id]);
    b.send({ type: "message", content: "hello from b" });
    await a.until((f) => f.filter((x) => x.type === "message").length === 2);
    await b.until((f) => f.filter((x) => x.type === "message").length === 2);
    for (const c of [a, b]) {
      assertEquals(c.of("message").map((m) => [m.seq, m.content]), [[1, "hello from a"], [2, "hello from b"]]);
    }
    // A tab is not told about its own typing.
    assertEquals(a.of("typing").length, 0);
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("another user cannot join the room", async () => {
  const owner = await newUser();
  const other = await newUser();
  const room = await conversation(owner);
  assertEquals(await connect(other, `conversation_id=${room}`), null);
  const r = await fetch(`${stack.url}/functions/v1/${FN}?conversation_id=${room}`, {
    headers: { apikey: stack.anonKey, authorization: `Bearer ${other.token}`, upgrade: "websocket", connection: "upgrade", "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==" },
  });
  assertEquals(r.status, 404);
  assertEquals((await r.json()).error.code, "conversation_not_found");
  const sessions = await withDb((sql) => sql`select count(*)::int as n from user_sessions where user_id = ${other.id}`);
  assertEquals(sessions[0].n, 0);
});

Deno.test("a client reconnecting with its session token and last seq gets exactly what it missed", async () => {
  const user = await newUser();
  const room = await conversation(user);
  const a = await joined(user, `conversation_id=${room}`);
  const b = await joined(user, `conversation_id=${room}`);
  a.send({ type: "message", content: "m1" });
  await a.until((f) => f.some((x) => x.type === "message" && x.seq === 1));
  const token = a.of("welcome")[0].session_token;
  await a.close(); // the wall clock ended it, say
  for (const m of ["m2", "m3", "m4"]) {
    b.send({ type: "message", content: m });
  }
  await b.until((f) => f.filter((x) => x.type === "message").length === 4);
  const again = await joined(user, `conversation_id=${room}&session=${token}&last_seq=1`);
  try {
    await again.until((f) => f.filter((x) => x.type === "message").length >= 3);
    await new Promise((r) => setTimeout(r, 300)); // nothing more may arrive
    assertEquals(again.of("message").map((m) => [m.seq, m.content]), [[2, "m2"], [3, "m3"], [4, "m4"]]);
    assertEquals(again.of("welcome")[0].session_id, a.of("welcome")[0].session_id);
    // The token was used up: it cannot resume a second time.
    assertEquals(await connect(user, `conversation_id=${room}&session=${token}&last_seq=1`), null);
  } finally {
    await again.close();
    await b.close();
  }
});

Deno.test("bad frames get error frames, and a connection is rate limited on its own", async () => {
  const user = await newUser();
  const room = await conversation(user);
  const a = await joined(user, `conversation_id=${room}`);
  try {
    a.send("not json");
    a.send({ type: "message", content: "" });
    a.send({ type: "message", content: "x".repeat(4001) });
    a.send({ type: "shout" });
    await a.until((f) => f.filter((x) => x.type === "error").length === 4);
    assertEquals(a.of("error").map((e) => e.code), ["invalid_json", "invalid_message", "invalid_message", "unknown_type"]);
    for (let i = 0; i < 30; i++) a.send({ type: "ping" });
    await a.until((f) => f.some((x) => x.type === "error" && x.code === "rate_limited"));
    assert(a.of("pong").length <= 20, `${a.of("pong").length} pongs`);
    const stored = await withDb((sql) => sql`select count(*)::int as n from ai_room_events where conversation_id = ${room}`);
    assertEquals(stored[0].n, 0);
  } finally {
    await a.close();
  }
});

Deno.test("presence: a session is connected while open and disconnected after close", async () => {
  const user = await newUser();
  const room = await conversation(user);
  const a = await joined(user, `conversation_id=${room}`);
  const id = a.of("welcome")[0].session_id;
  const status = async () =>
    (await withDb((sql) => sql`select status from user_sessions where id = ${id}`))[0]?.status;
  assertEquals(await status(), "connected");
  await a.close();
  await eventually("the session to be marked disconnected", async () => (await status()) === "disconnected" ? true : undefined, { timeoutMs: 5000 });
});
