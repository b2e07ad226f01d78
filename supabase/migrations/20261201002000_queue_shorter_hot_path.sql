-- =============================================================================
-- Job queue: a shorter hot path for claim and complete (batch 1).
-- =============================================================================
--
-- Measured (scripts/bench queue --batches 1, pgbench on the same functions, and
-- pg_stat_statements with track = all): at batch 1 most of a job's database CPU is
-- per-statement cost - every SPI statement inside a plpgsql function pays executor
-- start-up (for an UPDATE of public.jobs: its CHECK, its partial index predicates and
-- its triggers' WHEN clauses are prepared again) and a snapshot. The claim ran nine
-- statements across three functions (claim_jobs -> touch_worker -> claim_locked), the
-- completion five. Same semantics, fewer statements:
--
--   claim_jobs   reads the worker's row itself and calls touch_worker only when the
--                heartbeat is due (at most once a second); then ONE statement picks the
--                rows (the same lateral walk of jobs_claim_idx, FOR UPDATE SKIP LOCKED,
--                the same ordering-key rule), starts their attempts and logs them. The
--                columns it sets are private.claim_locked's (claim_job still uses it):
--                keep the two equal.
--   complete_job set_config as plpgsql expressions rather than PERFORMed queries (the
--                update, its event and the worker's counter were one statement already;
--                the dependents probe stays a statement of its own: see there).
--
-- Exactly-once is untouched: a claim still locks rows FOR UPDATE SKIP LOCKED and
-- re-checks their status under the lock; completion still needs the lease token.
-- =============================================================================

-- Functions created below carry no EXECUTE for public, anon or authenticated: the
-- default privileges of 20261201000100, restated here so this migration does not depend
-- on them having survived; each API function is granted explicitly below.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create or replace function public.claim_jobs(
  p_worker text,
  p_queues text[],
  p_kinds text[] default null,
  p_batch integer default 1,
  p_lease_seconds integer default 60
) returns setof public.jobs
language plpgsql volatile security definer
set search_path = '' set plan_cache_mode = force_generic_plan set enable_bitmapscan = off
rows 10
as $$
declare
  v_seen public.workers;
  v_ignored text;
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
begin
  if p_worker is null or length(p_worker) not between 1 and 200 then
    raise exception using errcode = '22023', message = 'p_worker must be 1 to 200 characters';
  end if;
  if p_queues is null or cardinality(p_queues) = 0 or cardinality(p_queues) > 50 then
    raise exception using errcode = '22023', message = 'p_queues must name 1 to 50 queues';
  end if;
  if p_batch is null or p_batch not between 1 and 1000 then
    raise exception using errcode = '22023', message = 'p_batch must be between 1 and 1000';
  end if;
  if p_lease_seconds is null or p_lease_seconds not between 1 and 86400 then
    raise exception using errcode = '22023', message = 'p_lease_seconds must be between 1 and 86400';
  end if;

  -- A crashed worker's jobs come back even if nobody schedules the sweep. Cheap when
  -- nothing expired: one probe of the small in-flight index per queue.
  if exists (select 1 from public.jobs j
              where j.status = 'processing' and j.queue = any(p_queues)
                and j.lease_expires_at < now()) then
    perform public.requeue_expired_leases(p_queues);
  end if;
  -- The worker's heartbeat, at most once a second (private.touch_worker, inline: the
  -- common case is one read of its row).
  select * into v_seen from public.workers w where w.id = p_worker;
  if v_seen.id is null or v_seen.last_heartbeat_at < now() - interval '1 second'
     or v_seen.status <> 'active' or v_seen.queues is distinct from p_queues then
    perform private.touch_worker(p_worker, p_queues);
  end if;

  -- Assignments, not PERFORM: a plpgsql expression skips the executor a query needs.
  v_ignored := set_config('edgeworks.job_events_inline', 'on', true);
  -- Pick (one lateral index walk per queue, FOR UPDATE SKIP LOCKED), start the attempt
  -- and log it in ONE statement; the columns it sets are private.claim_locked's.
  return query
    with picked as (
      select h.id, h.status
        from unnest(p_queues) as q (name)
        cross join lateral (
          select c.id, c.status, c.priority, c.fair_position, c.run_at, c.seq from public.jobs c
           where c.queue = q.name
             and c.status in ('pending', 'retrying')
             and c.pending_dependencies = 0
             and c.run_at <= now()
             and (p_kinds is null or c.kind = any(p_kinds))
             and (c.ordering_key is null or not exists (
                   select 1 from public.jobs e
                    where e.queue = c.queue and e.ordering_key = c.ordering_key
                      and e.status in ('pending', 'processing', 'retrying') and e.seq < c.seq))
           order by c.priority desc, c.fair_position, c.run_at, c.seq
           limit p_batch
             for update skip locked
        ) h
       order by h.priority desc, h.fair_position, h.run_at, h.seq
       limit p_batch
    ),
    claimed as (
      update public.jobs j
         set status = 'processing',
             attempts = j.attempts + 1,
             worker_id = p_worker,
             lease_token = gen_random_uuid(),
             lease_expires_at = now() + make_interval(secs => p_lease_seconds),
             started_at = now(),
             updated_at = now(),
             progress = 0
        from picked p
       -- The redundant `= any(...)` keeps the plan on the primary key: the planner
       -- cannot see how few rows a locking CTE returns.
       where j.id = any(array(select p2.id from picked p2)) and j.id = p.id
      returning j.*, p.status as from_status
    ),
    logged as (
      insert into public.job_events (job_id, owner_id, queue, from_status, to_status,
                                     attempt, actor, worker_id, error, run_at)
      select c.id, c.owner_id, c.queue, c.from_status, 'processing', c.attempts, 'worker',
             c.worker_id, null, c.run_at
        from claimed c
    )
    -- public.jobs' columns in table order (claimed carries from_status too).
    select c.id, c.seq, c.queue, c.kind, c.payload, c.priority, c.status, c.attempts,
           c.max_attempts, c.backoff_base_ms, c.backoff_cap_ms, c.run_at,
           c.pending_dependencies, c.worker_id, c.lease_token, c.lease_expires_at, c.progress,
           c.result, c.last_error, c.dedup_key, c.owner_id, c.created_at, c.updated_at,
           c.started_at, c.completed_at, c.ordering_key, c.fair_position
      from claimed c
     order by c.priority desc, c.fair_position, c.run_at, c.seq;
  v_ignored := set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
