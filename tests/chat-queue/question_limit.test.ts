// The seed's 10 questions per session, enforced atomically: concurrent submits on
// one session can never pass the limit, and the one too many gets a clear code.
import { assert, assertEquals } from "../support/assert.ts";
import { createUser, withDb } from "../support/stack.ts";
import { drain, invoke, sessionId, userClient } from "./_lib.ts";

Deno.test("11 concurrent submits on one session: exactly 10 accepted, 1 refused with question_limit_reached", async () => {
  await withDb(async (sql) => {
    const user = await createUser(sql);
    const supabase = userClient(user.token);
    const session = sessionId("limit");
    const answers = await Promise.all(
      Array.from(
        { length: 11 },
        (_, i) =>
          invoke(supabase, "chat-submit", { body: { session_id: session, message: `Question number ${i + 1}` } }),
      ),
    );
    const statuses = answers.map((a) => a.status);
    assert(statuses.every((s) => s < 500), `a 5xx among ${statuses}`);
    const accepted = answers.filter((a) => a.status === 200);
    const refused = answers.filter((a) => a.status !== 200);
    assertEquals(accepted.length, 10, `statuses: ${statuses}`);
    assertEquals(refused.length, 1);
    assertEquals(refused[0].status, 429);
    assertEquals(refused[0].body.success, false);
    assertEquals(refused[0].body.error.code, "question_limit_reached");
    assertEquals(refused[0].body.error.details.max_questions, 10);
    assertEquals(new Set(accepted.map((a) => a.body.data.job_id)).size, 10);

    const [session_row] = await sql`select question_count from public.chat_sessions where id = ${session}`;
    assertEquals(session_row.question_count, 10);
    const [{ n }] = await sql`select count(*)::int as n from public.chat_jobs where session_id = ${session}`;
    assertEquals(n, 10);
    const [{ m }] =
      await sql`select count(*)::int as m from public.chat_messages where session_id = ${session} and role = 'user'`;
    assertEquals(m, 10, "the refused question is not stored");

    // Still refused once answers came back: the limit counts questions, not pending jobs.
    await drain(accepted.map((a) => a.body.data.job_id));
    const late = await invoke(supabase, "chat-submit", { body: { session_id: session, message: "One more?" } });
    assertEquals(late.status, 429);
    assertEquals(late.body.error.code, "question_limit_reached");
  });
});
