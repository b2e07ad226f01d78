// Money and secrets: concurrent requests cannot spend past a budget (the
// worst case is reserved under the budget row's lock before any call), and a
// user's own API key is used for their calls but never appears in a
// response, an error, a log line or the readable columns of its table.
import { assert, assertEquals } from "../support/assert.ts";
import { assertEnvelope, callFunction, need, stack, withDb } from "../support/stack.ts";
import { complete, FN, newUser, requestsTo, streamAll, tag } from "./_lib.ts";

Deno.test("20 concurrent completions on a budget for 5 run at most 5", async () => {
  const user = await newUser(1000);
  const t = tag();
  const body = (extra: string) => ({ message: `budget probe ${extra} [fake wait=1500 tag=${t}]`, model: "gpt-4o", max_tokens: 1000 });
  // One call fixes the reservation of this request shape (same length every time).
  const probe = await complete(user, body("x0"));
  assertEquals(probe.status, 200, JSON.stringify(probe.body));
  const reserved = Number(probe.body.data.reserved_usd);
  await withDb((sql) =>
    sql`update ai_budgets set spend_limit_usd = spent_usd + ${(reserved * 5.5).toFixed(10)}::numeric where user_id = ${user.id}`
  );
  const before = (await requestsTo("openai", t)).length;
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => complete(user, body(`x${(i % 9) + 1}`))));
  const ok = answers.filter((a) => a.status === 200).length;
  const refused = answers.filter((a) => a.status === 402);
  assert(ok <= 5, `${ok} ran`);
  assert(ok >= 1, "none ran");
  assertEquals(ok + refused.length, 20, JSON.stringify(answers.map((a) => a.status)));
  for (const r of refused) assertEnvelope(r.body, "budget_exceeded");
  assert((await requestsTo("openai", t)).length - before <= 5, "more than 5 calls reached the provider");
  const [b] = await withDb((sql) => sql`select spent_usd <= spend_limit_usd as within, reserved_usd::text as r from ai_budgets where user_id = ${user.id}`);
  assertEquals([b.within, Number(b.r)], [true, 0]);
});

Deno.test("a user's API key is used for their calls and never appears in a response, error, log line or readable column", async () => {
  const user = await newUser();
  const secret = `sk-user-${crypto.randomUUID().replaceAll("-", "")}`;
  const seen: string[] = [];
  const r = await fetch(stack.functionUrl(FN) + "/keys", {
    method: "PUT",
    headers: { apikey: stack.anonKey, authorization: `Bearer ${user.token}`, "content-type": "application/json" },
    body: JSON.stringify({ provider: "openai", api_key: secret }),
  });
  const stored = await r.json();
  seen.push(JSON.stringify(stored));
  assertEquals(r.status, 200, JSON.stringify(stored));
  assertEquals(stored.data.stored, true);

  const t = tag();
  const a = await complete(user, { message: `hi [fake tag=${t}]`, model: "gpt-4o-mini" });
  seen.push(JSON.stringify(a.body));
  assertEquals(a.status, 200);
  const [req] = await requestsTo("openai", t);
  assertEquals(req.key, secret, "the user's own key replaces the platform's");
  const s = await streamAll(user, { message: "hi", model: "gpt-4o-mini" });
  seen.push(JSON.stringify(s.events));

  // A key the provider refuses: the error says so without the key.
  const bad = `bad-${secret}`;
  const r2 = await fetch(stack.functionUrl(FN) + "/keys", {
    method: "PUT",
    headers: { apikey: stack.anonKey, authorization: `Bearer ${user.token}`, "content-type": "application/json" },
    body: JSON.stringify({ provider: "openai", api_key: bad }),
  });
  seen.push(await r2.text());
  const refused = await complete(user, { message: "hi", model: "gpt-4o-mini" });
  seen.push(JSON.stringify(refused.body));
  assertEquals(refused.status, 502);
  assertEnvelope(refused.body, "provider_auth_failed");
  const refusedStream = await streamAll(user, { message: "hi", model: "gpt-4o-mini" });
  seen.push(JSON.stringify(refusedStream.events));
  assertEquals(refusedStream.events.at(-1)!.event, "error");

  // Over REST the owner sees which providers have a key, never the sealed key.
  const rest = await fetch(`${stack.url}/rest/v1/ai_user_api_keys?select=*`, {
    headers: { apikey: stack.anonKey, authorization: `Bearer ${user.token}` },
  });
  seen.push(await rest.text());
  assert(rest.status >= 400, "select=* must be refused (no right on nonce/ciphertext)");
  const cols = await fetch(`${stack.url}/rest/v1/ai_user_api_keys?select=provider,key_id`, {
    headers: { apikey: stack.anonKey, authorization: `Bearer ${user.token}` },
  });
  assertEquals(await cols.json(), [{ provider: "openai", key_id: (stored.data.key_id) }]);

  const [row] = await withDb((sql) => sql`select ciphertext, nonce from ai_user_api_keys where user_id = ${user.id}`);
  seen.push(row.ciphertext, row.nonce);
  const logs = await Deno.readTextFile(`${need("EDGEWORKS_STATE_DIR")}/logs/gateway.log`);
  for (const text of [...seen, logs]) {
    assert(!text.includes(secret.slice(8)), `the key leaked: ${text.slice(0, 300)}`);
  }
});

Deno.test("keys: bad input is refused, another user's key is never used, and delete removes it", async () => {
  const user = await newUser();
  const other = await newUser();
  const put = (token: string, body: unknown) =>
    fetch(stack.functionUrl(FN) + "/keys", {
      method: "PUT",
      headers: { apikey: stack.anonKey, authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    }).then(async (r) => ({ status: r.status, body: await r.json() }));
  assertEquals((await put(user.token, { provider: "openai", api_key: "short" })).status, 422);
  assertEquals((await put(user.token, { provider: "cohere", api_key: "sk-1234567890" })).status, 422);
  assertEquals((await put(user.token, { provider: "openai", api_key: "sk-12345678\r\nx: y" })).status, 422);
  assertEquals((await put(user.token, { provider: "anthropic", api_key: "sk-ant-owner-key-1" })).status, 200);
  const t = tag();
  await complete(other, { message: `hi [fake tag=${t}]`, model: "claude-3-5-haiku-latest" });
  assertEquals((await requestsTo("anthropic", t))[0].key, "platform-anthropic-key");
  const del = await fetch(stack.functionUrl(FN) + "/keys?provider=anthropic", {
    method: "DELETE",
    headers: { apikey: stack.anonKey, authorization: `Bearer ${user.token}` },
  });
  assertEquals(del.status, 200);
  await del.body?.cancel();
  const [n] = await withDb((sql) => sql`select count(*)::int as n from ai_user_api_keys where user_id = ${user.id}`);
  assertEquals(n.n, 0);
});
