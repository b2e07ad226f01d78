// chat-completion through the gateway, against the fake providers scripts/test
// starts (tests/support/fake_ai_providers.ts): each provider buffered and
// streamed with exact usage and cost, fallbacks, errors after the first token,
// no-usage streams, bad input.
import { assert, assertEquals } from "../support/assert.ts";
import { assertEnvelope, callFunction, withDb } from "../support/stack.ts";
import { PROVIDERS } from "../support/fake_ai_providers.ts";
import {
  complete,
  expectedCost,
  FN,
  messageRow,
  MODELS,
  newUser,
  requestsTo,
  streamAll,
  tag,
  text,
  usageRow,
} from "./_lib.ts";

for (const provider of PROVIDERS) {
  Deno.test(`${provider}: a buffered answer is saved with the provider's usage at the model's exact price`, async () => {
    const user = await newUser();
    const t = tag();
    const r = await complete(user, {
      message: `Hi [fake chunks=4 prompt=31 completion=9 tag=${t}]`,
      model: MODELS[provider],
      provider,
      max_tokens: 200,
      temperature: 0.3,
    });
    assertEquals(r.status, 200, JSON.stringify(r.body));
    const d = r.body.data;
    assertEquals(d.content, "w1 w2 w3 w4 ");
    assertEquals(d.usage, { prompt_tokens: 31, completion_tokens: 9, total_tokens: 40 });
    assertEquals(d.usage_source, "provider");
    const cost = await expectedCost(provider, MODELS[provider], 31, 9);
    const row = await usageRow(d.message_id);
    assertEquals([row.status, row.usage_source, row.cost_usd, row.prompt_tokens, row.completion_tokens], [
      "settled",
      "provider",
      cost,
      31,
      9,
    ]);
    assertEquals(Number(d.cost_usd), Number(cost));
    const msg = await messageRow(d.message_id);
    assertEquals([msg.status, msg.content, msg.provider], ["complete", "w1 w2 w3 w4 ", provider]);
    const [req] = await requestsTo(provider, t);
    assertEquals(req.stream, false);
    assertEquals(req.key, `platform-${provider}-key`);
  });

  Deno.test(`${provider}: a streamed answer arrives as numbered events and is settled from the stream's usage`, async () => {
    const user = await newUser();
    const t = tag();
    const { status, events } = await streamAll(user, {
      message: `Hi [fake chunks=5 prompt=23 completion=7 tag=${t}]`,
      model: MODELS[provider],
      provider,
    });
    assertEquals(status, 200, JSON.stringify(events));
    assertEquals(events.map((e) => e.event), ["start", "delta", "delta", "delta", "delta", "delta", "done"]);
    assertEquals(events.map((e) => e.id), ["1", "2", "3", "4", "5", "6", "7"]);
    assertEquals(text(events), "w1 w2 w3 w4 w5 ");
    const done = events.at(-1)!.data;
    assertEquals(done.usage, { prompt_tokens: 23, completion_tokens: 7 });
    assertEquals(done.usage_source, "provider");
    const cost = await expectedCost(provider, MODELS[provider], 23, 7);
    const messageId = events[0].data.message_id;
    const row = await usageRow(messageId);
    assertEquals([row.usage_source, row.cost_usd], ["provider", cost]);
    assertEquals(Number(done.cost_usd), Number(cost));
    const msg = await messageRow(messageId);
    assertEquals([msg.status, msg.content], ["complete", "w1 w2 w3 w4 w5 "]);
    const [req] = await requestsTo(provider, t);
    assertEquals(req.stream, true);
    if (provider === "openai") assertEquals(req.body.stream_options, { include_usage: true });
    if (provider === "anthropic") assertEquals(req.headers["anthropic-version"], "2023-06-01");
    if (provider === "gemini") assert(req.path.endsWith(":streamGenerateContent?alt=sse") && !req.path.includes("key="));
  });
}

Deno.test("a stream that reports no usage is charged its reservation, never zero", async () => {
  const user = await newUser();
  const { events } = await streamAll(user, { message: "Hi [fake no_usage chunks=3]", model: "mistral-small-latest" });
  const done = events.at(-1)!;
  assertEquals(done.event, "done");
  assertEquals(done.data.usage_source, "reservation");
  const row = await usageRow(events[0].data.message_id);
  assertEquals(row.usage_source, "reservation");
  assertEquals(row.cost_usd, row.reserved_usd);
  assert(Number(row.cost_usd) > 0);
  const budget = await withDb((sql) => sql`select spent_usd::text as s, reserved_usd::text as r from ai_budgets where user_id = ${user.id}`);
  assertEquals(Number(budget[0].s), Number(row.cost_usd));
  assertEquals(Number(budget[0].r), 0);
});

Deno.test("a retryable failure before the first token falls back to the next provider", async () => {
  const user = await newUser();
  const t = tag();
  const { events } = await streamAll(user, {
    message: `Hi [fake mistral:status=429 retry_after=1 anthropic:status=529 chunks=2 tag=${t}]`,
    model: "mistral-small-latest",
    fallbacks: [{ model: "claude-3-5-haiku-latest" }, { provider: "openai", model: "gpt-4o-mini" }],
  });
  assertEquals(events.map((e) => e.event), ["start", "fallback", "fallback", "delta", "delta", "done"]);
  assertEquals(events[1].data.error.code, "provider_rate_limited");
  assertEquals(events[2].data.to, { provider: "openai", model: "gpt-4o-mini" });
  assertEquals(events.at(-1)!.data.provider, "openai");
  const row = await usageRow(events[0].data.message_id);
  assertEquals([row.provider, row.model, row.cost_usd], ["openai", "gpt-4o-mini", await expectedCost("openai", "gpt-4o-mini", 17, 2)]);
  assertEquals((await requestsTo("mistral", t)).length, 1);
  assertEquals((await requestsTo("anthropic", t)).length, 1);

  // Buffered too: the answer names the fallbacks taken.
  const r = await complete(user, { message: "Hi [fake gemini:status=503]", model: "gemini-2.0-flash", fallbacks: [{ model: "gpt-4o-mini" }] });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  assertEquals([r.body.data.provider, r.body.data.fallbacks.length], ["openai", 1]);
});

