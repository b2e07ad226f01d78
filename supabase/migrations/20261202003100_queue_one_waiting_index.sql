-- =============================================================================
-- Job queue: one index over waiting jobs again, keyed by the owner or a sentinel for
-- "no owner", instead of the two of 20261202000400 (split by owner).
-- =============================================================================
--
--   jobs_waiting_owner_idx     (queue, owner_id, fair_position desc)  owned, waiting
--   jobs_waiting_ownerless_idx (queue, fair_position desc)            ownerless, waiting
-- become
--   jobs_waiting_idx (queue, coalesce(owner_id, <nil uuid>), fair_position desc)  waiting
--
-- Postgres 15 opens every index of jobs and compiles each partial index's predicate for
-- every statement that updates jobs, whether or not the row goes into it: the claim and
-- the completion paid for both waiting indexes on every job. One index instead of two
-- saves one of them per update: callgrind as in README ("Fewer instructions per chained
-- job"), databases built fresh, 883,100 -> 859,800 instructions per chained job on top of
-- 20261202003200 (908,500 -> 885,200 on top of 20261202002000); WAL per job unchanged.
-- Index insertions per job are unchanged: a waiting job was in exactly one of the two,
-- and is in this one.
--
-- `owner_id is null` is not an equality, so in an index on (queue, owner_id, ...) the
-- ownerless lookup's order came only from ordering by owner_id too (20261202000100). With
-- coalesce(owner_id, nil uuid) as the key, next_fair_position's read of an owner's last
-- waiting position is one equality for an owner and for no owner alike, and one index
-- entry either way (Index Scan using jobs_waiting_idx, no Sort). queue_stats counts
-- blocked jobs with one read of the index instead of one read of each.
--
-- The sentinel: a user whose id were the nil UUID (00000000-0000-0000-0000-000000000000)
-- would share the last waiting position with the queue's ownerless jobs, so its new jobs
-- and ownerless ones would be placed after each other's as if they had one owner.
-- fair_position only orders claims (claim_jobs, complete_job_and_claim, claim_locked:
-- priority desc, fair_position, run_at, seq) and counts places in queue_position; no
-- lease, dependency, dedup or ordering-key rule reads it, so that is a matter of order,
-- never of correctness. auth.users ids are random (v4) UUIDs, and the nil UUID is not one.
-- The read of an owner's last processing position (jobs_lease_idx) keeps its two forms.
--
-- What it costs: the read of the last ownerless position tests the owner key on every
-- entry it reads (Postgres 15 reads a leaf page's matching entries in one go), where the
-- ownerless index tested the queue only. Per ownerless job, enqueue_jobs of 50 cost
-- 486,900 -> 494,400 instructions in one queue and 425,100 -> 467,000 beside a second
-- queue; enqueue_job of one, and enqueues with an owner, cost the same or less.
-- Not re-measured here: 20261202000400 split the index of 20261202000100 because
-- ownerless enqueues from several connections cost more database CPU with one index
-- (pgbench and scripts/bench queue at batch 50); a single connection spent the same
-- instructions either way and the cause was not pinned down. Ownerless entries now sit
-- at the start of their queue's range instead of its end (nil sorts first, NULL last).
--
-- A plain CREATE INDEX, as in every migration here: supabase db push runs each
-- migration in a transaction, where CONCURRENTLY is refused. Bodies otherwise as in
-- 20261202000400; create or replace keeps grants, owner and comments.
-- =============================================================================

-- The default privileges of 20261201000100 (no EXECUTE for public, anon or
-- authenticated on new functions), restated as in every queue migration.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create index jobs_waiting_idx on public.jobs
  (queue, (coalesce(owner_id, '00000000-0000-0000-0000-000000000000'::uuid)), fair_position desc)
  where status in ('pending', 'retrying');
drop index public.jobs_waiting_owner_idx;
drop index public.jobs_waiting_ownerless_idx;

-- As in 20261202000400, with the owner's last waiting position read through
-- jobs_waiting_idx: one statement for an owner and for no owner (the nil UUID stands for
-- no owner, see above). The expression must be the index's, written the same way.
create or replace function private.next_fair_position(p_queue text, p_owner uuid)
 RETURNS bigint
 LANGUAGE plpgsql
 STABLE
 SET search_path TO ''
 SET plan_cache_mode TO 'force_generic_plan'
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
AS $function$
declare
  v_head bigint;
  v_waiting bigint;
  v_running bigint;
begin
  select j.fair_position into v_head from public.jobs j
   where j.queue = p_queue and j.status in ('pending', 'retrying') and j.pending_dependencies = 0
   order by j.priority desc, j.fair_position, j.run_at, j.seq
   limit 1;
  select j.fair_position into v_waiting from public.jobs j
   where j.queue = p_queue
     and coalesce(j.owner_id, '00000000-0000-0000-0000-000000000000'::uuid)
       = coalesce(p_owner, '00000000-0000-0000-0000-000000000000'::uuid)
     and j.status in ('pending', 'retrying')
   order by j.fair_position desc limit 1;
  if p_owner is null then
    select max(j.fair_position) into v_running from public.jobs j
     where j.queue = p_queue and j.status = 'processing' and j.owner_id is null;
  else
    select max(j.fair_position) into v_running from public.jobs j
     where j.queue = p_queue and j.status = 'processing' and j.owner_id = p_owner;
  end if;
  return greatest(coalesce(v_head, 0), coalesce(v_waiting, 0), coalesce(v_running, 0)) + 1;
end
$function$;
revoke all on function private.next_fair_position(text, uuid) from public, anon, authenticated;

-- As in 20261202000400, but blocked jobs are counted with one read of jobs_waiting_idx.
-- The `status in ('pending', 'retrying')` beside `status = 'pending'` is kept so the
-- planner sees the read implied by the index's predicate.
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
   where j.queue = p_queue and j.status in ('completed', 'failed', 'cancelled');

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
$function$;
