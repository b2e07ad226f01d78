-- =============================================================================
-- Job queue: the partial index over finished jobs says so with a null test,
-- jobs_finished_idx (queue, status, completed_at) where completed_at is not null,
-- instead of where status in ('completed', 'failed', 'cancelled').
-- =============================================================================
--
-- Postgres 15 compiles every partial index's predicate (ExecPrepareQual, the planner's
-- constant folding included) for every statement that updates jobs, whether or not the
-- row goes into the index. A status test (`= any` over an array here) costs a few
-- thousand instructions per statement; a null test almost none. The hot path (claim and
-- completion, two updates per job) paid for it twice per job. Callgrind as in README
-- ("Fewer instructions per chained job"), databases built fresh: 849,900 -> 843,400
-- instructions per chained job on top of 20261202003400; WAL per job unchanged.
--
-- The same rows: a job has completed_at exactly when it is completed, failed or
-- cancelled. Audited over every function that updates or inserts public.jobs, in a
-- database built from all migrations (only the table's owner may write it; the API
-- roles may only read it):
--   to finished: complete_job, complete_jobs and complete_job_and_claim (completed),
--     fail_job without a retry and private.fail_dependents (failed), cancel_job
--     (cancelled), requeue_expired_leases with no attempt left (failed): all set
--     completed_at = now(). Nothing else sets a finished status.
--   out of finished: nothing. cancel_job returns a finished job as it is; every other
--     update takes a job that holds a lease or is waiting.
--   to waiting or processing: enqueue_job and enqueue_jobs insert without completed_at
--     (no default); the claims (claim_jobs, complete_job_and_claim,
--     private.claim_locked) leave it, and a waiting job has none; fail_job's retry and
--     media_release_job leave it, and a processing job has none; requeue_expired_leases'
--     retry sets it to null.
--   the rest (extend_lease, report_progress, media_heartbeat, media_job_callback's
--     progress, private.release_dependents) change neither status nor completed_at.
--   upload_finish and the media, chat and pipeline functions enqueue, complete, fail and
--   cancel jobs through the functions above, not by writing jobs themselves.
-- So every statement below that gains `completed_at is not null` beside a finished
-- status returns what it returned.
--
-- The planner uses a partial index only where the statement's WHERE implies its
-- predicate: a comparison of completed_at (a strict operator) implies the null test, a
-- status test does not. The statements that read jobs_finished_idx (every plan logged
-- with auto_explain while tests/platform/queue ran) and named no such comparison get
-- the redundant test, nothing else changes:
--   public.queue_stats         the finished counts
--   public.cleanup_jobs        the walk over the queues that have finished jobs
--   public.job_events (view)   the claim and completion events read from completed jobs
-- queue_stats' timing, cleanup_jobs' per-(queue, status) ranges and
-- private.chat_queue_timing compare completed_at already. Index insertions per job are
-- unchanged: a job enters the index when it finishes, as before.
--
-- jobs_lease_idx keeps `where status = 'processing'`. With `where lease_expires_at is
-- not null` (the same rows: the lease rule, and every writer sets and clears the expiry
-- with the token) every statement that finds its job by id and lease token (`lease_token
-- = p_lease_token and lease_expires_at is not null`, 20261202002000) implies the
-- predicate, and the planner reads the whole index with id as a filter again, the plan
-- 20261202002000 removed (lease_plans.test.ts fails; measured 849,900 -> 839,100 with
-- both indexes changed, that plan included). Changing it means restating those
-- statements in a form that does not imply the predicate.
--
-- A plain CREATE INDEX, as in every migration here: supabase db push runs each
-- migration in a transaction, where CONCURRENTLY is refused. Bodies otherwise as in
-- 20261202003100 (queue_stats), 20261202003200 (cleanup_jobs) and 20261202000200
-- (job_events); create or replace keeps grants, owner, comments and the view's trigger.
-- =============================================================================

-- The default privileges of 20261201000100 (no EXECUTE for public, anon or
-- authenticated on new functions), restated as in every queue migration.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

drop index public.jobs_finished_idx;
create index jobs_finished_idx on public.jobs (queue, status, completed_at)
  where completed_at is not null;

-- As in 20261202003100, the finished counts with the null test that makes
-- jobs_finished_idx usable.
create or replace function public.queue_stats(p_queue text, p_window_seconds integer DEFAULT 3600, p_worker_timeout_seconds integer DEFAULT 60)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  v_waiting record;
  v_finished record;
  v_timing record;
  v_processing bigint;
  v_blocked bigint;
  v_workers bigint;
