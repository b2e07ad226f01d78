// One worker for every system: queue-worker registers each system's job kinds
// and claims across all of them in one call. A housekeeping job (the queue's
// own kind, on its own queue) and a chat question are both run by the same
// queue-worker call.
import { assertEquals } from "../../support/assert.ts";
import { callFunction, createUser, stack, withDb } from "../../support/stack.ts";
import { enqueue, jobById } from "./_lib.ts";
import { sessionId, submitOk } from "../../chat-queue/_lib.ts";

Deno.test("one queue-worker call claims and runs a second job kind beside chat", async () => {
  const user = await createUser();
  const chatJob = await submitOk(user.token, sessionId("kinds"), "a question beside housekeeping");
  const housekeeping = await withDb((sql) =>
    enqueue(sql, "maintenance", "queue_housekeeping", { payload: { retention_seconds: 86_400 }, priority: 10 })
  );
  const r = await callFunction("queue-worker", {
    token: stack.serviceKey,
    body: { batch_size: 50, job_types: ["chat_completion", "queue_housekeeping"] },
  });
  assertEquals(r.status, 200, JSON.stringify(r.body));
  const [done, chat] = await withDb((sql) => Promise.all([jobById(sql, housekeeping.id), jobById(sql, chatJob)]));
  assertEquals(done.status, "completed");
  assertEquals(typeof (done.result as Record<string, unknown>)?.jobs_cleaned_up, "number");
  assertEquals(chat.status, "completed");
});

Deno.test("a job kind no system registered is refused as a job type", async () => {
  const r = await callFunction("queue-worker", { token: stack.serviceKey, body: { job_types: ["image_generation"] } });
  assertEquals(r.status, 422);
  assertEquals(r.body.error.code, "validation_failed");
});
