// Seed 000 end to end with supabase-js: a session (created by the first submit, or
// inserted by the user through PostgREST), questions submitted, the worker run, the
// answers read back with chat-status, and the prompt the fake Gemini received.
import { assert, assertEquals, assertMatch } from "../support/assert.ts";
import { createUser, stack, withDb } from "../support/stack.ts";
import {
  drain,
  fakeGemini,
  invoke,
  processUntilDone,
  questionAsked,
  serviceClient,
  sessionId,
  submitOk,
  userClient,
} from "./_lib.ts";

function assertAccepted(r: { status: number; body: any }) {
  assertEquals(r.status, 200, JSON.stringify(r.body));
  assertEquals(r.body.success, true);
  const d = r.body.data;
  assertMatch(d.job_id, /^[0-9a-f-]{36}$/);
  assertEquals(d.status, "pending");
  assert(typeof d.estimated_duration_ms === "number" && d.estimated_duration_ms > 0, JSON.stringify(d));
  assert(Number.isInteger(d.queue_position) && d.queue_position >= 1, JSON.stringify(d));
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

async function conversationFlow(createSession: "first_submit" | "postgrest_insert") {
  await fakeGemini.reset();
  await withDb(async (sql) => {
    const user = await createUser(sql);
    const supabase = userClient(user.token);
    const service = serviceClient();
    const session = sessionId(createSession);

    if (createSession === "postgrest_insert") {
      const { error } = await supabase.from("chat_sessions").insert({ id: session, field_id: "general" });
      assertEquals(error, null);
      const [row] = await sql`select owner_id, question_count from public.chat_sessions where id = ${session}`;
      assertEquals(row.owner_id, user.id, "the server sets the owner from the token");
      assertEquals(row.question_count, 0);
    }

    const q1 = `What is photosynthesis? [${crypto.randomUUID()}]`;
    const first = await invoke(supabase, "chat-submit", { body: { session_id: session, message: q1 } });
    assertAccepted(first);
    const job1 = first.body.data.job_id;
    const [owned] = await sql`select owner_id from public.chat_sessions where id = ${session}`;
    assertEquals(owned.owner_id, user.id);

    const worker = await invoke(service, "queue-worker", { body: { batch_size: 5 } });
    assertEquals(worker.status, 200, JSON.stringify(worker.body));
    assert(worker.body.data.jobs_processed >= 1, JSON.stringify(worker.body.data));
    for (
      const k of ["worker_id", "jobs_failed", "processing_time_ms", "next_job_available", "continuous", "iterations"]
    ) {
      assert(k in worker.body.data, `queue-worker answer lacks ${k}`);
    }

    const status1 = await invoke(supabase, "chat-status", { body: { job_id: job1 } });
    assertEquals(status1.status, 200, JSON.stringify(status1.body));
    const view1 = status1.body.data.job;
    assertEquals(view1.job_id, job1);
    assertEquals(view1.status, "completed");
    assertEquals(view1.retry_count, 0);
    const a1: string = view1.result.content;
    assert(a1.length > 0);
    assertMatch(view1.result.message_id, /^[0-9a-f-]{36}$/);
    assert(view1.result.created_at);
    const usage = view1.result.usage;
    assert(usage.prompt_tokens > 0 && usage.completion_tokens > 0, JSON.stringify(usage));
    assertEquals(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    assert(typeof view1.processing_time_ms === "number");
    assert(view1.created_at && view1.updated_at);

    const q2 = `And why does it need light? [${crypto.randomUUID()}]`;
    const second = await invoke(supabase, "chat-submit", { body: { session_id: session, message: q2 } });
    assertAccepted(second);
    const job2 = second.body.data.job_id;
    const done = await drain([job2]);
    assertEquals(done.get(job2).status, "completed");

    // The second prompt carries the first exchange, in order, and the field's system prompt.
    const sent = (await fakeGemini.requests()).filter((r) => questionAsked(r) === q2);
    assertEquals(sent.length, 1, "the second question reached Gemini once");
    const body = sent[0].body as any;
    const contents = body.contents.map((c: any) => ({ role: c.role, text: c.parts.map((p: any) => p.text).join("") }));
    assertEquals(contents, [
      { role: "user", text: q1 },
      { role: "model", text: a1 },
      { role: "user", text: q2 },
    ]);
    const [field] = await sql`select name, system_prompt from public.fields where id = 'general'`;
    const expected = new RegExp(
      "^" + escapeRegExp(field.system_prompt.replaceAll("{field_name}", field.name)).replace(
        escapeRegExp("{date}"),
        "\\d{4}-\\d{2}-\\d{2}",
      ) + "$",
    );
    const system = body.systemInstruction.parts.map((p: any) => p.text).join("");
    assertMatch(system, expected);

    // The session view: newest first, limited, with stats over every job.
    const bySession = await invoke(supabase, "chat-status", { body: { session_id: session, limit: 1 } });
    assertEquals(bySession.status, 200, JSON.stringify(bySession.body));
    const data = bySession.body.data;
    assertEquals(data.jobs.length, 1);
    assertEquals(data.jobs[0].job_id, job2);
    assertEquals(data.session_stats.total_jobs, 2);
    assertEquals(data.session_stats.completed_jobs, 2);
    assertEquals(data.session_stats.failed_jobs, 0);
    assert(typeof data.session_stats.average_processing_time_ms === "number");

    // The same through GET with a query string, as the seed allows.
    const viaGet = await fetch(`${stack.functionUrl("chat-status")}?session_id=${session}&limit=5`, {
      headers: { authorization: `Bearer ${user.token}`, apikey: stack.anonKey },
    });
    const getBody = await viaGet.json();
    assertEquals(viaGet.status, 200);
    assertEquals(getBody.data.jobs.map((j: any) => j.job_id), [job2, job1]);
  });
}

Deno.test("a session created by the first submit: answer, token usage, and the history in the next prompt", async () => {
  await conversationFlow("first_submit");
});

Deno.test("a session the user inserted through PostgREST takes questions the same way", async () => {
  await conversationFlow("postgrest_insert");
});

Deno.test("a pending job shows its queue position and an estimated completion", async () => {
  await withDb(async (sql) => {
    const user = await createUser(sql);
    const supabase = userClient(user.token);
    const r = await invoke(supabase, "chat-submit", {
      body: { session_id: sessionId("pending"), message: "Still waiting?" },
    });
    assertAccepted(r);
    const job = r.body.data.job_id;
    const view = await invoke(supabase, "chat-status", { body: { job_id: job } });
    assertEquals(view.status, 200);
    const j = view.body.data.job;
    assertEquals(j.status, "pending");
    assert(Number.isInteger(j.queue_position) && j.queue_position >= 1);
    assert(!Number.isNaN(Date.parse(j.estimated_completion)), JSON.stringify(j));
    assertEquals(j.result, undefined);
    await drain([job]);
  });
});

Deno.test("estimated_duration_ms comes from recent real processing times, not a constant", async () => {
  await withDb(async (sql) => {
    const user = await createUser(sql);
    // At least one recent completion, so the estimate has real samples.
    await drain([await submitOk(user.token, sessionId("estimate-warmup"), "Warm up the estimate")]);
    const timing = async () => (await sql`select private.chat_queue_timing('chat') as t`)[0].t;
    for (let attempt = 0; attempt < 5; attempt++) {
      const before = await timing();
      const r = await invoke(userClient(user.token), "chat-submit", {
        body: { session_id: sessionId("estimate"), message: "How long will this take?" },
      });
      const after = await timing();
      assertAccepted(r);
      await drain([r.body.data.job_id]);
      // A worker's heartbeat may leave the 60 s window between the two reads: measure again.
      if (JSON.stringify(before) !== JSON.stringify(after)) continue;
      assert(before.samples > 0, JSON.stringify(before));
      const avg = Number(before.avg_processing_ms);
      const ahead = r.body.data.queue_position - 1;
      const expected = Math.round(avg * Math.ceil(ahead / Math.max(1, before.active_workers)) + avg);
      assertEquals(
        r.body.data.estimated_duration_ms,
        expected,
        `timing ${JSON.stringify(before)}, position ${ahead + 1}`,
      );
      return;
    }
    throw new Error("the queue timing kept changing under the test");
  });
});

// A follow-up sent before the previous answer arrived must not be prompted with the
// previous question alone (merged into one user turn with the new one): either the
// whole earlier exchange is in the prompt, or none of it.
Deno.test({
  name: "a follow-up queued before the previous answer is prompted with that whole exchange or none of it",
  fn: async () => {
    await fakeGemini.reset();
    const user = await createUser();
    const session = sessionId("follow-up");
    const q1 = `First question [${crypto.randomUUID()}]`;
    const q2 = `Follow-up sent before the answer [${crypto.randomUUID()}]`;
    const job1 = await submitOk(user.token, session, q1);
    const job2 = await submitOk(user.token, session, q2);
    const a1 = (await processUntilDone(job1, "e2e-follow-up")).result.content;
    await processUntilDone(job2, "e2e-follow-up");
    const sent = (await fakeGemini.requests()).filter((r) => questionAsked(r) === q2);
    assertEquals(sent.length, 1);
    const contents = (sent[0].body as any).contents.map((c: any) => ({
      role: c.role,
      text: c.parts.map((p: any) => p.text).join("\n"),
    }));
    const whole = [{ role: "user", text: q1 }, { role: "model", text: a1 }, { role: "user", text: q2 }];
    const none = [{ role: "user", text: q2 }];
    assert(
      JSON.stringify(contents) === JSON.stringify(whole) || JSON.stringify(contents) === JSON.stringify(none),
      `prompt contents: ${JSON.stringify(contents)}`,
    );
  },
});
