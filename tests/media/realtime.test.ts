// What a client subscribed with supabase-js sees while a job runs: the asset
// row appear (postgres_changes, RLS per subscriber) and progress on the
// owner's private broadcast topic, at most twice a second.
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { assert, assertEquals } from "../support/assert.ts";
import {
  claim,
  jobReaches,
  mediaTest,
  queueOk,
  report,
  stack,
  startWorker,
  until,
  userWithCredits,
  withDb,
} from "./_lib.ts";

async function realtimeClient(token: string): Promise<SupabaseClient> {
  const c = createClient(stack.url, stack.anonKey, { accessToken: () => Promise.resolve(token) });
  await c.realtime.setAuth();
  return c;
}

function subscribed(channel: ReturnType<SupabaseClient["channel"]>): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no SUBSCRIBED within 15 s")), 15_000);
    channel.subscribe((status, err) => {
      if (status === "SUBSCRIBED") {
        clearTimeout(timer);
        resolve();
      } else if (status === "CHANNEL_ERROR" || status === "TIMED_OUT") {
        clearTimeout(timer);
        reject(new Error(`${status}: ${err?.message ?? ""}`));
      }
    });
  });
}

async function close(c: SupabaseClient) {
  await c.removeAllChannels();
  c.realtime.disconnect();
}

Deno.test({
  name: "a subscribed owner sees the image row complete live; another user sees nothing",
  ...mediaTest,
  fn: async () => {
    const user = await userWithCredits(5);
    const stranger = await userWithCredits(0);
    const owner = await realtimeClient(user.token);
    const other = await realtimeClient(stranger.token);
    const seen: any[] = [];
    const leaked: any[] = [];
    const worker = startWorker();
    try {
      await subscribed(
        owner.channel("media-assets").on(
          "postgres_changes",
          { event: "*", schema: "public", table: "images" },
          (p) => seen.push(p),
        ),
      );
      await subscribed(
        other.channel("media-assets-other").on(
          "postgres_changes",
          { event: "*", schema: "public", table: "images" },
          (p) => leaked.push(p),
        ),
      );
      const jobId = await queueOk(user.token, { jobType: "sdxl_image_fast", metadata: { prompt: "live" } });
      await jobReaches(jobId, ["completed"]);
      const completed = await until(
        "the completed image row to arrive",
        () => seen.find((p) => p.new?.job_id === jobId && p.new?.status === "completed"),
      );
      assert(completed.new.storage_path.startsWith(`${user.id}/${jobId}/`), completed.new.storage_path);
      // queue-job creates the row (before the job it points to exists), then links it.
      assert(
        seen.some((p) => p.eventType === "INSERT" && p.new?.id === completed.new.id),
        "the row's creation arrived too",
      );
      await new Promise((r) => setTimeout(r, 300));
      assertEquals(leaked.filter((p) => p.new?.job_id === jobId).length, 0);
    } finally {
      await worker.stop();
      await close(owner);
      await close(other);
    }
  },
});

Deno.test({
  name: "progress reaches the owner's private channel at most twice a second; others cannot join it",
  ...mediaTest,
  fn: async () => {
    const user = await userWithCredits(5);
    const stranger = await userWithCredits(0);
    const owner = await realtimeClient(user.token);
    const other = await realtimeClient(stranger.token);
    try {
      const events: { at: number; payload: any }[] = [];
      await subscribed(
        owner.channel(`media:${user.id}`, { config: { private: true } }).on(
          "broadcast",
          { event: "progress" },
          (m) => events.push({ at: Date.now(), payload: m.payload }),
        ),
      );
      let refused = false;
      try {
        await subscribed(other.channel(`media:${user.id}`, { config: { private: true } }));
      } catch {
        refused = true;
      }
      assert(refused, "a stranger may not join the owner's topic");

      const jobId = await queueOk(user.token, { jobType: "sdxl_image_fast", metadata: { prompt: "p" } });
      const { lease } = await claim(jobId);
      // 20 reports 50 ms apart: far more than two a second.
      const started = Date.now();
      for (let i = 1; i <= 20; i++) {
        const r = await report({ jobId, leaseToken: lease, status: "processing", progress: i * 5 });
        assertEquals(r.status, 200);
        await new Promise((res) => setTimeout(res, 50));
      }
      const elapsed = Date.now() - started;
      await until("a progress broadcast", () => (events.length > 0 ? true : undefined), 5000);
      await new Promise((r) => setTimeout(r, 300));
      assert(events.length >= 1 && events.length <= Math.floor(elapsed / 500) + 1, `${events.length} in ${elapsed} ms`);
      for (let i = 1; i < events.length; i++) {
        assert(events[i].payload.progress > events[i - 1].payload.progress);
      }
      // At the source: consecutive broadcasts of the job at least 500 ms apart.
      const sent = await withDb((sql) =>
        sql`select extract(epoch from inserted_at) * 1000 as ms from realtime.messages
             where topic = ${`media:${user.id}`} and event = 'progress'
               and payload ->> 'job_id' = ${jobId} order by inserted_at`, 1);
      assertEquals(sent.length, events.length);
      for (let i = 1; i < sent.length; i++) assert(sent[i].ms - sent[i - 1].ms >= 499, JSON.stringify(sent));
      assertEquals(events[0].payload.job_id, jobId);
    } finally {
      await close(owner);
      await close(other);
    }
  },
});
