-- =============================================================================
-- Job queue: the unfinished jobs of each ordering key in a table of their own.
-- =============================================================================
--
-- As jobs_dedup_idx (20261202001000), jobs_ordering_idx was a partial index on jobs
-- that few jobs go into but that every statement updating jobs opened and whose
-- predicate it compiled. The claims read it for one thing: whether an earlier job of
-- the same (queue, ordering_key) is unfinished.
--
-- Now private.job_ordering_keys holds one row per unfinished job that has an ordering
-- key: (queue, ordering_key, seq) -> job id, written by the triggers on jobs, so every
-- way in and out is covered (enqueue_job, enqueue_jobs, chat_submit, direct SQL):
--   - jobs_record_insert (one statement per insert, as before) reads the new rows once,
--     as before, and that read also tells whether any has an ordering key; only then
--     does it insert their rows;
--   - jobs_status_changed deletes the row when the job completes, fails for good or is
--     cancelled (a retrying job keeps it);
--   - jobs_forget_events deletes the rows of deleted jobs.
-- claim_jobs, claim_job and complete_job_and_claim read the table instead of jobs for
-- that check. jobs.ordering_key stays, written as before.
--
-- Private schema, RLS on, no policy, no privileges for anon, authenticated or
-- service_role. The triggers run as the caller, which is the queue's security-definer
-- functions (as owner) for every job change; API roles cannot write jobs.
-- =============================================================================

alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create table private.job_ordering_keys (
  queue text not null,
  ordering_key text not null,
  seq bigint not null,
  job_id uuid not null,
  primary key (queue, ordering_key, seq)
);
comment on table private.job_ordering_keys is
  'The unfinished jobs that have an ordering key (triggers on public.jobs); a job is claimed only when no earlier one of its key is here.';
alter table private.job_ordering_keys enable row level security;
revoke all on table private.job_ordering_keys from public, anon, authenticated, service_role;

insert into private.job_ordering_keys (queue, ordering_key, seq, job_id)
select j.queue, j.ordering_key, j.seq, j.id
  from public.jobs j
 where j.ordering_key is not null and j.status in ('pending', 'processing', 'retrying');

create or replace function private.job_status_changed()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO ''
AS $$
begin
  -- The rule the CHECK jobs_check held: a processing job holds a lease, no other does.
  if (new.status = 'processing') <> (new.lease_token is not null and new.lease_expires_at is not null) then
    raise exception using errcode = '23514', constraint = 'jobs_check', schema = 'public', table = 'jobs',
      message = format('job %s is %s: a processing job must hold a lease (token and expiry) and no other job may',
                       new.id, new.status);
  end if;
  if old.status is not distinct from new.status then
    return null;
  end if;
  -- A job that finished no longer holds back the later jobs of its ordering key.
  if new.ordering_key is not null and new.status in ('completed', 'failed', 'cancelled') then
    delete from private.job_ordering_keys k
     where k.queue = new.queue and k.ordering_key = new.ordering_key and k.seq = new.seq;
  end if;
  if old.status = 'processing' and old.claim_event is not null and new.completion_event is null then
    insert into job_history.job_events (id, job_id, owner_id, queue, from_status, to_status, attempt,
                                        actor, worker_id, error, run_at, created_at)
    overriding system value
    select old.claim_event, old.id, old.owner_id, old.queue, old.claimed_from, 'processing',
           old.attempts, 'worker', old.worker_id, null, old.run_at, old.started_at
     where not exists (select 1 from job_history.job_events s
                        where s.job_id = old.id and s.id = old.claim_event);
  end if;
  if pg_catalog.current_setting('edgeworks.job_events_inline', true) is distinct from 'on' then
    perform private.record_job_change(old, new);
  end if;
  if new.queue = 'chat' then
    perform private.chat_mirror_job(new);
  elsif new.queue = 'sdxl_queue' or new.queue = 'wan_queue' then
    perform private.media_mirror_job_status(new);
  end if;
  return null;
end
$$;

create or replace function private.record_job_creation()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO ''
AS $$
declare
  v_actor text := nullif(current_setting('edgeworks.job_actor', true), '');
  v_refused boolean;
  v_ordered boolean;
begin
  -- A new job is pending, and (jobs_check's rule) a pending job holds no lease. One
  -- read of the new rows, which also tells whether any has an ordering key; which rule
  -- failed is looked up only when one did.
  select coalesce(bool_or(n.status <> 'pending' or n.lease_token is not null
                          or n.lease_expires_at is not null), false),
         coalesce(bool_or(n.ordering_key is not null), false)
    into v_refused, v_ordered
    from new_jobs n;
  if v_refused then
    if exists (select 1 from new_jobs n where n.status <> 'pending') then
      raise exception using errcode = '22023', message = 'a job must be created pending';
    end if;
    raise exception using errcode = '23514', constraint = 'jobs_check', schema = 'public', table = 'jobs',
      message = 'a job must be created without a lease';
  end if;
  -- The unfinished jobs of each ordering key, which the claims read (20261202001100).
  if v_ordered then
    insert into private.job_ordering_keys (queue, ordering_key, seq, job_id)
    select n.queue, n.ordering_key, n.seq, n.id from new_jobs n where n.ordering_key is not null;
  end if;
  if v_actor is null then
    v_actor := coalesce('user:' || auth.uid()::text,
                        'sql:' || coalesce(nullif(current_setting('role', true), 'none'),
                                           session_user::text));
  end if;
  insert into job_history.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
                                 actor, worker_id, error, run_at)
  select n.id, n.owner_id, n.queue, null, n.status, n.attempts, v_actor, null, null, n.run_at
    from new_jobs n
   order by n.seq;
  return null;
end
$$;


create or replace function private.forget_job_events()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  delete from job_history.job_events e using deleted_jobs d where e.job_id = d.id;
  delete from private.job_dedup_keys k using deleted_jobs d
   where d.dedup_key is not null and k.queue = d.queue and k.dedup_key = d.dedup_key
     and k.job_id = d.id;
  delete from private.job_ordering_keys k using deleted_jobs d
   where d.ordering_key is not null and k.queue = d.queue and k.ordering_key = d.ordering_key
     and k.seq = d.seq;
  return null;
end
$$;

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
           and (c.ordering_key is null or not exists (
                 select 1 from private.job_ordering_keys e
                  where e.queue = c.queue and e.ordering_key = c.ordering_key and e.seq < c.seq))
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
               and (c.ordering_key is null or not exists (
                     select 1 from private.job_ordering_keys e
                      where e.queue = c.queue and e.ordering_key = c.ordering_key and e.seq < c.seq))
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
       and (c.ordering_key is null or not exists (
             select 1 from private.job_ordering_keys e
              where e.queue = c.queue and e.ordering_key = c.ordering_key and e.seq < c.seq))
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
           and (c.ordering_key is null or not exists (
                 select 1 from private.job_ordering_keys e
                  where e.queue = c.queue and e.ordering_key = c.ordering_key and e.seq < c.seq))
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
           and (c.ordering_key is null or not exists (
                 select 1 from private.job_ordering_keys e
                  where e.queue = c.queue and e.ordering_key = c.ordering_key and e.seq < c.seq))
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

drop index public.jobs_ordering_idx;
