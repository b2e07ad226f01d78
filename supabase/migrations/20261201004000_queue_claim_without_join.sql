-- =============================================================================
-- Job queue: a claim that stays cheap on a large table, and a completion that
-- claims the next job in the same call.
-- =============================================================================
--
-- 1. claim_jobs (same arguments, same result, same locking). The claim of
--    20261201002000 joined the locked rows back to public.jobs (`update ... from
--    picked`) to carry each row's previous status into its event. With a generic plan
--    the planner sizes that join from the claim index's row count, and on a table with
--    tens of thousands of waiting jobs a batch-1 claim took 15-20 ms instead of
--    0.15 ms (measured on 64,000 waiting jobs in a plpgsql loop: 19.5 ms per claim;
--    EXPLAIN ANALYZE puts the time in the join above the locking CTE). Now:
--      - the locked rows' events are written from the locking CTE itself (it already
--        holds id, status, owner, queue, attempts and run_at), and
--      - the update reaches its rows only through `id = any(array(...))`, an index
--        lookup whatever the planner guesses about the CTE's size.
--    One queue (every caller in this project names one, or the registry's few) takes a
--    plain ordered index walk; several queues keep the per-queue lateral walk. Rows
--    still come back in claim order. The argument checks, the expired-lease probe and
--    the heartbeat run as before, from private.claim_preamble.
--
-- 2. complete_job_and_claim: complete_job, then claim_jobs, in one transaction, so a
--    worker that goes on working pays one round trip and one commit per job instead
--    of two. Either both happen or neither: a lost lease or a bad claim argument
--    aborts the call, and the caller still holds its lease (it can complete on its
--    own). Jobs the completion releases (dependents) are claimable in the same call.
--    For one queue, both statements run in its own body: calling complete_job and
--    claim_jobs from it cost about as much as the round trip it saves (measured with
--    scripts/bench queue: 0.31 against 0.25 ms of database CPU per job).
--
-- All three keep generic plans and never consider a sequential or bitmap scan: each of
-- their queries is an index probe, and a plan made while the statistics still call the
-- table empty must not read the whole queue.
--
-- Exactly-once is untouched: rows are still locked FOR UPDATE SKIP LOCKED and checked
-- under the lock; a completion still needs the lease token.
-- =============================================================================

-- Functions created below carry no EXECUTE for public, anon or authenticated: the
-- default privileges of 20261201000100, restated here so this migration does not depend
-- on them having survived; each API function is granted explicitly below.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

-- What every claim does first: checks its arguments, sends a crashed worker's jobs back
-- (cheap when nothing expired: one probe of the small in-flight index per queue) and
-- records the worker's heartbeat (at most once a second).
create function private.claim_preamble(p_worker text, p_queues text[], p_batch integer,
                                       p_lease_seconds integer) returns void
language plpgsql volatile set search_path = '' set plan_cache_mode = force_generic_plan
set enable_seqscan = off set enable_bitmapscan = off
as $$
declare
  v_seen public.workers;
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

  if exists (select 1 from public.jobs j
              where j.status = 'processing' and j.queue = any(p_queues)
                and j.lease_expires_at < now()) then
    perform public.requeue_expired_leases(p_queues);
  end if;
  select * into v_seen from public.workers w where w.id = p_worker;
  if v_seen.id is null or v_seen.last_heartbeat_at < now() - interval '1 second'
     or v_seen.status <> 'active' or v_seen.queues is distinct from p_queues then
    perform private.touch_worker(p_worker, p_queues);
  end if;
end
$$;

create or replace function public.claim_jobs(
  p_worker text,
  p_queues text[],
  p_kinds text[] default null,
  p_batch integer default 1,
  p_lease_seconds integer default 60
) returns setof public.jobs
language plpgsql volatile security definer
set search_path = '' set plan_cache_mode = force_generic_plan set enable_bitmapscan = off
set enable_seqscan = off
rows 10
as $$
declare
  v_ignored text;
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
begin
  perform private.claim_preamble(p_worker, p_queues, p_batch, p_lease_seconds);

  v_ignored := set_config('edgeworks.job_events_inline', 'on', true);
  if cardinality(p_queues) = 1 then
    return query
      with picked as (
        select c.id, c.status, c.owner_id, c.queue, c.attempts, c.run_at
          from public.jobs c
         where c.queue = p_queues[1]
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
      ),
      logged as (
        insert into public.job_events (job_id, owner_id, queue, from_status, to_status,
                                       attempt, actor, worker_id, error, run_at)
        select p.id, p.owner_id, p.queue, p.status, 'processing', p.attempts + 1, 'worker',
               p_worker, null, p.run_at
          from picked p
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
      logged as (
        insert into public.job_events (job_id, owner_id, queue, from_status, to_status,
                                       attempt, actor, worker_id, error, run_at)
        select p.id, p.owner_id, p.queue, p.status, 'processing', p.attempts + 1, 'worker',
               p_worker, null, p.run_at
          from picked p
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
         where j.id = any(array(select p.id from picked p))
        returning j.*
      )
      select c.* from claimed c
       order by c.priority desc, c.fair_position, c.run_at, c.seq;
  end if;
  v_ignored := set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
end
$$;

-- complete_job, then claim_jobs, as one transaction (see the header).
create function public.complete_job_and_claim(
  p_job uuid,
  p_lease_token uuid,
  p_result jsonb,
  p_worker text,
  p_queues text[],
  p_kinds text[] default null,
  p_batch integer default 1,
  p_lease_seconds integer default 60
) returns setof public.jobs
language plpgsql volatile security definer
set search_path = '' set plan_cache_mode = force_generic_plan set enable_bitmapscan = off
set enable_seqscan = off
rows 10
as $$
declare
  v_done uuid;
  v_holder text;
  v_ignored text;
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
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

  v_ignored := set_config('edgeworks.job_events_inline', 'on', true);
  -- complete_job's statement: keep the two equal.
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
  select d.id, d.worker_id into v_done, v_holder from done d;
  if v_done is null then
    perform private.raise_lease_lost(p_job);
  end if;
  -- The completion refreshed its worker's heartbeat; a claim for another worker, or
  -- for other queues than the worker last named, records that worker's as claim_jobs does.
  if v_holder is distinct from p_worker
     or not exists (select 1 from public.workers w
                     where w.id = p_worker and w.status = 'active' and w.queues = p_queues) then
    perform private.touch_worker(p_worker, p_queues);
  end if;
  -- A statement of its own after the update, as in complete_job (see there).
  if exists (select 1 from public.job_dependencies d where d.depends_on = p_job) then
    perform private.release_dependents(array[p_job]);
  end if;

  -- claim_jobs' one-queue statement: keep the two equal.
  return query
    with picked as (
      select c.id, c.status, c.owner_id, c.queue, c.attempts, c.run_at
        from public.jobs c
       where c.queue = p_queues[1]
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
    ),
    logged as (
      insert into public.job_events (job_id, owner_id, queue, from_status, to_status,
                                     attempt, actor, worker_id, error, run_at)
      select p.id, p.owner_id, p.queue, p.status, 'processing', p.attempts + 1, 'worker',
             p_worker, null, p.run_at
        from picked p
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
       where j.id = any(array(select p.id from picked p))
      returning j.*
    )
    select c.* from claimed c
     order by c.priority desc, c.fair_position, c.run_at, c.seq;
  v_ignored := set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
end
$$;

revoke execute on function private.claim_preamble(text, text[], integer, integer)
  from public, anon, authenticated, service_role;
revoke execute on function public.claim_jobs(text, text[], text[], integer, integer)
  from public, anon, authenticated;
grant execute on function public.claim_jobs(text, text[], text[], integer, integer) to service_role;
revoke execute on function public.complete_job_and_claim(uuid, uuid, jsonb, text, text[], text[], integer, integer)
  from public, anon, authenticated;
grant execute on function public.complete_job_and_claim(uuid, uuid, jsonb, text, text[], text[], integer, integer)
  to service_role;
