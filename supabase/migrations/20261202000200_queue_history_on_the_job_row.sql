-- =============================================================================
-- Job queue: a job's claim and completion are no longer written as history rows of
-- their own; the job's row carries them, and public.job_events shows them as before.
-- =============================================================================
--
-- Each job on the hot path (claim, then completion) inserted two rows into
-- public.job_events: two heap tuples, two insertions into its primary key and their
-- WAL, about 90,000 of a chained job's 1.07 M instructions and 460 of its 1,470 WAL
-- bytes (callgrind, the method of the README section "The queue, one round trip per
-- job"). Both rows only repeat what the job's row already holds at that moment, so:
--
--   public.jobs gains  claimed_from     the status the current attempt was claimed from
--                      claim_event      the id of the current attempt's claim event
--                      completion_event the id of the completion event
--   The ids are taken with nextval from the history's own sequence at the moment the
--   row would have been inserted, so ordering events by id orders them as before.
--
--   The stored history moves to job_history.job_events (same columns, identity, key,
--   RLS policies and grants; a schema PostgREST does not serve). public.job_events is
--   now a view (security_invoker, so the caller's RLS on both tables applies) of the
--   stored rows UNION ALL, for each job, the claim event of its current attempt and
--   its completion event, built from the job's row: same columns, values, ids and order
--   as the rows the claim and completion used to insert (actor 'worker', the claiming
--   worker, the attempt, run_at; created_at is the job's started_at / completed_at,
--   both set to the same now() the event row took).
--
--   The claim functions (claim_jobs, complete_job_and_claim, claim_job via
--   private.claim_locked) set claimed_from and claim_event instead of inserting; the
--   completions (complete_job, complete_jobs, complete_job_and_claim) set
--   completion_event. Any other way out of processing (fail and retry, lease expiry,
--   cancel, release, another migration's function, direct SQL) first stores the
--   current attempt's claim event with its id: private.job_status_changed does it for
--   every such change, whoever makes it. From then on the view shows the stored row and
--   not the synthesised one (it shows a synthesised claim only while no stored row has
--   its id), so each event appears once, whatever happens to the job afterwards.
--
-- Deleting a job deletes its stored events (private.forget_job_events, as before) and
-- with its row the synthesised ones. Nothing else reads job_events: not realtime (the
-- table was never published), not the Rust crates or the functions. The functions
-- below are restated from their last migrations with `public.job_events` replaced by
-- `job_history.job_events`, and the changes described above in the hot-path ones.
--
-- One difference: within one claim of several jobs, the claim events of those jobs are
-- numbered in the order the update visits the rows (primary key order) rather than in
-- claim order; each job's own history is ordered exactly as before.
-- =============================================================================

-- Functions created below carry no EXECUTE for public, anon or authenticated: the
-- default privileges of 20261201000100, restated here; the API functions restated
-- below keep their grants (create or replace keeps a function's privileges).
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

-- The stored history. The API roles that read job_events (authenticated, through RLS,
-- and service_role) need USAGE on the schema, since the view runs with their rights;
-- PostgREST does not serve it. Nothing in it is executable.
create schema job_history;
revoke all on schema job_history from public, anon, authenticated, service_role;
grant usage on schema job_history to authenticated, service_role;
alter table public.job_events set schema job_history;
-- Its grants, RLS and policies moved with it; restated so they do not depend on history.
alter table job_history.job_events enable row level security;
revoke all on table job_history.job_events from public, anon, authenticated, service_role;
grant select on table job_history.job_events to authenticated, service_role;
revoke all on sequence job_history.job_events_id_seq from public, anon, authenticated, service_role;

alter table public.jobs
  add column claimed_from text,
  add column claim_event bigint,
  add column completion_event bigint;

create view public.job_events with (security_invoker = true) as
  select e.id, e.job_id, e.owner_id, e.queue, e.from_status, e.to_status, e.attempt, e.actor,
         e.worker_id, e.error, e.run_at, e.created_at
    from job_history.job_events e
  union all
  -- The current attempt's claim, until something stores it.
  select j.claim_event, j.id, j.owner_id, j.queue, j.claimed_from, 'processing', j.attempts,
         'worker', j.worker_id, null::text, j.run_at, j.started_at
    from public.jobs j
   where j.claim_event is not null
     and (j.status = 'processing' or (j.status = 'completed' and j.completion_event is not null))
     and not exists (select 1 from job_history.job_events s
                      where s.job_id = j.id and s.id = j.claim_event)
  union all
  -- The completion by a worker.
  select j.completion_event, j.id, j.owner_id, j.queue, 'processing', 'completed', j.attempts,
         'worker', j.worker_id, null::text, j.run_at, j.completed_at
    from public.jobs j
   where j.completion_event is not null and j.status = 'completed';
comment on view public.job_events is
  'A job''s history, one row per status change: the stored rows (job_history.job_events) and the claim and completion events its row carries.';
revoke all on table public.job_events from public, anon, authenticated, service_role;
grant select on table public.job_events to authenticated, service_role;

-- The history is written by the queue alone. Without a trigger a write to a UNION view
-- fails as "not updatable" (55000) before privileges are checked; with one, a caller
-- without rights gets permission denied (42501) as from the table before, and the
-- owner, who has them, gets this refusal.
create function private.job_events_refuse_write()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  raise exception using errcode = '42501',
    message = 'public.job_events is written by the queue functions only';
end
$$;
revoke all on function private.job_events_refuse_write() from public, anon, authenticated;
create trigger job_events_refuse_write instead of insert or update or delete on public.job_events
  for each row execute function private.job_events_refuse_write();

-- Every change of status still passes here (see 20261202000100). Leaving processing any
-- other way than a worker's completion stores the attempt's claim event first.
create or replace function private.job_status_changed()
returns trigger
language plpgsql
set search_path = ''
as $$
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
revoke all on function private.job_status_changed() from public, anon, authenticated;

CREATE OR REPLACE FUNCTION public.complete_job_and_claim(p_job uuid, p_lease_token uuid, p_result jsonb, p_worker text, p_queues text[], p_kinds text[] DEFAULT NULL::text[], p_batch integer DEFAULT 1, p_lease_seconds integer DEFAULT 60)
 RETURNS SETOF jobs
 LANGUAGE plpgsql
 SECURITY DEFINER ROWS 10
 SET search_path TO ''
 SET plan_cache_mode TO 'force_generic_plan'
 SET enable_bitmapscan TO 'off'
 SET enable_seqscan TO 'off'
 SET "edgeworks.job_events_inline" TO 'on'
AS $function$
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
                 select 1 from public.jobs e
                  where e.queue = c.queue and e.ordering_key = c.ordering_key
                    and e.status in ('pending', 'processing', 'retrying') and e.seq < c.seq))
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
                 select 1 from public.jobs e
                  where e.queue = c.queue and e.ordering_key = c.ordering_key
                    and e.status in ('pending', 'processing', 'retrying') and e.seq < c.seq))
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
$function$;

