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
--    still come back in claim order. The expired-lease probe and the heartbeat run as
--    before.
--
-- 2. complete_job_and_claim: complete_job, then claim_jobs, in one transaction, so a
--    worker that goes on working pays one round trip and one commit per job instead
--    of two. It claims first and completes second: a bad claim argument or a lost
--    lease aborts the whole call, so either both happen or neither does (the caller
--    then still holds its lease and can complete on its own). Jobs the completion
--    releases (dependents) are claimable from the next call on.
--
-- Exactly-once is untouched: rows are still locked FOR UPDATE SKIP LOCKED and checked
-- under the lock; a completion still needs the lease token.
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
  -- The worker's heartbeat, at most once a second.
  select * into v_seen from public.workers w where w.id = p_worker;
  if v_seen.id is null or v_seen.last_heartbeat_at < now() - interval '1 second'
     or v_seen.status <> 'active' or v_seen.queues is distinct from p_queues then
    perform private.touch_worker(p_worker, p_queues);
  end if;

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

-- complete_job, then claim_jobs, as one transaction (see the header). Claims first, so
-- every argument is checked and a lost lease aborts the claim with it.
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
language plpgsql volatile security definer set search_path = ''
rows 10
as $$
begin
  if p_job is null or p_lease_token is null then
    raise exception using errcode = '22023', message = 'p_job and p_lease_token are required';
  end if;
  return query select * from public.claim_jobs(p_worker, p_queues, p_kinds, p_batch, p_lease_seconds);
  perform public.complete_job(p_job, p_lease_token, p_result);
end
$$;

revoke execute on function public.claim_jobs(text, text[], text[], integer, integer)
  from public, anon, authenticated;
grant execute on function public.claim_jobs(text, text[], text[], integer, integer) to service_role;
revoke execute on function public.complete_job_and_claim(uuid, uuid, jsonb, text, text[], text[], integer, integer)
  from public, anon, authenticated;
grant execute on function public.complete_job_and_claim(uuid, uuid, jsonb, text, text[], text[], integer, integer)
  to service_role;