Deno.test("a failure after the first token is an error event; the partial answer is kept and nothing is spliced", async () => {
  for (const provider of PROVIDERS) {
    const user = await newUser();
    const t = tag();
    const { events } = await streamAll(user, {
      message: `Hi [fake ${provider}:fail_after=2 chunks=5 tag=${t}]`,
      model: MODELS[provider],
      fallbacks: [{ model: provider === "openai" ? "mistral-small-latest" : "gpt-4o-mini" }],
    });
    assertEquals(events.map((e) => e.event), ["start", "delta", "delta", "error"], provider);
    assertEquals(events.at(-1)!.data.partial, true);
    const messageId = events[0].data.message_id;
    const msg = await messageRow(messageId);
    assertEquals([msg.status, msg.content], ["failed", "w1 w2 "], provider);
    // The fallback was never asked: two answers are never joined.
    const fallback = provider === "openai" ? "mistral" : "openai";
    assertEquals((await requestsTo(fallback, t)).length, 0, provider);
    assertEquals((await usageRow(messageId)).usage_source, "reservation", provider);
  }
});

Deno.test("every provider failing before a token is an error with nothing charged", async () => {
  const user = await newUser();
  const r = await complete(user, { message: "Hi [fake status=500]", model: "gpt-4o-mini", fallbacks: [{ model: "claude-3-5-haiku-latest" }] });
  assertEquals(r.status, 502, JSON.stringify(r.body));
  assertEnvelope(r.body, "provider_unavailable");
  const row = await usageRow(r.body.error.details.message_id);
  assertEquals([row.usage_source, Number(row.cost_usd)], ["none", 0]);
  const rl = await complete(user, { message: "Hi [fake status=429 retry_after=7]", model: "gpt-4o-mini" });
  assertEquals(rl.status, 503);
  assertEnvelope(rl.body, "provider_rate_limited");
  assertEquals(rl.headers.get("retry-after"), "7");
});

Deno.test("bad requests are 4xx in the envelope and change nothing", async () => {
  const user = await newUser();
  const other = await newUser();
  const cases: [unknown, number, string][] = [
    [{ message: "hi" }, 422, "validation_failed"],
    [{ message: "hi", model: "llama-3" }, 422, "validation_failed"],
    [{ model: "gpt-4o" }, 422, "validation_failed"],
    [{ message: "a\u0000b", model: "gpt-4o" }, 422, "validation_failed"],
    [{ message: "hi", model: "gpt-4o", temperature: 3 }, 422, "validation_failed"],
    [{ message: "hi", model: "gpt-9-unpriced" }, 422, "validation_failed"],
    [{ message: "hi", model: "gpt-4o", max_tokens: 10_000_000 }, 422, "validation_failed"],
    ["{not json", 400, "invalid_json"],
  ];
  for (const [body, status, code] of cases) {
    const r = await callFunction(FN, { token: user.token, body });
    assertEquals(r.status, status, JSON.stringify([body, r.body]));
    assertEnvelope(r.body);
    if (status === 422) assertEquals(r.body.error.code, code);
  }
  const noToken = await callFunction(FN, { token: null, body: { message: "hi", model: "gpt-4o" } });
  assertEquals(noToken.status, 401);
  // Another user's conversation is not found, and nothing is reserved for it.
  const mine = await complete(user, { message: "hi", model: "gpt-4o-mini" });
  const theirs = await complete(other, { message: "hi", model: "gpt-4o-mini", conversation_id: mine.body.data.conversation_id });
  assertEquals(theirs.status, 404);
  assertEnvelope(theirs.body, "conversation_not_found");
  const usage = await withDb((sql) => sql`select count(*)::int as n from api_usage where user_id = ${other.id}`);
  assertEquals(usage[0].n, 0);
});

Deno.test("a conversation continues with its saved history sent before the new message", async () => {
  const user = await newUser();
  const t = tag();
  const first = await complete(user, { message: "first question", model: "claude-3-5-haiku-latest" });
  const second = await complete(user, {
    message: `second [fake tag=${t}]`,
    model: "claude-3-5-haiku-latest",
    conversation_id: first.body.data.conversation_id,
  });
  assertEquals(second.status, 200, JSON.stringify(second.body));
  const [req] = await requestsTo("anthropic", t);
  assertEquals(req.body.messages.map((m: any) => m.role), ["user", "assistant", "user"]);
  assertEquals(req.body.messages[0].content, "first question");
});

Deno.test("an exceeded budget is a 402 before any provider is called", async () => {
  const user = await newUser(0.000001);
  const t = tag();
  const r = await complete(user, { message: `hi [fake tag=${t}]`, model: "gpt-4o", max_tokens: 1000 });
  assertEquals(r.status, 402, JSON.stringify(r.body));
  assertEnvelope(r.body, "budget_exceeded");
  assertEquals((await requestsTo("openai", t)).length, 0);
});
