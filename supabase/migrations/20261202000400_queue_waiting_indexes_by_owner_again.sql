-- =============================================================================
-- Job queue: the waiting jobs' index is split by owner again (undoing part of
-- 20261202000100); jobs_blocked_idx stays dropped.
-- =============================================================================
--
-- 20261202000100 replaced jobs_waiting_owner_idx, jobs_waiting_ownerless_idx and
-- jobs_blocked_idx by one jobs_waiting_idx (queue, owner_id, fair_position desc). On the
-- claim and completion path that saved about 52,000 instructions per chained job (two
-- predicates fewer to compile per statement). But enqueues of ownerless jobs from
-- several connections at once then cost more database CPU: with pgbench, 8 clients each
-- calling enqueue_jobs with 50 jobs into one queue, 0.083-0.108 ms per job against
-- 0.078-0.089 without the merge (three alternating pairs), and scripts/bench queue's
-- enqueue at batch 50 went from 0.064-0.114 to 0.084-0.176 ms per job in seven runs of
-- each. One connection alone spends the same instructions either way, so it comes from
-- the concurrency (every new ownerless job's entry and the next enqueue's read of the
-- last one meet in the same part of one index shared with owned jobs); it was not
-- pinned down further.
--
-- So the two indexes of 20261201004100 come back, exactly as they were, and
-- next_fair_position reads them as it did (20261201004200). jobs_blocked_idx stays
-- dropped: queue_stats counts blocked jobs by reading each waiting index once (blocked
-- jobs are pending, so each is in one of them), and nothing else read it. Per chained
-- job that keeps about 25,000 of the 52,000 instructions.
-- =============================================================================

-- Functions created below carry no EXECUTE for public, anon or authenticated: the
-- default privileges of 20261201000100, restated here. queue_stats keeps its grants
-- (create or replace keeps a function's privileges).
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create index jobs_waiting_ownerless_idx on public.jobs (queue, fair_position desc)
  where status in ('pending', 'retrying') and owner_id is null;
create index jobs_waiting_owner_idx on public.jobs (queue, owner_id, fair_position desc)
  where status in ('pending', 'retrying') and owner_id is not null;
drop index public.jobs_waiting_idx;

-- As in 20261201004200.
create or replace function private.next_fair_position(p_queue text, p_owner uuid)
returns bigint
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set enable_bitmapscan = off
as $$
declare
  v_head bigint;
  v_waiting bigint;
  v_running bigint;
begin
  select j.fair_position into v_head from public.jobs j
   where j.queue = p_queue and j.status in ('pending', 'retrying') and j.pending_dependencies = 0
   order by j.priority desc, j.fair_position, j.run_at, j.seq
   limit 1;
  if p_owner is null then
    select j.fair_position into v_waiting from public.jobs j
     where j.queue = p_queue and j.owner_id is null and j.status in ('pending', 'retrying')
     order by j.fair_position desc limit 1;
    select max(j.fair_position) into v_running from public.jobs j
     where j.queue = p_queue and j.status = 'processing' and j.owner_id is null;
  else
    select j.fair_position into v_waiting from public.jobs j
     where j.queue = p_queue and j.owner_id = p_owner and j.status in ('pending', 'retrying')
     order by j.fair_position desc limit 1;
    select max(j.fair_position) into v_running from public.jobs j
     where j.queue = p_queue and j.status = 'processing' and j.owner_id = p_owner;
  end if;
  return greatest(coalesce(v_head, 0), coalesce(v_waiting, 0), coalesce(v_running, 0)) + 1;
end
$$;
revoke all on function private.next_fair_position(text, uuid) from public, anon, authenticated;

-- As in 20261122000200, but blocked jobs are counted through the waiting indexes. The
-- `status in ('pending', 'retrying')` beside `status = 'pending'` is there so the
-- planner sees each read implied by an index's predicate.
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
  -- Blocked jobs are waiting jobs: one read of each waiting index (owned, ownerless).
  select (select count(*) from public.jobs j
           where j.queue = p_queue and j.owner_id is not null
             and j.status in ('pending', 'retrying') and j.status = 'pending'
             and j.pending_dependencies > 0)
       + (select count(*) from public.jobs j
           where j.queue = p_queue and j.owner_id is null
             and j.status in ('pending', 'retrying') and j.status = 'pending'
             and j.pending_dependencies > 0)
    into v_blocked;

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
