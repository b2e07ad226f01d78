-- =============================================================================
-- Job queue: per-key ordering, fairness across owners, one claim statement.
-- =============================================================================
--
-- Ordering: a job may carry an ordering key (chat: its session). It is claimable
-- only when no earlier job (smaller seq) of the same queue and key is unfinished
-- (pending, processing or retrying). A job that completed, failed for good or was
-- cancelled no longer holds the line, so one failure never blocks the rest (the
-- difference from a dependency chain). The rule is part of the claim's scan: no
-- lock is held between jobs, and two workers can never run one key's jobs at once,
-- because the earlier job stays unfinished until its worker ends it.
--
-- Fairness: claim order is (priority desc, fair_position, run_at, seq).
-- fair_position is given at enqueue, start-time fair queuing style:
--     1 + greatest(the position of the queue's head, the owner's last unfinished position)
-- so an owner with a backlog of 100 gets 1..100 while another owner's one job gets
-- a position next to the head: it is claimed within the first few claims instead of
-- after the backlog. Jobs without an owner form one tenant of their own.
--
-- One claim statement: claim_jobs picks rows (one lateral index walk per queue, for
-- one queue or many) and claim_job picks one named row; both hand the locked rows to
-- private.claim_locked, the single UPDATE that starts an attempt and logs it.
--
-- API changes (service_role, as before):
--   enqueue_job(..., p_ordering_key text = null) -> jobs
--   enqueue_jobs(p_jobs): items may carry "ordering_key"
-- =============================================================================

-- Functions created below carry no EXECUTE for public, anon or authenticated: the
-- default privileges of 20261201000100, restated here so this migration does not depend
-- on them having survived; each API function is granted explicitly below.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

alter table public.jobs
  add column ordering_key text,
  add column fair_position bigint not null default 0;

drop index public.jobs_claim_idx;
-- Claim and queue position walk this index in claim order.
create index jobs_claim_idx on public.jobs (queue, priority desc, fair_position, run_at, seq)
  where status in ('pending', 'retrying') and pending_dependencies = 0;
-- "Is an earlier job of this key unfinished?": one probe per candidate with a key.
create index jobs_ordering_idx on public.jobs (queue, ordering_key, seq)
  where ordering_key is not null and status in ('pending', 'processing', 'retrying');
-- An owner's last unfinished position, read at enqueue.
create index jobs_tenant_idx on public.jobs (queue, owner_id, fair_position desc)
  where status in ('pending', 'processing', 'retrying');

-- -----------------------------------------------------------------------------
-- Helpers (private: no API role may call them)
-- -----------------------------------------------------------------------------

-- The fair position of the next job of p_owner in p_queue (see the header).
create function private.next_fair_position(p_queue text, p_owner uuid) returns bigint
language plpgsql stable set search_path = ''
as $$
declare
  v_head bigint;
  v_own bigint;
begin
  select j.fair_position into v_head from public.jobs j
   where j.queue = p_queue and j.status in ('pending', 'retrying') and j.pending_dependencies = 0
   order by j.priority desc, j.fair_position, j.run_at, j.seq
   limit 1;
  if p_owner is null then
    select j.fair_position into v_own from public.jobs j
     where j.queue = p_queue and j.owner_id is null and j.status in ('pending', 'processing', 'retrying')
     order by j.fair_position desc limit 1;
  else
    select j.fair_position into v_own from public.jobs j
     where j.queue = p_queue and j.owner_id = p_owner and j.status in ('pending', 'processing', 'retrying')
     order by j.fair_position desc limit 1;
  end if;
  return greatest(coalesce(v_head, 0), coalesce(v_own, 0)) + 1;
end
$$;

-- Records a worker's heartbeat, at most once a second per worker: a busy worker
-- claims far more often, and rewriting its row on every claim would be a good part
-- of the claim's cost.
create function private.touch_worker(p_worker text, p_queues text[]) returns void
language plpgsql volatile set search_path = ''
as $$
declare
  v_seen record;
