// Session rules and fields: a session past its maximum age, an unknown field and
// a question for another field than the session's are refused with their own
// codes; a field's system prompt and model settings are what Gemini receives.
import { assert, assertEquals } from "../support/assert.ts";
import { callFunction, createUser, withDb } from "../support/stack.ts";
import { drain, fakeGemini, questionAsked, sessionId, submitOk } from "./_lib.ts";

Deno.test("a session past its maximum age is refused with 410 session_expired", async () => {
  await withDb(async (sql) => {
    const user = await createUser(sql);
    const session = sessionId("old");
    const job = await submitOk(user.token, session, "First question, while the session is young");
    await drain([job]);
    await sql`update public.chat_sessions
                 set created_at = now() - interval '2 days', expires_at = now() - interval '1 day'
               where id = ${session}`;
    const r = await callFunction("chat-submit", {
      token: user.token,
      body: { session_id: session, message: "Still there?" },
    });
    assertEquals(r.status, 410, JSON.stringify(r.body));
    assertEquals(r.body.error.code, "session_expired");
    const [row] = await sql`select question_count from public.chat_sessions where id = ${session}`;
    assertEquals(row.question_count, 1, "the refused question is not counted");
  });
});

Deno.test("an unknown field is 404 field_not_found; another field than the session's is 409", async () => {
  await withDb(async (sql) => {
    const user = await createUser(sql);
    const unknown = await callFunction("chat-submit", {
      token: user.token,
      body: { session_id: sessionId("nofield"), message: "Hello", field_id: `no-such-field-${crypto.randomUUID()}` },
    });
    assertEquals(unknown.status, 404, JSON.stringify(unknown.body));
    assertEquals(unknown.body.error.code, "field_not_found");

    const fieldId = `e2e-field-${crypto.randomUUID().slice(0, 8)}`;
    await sql`insert into public.fields (id, name, system_prompt) values (${fieldId}, 'E2E Field', 'You teach {field_name}.')`;
    try {
      const session = sessionId("general");
      const job = await submitOk(user.token, session, "A general question");
      const mismatch = await callFunction("chat-submit", {
        token: user.token,
        body: { session_id: session, message: "Now about the other field", field_id: fieldId },
      });
      assertEquals(mismatch.status, 409, JSON.stringify(mismatch.body));
      assertEquals(mismatch.body.error.code, "session_field_mismatch");
      await drain([job]);
    } finally {
      await sql`delete from public.chat_sessions where field_id = ${fieldId}`;
      await sql`delete from public.fields where id = ${fieldId}`;
    }
  });
});

Deno.test("a field's system prompt and model settings are what Gemini receives", async () => {
  await withDb(async (sql) => {
    const user = await createUser(sql);
    const fieldId = `e2e-bio-${crypto.randomUUID().slice(0, 8)}`;
    await sql`insert into public.fields (id, name, system_prompt, model, temperature, max_output_tokens, top_p, top_k)
              values (${fieldId}, 'Cell Biology', 'You are a tutor for {field_name}. Be brief.',
                      'gemini-e2e-model', 0.25, 321, 0.5, 7)`;
    try {
      const question = `What does a ribosome do? [${crypto.randomUUID()}]`;
      const r = await callFunction("chat-submit", {
        token: user.token,
        body: { session_id: sessionId("bio"), message: question, field_id: fieldId },
      });
      assertEquals(r.status, 200, JSON.stringify(r.body));
      const done = await drain([r.body.data.job_id]);
      assertEquals(done.get(r.body.data.job_id).status, "completed");
      const sent = (await fakeGemini.requests()).filter((q) => questionAsked(q) === question);
      assertEquals(sent.length, 1);
      const body = sent[0].body as any;
      assertEquals(sent[0].model, "gemini-e2e-model");
      assertEquals(
        body.systemInstruction.parts.map((p: any) => p.text).join(""),
        "You are a tutor for Cell Biology. Be brief.",
      );
      const g = body.generationConfig;
      assertEquals(g.maxOutputTokens, 321);
      assertEquals(g.topK, 7);
      assert(Math.abs(g.temperature - 0.25) < 1e-6 && Math.abs(g.topP - 0.5) < 1e-6, JSON.stringify(g));
      // The API key travels in the header, never in the URL.
      assertEquals(sent[0].key_in_url, false);
      assert(sent[0].api_key && sent[0].api_key.length > 0);
    } finally {
      await sql`delete from public.chat_sessions where field_id = ${fieldId}`;
      await sql`delete from public.fields where id = ${fieldId}`;
    }
  });
});
