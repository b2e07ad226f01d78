-- =============================================================================
-- Job queue: two fewer index insertions per job on the claim + complete path.
-- =============================================================================
--
-- Measured (EXPLAIN (ANALYZE, BUFFERS, WAL) on claim_jobs and complete_job at batch 1,
-- one owner-less job without dedup or ordering key, as scripts/bench queue runs them;
-- the bench now also prints the server's WAL bytes per job): a claim wrote 8 WAL
-- records / ~810 bytes and a completion 8 / ~880, i.e. per job two non-HOT updates of
-- public.jobs (status is in every partial index's predicate, so neither can be HOT),
-- two job_events rows and the worker's counter, with EIGHT index insertions:
--
--   claim     jobs_pkey, jobs_lease_idx, jobs_tenant_idx, job_events_pkey
--   complete  jobs_pkey, jobs_finished_idx, jobs_cleanup_idx, job_events_pkey
--
-- Two of them serve no hot-path query:
--
--   jobs_tenant_idx  (queue, owner_id, fair_position desc) over pending, processing
--                    AND retrying jobs, read only by private.next_fair_position at
--                    enqueue ("the owner's last unfinished position"). Every claim
--                    re-inserted the row because processing is in its predicate.
--                    Now it covers waiting jobs only (pending, retrying: the claim
--                    removes the row from it, inserting nothing), and the processing
--                    part of the same maximum is read through jobs_lease_idx, which
--                    holds exactly the in-flight jobs of a queue (few: workers x batch).
--                    next_fair_position returns the same value as before:
--                    max over (waiting U processing) = greatest(max waiting, max
--                    processing). An enqueue pays a scan of the queue's in-flight jobs
--                    instead (a claim saves an index insertion).
--   jobs_cleanup_idx (completed_at) over finished jobs, read only by cleanup_jobs
--                    (housekeeping, minutes apart). jobs_finished_idx (queue, status,
--                    completed_at) over the same rows serves it: cleanup_jobs now walks
--                    the finished queues (a loose index scan of jobs_finished_idx) and
--                    each (queue, status) range older than the retention, oldest first
--                    within each. Same contract: at most p_limit finished jobs past the
--                    retention are deleted per call, with their events and dependency
--                    rows; call again while jobs_deleted = p_limit.
--
-- Per job: 6 index insertions instead of 8; see the README's benchmark section for
-- the figures before and after. Kept as they are, because something reads them: both
-- job_events rows (the job's history: its owner reads it through the API, the tests
-- prove exactly-once with it), the worker's jobs_done (worker_status, queue-worker),
-- jobs_finished_idx (queue_stats, chat_queue_timing on every chat submit). Exactly-once
-- is untouched: no function on the claim or completion path changes.
-- =============================================================================

-- Functions created below carry no EXECUTE for public, anon or authenticated: the
-- default privileges of 20261201000100, restated here so this migration does not depend
-- on them having survived; each API function is granted explicitly below.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

-- An owner's last WAITING position, read at enqueue (processing ones: jobs_lease_idx).
create index jobs_waiting_tenant_idx on public.jobs (queue, owner_id, fair_position desc)
  where status in ('pending', 'retrying');
drop index public.jobs_tenant_idx;
-- cleanup_jobs walks jobs_finished_idx instead.
drop index public.jobs_cleanup_idx;

-- The fair position of the next job of p_owner in p_queue (see 20261201000200): 1 +
-- greatest(the queue's head, the owner's last unfinished position). The owner's last
-- position is the larger of its last waiting one (jobs_waiting_tenant_idx) and its
-- last in-flight one (jobs_lease_idx: the queue's processing jobs).
create or replace function private.next_fair_position(p_queue text, p_owner uuid) returns bigint
language plpgsql stable set search_path = ''
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

-- Same contract as 20261201000300's (which it replaces): finished jobs past the
-- retention, at most p_limit per call, their events and dependency rows with them
-- (the delete trigger and the cascades); dead workers; day-old idempotency keys.
create or replace function public.cleanup_jobs(p_retention_seconds integer default 604800, p_limit integer default 10000)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
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
      where f.status in ('completed', 'failed', 'cancelled')
      order by f.queue limit 1)
    union all
    select (select f.queue from public.jobs f
             where f.status in ('completed', 'failed', 'cancelled') and f.queue > q.name
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
$$;

revoke execute on function private.next_fair_position(text, uuid)
  from public, anon, authenticated, service_role;
revoke execute on function public.cleanup_jobs(integer, integer) from public, anon, authenticated;
grant execute on function public.cleanup_jobs(integer, integer) to service_role;