end
$$;

create or replace function public.complete_job(p_job uuid, p_lease_token uuid, p_result jsonb default null)
returns public.jobs
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_job public.jobs;
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
  v_ignored text;
begin
  if p_result is not null and octet_length(p_result::text) > 1048576 then
    raise exception using errcode = '22023', message = 'p_result exceeds 1 MiB';
  end if;
  v_ignored := set_config('edgeworks.job_events_inline', 'on', true);
  -- One statement for the job, its event and its worker's counter.
  with done as (
    update public.jobs
       set status = 'completed',
           result = p_result,
           progress = 100,
           completed_at = now(),
           updated_at = now(),
           lease_token = null,
           lease_expires_at = null
     where id = p_job and lease_token = p_lease_token and status = 'processing'
    returning *
  ),
  logged as (
    insert into public.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
                                   actor, worker_id, error, run_at)
    select d.id, d.owner_id, d.queue, 'processing', 'completed', d.attempts, 'worker',
           d.worker_id, null, d.run_at
      from done d
  ),
  counted as (
    update public.workers w
       set jobs_done = w.jobs_done + 1, last_heartbeat_at = now()
      from done
     where w.id = done.worker_id
  )
  select * into v_job from done;
  if v_job.id is null then
    perform private.raise_lease_lost(p_job);
  end if;
  -- Most jobs have no dependents: skip the call unless the index says otherwise. Its own
  -- statement, after the update, on purpose: an enqueue naming this job as a dependency
  -- holds FOR SHARE on it, so the update waits for that enqueue to commit, and only a
  -- snapshot taken after the update sees the new dependency row (one taken with the
  -- update's statement would miss it and strand the dependent).
  if exists (select 1 from public.job_dependencies d where d.depends_on = p_job) then
    perform private.release_dependents(array[p_job]);
  end if;
  v_ignored := set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
  return v_job;
end
$$;