CREATE OR REPLACE FUNCTION public.claim_jobs(p_worker text, p_queues text[], p_kinds text[] DEFAULT NULL::text[], p_batch integer DEFAULT 1, p_lease_seconds integer DEFAULT 60)
 RETURNS SETOF jobs
 LANGUAGE plpgsql
 SECURITY DEFINER ROWS 10
 SET search_path TO ''
 SET plan_cache_mode TO 'force_generic_plan'
 SET enable_bitmapscan TO 'off'
 SET enable_seqscan TO 'off'
AS $function$
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
                 select 1 from public.jobs e
                  where e.queue = c.queue and e.ordering_key = c.ordering_key
                    and e.status in ('pending', 'processing', 'retrying') and e.seq < c.seq))
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
$function$;

CREATE OR REPLACE FUNCTION private.claim_locked(p_worker text, p_lease_seconds integer, p_ids uuid[])
 RETURNS SETOF jobs
 LANGUAGE plpgsql
 SET search_path TO ''
 SET plan_cache_mode TO 'force_generic_plan'
AS $function$
declare
  v_prev_actor text := current_setting('edgeworks.job_actor', true);
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
begin
  perform set_config('edgeworks.job_actor', 'worker', true),
          set_config('edgeworks.job_events_inline', 'on', true);
  return query
    with before as (
      select b.id, b.status from public.jobs b where b.id = any(p_ids)
    ),
    claimed as (
      update public.jobs j
         set status = 'processing',
             attempts = j.attempts + 1,
             worker_id = p_worker,
             lease_token = gen_random_uuid(),
             lease_expires_at = now() + make_interval(secs => p_lease_seconds),
             started_at = now(),
             claimed_from = before.status,
             claim_event = nextval('job_history.job_events_id_seq'),
             updated_at = now(),
             progress = 0
        from before
       where j.id = before.id and before.status in ('pending', 'retrying')
      returning j.*
    )
    select * from claimed c
     order by c.priority desc, c.fair_position, c.run_at, c.seq;
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true),
          set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
