// Per-user fairness: one user's backlog does not starve another user's job.
import { assert } from "../support/assert.ts";
import { cancelAll, mediaTest, userWithCredits, withDb } from "./_lib.ts";

Deno.test({
  name: "a user's single job is claimed within the first few claims despite another user's backlog of 100",
  ...mediaTest,
  fn: async () => {
    const heavy = await userWithCredits(1000);
    const light = await userWithCredits(10);
    try {
      await withDb(async (sql) => {
        // Jobs earlier tests left claimed come back when their leases lapse and would
        // take claim slots here: finish them first, so the claims below see only this test's.
        await sql`select public.cancel_job(id) from public.jobs
                   where queue = 'sdxl_queue' and status in ('pending', 'retrying', 'processing')`;
        for (let i = 0; i < 100; i++) {
          await sql`select public.media_queue_job(${heavy.id}::uuid, 'sdxl_image_fast', ${`backlog ${i}`})`;
        }
        const mine = await sql`select public.media_queue_job(${light.id}::uuid, 'sdxl_image_fast', 'just one')
                                 -> 'job' ->> 'id' as id`;
        const claimed = await sql`select c ->> 'job_id' as id, c ->> 'lease_token' as lease
                                    from public.media_claim_jobs('fairness-test', array['sdxl_queue'], 3, 30) c`;
        try {
          assert(claimed.some((c: any) => c.id === mine[0].id), `claimed ${JSON.stringify(claimed)}`);
        } finally {
          for (const c of claimed) await sql`select public.media_release_job(${c.id}::uuid, ${c.lease}::uuid)`;
        }
      }, 1);
    } finally {
      await cancelAll(heavy.id);
      await cancelAll(light.id);
    }
  },
});
