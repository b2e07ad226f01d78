// The SQL findings of the adversarial test, replayed over /rest/v1 as an attacker
// holds it: with the anon key, with a signed-in user's token, and with no key at
// all. Each call must be refused (4xx) and the database must be exactly as before
// (row counts and the victim's rows compared before and after).
import { assert, assertEquals } from "../../support/assert.ts";
import { createUser, stack, type TestUser, withDb } from "../../support/stack.ts";

type Who = "anon key" | "user token" | "no key";

async function rest(who: Who, attacker: TestUser, method: string, path: string, body?: unknown) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (who === "anon key") {
    headers.apikey = stack.anonKey;
    headers.authorization = `Bearer ${stack.anonKey}`;
  } else if (who === "user token") {
    headers.apikey = stack.anonKey;
    headers.authorization = `Bearer ${attacker.token}`;
  }
  const r = await fetch(`${stack.url}/rest/v1/${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, text };
}

const WHO: Who[] = ["anon key", "user token", "no key"];

/** A victim with one pending chat question (created as the service would). */
async function victim() {
  const user = await createUser();
  const session = `victim-${crypto.randomUUID().slice(0, 8)}`;
  const submitted = await withDb(async (sql) => {
    const [{ r }] = await sql`select public.chat_submit(${user.id}::uuid, ${session}, 'my private question') as r`;
    return r;
  });
  return { user, session, jobId: submitted.job_id as string };
}

/** Everything an attack could change, as one comparable value. */
async function snapshot(jobId: string) {
  return await withDb(async (sql) => {
    const [counts] = await sql`
      select (select count(*) from public.chat_messages)::int as messages,
             (select count(*) from public.chat_sessions)::int as sessions,
             (select count(*) from public.chat_jobs)::int as chat_jobs,
             (select count(*) from public.jobs)::int as jobs,
             (select count(*) from public.job_events)::int as events,
             (select count(*) from public.error_logs)::int as error_logs,
             (select count(*) from public.rate_limit_buckets)::int as buckets,
             (select count(*) from public.workers)::int as workers,
             (select count(*) from public.fields)::int as fields`;
    const [job] = await sql`select status, attempts, lease_token, result, last_error, priority
                              from public.jobs where id = ${jobId}`;
    const buckets = await sql`select key, tokens, updated_ms from public.rate_limit_buckets order by key`;
    return { counts, job, buckets };
  });
}

async function refusedAndUnchanged(
  what: string,
  jobId: string,
  attacks: (who: Who) => Promise<{ status: number; text: string }[]>,
) {
  const before = await snapshot(jobId);
  for (const who of WHO) {
    for (const r of await attacks(who)) {
      assert(r.status >= 400 && r.status < 500, `${what} as ${who}: expected a 4xx, got ${r.status} ${r.text}`);
    }
  }
  assertEquals(await snapshot(jobId), before, `${what} changed the database`);
}

Deno.test("nobody but the service role submits chat questions through rpc/chat_submit", async () => {
  const v = await victim();
  const attacker = await createUser();
  await refusedAndUnchanged("chat_submit", v.jobId, (who) =>
    Promise.all([
      rest(who, attacker, "POST", "rpc/chat_submit", {
        p_user: v.user.id,
        p_session_id: v.session,
        p_message: "x".repeat(5000),
        p_max_questions: 1000,
        p_priority: 2147483647,
      }),
      rest(who, attacker, "POST", "rpc/chat_submit", {
        p_user: attacker.id,
        p_session_id: `own-${crypto.randomUUID().slice(0, 8)}`,
        p_message: "bypassing the cleaning and the limit",
        p_max_questions: 1000,
      }),
    ]));
});

Deno.test("nobody but the service role claims, reads or completes a job over rpc", async () => {
  const v = await victim();
  const attacker = await createUser();
  const fakeLease = crypto.randomUUID();
  await refusedAndUnchanged("claim/context/complete", v.jobId, (who) =>
    Promise.all([
      rest(who, attacker, "POST", "rpc/claim_job", {
        p_job: v.jobId,
        p_worker: "attacker",
        p_queues: ["chat"],
      }),
      rest(who, attacker, "POST", "rpc/claim_jobs", { p_worker: "attacker", p_queues: ["chat"] }),
      rest(who, attacker, "POST", "rpc/chat_job_context", { p_job: v.jobId, p_lease_token: fakeLease }),
      rest(who, attacker, "POST", "rpc/chat_complete", {
        p_job: v.jobId,
        p_lease_token: fakeLease,
        p_content: "replaced answer",
        p_model: "m",
        p_provider: "p",
        p_prompt_tokens: 1,
        p_completion_tokens: 1,
        p_total_tokens: 2,
      }),
      rest(who, attacker, "POST", "rpc/complete_job", { p_job: v.jobId, p_lease_token: fakeLease }),
      rest(who, attacker, "POST", "rpc/fail_job", { p_job: v.jobId, p_lease_token: fakeLease, p_error: "x" }),
      rest(who, attacker, "POST", "rpc/enqueue_job", { p_queue: "chat", p_kind: "chat_completion" }),
    ]));
});

Deno.test("rate-limit buckets, error logs and housekeeping are out of the API's reach", async () => {
  const v = await victim();
  const attacker = await createUser();
  // A bucket the victim's calls would use, so draining or refilling would show.
  await withDb((sql) =>
    sql`select * from public.rate_limit_take(${`chat-submit:user:${v.user.id}`}, 1, 30, 0.5::double precision)`
  );
  await refusedAndUnchanged("rate limits and logs", v.jobId, (who) =>
    Promise.all([
      rest(who, attacker, "POST", "rpc/rate_limit_take", {
        p_key: `chat-submit:user:${v.user.id}`,
        p_cost: 30,
        p_capacity: 30,
        p_refill_per_sec: 0.5,
      }),
      rest(who, attacker, "POST", "rpc/rate_limit_prune", { p_idle_seconds: 60 }),
      rest(who, attacker, "POST", "rpc/chat_log_error", {
        p_function: "x",
        p_code: "x",
        p_message: "y".repeat(500_000),
      }),
      rest(who, attacker, "POST", "rpc/cleanup_jobs", { p_retention_seconds: 0 }),
      rest(who, attacker, "POST", "rpc/requeue_expired_leases", {}),
      rest(who, attacker, "POST", "rpc/heartbeat_worker", { p_worker: "attacker" }),
      rest(who, attacker, "POST", "rpc/queue_stats", { p_queue: "chat" }),
    ]));
});

Deno.test("the private helpers cannot be called over rpc at all", async () => {
  const v = await victim();
  const attacker = await createUser();
  await refusedAndUnchanged("private helpers", v.jobId, (who) =>
    Promise.all([
      rest(who, attacker, "POST", "rpc/chat_queue_timing", { p_queue: "chat" }),
      rest(who, attacker, "POST", "rpc/job_caller_may_access", { p_owner: v.user.id }),
      rest(who, attacker, "POST", "rpc/fail_dependents", { p_roots: [v.jobId] }),
      rest(who, attacker, "POST", "rpc/release_dependents", { p_done: [v.jobId] }),
    ]));
});

Deno.test("tables refuse writes from the API roles", async () => {
  const v = await victim();
  const attacker = await createUser();
  await refusedAndUnchanged("table writes", v.jobId, (who) =>
    Promise.all([
      rest(who, attacker, "POST", "chat_messages", {
        session_id: v.session,
        owner_id: v.user.id,
        role: "assistant",
        content: "forged",
      }),
      rest(who, attacker, "PATCH", `chat_sessions?id=eq.${v.session}`, { question_count: 0 }),
      rest(who, attacker, "PATCH", `jobs?id=eq.${v.jobId}`, { status: "cancelled" }),
      rest(who, attacker, "DELETE", `chat_jobs?job_id=eq.${v.jobId}`),
      rest(who, attacker, "POST", "error_logs", { function: "x", code: "x", message: "x" }),
      rest(who, attacker, "POST", "fields", { id: "evil", name: "evil", system_prompt: "evil" }),
      rest(who, attacker, "POST", "jobs", { queue: "chat", kind: "chat_completion" }),
    ]));
});

Deno.test("a signed-in user cannot cancel, locate or read another user's job", async () => {
  const v = await victim();
  const attacker = await createUser();
  const before = await snapshot(v.jobId);
  for (const [fn, args] of [
    ["cancel_job", { p_job: v.jobId }],
    ["queue_position", { p_job: v.jobId }],
    ["chat_job_status", { p_job: v.jobId }],
    ["chat_session_status", { p_session_id: v.session }],
  ] as const) {
    const r = await rest("user token", attacker, "POST", `rpc/${fn}`, args);
    assert(r.status >= 400 && r.status < 500, `${fn}: expected a 4xx, got ${r.status} ${r.text}`);
    assert(!r.text.includes("my private question"), `${fn} leaked the victim's question`);
  }
  const read = await rest("user token", attacker, "GET", `chat_messages?session_id=eq.${v.session}`);
  assertEquals(read.status, 200);
  assertEquals(JSON.parse(read.text), [], "another user's messages are invisible");
  assertEquals(await snapshot(v.jobId), before, "nothing changed");
  // The owner still can.
  const own = await rest("user token", v.user, "POST", "rpc/chat_job_status", { p_job: v.jobId });
  assertEquals(own.status, 200, own.text);
});