end
$function$;

CREATE OR REPLACE FUNCTION public.complete_jobs(p_completions jsonb)
 RETURNS TABLE(job_id uuid, completed boolean, status text)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
#variable_conflict use_column
declare
  v_done uuid[];
  v_ids uuid[];
  v_prev_actor text := current_setting('edgeworks.job_actor', true);
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
begin
  if p_completions is null or jsonb_typeof(p_completions) <> 'array' then
    raise exception using errcode = '22023', message = 'p_completions must be a JSON array';
  end if;
  if jsonb_array_length(p_completions) > 1000 then
    raise exception using errcode = '22023', message = 'p_completions holds more than 1000 items';
  end if;
  if exists (select 1 from jsonb_array_elements(p_completions) e
              where case when jsonb_typeof(e) <> 'object' then true
                         else e ->> 'job' is null or e ->> 'lease_token' is null
                              or octet_length(coalesce(e -> 'result', 'null'::jsonb)::text) > 1048576
                    end) then
    raise exception using errcode = '22023',
      message = 'each of p_completions must be {job, lease_token, result?} with result <= 1 MiB';
  end if;
  perform set_config('edgeworks.job_actor', 'worker', true),
          set_config('edgeworks.job_events_inline', 'on', true);
  select array_agg((e ->> 'job')::uuid) into v_ids from jsonb_array_elements(p_completions) e;

  with input as (
    select (e ->> 'job')::uuid as id, (e ->> 'lease_token')::uuid as token,
           nullif(e -> 'result', 'null'::jsonb) as result
      from jsonb_array_elements(p_completions) e
  ),
  done as (
    update public.jobs j
       set status = 'completed',
           result = i.result,
           progress = 100,
           completed_at = now(),
           completion_event = nextval('job_history.job_events_id_seq'),
           updated_at = now(),
           lease_token = null,
           lease_expires_at = null
      from input i
     -- The redundant `= any(v_ids)` lets the planner reach the rows through the primary key.
     where j.id = any(v_ids) and j.id = i.id and j.lease_token = i.token
       and j.status = 'processing'
    returning j.*
  ),
  counted as (
    update public.workers w
       set jobs_done = w.jobs_done + x.n, last_heartbeat_at = now()
      from (select d.worker_id, count(*) as n from done d
             where d.worker_id is not null group by d.worker_id) x
     where w.id = x.worker_id
  )
  select array_agg(d.id) into v_done from done d;

  if v_done is not null
     and exists (select 1 from public.job_dependencies d where d.depends_on = any(v_done)) then
    perform private.release_dependents(v_done);
  end if;
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true),
          set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);

  return query
    select i.id, coalesce(i.id = any(v_done), false), j.status
      from (select (e ->> 'job')::uuid as id, x.ord
              from jsonb_array_elements(p_completions) with ordinality as x (e, ord)) i
      left join public.jobs j on j.id = i.id
     order by i.ord;
end
$function$;

CREATE OR REPLACE FUNCTION public.complete_job(p_job uuid, p_lease_token uuid, p_result jsonb DEFAULT NULL::jsonb)
 RETURNS jobs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
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
           completion_event = nextval('job_history.job_events_id_seq'),
           updated_at = now(),
           lease_token = null,
           lease_expires_at = null
     where id = p_job and lease_token = p_lease_token and status = 'processing'
    returning *
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
$function$;