begin
  select w.last_heartbeat_at, w.status, w.queues into v_seen
    from public.workers w where w.id = p_worker;
  if not found then
    insert into public.workers (id, queues, status, last_heartbeat_at)
    values (p_worker, p_queues, 'active', now())
    on conflict (id) do update
      set queues = excluded.queues, status = 'active', last_heartbeat_at = excluded.last_heartbeat_at;
  elsif v_seen.last_heartbeat_at < now() - interval '1 second'
        or v_seen.status <> 'active' or v_seen.queues is distinct from p_queues then
    update public.workers
       set queues = p_queues, status = 'active', last_heartbeat_at = now()
     where id = p_worker;
  end if;
end
$$;

-- THE claim: starts an attempt on rows the caller has already locked (FOR UPDATE)
-- in this transaction, and logs each transition in the same statement.
create function private.claim_locked(p_worker text, p_lease_seconds integer, p_ids uuid[])
returns setof public.jobs
language plpgsql volatile set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
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
             updated_at = now(),
             progress = 0
        from before
       where j.id = before.id and before.status in ('pending', 'retrying')
      returning j.*
    ),
    logged as (
      insert into public.job_events (job_id, owner_id, queue, from_status, to_status,
                                     attempt, actor, worker_id, error, run_at)
      select c.id, c.owner_id, c.queue, b.status, 'processing', c.attempts, 'worker',
             c.worker_id, null, c.run_at
        from claimed c join before b on b.id = c.id
    )
    select * from claimed c
     order by c.priority desc, c.fair_position, c.run_at, c.seq;
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true),
          set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
end
$$;

-- -----------------------------------------------------------------------------
-- Enqueue
-- -----------------------------------------------------------------------------

drop function public.enqueue_job(text, text, jsonb, integer, integer, integer, text, uuid[], uuid, integer, integer);
create function public.enqueue_job(
  p_queue text,
  p_kind text,
  p_payload jsonb default '{}'::jsonb,
  p_priority integer default 0,
  p_delay_ms integer default 0,
  p_max_attempts integer default 5,
  p_dedup_key text default null,
  p_depends_on uuid[] default null,
  p_owner uuid default null,
  p_backoff_base_ms integer default 1000,
  p_backoff_cap_ms integer default 600000,
  p_ordering_key text default null
) returns public.jobs
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_job public.jobs;
  v_deps uuid[];
  v_found integer := 0;
  v_unfinished integer := 0;
  v_broken uuid;
  v_try integer := 0;
  v_duplicate boolean := false;
  v_prev_actor text := current_setting('edgeworks.job_actor', true);
