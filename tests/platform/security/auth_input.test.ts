// Hostile input and hostile tokens against the running stack: a NUL in any
// string field (body or query), a signed token whose subject is not a user id,
// a token for another audience or issuer, a user token dressed up as the
// service role, and forged X-Forwarded-For values. Each is a 4xx envelope with
// its own code, and nothing is written.
import { assert, assertEquals } from "../../support/assert.ts";
import {
  assertEnvelope,
  callFunction,
  createUser,
  type FunctionAnswer,
  signJwt,
  type Sql,
  stack,
  withDb,
} from "../../support/stack.ts";

function expectField(r: FunctionAnswer, field: string, code: string) {
  assertEquals(r.status, 422, JSON.stringify(r.body));
  assertEnvelope(r.body, "validation_failed");
  const fields = r.body.error.details?.fields ?? [];
  assert(
    fields.some((f: any) => f.field === field && f.code === code),
    `expected ${field}:${code} in ${JSON.stringify(fields)}`,
  );
}

function expect401(r: FunctionAnswer, code: string) {
  assertEquals(r.status, 401, JSON.stringify(r.body));
  assertEnvelope(r.body, code);
  assert(typeof r.body.request_id === "string" && r.body.request_id.length > 0);
}

/** Rows anything here could have written: this session's and this user's, and every job. */
async function footprint(sql: Sql, userId: string, sessionId: string) {
  const [row] = await sql`
    select (select count(*) from public.chat_sessions where id = ${sessionId} or owner_id = ${userId})::int as sessions,
           (select count(*) from public.chat_messages where session_id = ${sessionId})::int as messages,
           (select count(*) from public.chat_jobs where session_id = ${sessionId})::int as chat_jobs,
           (select count(*) from public.jobs where payload->>'session_id' = ${sessionId})::int as jobs`;
  return row;
}

/** A user token as Supabase Auth issues it, with `overrides` applied (undefined removes a claim). */
async function tokenWith(userId: string, overrides: Record<string, unknown>): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = {
    iss: `${stack.url.replace(/\/+$/, "")}/auth/v1`,
    sub: userId,
    aud: "authenticated",
    role: "authenticated",
    iat: now - 5,
    exp: now + 3600,
  };
  for (const [k, v] of Object.entries(overrides)) {
    if (v === undefined) delete claims[k];
    else claims[k] = v;
  }
  return await signJwt(claims);
}

Deno.test("a NUL in any string field is a 422 naming the field, before SQL sees it", async () => {
  await withDb(async (sql) => {
    const user = await createUser(sql);
    const session = `e2e-nul-${crypto.randomUUID()}`;
    const before = await footprint(sql, user.id, session);

    expectField(
      await callFunction("chat-submit", { token: user.token, body: { session_id: `${session}\u0000`, message: "hi" } }),
      "session_id",
      "contains_nul",
    );
    expectField(
      await callFunction("chat-submit", { token: user.token, body: { session_id: session, message: "a\u0000b" } }),
      "message",
      "contains_nul",
    );
    expectField(
      await callFunction("chat-submit", {
        token: user.token,
        body: { session_id: session, message: "hi", field_id: "\u0000" },
      }),
      "field_id",
      "contains_nul",
    );
    expectField(
      await callFunction("chat-status", { method: "GET", token: user.token, query: "session_id=%00" }),
      "session_id",
      "contains_nul",
    );
    expectField(
      await callFunction("chat-status", { token: user.token, body: { session_id: `x\u0000y` } }),
      "session_id",
      "contains_nul",
    );
    expectField(
      await callFunction("chat-process", { token: stack.serviceKey, body: { worker_id: "w\u0000" } }),
      "worker_id",
      "contains_nul",
    );
    expectField(
      await callFunction("queue-worker", { token: stack.serviceKey, body: { worker_id: "\u0000" } }),
      "worker_id",
      "contains_nul",
    );

    assertEquals(await footprint(sql, user.id, session), before);
  });
});

Deno.test("signed tokens with a bad subject, audience or issuer are 401s with their own codes", async () => {
  await withDb(async (sql) => {
    const user = await createUser(sql);
    const session = `e2e-tok-${crypto.randomUUID()}`;
    const body = { session_id: session, message: "Is this stored?" };
    const before = await footprint(sql, user.id, session);
    const submit = async (token: string) => await callFunction("chat-submit", { token, body });

    expect401(await submit(await tokenWith(user.id, { sub: "not-a-uuid" })), "token_bad_subject");
    expect401(await submit(await tokenWith(user.id, { sub: "a".repeat(10_000) })), "token_bad_subject");
    expect401(await submit(await tokenWith(user.id, { aud: "some-other-service" })), "token_bad_audience");
    expect401(await submit(await tokenWith(user.id, { aud: undefined })), "token_bad_audience");
    expect401(
      await submit(await tokenWith(user.id, { iss: "https://someone-else.supabase.co/auth/v1" })),
      "token_bad_issuer",
    );
    expect401(await submit(await tokenWith(user.id, { iss: undefined })), "token_bad_issuer");
    // The same token with the right claims is accepted: the refusals above are about the claims.
    const ok = await submit(await tokenWith(user.id, {}));
    assertEquals(ok.status, 200, JSON.stringify(ok.body));

    const after = await footprint(sql, user.id, session);
    assertEquals(after.messages, before.messages + 1, "only the well-formed token's question was stored");
    assertEquals(after.jobs, before.jobs + 1);
  });
});

Deno.test("a user-shaped token claiming service_role is not the service role", async () => {
  await withDb(async (sql) => {
    const user = await createUser(sql);
    const [{ n: jobsBefore }] = await sql`select count(*)::int as n from public.jobs where status = 'processing'`;
    const disguised = await tokenWith(user.id, { role: "service_role" });
    expect401(await callFunction("chat-process", { token: disguised, body: {} }), "token_bad_audience");
    const withSub = await signJwt({
      iss: "supabase-demo",
      role: "service_role",
      sub: user.id,
      iat: Math.floor(Date.now() / 1000),
      exp: Math.floor(Date.now() / 1000) + 600,
    });
    expect401(await callFunction("queue-worker", { token: withSub, body: {} }), "token_bad_subject");
    const [{ n: jobsAfter }] = await sql`select count(*)::int as n from public.jobs where status = 'processing'`;
    assert(jobsAfter <= jobsBefore, "no job was claimed");
  });
});

Deno.test("forged X-Forwarded-For values do not escape the per-IP limit", async () => {
  // health is limited per client IP (120 requests, 2 per second). A client
  // sending a fresh X-Forwarded-For each time must still hit the limit.
  let limited = 0;
  for (let i = 0; i < 200 && limited === 0; i++) {
    const r = await fetch(stack.functionUrl("health"), {
      headers: { apikey: stack.anonKey, "x-forwarded-for": `198.51.${i >> 8}.${i & 255}` },
    });
    await r.body?.cancel();
    if (r.status === 429) limited++;
  }
  assert(limited > 0, "200 requests with 200 forged X-Forwarded-For values were never limited");
});