CREATE OR REPLACE FUNCTION public.fail_job(p_job uuid, p_lease_token uuid, p_error text, p_retryable boolean DEFAULT true, p_retry_after_ms integer DEFAULT NULL::integer)
 RETURNS jobs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  v_job public.jobs;
  v_delay_ms bigint;
  v_prev_actor text := current_setting('edgeworks.job_actor', true);
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
begin
  if p_retry_after_ms is not null and p_retry_after_ms < 0 then
    raise exception using errcode = '22023', message = 'p_retry_after_ms must be >= 0';
  end if;
  perform set_config('edgeworks.job_actor', 'worker', true),
          set_config('edgeworks.job_events_inline', 'on', true);

  select * into v_job from public.jobs
   where id = p_job and lease_token = p_lease_token and status = 'processing'
   for update;
  if not found then
    perform private.raise_lease_lost(p_job);
  end if;

  if coalesce(p_retryable, true) and v_job.attempts < v_job.max_attempts then
    -- Full jitter: uniform in [0, ceiling], and never sooner than the caller asked.
    v_delay_ms := greatest(
      coalesce(p_retry_after_ms, 0)::bigint,
      floor(random() * (public.backoff_ceiling_ms(v_job.attempts, v_job.backoff_base_ms,
                                                  v_job.backoff_cap_ms) + 1))::bigint);
    update public.jobs
       set status = 'retrying',
           run_at = now() + make_interval(secs => v_delay_ms / 1000.0),
           last_error = left(coalesce(p_error, 'unknown error'), 10000),
           lease_token = null,
           lease_expires_at = null,
           updated_at = now()
     where id = p_job
    returning * into v_job;
  else
    update public.jobs
       set status = 'failed',
           last_error = left(coalesce(p_error, 'unknown error'), 10000),
           lease_token = null,
           lease_expires_at = null,
           completed_at = now(),
           updated_at = now()
     where id = p_job
    returning * into v_job;
  end if;
  insert into job_history.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
                                 actor, worker_id, error, run_at)
  values (v_job.id, v_job.owner_id, v_job.queue, 'processing', v_job.status, v_job.attempts,
          'worker', v_job.worker_id, v_job.last_error, v_job.run_at);
  if v_job.status = 'failed' then
    perform private.fail_dependents(array[p_job]);
  end if;

  update public.workers
     set jobs_failed = jobs_failed + 1, last_heartbeat_at = now()
   where id = v_job.worker_id;
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true),
          set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
  return v_job;
end
$function$;

CREATE OR REPLACE FUNCTION public.cancel_job(p_job uuid)
 RETURNS jobs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  v_job public.jobs;
  v_from text;
  v_actor text;
  v_prev_actor text := current_setting('edgeworks.job_actor', true);
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
begin
  select * into v_job from public.jobs where id = p_job for update;
  if not found or private.job_caller_may_access(v_job.owner_id) is not true then
    raise exception using errcode = 'EQ404', message = format('job %s not found', p_job);
  end if;
  if v_job.status in ('completed', 'failed', 'cancelled') then
    return v_job;
  end if;
  v_from := v_job.status;
  v_actor := coalesce('user:' || auth.uid()::text,
                      coalesce(nullif(current_setting('role', true), 'none'), session_user::text));
  perform set_config('edgeworks.job_actor', v_actor, true),
          set_config('edgeworks.job_events_inline', 'on', true);
  update public.jobs
     set status = 'cancelled',
         lease_token = null,
         lease_expires_at = null,
         completed_at = now(),
         updated_at = now()
   where id = p_job
  returning * into v_job;
  insert into job_history.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
                                 actor, worker_id, error, run_at)
  values (v_job.id, v_job.owner_id, v_job.queue, v_from, 'cancelled', v_job.attempts,
          v_actor, v_job.worker_id, null, v_job.run_at);
  perform private.fail_dependents(array[p_job]);
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true),
          set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
  return v_job;
end
$function$;

CREATE OR REPLACE FUNCTION public.requeue_expired_leases(p_queues text[] DEFAULT NULL::text[])
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  v_count integer;
  v_failed uuid[];
  v_queues text[];
  v_queue text;
  v_prev_actor text := current_setting('edgeworks.job_actor', true);
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
begin
  perform set_config('edgeworks.job_actor', 'system:lease_expiry', true),
          set_config('edgeworks.job_events_inline', 'on', true);
  -- `id = any(array(...))` rather than a join: the plan stays an index lookup however
  -- the planner guesses the row count (claim_jobs runs this with generic plans).
  with moved as (
    update public.jobs j
       set status = case when j.attempts < j.max_attempts then 'retrying' else 'failed' end,
           run_at = case when j.attempts < j.max_attempts then now() else j.run_at end,
           completed_at = case when j.attempts < j.max_attempts then null else now() end,
           last_error = format('lease expired: worker %s stopped renewing it (attempt %s of %s)',
                               j.worker_id, j.attempts, j.max_attempts),
           lease_token = null,
           lease_expires_at = null,
           updated_at = now()
     where j.id = any(array(
             select e.id from public.jobs e
              where e.status = 'processing'
                and e.lease_expires_at < now()
                and (p_queues is null or e.queue = any(p_queues))
              order by e.lease_expires_at
              limit 1000
                for update skip locked))
    -- worker_id is kept (the last worker to hold the job), so this is the lapsed worker.
    returning j.*
  ),
  logged as (
    insert into job_history.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
                                   actor, worker_id, error, run_at)
    select m.id, m.owner_id, m.queue, 'processing', m.status, m.attempts, 'system:lease_expiry',
           m.worker_id, m.last_error, m.run_at
      from moved m
  ),
  -- The worker that let the lease lapse is charged with a failed attempt.
  charged as (
    update public.workers w
       set jobs_failed = w.jobs_failed + x.n
      from (select m.worker_id, count(*) as n from moved m
             where m.worker_id is not null group by m.worker_id) x
     where w.id = x.worker_id
  )
  select count(*)::integer,
         array_agg(m.id) filter (where m.status = 'failed'),
         array_agg(distinct m.queue) filter (where m.status = 'retrying')
    into v_count, v_failed, v_queues
    from moved m;

  if v_failed is not null then
    perform private.fail_dependents(v_failed);
  end if;
  if v_queues is not null then
    foreach v_queue in array v_queues loop
      perform pg_notify('jobs_' || v_queue, 'requeued');
    end loop;
  end if;
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true),
          set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
  return v_count;
