// The wire format against realtime-js's own serializer (the one supabase-js
// 2.119.1 ships), and a raw 1.0.0 WebSocket session against the stack.
import { RealtimeClient } from "@supabase/supabase-js";
import { assert, assertEquals } from "../../support/assert.ts";
import { decodeFrame, encodeBroadcast, encodeMessage } from "../../../scripts/local/realtime/protocol.ts";
import { matches, parseFilter } from "../../../scripts/local/realtime/filters.ts";
import { stack } from "./_lib.ts";

// realtime-js's own 2.0.0 serializer, from a client that never connects.
const jsSerializer = (new RealtimeClient("ws://127.0.0.1:9/realtime/v1", { params: { apikey: "unused" } }) as any)
  .serializer;
const jsEncode = (msg: unknown) => new Promise<any>((r) => jsSerializer.encode(msg as any, r));
const jsDecode = (raw: unknown) => new Promise<any>((r) => jsSerializer.decode(raw as any, r));

Deno.test("protocol: a binary broadcast push from realtime-js decodes as the broadcast it carries", async () => {
  const frame = await jsEncode({
    join_ref: "3",
    ref: "7",
    topic: "realtime:room-é",
    event: "broadcast",
    payload: { type: "broadcast", event: "say ✓", payload: { text: "héllo" } },
  });
  assert(frame instanceof ArrayBuffer, "realtime-js sends a binary frame for broadcasts");
  const m = decodeFrame("2.0.0", frame);
  assertEquals(m, {
    join_ref: "3",
    ref: "7",
    topic: "realtime:room-é",
    event: "broadcast",
    payload: { type: "broadcast", event: "say ✓", payload: { text: "héllo" }, binary: false },
  });
});

Deno.test("protocol: the server's binary broadcast decodes in realtime-js to type, event and payload", async () => {
  const frame = encodeBroadcast("2.0.0", "realtime:room-é", { event: "say ✓", payload: { n: 1 }, binary: false });
  assert(frame instanceof Uint8Array);
  const m = await jsDecode(frame.buffer);
  assertEquals(m, {
    join_ref: null,
    ref: null,
    topic: "realtime:room-é",
    event: "broadcast",
    payload: { type: "broadcast", event: "say ✓", payload: { n: 1 } },
  });
  // Raw bytes stay bytes.
  const bytes = encodeBroadcast("2.0.0", "realtime:b", {
    event: "blob",
    payload: new Uint8Array([1, 2, 3]).buffer,
    binary: true,
  });
  const b = await jsDecode((bytes as Uint8Array).buffer);
  assertEquals([...new Uint8Array(b.payload.payload)], [1, 2, 3]);
  // 1.0.0 has no binary form: nothing is sent rather than something wrong.
  assertEquals(
    encodeBroadcast("1.0.0", "realtime:b", { event: "blob", payload: new ArrayBuffer(1), binary: true }),
    null,
  );
});

Deno.test("protocol: text frames are arrays in 2.0.0 and objects in 1.0.0", async () => {
  const msg = {
    join_ref: "1",
    ref: "2",
    topic: "realtime:x",
    event: "phx_reply",
    payload: { status: "ok", response: {} },
  };
  assertEquals(await jsDecode(encodeMessage("2.0.0", msg)), msg);
  assertEquals(JSON.parse(encodeMessage("1.0.0", msg)), msg);
  assertEquals(decodeFrame("2.0.0", JSON.stringify(["1", "2", "realtime:x", "phx_join", {}])).event, "phx_join");
  assertEquals(decodeFrame("1.0.0", JSON.stringify(msg)).ref, "2");
});

Deno.test("filters: each operator compares numbers as numbers and text as text", () => {
  const row = { n: 10, name: "bob", id: "b1f0" };
  const check = (f: string) => matches(parseFilter(f), row);
  assertEquals(
    ["n=eq.10", "n=neq.10", "n=lt.9", "n=lte.10", "n=gt.9", "n=gte.11", "n=in.(1,10)", 'name=in.("al,ice",bob)'].map(
      check,
    ),
    [true, false, false, true, true, false, true, true],
  );
  assertEquals(check("name=eq.bob"), true);
  assertEquals(check("missing=eq.1"), false);
  assertEquals(parseFilter('name=in.("a,b",c)').values, ["a,b", "c"]);
  for (const bad of ["n", "n=like.x", "n=in.1,2"]) {
    let threw = false;
    try {
      parseFilter(bad);
    } catch {
      threw = true;
    }
    assert(threw, `${bad} was accepted`);
  }
});

Deno.test({
  name:
    "protocol: a raw 1.0.0 session gets heartbeat replies, a join reply with subscription ids, and the system message",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const url = `${stack.url.replace(/^http/, "ws")}/realtime/v1/websocket?apikey=${stack.anonKey}&vsn=1.0.0`;
    const ws = new WebSocket(url);
    const got: any[] = [];
    ws.onmessage = (e) => got.push(JSON.parse(e.data));
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    });
    try {
      ws.send(JSON.stringify({ topic: "phoenix", event: "heartbeat", payload: {}, ref: "1", join_ref: null }));
      ws.send(JSON.stringify({
        topic: "realtime:raw",
        event: "phx_join",
        ref: "2",
        join_ref: "2",
        payload: { config: { postgres_changes: [{ event: "INSERT", schema: "public", table: "nothing_here" }] } },
      }));
      const end = Date.now() + 3000;
      while (got.length < 3 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
      assertEquals(got[0], {
        join_ref: null,
        ref: "1",
        topic: "phoenix",
        event: "phx_reply",
        payload: { status: "ok", response: {} },
      });
      assertEquals(got[1].event, "phx_reply");
      assertEquals(got[1].payload.status, "ok");
      const [sub] = got[1].payload.response.postgres_changes;
      assertEquals([sub.event, sub.schema, sub.table, typeof sub.id], ["INSERT", "public", "nothing_here", "number"]);
      assertEquals(got[2].event, "system");
      assertEquals(got[2].payload.extension, "postgres_changes");
      assertEquals(got[2].payload.status, "ok");
    } finally {
      ws.close();
    }
  },
});