begin
  perform private.check_job_arguments(p_queue, p_kind, p_payload, p_priority, p_delay_ms,
                                      p_max_attempts, p_dedup_key, p_backoff_base_ms,
                                      p_backoff_cap_ms);
  if p_ordering_key is not null and length(p_ordering_key) not between 1 and 400 then
    raise exception using errcode = '22023', message = 'p_ordering_key must be 1 to 400 characters';
  end if;
  perform set_config('edgeworks.job_actor',
                     coalesce(nullif(current_setting('role', true), 'none'), session_user::text),
                     true);

  if p_depends_on is not null and cardinality(p_depends_on) > 0 then
    select array_agg(distinct d order by d) into v_deps
      from unnest(p_depends_on) d where d is not null;
    if cardinality(v_deps) > 100 then
      raise exception using errcode = '22023', message = 'p_depends_on names more than 100 jobs';
    end if;
    -- FOR SHARE blocks a concurrent complete/fail of a dependency until this job and its
    -- dependency rows are committed, so that completion sees (and releases) this job; and
    -- once the lock is granted the status read here is the committed one.
    select count(*),
           count(*) filter (where s.status <> 'completed'),
           (array_agg(s.id) filter (where s.status in ('failed', 'cancelled')))[1]
      into v_found, v_unfinished, v_broken
      from (select j.id, j.status from public.jobs j
             where j.id = any(v_deps) order by j.id for share) s;
    if v_found < cardinality(v_deps) then
      raise exception using errcode = '22023', message = 'p_depends_on names a job that does not exist';
    end if;
  end if;

  loop
    v_try := v_try + 1;
    insert into public.jobs (queue, kind, payload, priority, run_at, max_attempts,
                             backoff_base_ms, backoff_cap_ms, dedup_key, owner_id,
                             pending_dependencies, ordering_key, fair_position)
    values (p_queue, p_kind, coalesce(p_payload, '{}'::jsonb), p_priority,
            now() + make_interval(secs => p_delay_ms / 1000.0), p_max_attempts,
            p_backoff_base_ms, p_backoff_cap_ms, p_dedup_key, p_owner, v_unfinished,
            p_ordering_key, private.next_fair_position(p_queue, p_owner))
    on conflict (queue, dedup_key)
      where dedup_key is not null and status in ('pending', 'processing', 'retrying')
      do nothing
    returning * into v_job;
    exit when found;
    -- A duplicate: return the unfinished job holding the key. If it finished between the
    -- conflict and this read, the key is free again; insert once more.
    select * into v_job from public.jobs
     where queue = p_queue and dedup_key = p_dedup_key
       and status in ('pending', 'processing', 'retrying');
    if found then
      v_duplicate := true;
      exit;
    end if;
    if v_try >= 5 then
      raise exception using errcode = '40001', message = 'enqueue_job: dedup key kept changing hands; retry';
    end if;
  end loop;

  if not v_duplicate then
    if v_deps is not null then
      insert into public.job_dependencies (job_id, depends_on)
      select v_job.id, d from unnest(v_deps) d;
    end if;
    if v_broken is not null then
      -- Born after its dependency failed: fails at once, like the dependents that existed.
      perform private.fail_dependents(array[v_broken]);
      select * into v_job from public.jobs where id = v_job.id;
    elsif p_delay_ms = 0 and v_unfinished = 0 then
      perform pg_notify('jobs_' || p_queue, p_kind);
    end if;
  end if;

  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true);
  return v_job;
end
$$;

create or replace function public.enqueue_jobs(p_jobs jsonb) returns setof public.jobs
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_item jsonb;
  v_unknown text;
  v_index integer;
  v_simple boolean;
  v_prev_actor text := current_setting('edgeworks.job_actor', true);
  v_allowed constant text[] := array['queue', 'kind', 'payload', 'priority', 'delay_ms',
                                     'max_attempts', 'dedup_key', 'depends_on', 'owner',
                                     'backoff_base_ms', 'backoff_cap_ms', 'ordering_key'];