begin
  if p_queue is null then
    raise exception using errcode = '22023', message = 'p_queue must not be null';
  end if;
  if p_window_seconds is null or p_window_seconds < 1
     or p_worker_timeout_seconds is null or p_worker_timeout_seconds < 1 then
    raise exception using errcode = '22023',
      message = 'p_window_seconds and p_worker_timeout_seconds must be >= 1';
  end if;

  select count(*) filter (where j.status = 'pending') as pending,
         count(*) filter (where j.status = 'retrying') as retrying,
         count(*) filter (where j.run_at > now()) as delayed,
         min(j.run_at) filter (where j.run_at <= now()) as oldest_due
    into v_waiting
    from public.jobs j
   where j.queue = p_queue and j.status in ('pending', 'retrying') and j.pending_dependencies = 0;

  select count(*) into v_processing from public.jobs j
   where j.queue = p_queue and j.status = 'processing';
  -- Blocked jobs are waiting jobs: one read of jobs_waiting_idx.
  select count(*) into v_blocked from public.jobs j
   where j.queue = p_queue
     and j.status in ('pending', 'retrying') and j.status = 'pending'
     and j.pending_dependencies > 0;

  select count(*) filter (where j.status = 'completed') as completed,
         count(*) filter (where j.status = 'failed') as failed,
         count(*) filter (where j.status = 'cancelled') as cancelled
    into v_finished
    from public.jobs j
   where j.queue = p_queue and j.status in ('completed', 'failed', 'cancelled')
     and j.completed_at is not null;

  select count(*) as n,
         avg(extract(epoch from j.completed_at - j.started_at) * 1000) as avg_ms,
         percentile_cont(0.95) within group (
           order by extract(epoch from j.completed_at - j.started_at) * 1000) as p95_ms
    into v_timing
    from public.jobs j
   where j.queue = p_queue and j.status = 'completed'
     and j.completed_at >= now() - make_interval(secs => p_window_seconds);

  select count(*) into v_workers from public.workers w
   where p_queue = any(w.queues) and w.status <> 'stopped'
     and w.last_heartbeat_at >= now() - make_interval(secs => p_worker_timeout_seconds);

  return jsonb_build_object(
    'queue', p_queue,
    'pending', v_waiting.pending + v_blocked,
    'processing', v_processing,
    'retrying', v_waiting.retrying,
    'completed', v_finished.completed,
    'failed', v_finished.failed,
    'cancelled', v_finished.cancelled,
    'blocked', v_blocked,
    'delayed', v_waiting.delayed,
    'completed_in_window', v_timing.n,
    'avg_processing_ms', round(v_timing.avg_ms::numeric, 3),
    'p95_processing_ms', round(v_timing.p95_ms::numeric, 3),
    'oldest_pending_age_ms',
      round((extract(epoch from now() - v_waiting.oldest_due) * 1000)::numeric, 3),
    'active_workers', v_workers,
    'window_seconds', p_window_seconds
  );
end
$function$
;

-- As in 20261202003200, the walk over the queues that have finished jobs with the null
-- test that makes jobs_finished_idx usable (the ranges compare completed_at already).
create or replace function public.cleanup_jobs(p_retention_seconds integer DEFAULT 604800, p_limit integer DEFAULT 10000)
 RETURNS jsonb
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  v_jobs integer;
  v_workers integer;
  v_keys integer;
begin
  if p_retention_seconds is null or p_retention_seconds < 0 then
    raise exception using errcode = '22023', message = 'p_retention_seconds must be >= 0';
  end if;
  if p_limit is null or p_limit not between 1 and 100000 then
    raise exception using errcode = '22023', message = 'p_limit must be between 1 and 100000';
  end if;
  -- The queues that have finished jobs (one probe of jobs_finished_idx per queue), then
  -- each (queue, status) range older than the retention, oldest first. A completed
  -- dependency may go before its dependents: they no longer count it.
  with recursive queues (name) as (
    (select f.queue from public.jobs f
      where f.status in ('completed', 'failed', 'cancelled') and f.completed_at is not null
      order by f.queue limit 1)
    union all
    select (select f.queue from public.jobs f
             where f.status in ('completed', 'failed', 'cancelled') and f.completed_at is not null
               and f.queue > q.name
             order by f.queue limit 1)
      from queues q
     where q.name is not null
  )
  delete from public.jobs j
   where j.id = any(array(
     select o.id
       from queues q
       cross join unnest(array['completed', 'failed', 'cancelled']) as s (status)
       cross join lateral (
         select f.id from public.jobs f
          where f.queue = q.name and f.status = s.status
            and f.status in ('completed', 'failed', 'cancelled')
            and f.completed_at < now() - make_interval(secs => p_retention_seconds)
          order by f.completed_at
          limit p_limit
            for update skip locked
       ) o
      where q.name is not null
      limit p_limit));
  get diagnostics v_jobs = row_count;

  -- Workers heartbeat on every claim and queue-worker run; one silent for 15 minutes
  -- (or the retention, if shorter) is dead.
  delete from public.workers w
   where w.last_heartbeat_at < now() - make_interval(secs => least(p_retention_seconds, 900));
  get diagnostics v_workers = row_count;

  delete from private.idempotency_keys k
   where k.ctid = any(array(select x.ctid from private.idempotency_keys x
                             where x.created_at < now() - interval '24 hours'
                             limit p_limit));
  get diagnostics v_keys = row_count;

  return jsonb_build_object('jobs_deleted', v_jobs, 'workers_deleted', v_workers,
                            'idempotency_keys_deleted', v_keys);
end
$function$
;

-- As in 20261202000200, the completed jobs' branches with the null test that makes
-- jobs_finished_idx usable.
create or replace view public.job_events with (security_invoker = true) as
  select e.id, e.job_id, e.owner_id, e.queue, e.from_status, e.to_status, e.attempt, e.actor,
         e.worker_id, e.error, e.run_at, e.created_at
    from job_history.job_events e
  union all
  -- The current attempt's claim, until something stores it.
  select j.claim_event, j.id, j.owner_id, j.queue, j.claimed_from, 'processing', j.attempts,
         'worker', j.worker_id, null::text, j.run_at, j.started_at
    from public.jobs j
   where j.claim_event is not null
     and (j.status = 'processing'
          or (j.status = 'completed' and j.completion_event is not null
              and j.completed_at is not null))
     and not exists (select 1 from job_history.job_events s
                      where s.job_id = j.id and s.id = j.claim_event)
  union all
  -- The completion by a worker.
  select j.completion_event, j.id, j.owner_id, j.queue, 'processing', 'completed', j.attempts,
         'worker', j.worker_id, null::text, j.run_at, j.completed_at
    from public.jobs j
   where j.completion_event is not null and j.status = 'completed'
     and j.completed_at is not null;
