// Stop and resume together: a stop sent from another request ends the
// upstream call and keeps the partial answer; a client that lost its
// connection reconnects with Last-Event-ID and gets exactly the rest.
import { assertEquals } from "../support/assert.ts";
import { assertEnvelope, callFunction, eventually } from "../support/stack.ts";
import { FN, messageRow, newUser, openStream, parseSse, requestsTo, tag, text, usageRow } from "./_lib.ts";
import { stack } from "../support/stack.ts";

Deno.test("stop mid-stream aborts the upstream call and keeps the partial answer", async () => {
  const user = await newUser();
  const t = tag();
  const s = await openStream(user, { message: `Hi [fake hang_after=2 delay=10 tag=${t}]`, model: "gpt-4o-mini" });
  assertEquals(s.response.status, 200);
  await s.until((ev) => ev.filter((e) => e.event === "delta").length === 2);
  const streamId = s.events[0].data.stream_id;
  const r = await fetch(stack.functionUrl(FN) + "/stop", {
    method: "POST",
    headers: { apikey: stack.anonKey, authorization: `Bearer ${user.token}`, "content-type": "application/json" },
    body: JSON.stringify({ stream_id: streamId }),
  });
  assertEquals(r.status, 200, await r.clone().text());
  assertEquals((await r.json()).data.status, "stopping");
  const events = await s.until((ev) => ev.some((e) => e.event === "stopped"), 10_000);
  await s.disconnect();
  assertEquals(events.map((e) => e.event), ["start", "delta", "delta", "stopped"]);
  const msg = await messageRow(events[0].data.message_id);
  assertEquals([msg.status, msg.content], ["stopped", "w1 w2 "]);
  // The fake saw its client go away: the upstream fetch was aborted.
  await eventually("the upstream request to be aborted", async () => {
    const [req] = await requestsTo("openai", t);
    return req?.aborted ? true : undefined;
  }, { timeoutMs: 5000 });
  // No usage arrived before the stop: the reservation is charged.
  const row = await usageRow(events[0].data.message_id);
  assertEquals([row.usage_source, row.cost_usd], ["reservation", row.reserved_usd]);
});

Deno.test("stopping another user's stream is a 404 and the stream runs on", async () => {
  const owner = await newUser();
  const other = await newUser();
  const s = await openStream(owner, { message: "Hi [fake chunks=6 delay=40]", model: "gpt-4o-mini" });
  await s.until((ev) => ev.length >= 1);
  const r = await fetch(stack.functionUrl(FN) + "/stop", {
    method: "POST",
    headers: { apikey: stack.anonKey, authorization: `Bearer ${other.token}`, "content-type": "application/json" },
    body: JSON.stringify({ stream_id: s.events[0].data.stream_id }),
  });
  assertEquals(r.status, 404);
  assertEnvelope(await r.json(), "stream_not_found");
  const events = await s.until((ev) => ev.some((e) => ["done", "stopped", "error"].includes(e.event)));
  await s.disconnect();
  assertEquals(events.at(-1)!.event, "done");
});

Deno.test("a client that lost its connection resumes with Last-Event-ID and receives exactly the missing events", async () => {
  const user = await newUser();
  const s = await openStream(user, { message: "Hi [fake chunks=12 delay=40]", model: "claude-3-5-haiku-latest" });
  await s.until((ev) => ev.length >= 4);
  const seen = s.events.slice(0, 4);
  const streamId = seen[0].data.stream_id;
  await s.disconnect();
  const last = seen.at(-1)!.id!;
  const r = await fetch(`${stack.functionUrl(FN)}?stream_id=${streamId}`, {
    headers: { apikey: stack.anonKey, authorization: `Bearer ${user.token}`, "last-event-id": last },
  });
  assertEquals(r.status, 200);
  const rest = parseSse(await r.text());
  const ids = rest.map((e) => Number(e.id));
  // Consecutive from the one after Last-Event-ID to the end; nothing repeated, nothing lost.
  assertEquals(ids, Array.from({ length: ids.length }, (_, i) => Number(last) + 1 + i));
  assertEquals(rest.at(-1)!.event, "done");
  const all = [...seen, ...rest];
  assertEquals(text(all), Array.from({ length: 12 }, (_, i) => `w${i + 1} `).join(""));
  const msg = await messageRow(seen[0].data.message_id);
  assertEquals([msg.status, msg.content], ["complete", text(all)]);
  // Resuming a finished stream from the start replays all of it.
  const again = parseSse(await (await fetch(`${stack.functionUrl(FN)}?stream_id=${streamId}&last_event_id=0`, {
    headers: { apikey: stack.anonKey, authorization: `Bearer ${user.token}` },
  })).text());
  assertEquals(again.map((e) => e.id), all.map((e) => e.id));
});

Deno.test("stop and resume together: a stopped stream resumes to its stopped event", async () => {
  const user = await newUser();
  const s = await openStream(user, { message: "Hi [fake hang_after=3 delay=10]", model: "mistral-small-latest" });
  await s.until((ev) => ev.filter((e) => e.event === "delta").length === 3);
  const streamId = s.events[0].data.stream_id;
  await s.disconnect();
  const stop = await fetch(stack.functionUrl(FN) + "/stop", {
    method: "POST",
    headers: { apikey: stack.anonKey, authorization: `Bearer ${user.token}`, "content-type": "application/json" },
    body: JSON.stringify({ stream_id: streamId }),
  });
  assertEquals(stop.status, 200);
  await stop.body?.cancel();
  const r = await fetch(`${stack.functionUrl(FN)}?stream_id=${streamId}`, {
    headers: { apikey: stack.anonKey, authorization: `Bearer ${user.token}`, "last-event-id": "4" },
  });
  const rest = parseSse(await r.text());
  assertEquals(rest.map((e) => e.event), ["stopped"]);
  assertEquals(rest[0].id, "5");
});

Deno.test("resuming another user's stream, or with a bad id, is refused", async () => {
  const owner = await newUser();
  const other = await newUser();
  const r = await callFunction(FN, { method: "POST", token: owner.token, body: { message: "Hi", model: "gpt-4o-mini", stream: true } });
  const streamId = parseSse(r.body)[0].data.stream_id;
  const theirs = await callFunction(FN, { method: "GET", token: other.token, query: `stream_id=${streamId}` });
  assertEquals(theirs.status, 404);
  assertEnvelope(theirs.body, "stream_not_found");
  const bad = await callFunction(FN, { method: "GET", token: owner.token, query: `stream_id=${streamId}`, headers: { "last-event-id": "x1" } });
  assertEquals(bad.status, 400);
  const notUuid = await callFunction(FN, { method: "GET", token: owner.token, query: "stream_id=abc" });
  assertEquals(notUuid.status, 422);
});
