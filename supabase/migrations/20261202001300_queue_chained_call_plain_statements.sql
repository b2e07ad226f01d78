-- =============================================================================
-- Job queue: complete_job_and_claim in plain statements.
-- =============================================================================
--
-- Postgres initialises every node of a statement's plan at each execution, and a CTE
-- that feeds another statement adds a CTE scan, an InitPlan or an array between them.
-- In the chained call (complete_job_and_claim at batch 1), measured with callgrind on a
-- single-user backend, 300 chained calls after 20 warm-ups, instructions per job:
--   - the two probes (expired leases, dependents) as PERFORM ... LIMIT 1 instead of
--     IF EXISTS (...), which planned a Result over an InitPlan: 953,000 -> 949,000;
--   - the claim of one job as a SELECT ... FOR UPDATE SKIP LOCKED into a variable, then
--     an UPDATE of that id (was: one UPDATE whose id list was an array built from a
--     locking CTE): 949,000 -> 940,000;
--   - the completion's update and the worker counter's update as two statements (was:
--     two data-modifying CTEs and a SELECT over them): 940,000 -> 916,000.
-- Same rows changed, in the same order, under the same locks; same answers and errors.
-- The claim of several jobs keeps its statement (its order comes from the sort above
-- the update), and so do claim_jobs and complete_job.
-- =============================================================================

alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create or replace function public.complete_job_and_claim(p_job uuid, p_lease_token uuid, p_result jsonb, p_worker text, p_queues text[], p_kinds text[] DEFAULT NULL::text[], p_batch integer DEFAULT 1, p_lease_seconds integer DEFAULT 60)
 RETURNS SETOF jobs
 LANGUAGE plpgsql
 SECURITY DEFINER ROWS 10
 SET search_path TO ''
 SET plan_cache_mode TO 'force_generic_plan'
 SET enable_bitmapscan TO 'off'
 SET enable_seqscan TO 'off'
 SET "edgeworks.job_events_inline" TO 'on'
AS $$
declare
  v_done uuid;
  v_holder text;
  v_current boolean;
  v_next uuid;
begin
  if p_job is null or p_lease_token is null then
    raise exception using errcode = '22023', message = 'p_job and p_lease_token are required';
  end if;
  if p_result is not null and octet_length(p_result::text) > 1048576 then
    raise exception using errcode = '22023', message = 'p_result exceeds 1 MiB';
  end if;
  if cardinality(p_queues) is distinct from 1 then
    -- Several queues (or a bad argument, which claim_jobs refuses, rolling the
    -- completion back with it): complete_job, then claim_jobs.
    perform public.complete_job(p_job, p_lease_token, p_result);
    return query select * from public.claim_jobs(p_worker, p_queues, p_kinds, p_batch, p_lease_seconds);
    return;
  end if;
  -- claim_preamble's checks, inline (a nested call costs a tenth of the whole): the
  -- arguments, then expired leases; the heartbeat is the completion's (below).
  if p_worker is null or length(p_worker) not between 1 and 200 then
    raise exception using errcode = '22023', message = 'p_worker must be 1 to 200 characters';
  end if;
  if p_batch is null or p_batch not between 1 and 1000 then
    raise exception using errcode = '22023', message = 'p_batch must be between 1 and 1000';
  end if;
  if p_lease_seconds is null or p_lease_seconds not between 1 and 86400 then
    raise exception using errcode = '22023', message = 'p_lease_seconds must be between 1 and 86400';
  end if;
  -- The probes are PERFORM ... LIMIT 1 rather than IF EXISTS (...): no InitPlan.
  perform from public.jobs j
   where j.status = 'processing' and j.queue = p_queues[1] and j.lease_expires_at < now()
   limit 1;
  if found then
    perform public.requeue_expired_leases(p_queues);
  end if;

  -- complete_job's update, then the counter's, as two plain statements (one statement
  -- with two data-modifying CTEs cost 23,000 instructions more in CTE scans and
  -- InitPlans); the counter's update also tells whether the worker's row already says
  -- what touch_worker would write.
  update public.jobs
     set status = 'completed',
         result = p_result,
         progress = 100,
         completed_at = now(),
         completion_event = nextval('job_history.job_events_id_seq'),
         updated_at = now(),
         lease_token = null,
         lease_expires_at = null
   where id = p_job and lease_token = p_lease_token and status = 'processing'
  returning id, worker_id into v_done, v_holder;
  if v_done is null then
    perform private.raise_lease_lost(p_job);
  end if;
  update public.workers w
     set jobs_done = w.jobs_done + 1, last_heartbeat_at = now()
   where w.id = v_holder
  returning w.status = 'active' and w.queues = p_queues into v_current;
  -- The completion refreshed its worker's heartbeat; a claim for another worker, or
  -- for other queues than the worker last named (or a worker with no row yet), records
  -- that worker's as claim_jobs does.
  if v_holder is distinct from p_worker or v_current is not true then
    perform private.touch_worker(p_worker, p_queues);
  end if;
  -- A statement of its own after the update, as in complete_job (see there).
  perform from public.job_dependencies d where d.depends_on = p_job limit 1;
  if found then
    perform private.release_dependents(array[p_job]);
  end if;

  -- claim_jobs' one-queue statement: keep the candidates' conditions and order equal.
  if p_batch = 1 then
    -- One job: the pick (locking it) and the update are two plain statements, with no
    -- CTE, InitPlan or array between them; no candidate, no update.
    select c.id into v_next
      from public.jobs c
     where c.queue = p_queues[1]
       and c.status in ('pending', 'retrying')
       and c.pending_dependencies = 0
       and c.run_at <= now()
       and (p_kinds is null or c.kind = any(p_kinds))
       and (c.ordering_key is null or private.ordering_key_free(c.queue, c.ordering_key, c.seq))
     order by c.priority desc, c.fair_position, c.run_at, c.seq
     limit 1
       for update skip locked;
    if v_next is null then
      return;
    end if;
    return query
      update public.jobs j
         set status = 'processing',
             attempts = j.attempts + 1,
             worker_id = p_worker,
             lease_token = gen_random_uuid(),
             lease_expires_at = now() + make_interval(secs => p_lease_seconds),
             started_at = now(),
             claimed_from = j.status,
             claim_event = nextval('job_history.job_events_id_seq'),
             updated_at = now(),
             progress = 0
       where j.id = v_next
      returning j.*;
  else
    return query
      with picked as (
        select c.id
          from public.jobs c
         where c.queue = p_queues[1]
           and c.status in ('pending', 'retrying')
           and c.pending_dependencies = 0
           and c.run_at <= now()
           and (p_kinds is null or c.kind = any(p_kinds))
           and (c.ordering_key is null or private.ordering_key_free(c.queue, c.ordering_key, c.seq))
         order by c.priority desc, c.fair_position, c.run_at, c.seq
         limit p_batch
           for update skip locked
      ),
      claimed as (
        update public.jobs j
           set status = 'processing',
               attempts = j.attempts + 1,
               worker_id = p_worker,
               lease_token = gen_random_uuid(),
               lease_expires_at = now() + make_interval(secs => p_lease_seconds),
               started_at = now(),
               claimed_from = j.status,
               claim_event = nextval('job_history.job_events_id_seq'),
               updated_at = now(),
               progress = 0
         where j.id = any(array(select p.id from picked p))
        returning j.*
      )
      select c.* from claimed c
       order by c.priority desc, c.fair_position, c.run_at, c.seq;
  end if;
end
$$;