end
$function$;

CREATE OR REPLACE FUNCTION private.fail_dependents(p_roots uuid[])
 RETURNS integer
 LANGUAGE plpgsql
 SET search_path TO ''
AS $function$
declare
  v_count integer;
  v_prev_actor text := current_setting('edgeworks.job_actor', true);
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
begin
  perform set_config('edgeworks.job_actor', 'system:dependency', true),
          set_config('edgeworks.job_events_inline', 'on', true);
  with recursive dependents (job_id, root) as (
    select d.job_id, d.depends_on
      from public.job_dependencies d
     where d.depends_on = any(p_roots)
    union
    select d.job_id, dep.root
      from public.job_dependencies d
      join dependents dep on d.depends_on = dep.job_id
  ),
  one_root as (
    select distinct on (job_id) job_id, root from dependents order by job_id, root
  ),
  failed as (
    update public.jobs j
       set status = 'failed',
           last_error = format('dependency %s failed or was cancelled', r.root),
           completed_at = now(),
           updated_at = now()
      from one_root r
     where j.id = r.job_id
       and j.status = 'pending'
    returning j.*
  ),
  logged as (
    insert into job_history.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
                                   actor, worker_id, error, run_at)
    select f.id, f.owner_id, f.queue, 'pending', 'failed', f.attempts, 'system:dependency',
           f.worker_id, f.last_error, f.run_at
      from failed f
  )
  select count(*) into v_count from failed;
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true),
          set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
  return v_count;
end
$function$;

CREATE OR REPLACE FUNCTION private.record_job_change(p_old jobs, p_new jobs)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO ''
AS $function$
declare
  v_actor text;
begin
  if (p_old.status, p_new.status) not in (
      ('pending', 'processing'), ('retrying', 'processing'),
      ('processing', 'completed'), ('processing', 'retrying'), ('processing', 'failed'),
      ('pending', 'failed'),
      ('pending', 'cancelled'), ('retrying', 'cancelled'), ('processing', 'cancelled')) then
    raise exception using errcode = '22023',
      message = format('illegal job transition %s -> %s (job %s)', p_old.status, p_new.status, p_new.id);
  end if;
  v_actor := coalesce(nullif(current_setting('edgeworks.job_actor', true), ''),
                      'user:' || auth.uid()::text,
                      'sql:' || coalesce(nullif(current_setting('role', true), 'none'),
                                         session_user::text));
  insert into job_history.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
                                 actor, worker_id, error, run_at)
  values (p_new.id, p_new.owner_id, p_new.queue, p_old.status, p_new.status, p_new.attempts,
          v_actor, coalesce(p_new.worker_id, p_old.worker_id),
          case when p_new.status in ('retrying', 'failed') then p_new.last_error end,
          p_new.run_at);
end
$function$;

CREATE OR REPLACE FUNCTION private.forget_job_events()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
begin
  delete from job_history.job_events e using deleted_jobs d where e.job_id = d.id;
  return null;
end
$function$;

CREATE OR REPLACE FUNCTION private.record_job_creation()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO ''
AS $function$
declare
  v_actor text := nullif(current_setting('edgeworks.job_actor', true), '');
begin
  -- A new job is pending, and (jobs_check's rule) a pending job holds no lease. One
  -- read of the new rows; which rule failed is looked up only when one did.
  if exists (select 1 from new_jobs n
              where n.status <> 'pending' or n.lease_token is not null or n.lease_expires_at is not null) then
    if exists (select 1 from new_jobs n where n.status <> 'pending') then
      raise exception using errcode = '22023', message = 'a job must be created pending';
    end if;
    raise exception using errcode = '23514', constraint = 'jobs_check', schema = 'public', table = 'jobs',
      message = 'a job must be created without a lease';
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
$function$;
