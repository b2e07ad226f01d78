// A correctly signed, unexpired token for a user who no longer exists in
// auth.users (deleted after the token was issued): refused with its own 401,
// nothing written.
import { assertEquals } from "../../support/assert.ts";
import { assertEnvelope, callFunction, userToken, withDb } from "../../support/stack.ts";

Deno.test("chat-submit with a deleted user's token is 401 user_not_found and writes nothing", async () => {
  const ghost = crypto.randomUUID(); // never inserted into auth.users
  const token = await userToken(ghost);
  const counts = () =>
    withDb(async (sql) =>
      (await sql`select (select count(*) from public.chat_sessions)::int as s,
                        (select count(*) from public.chat_messages)::int as m,
                        (select count(*) from public.jobs)::int as j`)[0]
    );
  const before = await counts();
  const r = await callFunction("chat-submit", {
    token,
    body: { session_id: `ghost-${ghost.slice(0, 8)}`, message: "hello" },
  });
  assertEquals(r.status, 401, JSON.stringify(r.body));
  assertEnvelope(r.body, "user_not_found");
  assertEquals(await counts(), before);
});
