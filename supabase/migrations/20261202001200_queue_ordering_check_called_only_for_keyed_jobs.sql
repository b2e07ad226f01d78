-- =============================================================================
-- Job queue: the claims' ordering-key check is a function call, made only for a
-- candidate that has a key.
-- =============================================================================
--
-- Since 20261202001100 a claim asks private.job_ordering_keys whether an earlier job
-- of a candidate's key is unfinished. Written as `not exists (select ...)` in the
-- claim's WHERE clause, that was a SubPlan: Postgres initialises it (an index scan
-- node, its expressions) for every claim statement, even when no candidate has a key
-- and it never runs. Measured with callgrind on a single-user backend, 300 chained
-- calls (complete_job_and_claim at batch 1): 979,000 instructions per job with the
-- SubPlan, 951,000 with the check removed altogether, 953,000 with this function.
--
-- private.ordering_key_free is plpgsql, STABLE (the caller's snapshot, as the SubPlan
-- had), and is called only when `c.ordering_key is null` is false. A job with an
-- ordering key pays for the call instead: chained jobs that all have keys cost 1.069 M
-- (distinct keys) and 1.082 M (one key) instructions per job, against 1.047 M and
-- 1.057 M with the SubPlan and 1.058 M and 1.066 M before 20261202001000. Jobs without
-- a key are most jobs and what issue 18's goal measures.
-- =============================================================================

alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create or replace function private.ordering_key_free(p_queue text, p_ordering_key text, p_seq bigint)
returns boolean
language plpgsql
stable
set search_path = ''
as $$
begin
  -- No earlier unfinished job of the key (private.job_ordering_keys holds those).
  return not exists (select 1 from private.job_ordering_keys e
                      where e.queue = p_queue and e.ordering_key = p_ordering_key and e.seq < p_seq);
end
$$;
revoke all on function private.ordering_key_free(text, text, bigint) from public, anon, authenticated, service_role;

create or replace function public.claim_jobs(p_worker text, p_queues text[], p_kinds text[] DEFAULT NULL::text[], p_batch integer DEFAULT 1, p_lease_seconds integer DEFAULT 60)
 RETURNS SETOF jobs
 LANGUAGE plpgsql
 SECURITY DEFINER ROWS 10
 SET search_path TO ''
 SET plan_cache_mode TO 'force_generic_plan'
 SET enable_bitmapscan TO 'off'
 SET enable_seqscan TO 'off'
AS $$
declare
  v_ignored text;
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
begin
  perform private.claim_preamble(p_worker, p_queues, p_batch, p_lease_seconds);

  v_ignored := set_config('edgeworks.job_events_inline', 'on', true);
  if cardinality(p_queues) = 1 then
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
        -- The columns it sets are private.claim_locked's (claim_job uses it): keep the
        -- two equal.
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
  else
    return query
      with picked as (
        select h.id, h.status, h.owner_id, h.queue, h.attempts, h.run_at
          from unnest(p_queues) as q (name)
          cross join lateral (
            select c.id, c.status, c.owner_id, c.queue, c.attempts, c.run_at, c.priority,
                   c.fair_position, c.seq
              from public.jobs c
             where c.queue = q.name
               and c.status in ('pending', 'retrying')
               and c.pending_dependencies = 0
               and c.run_at <= now()
               and (p_kinds is null or c.kind = any(p_kinds))
               and (c.ordering_key is null or private.ordering_key_free(c.queue, c.ordering_key, c.seq))
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
  v_ignored := set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
end
$$;

create or replace function public.claim_job(p_job uuid, p_worker text, p_queues text[], p_kinds text[] DEFAULT NULL::text[], p_lease_seconds integer DEFAULT 60)
 RETURNS SETOF jobs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $$
declare
  v_queue text;
  v_ids uuid[];
begin
  if p_job is null then
    raise exception using errcode = '22023', message = 'p_job is required';
  end if;
  if p_worker is null or length(p_worker) not between 1 and 200 then
    raise exception using errcode = '22023', message = 'p_worker must be 1 to 200 characters';
  end if;
  if p_queues is null or cardinality(p_queues) = 0 or cardinality(p_queues) > 50 then
    raise exception using errcode = '22023', message = 'p_queues must name 1 to 50 queues';
  end if;
  if p_lease_seconds is null or p_lease_seconds not between 1 and 86400 then
    raise exception using errcode = '22023', message = 'p_lease_seconds must be between 1 and 86400';
  end if;
  select j.queue into v_queue from public.jobs j
   where j.id = p_job and j.queue = any (p_queues)
     and (p_kinds is null or j.kind = any (p_kinds));
  if v_queue is null then
    return;
  end if;
  if exists (select 1 from public.jobs j
              where j.id = p_job and j.status = 'processing' and j.lease_expires_at < now()) then
    perform public.requeue_expired_leases(array[v_queue]);
  end if;
  perform private.touch_worker(p_worker, array[v_queue]);
  v_ids := array(
    select c.id from public.jobs c
     where c.id = p_job
       and c.status in ('pending', 'retrying')
       and c.pending_dependencies = 0
       and c.run_at <= now()
       and (c.ordering_key is null or private.ordering_key_free(c.queue, c.ordering_key, c.seq))
       for update skip locked);
  if cardinality(v_ids) = 0 then
    return;
  end if;
  return query select * from private.claim_locked(p_worker, p_lease_seconds, v_ids);
end
$$;

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
  if exists (select 1 from public.jobs j
              where j.status = 'processing' and j.queue = p_queues[1]
                and j.lease_expires_at < now()) then
    perform public.requeue_expired_leases(p_queues);
  end if;

  -- complete_job's statement, returning only what the event and the counter read (the
  -- whole row made each node above it carry 27 columns), and the counter's update
  -- reaching the worker's row by its key instead of a join; it also tells whether that
  -- row already says what touch_worker would write.
  with done as (
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
    returning id, owner_id, queue, attempts, worker_id, run_at
  ),
  counted as (
    update public.workers w
       set jobs_done = w.jobs_done + 1, last_heartbeat_at = now()
     where w.id = (select d.worker_id from done d)
    returning w.status = 'active' and w.queues = p_queues as current
  )
  select d.id, d.worker_id, (select c.current from counted c)
    into v_done, v_holder, v_current
    from done d;
  if v_done is null then
    perform private.raise_lease_lost(p_job);
  end if;
  -- The completion refreshed its worker's heartbeat; a claim for another worker, or
  -- for other queues than the worker last named (or a worker with no row yet), records
  -- that worker's as claim_jobs does.
  if v_holder is distinct from p_worker or v_current is not true then
    perform private.touch_worker(p_worker, p_queues);
  end if;
  -- A statement of its own after the update, as in complete_job (see there).
  if exists (select 1 from public.job_dependencies d where d.depends_on = p_job) then
    perform private.release_dependents(array[p_job]);
  end if;

  -- claim_jobs' one-queue statement: keep the two equal. One job needs no ordering, so
  -- its update is the statement itself, not a CTE sorted by a select above it.
  if p_batch = 1 then
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
         limit 1
           for update skip locked
      )
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
