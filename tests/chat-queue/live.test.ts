// Live chat status (issue 20): a client subscribed with supabase-js Realtime to
// its session's chat_jobs and chat_messages sees its question go pending ->
// processing -> completed and its answer arrive, and nothing of another user's.
import { assert, assertEquals } from "../support/assert.ts";
import { createUser } from "../support/stack.ts";
import { client, closeAll, realtimeTest, sleep, subscribed, waitFor } from "../platform/realtime/_lib.ts";
import { drain, sessionId, submitOk } from "./_lib.ts";

Deno.test({
  name: "a subscribed client sees its own job go pending -> processing -> completed and its answer, nothing of another user's",
  ...realtimeTest,
  async fn() {
    const owner = await createUser();
    const other = await createUser();
    const session = sessionId("live");
    const otherSession = sessionId("live-other");
    // The session exists before the subscription, so the filter has a row to match.
    const first = await submitOk(owner.token, session, "warm-up question");
    await drain([first]);

    const c = await client(owner.token);
    const statuses: string[] = [];
    const answers: string[] = [];
    const foreign: unknown[] = [];
    try {
      await subscribed(
        c.channel(`chat-live-${session}`)
          .on(
            "postgres_changes",
            { event: "*", schema: "public", table: "chat_jobs", filter: `session_id=eq.${session}` },
            (p: any) => statuses.push(`${p.eventType}:${p.new?.status}`),
          )
          .on(
            "postgres_changes",
            { event: "INSERT", schema: "public", table: "chat_messages", filter: `session_id=eq.${session}` },
            (p: any) => p.new?.role === "assistant" && answers.push(p.new.content),
          )
          // Unfiltered: only RLS keeps another user's rows away.
          .on("postgres_changes", { event: "*", schema: "public", table: "chat_jobs" }, (p: any) => {
            if (p.new?.owner_id && p.new.owner_id !== owner.id) foreign.push(p.new);
          }),
      );
      const job = await submitOk(owner.token, session, "what changed?");
      const theirs = await submitOk(other.token, otherSession, "not yours to see");
      await drain([job, theirs]);
      assert(
        await waitFor(() => statuses.includes("UPDATE:completed") && answers.length >= 1, 5000),
        `saw ${JSON.stringify(statuses)} and ${answers.length} answers`,
      );
      await sleep(300); // room for a wrongly delivered change to show up
      // The answer's link (assistant_message_id) is an UPDATE of its own while the job
      // is still processing: collapse repeats to compare the transitions.
      const transitions = statuses.filter((s, i) => s !== statuses[i - 1]);
      assertEquals(transitions, ["INSERT:pending", "UPDATE:processing", "UPDATE:completed"]);
      assertEquals(answers.length, 1);
      assertEquals(foreign, [], "another user's job reached this client");
    } finally {
      await closeAll(c);
    }
  },
});