begin
  if p_jobs is null or jsonb_typeof(p_jobs) <> 'array' then
    raise exception using errcode = '22023', message = 'p_jobs must be a JSON array';
  end if;
  if jsonb_array_length(p_jobs) > 1000 then
    raise exception using errcode = '22023', message = 'p_jobs holds more than 1000 jobs';
  end if;
  -- Shape first (one pass), then values: each a single statement over the whole batch.
  select x.ord - 1,
         case when jsonb_typeof(x.e) <> 'object' then 'must be an object'
              else 'has unknown key ' || (select min(k) from jsonb_object_keys(x.e) k
                                           where k <> all (v_allowed)) end
    into v_index, v_unknown
    from jsonb_array_elements(p_jobs) with ordinality as x (e, ord)
   where case when jsonb_typeof(x.e) <> 'object' then true
              else (x.e - v_allowed) <> '{}'::jsonb end
   order by x.ord
   limit 1;
  if v_unknown is not null then
    raise exception using errcode = '22023', message = format('p_jobs[%s] %s', v_index, v_unknown);
  end if;
  v_simple := not exists (
    select 1 from jsonb_array_elements(p_jobs) e
     where e ->> 'dedup_key' is not null
        or (jsonb_typeof(e -> 'depends_on') = 'array' and jsonb_array_length(e -> 'depends_on') > 0));

  if not v_simple then
    -- Dedup keys and dependencies need enqueue_job's per-job locking; keep input order.
    for v_item in select value from jsonb_array_elements(p_jobs) loop
      return next public.enqueue_job(
        p_queue => v_item ->> 'queue',
        p_kind => v_item ->> 'kind',
        p_payload => coalesce(nullif(v_item -> 'payload', 'null'::jsonb), '{}'::jsonb),
        p_priority => coalesce((v_item ->> 'priority')::integer, 0),
        p_delay_ms => coalesce((v_item ->> 'delay_ms')::integer, 0),
        p_max_attempts => coalesce((v_item ->> 'max_attempts')::integer, 5),
        p_dedup_key => v_item ->> 'dedup_key',
        p_depends_on => case when jsonb_typeof(v_item -> 'depends_on') = 'array'
                             then array(select jsonb_array_elements_text(v_item -> 'depends_on'))::uuid[]
                        end,
        p_owner => (v_item ->> 'owner')::uuid,
        p_backoff_base_ms => coalesce((v_item ->> 'backoff_base_ms')::integer, 1000),
        p_backoff_cap_ms => coalesce((v_item ->> 'backoff_cap_ms')::integer, 600000),
        p_ordering_key => v_item ->> 'ordering_key');
    end loop;
    return;
  end if;

  -- Plain jobs: check every item's values, then one insert for the whole batch, in input
  -- order (seq follows it).
  perform private.check_job_arguments(
            e ->> 'queue', e ->> 'kind', e -> 'payload',
            coalesce((e ->> 'priority')::integer, 0),
            coalesce((e ->> 'delay_ms')::integer, 0),
            coalesce((e ->> 'max_attempts')::integer, 5), null,
            coalesce((e ->> 'backoff_base_ms')::integer, 1000),
            coalesce((e ->> 'backoff_cap_ms')::integer, 600000))
     from jsonb_array_elements(p_jobs) e;
  if exists (select 1 from jsonb_array_elements(p_jobs) e
              where e ? 'ordering_key' and jsonb_typeof(e -> 'ordering_key') <> 'null'
                and length(e ->> 'ordering_key') not between 1 and 400) then
    raise exception using errcode = '22023', message = 'ordering_key must be 1 to 400 characters';
  end if;
  perform set_config('edgeworks.job_actor',
                     coalesce(nullif(current_setting('role', true), 'none'), session_user::text),
                     true);
  return query
    with items as (
      select x.e, x.ord, x.e ->> 'queue' as queue, (x.e ->> 'owner')::uuid as owner,
             -- The n-th job of one owner in one queue within this batch.
             row_number() over (partition by x.e ->> 'queue', x.e ->> 'owner' order by x.ord) as nth
        from jsonb_array_elements(p_jobs) with ordinality as x (e, ord)
    ),
    bases as (
      select t.queue, t.owner, private.next_fair_position(t.queue, t.owner) - 1 as base
        from (select distinct i.queue, i.owner from items i) t
    ),
    ins as (
      insert into public.jobs (queue, kind, payload, priority, run_at, max_attempts,
                               backoff_base_ms, backoff_cap_ms, owner_id, ordering_key, fair_position)
      select i.queue, i.e ->> 'kind',
             coalesce(nullif(i.e -> 'payload', 'null'::jsonb), '{}'::jsonb),
             coalesce((i.e ->> 'priority')::integer, 0),
             now() + make_interval(secs => coalesce((i.e ->> 'delay_ms')::integer, 0) / 1000.0),
             coalesce((i.e ->> 'max_attempts')::integer, 5),
             coalesce((i.e ->> 'backoff_base_ms')::integer, 1000),
             coalesce((i.e ->> 'backoff_cap_ms')::integer, 600000),
             i.owner, i.e ->> 'ordering_key', b.base + i.nth
        from items i join bases b on b.queue = i.queue and b.owner is not distinct from i.owner
       order by i.ord
      returning *
    )
    select * from ins order by ins.seq;
  -- Identical notifications in one transaction are delivered once anyway; send one per
  -- (queue, kind) that has a job claimable now.
  perform pg_notify('jobs_' || n.queue, n.kind)
     from (select distinct e ->> 'queue' as queue, e ->> 'kind' as kind
             from jsonb_array_elements(p_jobs) e
            where coalesce((e ->> 'delay_ms')::integer, 0) = 0) n;
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true);
end
$$;

