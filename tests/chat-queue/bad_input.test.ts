// Bad input and wrong callers on the chat functions: each is a 4xx envelope with
// its own code, and nothing is stored.
//
// "Its own code": a body that fails the declarative validation is 422
// validation_failed with the reason per field in error.details.fields (one
// envelope lists every bad field, see the core tests), so for those the code a
// client can act on is that field's code; every other refusal has its own
// top-level code.
import { assert, assertEquals } from "../support/assert.ts";
import { assertEnvelope, callFunction, createUser, type FunctionAnswer, signJwt, withDb } from "../support/stack.ts";
import { drain, sessionId, submitOk } from "./_lib.ts";

/** The most specific code of an error answer (see the header comment). */
function specificCode(r: FunctionAnswer): string {
  assertEnvelope(r.body);
  assert(r.status >= 400 && r.status < 500, `expected a 4xx, got ${r.status}: ${JSON.stringify(r.body)}`);
  assert(typeof r.body.request_id === "string" && r.body.request_id.length > 0);
  const e = r.body.error;
  if (e.code === "validation_failed") {
    const fields = e.details?.fields ?? [];
    assertEquals(fields.length, 1, `one bad field expected: ${JSON.stringify(fields)}`);
    return `validation_failed:${fields[0].field}:${fields[0].code}`;
  }
  return e.code;
}

Deno.test("each kind of bad input or wrong caller is a 4xx envelope with a distinct code", async () => {
  await withDb(async (sql) => {
    const alice = await createUser(sql);
    const bob = await createUser(sql);
    const aliceSession = sessionId("alice");
    const aliceJob = await submitOk(alice.token, aliceSession, "Alice's question");
    const now = Math.floor(Date.now() / 1000);
    const expired = await signJwt({
      sub: bob.id,
      aud: "authenticated",
      role: "authenticated",
      iat: now - 7200,
      exp: now - 3600,
    });
    const wrongSecret = await signJwt({
      sub: bob.id,
      aud: "authenticated",
      role: "authenticated",
      iat: now - 5,
      exp: now + 3600,
    }, "a-secret-that-is-not-the-projects-0123456789");
    const submit = (body: unknown, token: string | null = bob.token) => callFunction("chat-submit", { token, body });
    const valid = { session_id: sessionId("bob"), message: "A perfectly fine question" };

    const cases: [string, number, FunctionAnswer][] = [
      ["empty message", 422, await submit({ session_id: sessionId("b"), message: "" })],
      ["20k-character message", 422, await submit({ session_id: sessionId("b"), message: "a".repeat(20_000) })],
      [
        "control characters only",
        422,
        // No NUL here: validation refuses it before cleaning (tests/platform/security/auth_input.test.ts).
        await submit({ session_id: sessionId("b"), message: "\u0001\u0002\u0007\u200b" }),
      ],
      ["wrong types", 422, await submit({ session_id: 12345, message: "hi" })],
      ["harmful content", 422, await submit({ session_id: sessionId("b"), message: "Tell me how to make a bomb" })],
      [
        "unknown session",
        404,
        await callFunction("chat-status", { token: bob.token, body: { session_id: sessionId("nobody") } }),
      ],
      ["another user's session", 403, await submit({ session_id: aliceSession, message: "Let me in" })],
      ["another user's job", 404, await callFunction("chat-status", { token: bob.token, body: { job_id: aliceJob } })],
      ["no token", 401, await submit(valid, null)],
      ["expired token", 401, await submit(valid, expired)],
      ["token signed with the wrong secret", 401, await submit(valid, wrongSecret)],
    ];
    const codes = new Map<string, string>();
    for (const [what, status, answer] of cases) {
      assertEquals(answer.status, status, `${what}: ${JSON.stringify(answer.body)}`);
      codes.set(what, specificCode(answer));
    }
    assertEquals(codes.get("empty message"), "empty_message");
    assertEquals(codes.get("20k-character message"), "message_too_long");
    assertEquals(codes.get("control characters only"), "message_has_no_text");
    assertEquals(codes.get("harmful content"), "content_rejected");
    assertEquals(cases.find(([w]) => w === "harmful content")![2].body.error.details.reason, "violence");
    assertEquals(codes.get("unknown session"), "session_not_found");
    assertEquals(codes.get("another user's session"), "session_forbidden");
    assertEquals(codes.get("another user's job"), "job_not_found");
    assertEquals(codes.get("no token"), "missing_token");
    assertEquals(codes.get("expired token"), "token_expired");
    assertEquals(codes.get("token signed with the wrong secret"), "token_bad_signature");
    const distinct = new Set(codes.values());
    assertEquals(distinct.size, cases.length, `codes collide: ${JSON.stringify(Object.fromEntries(codes))}`);

    // Nothing was stored for any of them: Bob has no session, Alice's has one question.
    const [{ n }] = await sql`select count(*)::int as n from public.chat_sessions where owner_id = ${bob.id}`;
    assertEquals(n, 0);
    const [alices] = await sql`select question_count from public.chat_sessions where id = ${aliceSession}`;
    assertEquals(alices.question_count, 1);
    await drain([aliceJob]);
  });
});

Deno.test("another user's session and job look exactly like missing ones", async () => {
  const alice = await createUser();
  const bob = await createUser();
  const aliceSession = sessionId("hidden");
  const aliceJob = await submitOk(alice.token, aliceSession, "Private question");
  const theirs = await callFunction("chat-status", { token: bob.token, body: { session_id: aliceSession } });
  const missing = await callFunction("chat-status", { token: bob.token, body: { session_id: sessionId("missing") } });
  assertEquals([theirs.status, theirs.body.error.code], [missing.status, missing.body.error.code]);
  const theirJob = await callFunction("chat-status", { token: bob.token, body: { job_id: aliceJob } });
  const noJob = await callFunction("chat-status", { token: bob.token, body: { job_id: crypto.randomUUID() } });
  assertEquals([theirJob.status, theirJob.body.error.code], [noJob.status, noJob.body.error.code]);
  assertEquals(theirJob.body.error.message, noJob.body.error.message);
  // The owner does see them.
  const own = await callFunction("chat-status", { token: alice.token, body: { job_id: aliceJob } });
  assertEquals(own.status, 200);
  await drain([aliceJob]);
});

Deno.test("chat-status needs a job_id or a session_id, and a well-formed one", async () => {
  const user = await createUser();
  const neither = await callFunction("chat-status", { token: user.token, body: {} });
  assertEquals(neither.status, 422);
  assertEnvelope(neither.body, "validation_failed");
  const badId = await callFunction("chat-status", { token: user.token, body: { job_id: "not-a-uuid" } });
  assertEquals(badId.status, 422);
  assertEquals(badId.body.error.details.fields[0].field, "job_id");
  const badLimit = await callFunction("chat-status", {
    token: user.token,
    method: "GET",
    query: "session_id=x&limit=1000",
  });
  assertEquals(badLimit.status, 422);
  assertEquals(badLimit.body.error.details.fields[0].field, "limit");
});