-- -----------------------------------------------------------------------------
-- Claim
-- -----------------------------------------------------------------------------

-- FOR UPDATE SKIP LOCKED; per queue, the head of the claim index (priority desc,
-- fair_position, run_at, seq) among claimable rows, then the best p_batch overall.
-- With several queues the surplus heads stay locked only until this transaction
-- ends, and other workers skip them meanwhile.
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
  v_ids uuid[];
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
  perform private.touch_worker(p_worker, p_queues);

  v_ids := array(
    select h.id
      from unnest(p_queues) as q (name)
      cross join lateral (
        select c.id, c.priority, c.fair_position, c.run_at, c.seq from public.jobs c
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
     limit p_batch);
  if cardinality(v_ids) = 0 then
    return;
  end if;
  return query select * from private.claim_locked(p_worker, p_lease_seconds, v_ids);
end
$$;

-- One named job (chat-process {job_id}), if it is of the worker's queues and kinds
-- and claimable now (its run_at has come, its dependencies completed, nothing earlier
-- of its ordering key unfinished); otherwise nothing, and the job is left alone. The
-- old claim_job took any job of any queue, and the chat worker then failed a job of
-- another queue for want of a chat question.
drop function public.claim_job(uuid, text, integer);
create function public.claim_job(
  p_job uuid,
  p_worker text,
  p_queues text[],
  p_kinds text[] default null,
  p_lease_seconds integer default 60
) returns setof public.jobs
language plpgsql volatile security definer set search_path = ''
as $$
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
             select 1 from public.jobs e
              where e.queue = c.queue and e.ordering_key = c.ordering_key
                and e.status in ('pending', 'processing', 'retrying') and e.seq < c.seq))
       for update skip locked);
  if cardinality(v_ids) = 0 then
    return;
  end if;
  return query select * from private.claim_locked(p_worker, p_lease_seconds, v_ids);
end
$$;

-- 1 = next to be claimed; 0 = processing now; null = finished, or waiting for a
-- dependency. Counts the waiting jobs ahead in claim order (two range scans of the
-- claim index); a job held back by an earlier job of its ordering key counts that
-- earlier job's place too, since it cannot run before it.
create or replace function public.queue_position(p_job uuid) returns integer
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_job public.jobs;
  v_higher bigint;
  v_same bigint;
begin
  select * into v_job from public.jobs where id = p_job;
  if not found or private.job_caller_may_access(v_job.owner_id) is not true then
    raise exception using errcode = 'EQ404', message = format('job %s not found', p_job);
  end if;
  if v_job.status = 'processing' then
    return 0;
  end if;
  if v_job.status not in ('pending', 'retrying') or v_job.pending_dependencies > 0 then
    return null;
  end if;
  select count(*) into v_higher from public.jobs j
   where j.queue = v_job.queue and j.status in ('pending', 'retrying')
     and j.pending_dependencies = 0 and j.priority > v_job.priority;
  select count(*) into v_same from public.jobs j
   where j.queue = v_job.queue and j.status in ('pending', 'retrying')
     and j.pending_dependencies = 0 and j.priority = v_job.priority
     and (j.fair_position, j.run_at, j.seq) < (v_job.fair_position, v_job.run_at, v_job.seq);
  return (v_higher + v_same + 1)::integer;
end
$$;

revoke execute on function
  private.next_fair_position(text, uuid),
  private.touch_worker(text, text[]),
  private.claim_locked(text, integer, uuid[])
  from public, anon, authenticated, service_role;
grant execute on function
  public.enqueue_job(text, text, jsonb, integer, integer, integer, text, uuid[], uuid, integer, integer, text),
  public.claim_job(uuid, text, text[], text[], integer)
  to service_role;
