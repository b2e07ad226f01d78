-- =============================================================================
-- Job queue: the one Postgres queue every edgeworks system runs on.
-- =============================================================================
--
-- Tables (schema public, RLS on every one):
--   jobs              one row per job; the row IS the queue entry and its history head
--   job_dependencies  (job_id, depends_on): job_id may run only after depends_on completed
--   job_events        every status transition: who (actor), when, from, to, error, next run_at
--   workers           worker health: queues served, last heartbeat, jobs done / failed
--
-- State machine (the same table lives in crates/core/src/queue.rs; keep them equal):
--   (new)      -> pending      enqueue
--   pending    -> processing   claim              (only when every dependency completed)
--   retrying   -> processing   claim              (once run_at, the backoff, has passed)
--   processing -> completed    complete_job
--   processing -> retrying     fail_job / lease expiry, attempts left and retryable
--   processing -> failed       fail_job / lease expiry, no attempts left or not retryable
--   pending    -> failed       a dependency failed or was cancelled (transitively)
--   pending | retrying | processing -> cancelled    cancel_job
--   completed, failed, cancelled are terminal. The functions below log their own
--   transitions; any other status change (a function in another migration, SQL by hand)
--   goes through a trigger that rejects illegal transitions and logs the rest, with
--   edgeworks.job_actor (set it transaction-local with set_config) as the actor.
--
-- API (every function atomic; EXECUTE revoked from PUBLIC; callable by service_role
-- unless noted; named arguments, so PostgREST /rpc takes the same names as JSON keys):
--
--   enqueue_job(p_queue text, p_kind text, p_payload jsonb = '{}', p_priority int = 0,
--               p_delay_ms int = 0, p_max_attempts int = 5, p_dedup_key text = null,
--               p_depends_on uuid[] = null, p_owner uuid = null,
--               p_backoff_base_ms int = 1000, p_backoff_cap_ms int = 600000) -> jobs
--       Higher priority runs first. With p_dedup_key, an unfinished job with the same
--       (queue, dedup_key) is returned instead of a new one (race-safe: a unique index).
--       A dependency that already failed or was cancelled yields a job that is failed at once.
--   enqueue_jobs(p_jobs jsonb) -> setof jobs
--       p_jobs: [{queue, kind, payload, priority, delay_ms, max_attempts, dedup_key,
--                 depends_on, owner, backoff_base_ms, backoff_cap_ms}, ...] (<= 1000),
--       in one transaction; rows come back in input order.
--   claim_jobs(p_worker text, p_queues text[], p_kinds text[] = null, p_batch int = 1,
--              p_lease_seconds int = 60) -> setof jobs (with lease_token)
--       FOR UPDATE SKIP LOCKED; highest priority, then oldest run_at, then enqueue order.
--       Also requeues expired leases in those queues and records the worker's heartbeat.
--   complete_job(p_job uuid, p_lease_token uuid, p_result jsonb = null) -> jobs
--   complete_jobs(p_completions jsonb) -> setof (job_id uuid, completed bool, status text)
--       p_completions: [{job, lease_token, result?}, ...] (<= 1000), one transaction, in
--       input order. A stale lease is not an error here: that item comes back
--       completed = false with the job's current status (null if it no longer exists).
--   fail_job(p_job uuid, p_lease_token uuid, p_error text, p_retryable bool = true,
--            p_retry_after_ms int = null) -> jobs (status retrying with run_at, or failed)
--       Retry delay = max(p_retry_after_ms, uniform integer in [0, ceiling]) where
--       ceiling = min(backoff_cap_ms, backoff_base_ms * 2^(attempts - 1)): exponential
--       backoff with full jitter; backoff_ceiling_ms() below is that ceiling.
--   extend_lease(p_job uuid, p_lease_token uuid, p_lease_seconds int = 60) -> timestamptz
--   report_progress(p_job uuid, p_lease_token uuid, p_progress int) -> int
--   heartbeat_worker(p_worker text, p_queues text[] = null, p_status text = 'active',
--                    p_metadata jsonb = null) -> workers
--   cancel_job(p_job uuid) -> jobs                     [authenticated: own jobs only]
--       Idempotent: a finished job comes back unchanged. Cancelling a processing job voids
--       its lease, so the worker's later complete/fail is refused.
--   queue_position(p_job uuid) -> int                  [authenticated: own jobs only]
--       1 = next to be claimed; 0 = processing now; null = finished, or still waiting
--       for a dependency. Counts only waiting jobs, through the claim index.
--   requeue_expired_leases(p_queues text[] = null) -> int   (jobs requeued or failed)
--   queue_stats(p_queue text, p_window_seconds int = 3600, p_worker_timeout_seconds int = 60)
--       -> jsonb {queue, pending, processing, retrying, completed, failed, cancelled,
--                 blocked, delayed, completed_in_window, avg_processing_ms,
--                 p95_processing_ms, oldest_pending_age_ms, active_workers, window_seconds}
--   cleanup_jobs(p_retention_seconds int = 604800, p_limit int = 10000)
--       -> jsonb {jobs_deleted, workers_deleted}; finished jobs (and, by cascade, their
--       events and dependency rows) older than the retention; call again while
--       jobs_deleted = p_limit.
--   backoff_ceiling_ms(p_attempt int, p_base_ms int, p_cap_ms int) -> bigint (pure)
--
-- Errors (SQLSTATE; PostgREST puts it in the JSON "code"):
--   22023  invalid argument (message names the argument)
--   EQ404  job not found, or not the caller's job (the two are indistinguishable on purpose)
--   EQ409  lease lost: the job is not processing under this lease token (lease expired and
--          the job was requeued, it was cancelled, or it was already completed / failed).
--          Never retried by the caller: a job is never completed twice.
--   42501  permission denied (a role calling a function it was not granted)
--
-- Waiting for work:
--   Native workers LISTEN on channel "jobs_<queue>"; a notification (payload: the job
--   kind, or 'requeued') is sent when a job becomes claimable now: enqueued without delay, released by its
--   last dependency, or requeued after a lease expired. Delayed and backoff jobs send
--   nothing when they come due, so a LISTEN worker still polls, rarely (e.g. every 5 s).
--   Edge functions cannot hold a LISTEN connection: they call claim_jobs over /rpc and,
--   when it returns [], sleep with bounded exponential backoff (e.g. 100 ms doubling to
--   2 s, with jitter), reset to the minimum after a non-empty claim, and stop when their
--   wall-clock budget is near.
--
-- Crash recovery: a worker holds a job for lease_seconds. extend_lease renews it. When it
-- expires, requeue_expired_leases (run by claim_jobs for its queues, or on a schedule)
-- puts the job back (retrying, run now) or fails it if no attempts are left.
-- =============================================================================

-- -----------------------------------------------------------------------------
-- Tables
-- -----------------------------------------------------------------------------

-- Column values are checked by the functions that write them (check_job_arguments and
-- friends) and statuses by the transition trigger, not by CHECK constraints: Postgres
-- re-parses a table's CHECK expressions for every UPDATE statement, which made them a
-- seventh of a claim's CPU. The one CHECK left is the invariant lease fencing rests on.
create table public.jobs (
  id uuid primary key default gen_random_uuid(),
  -- Tie-break after run_at: FIFO within a batch enqueued in one transaction.
  seq bigint generated always as identity,
  -- ^[a-z0-9_]{1,56}$, so that jobs_<queue> is a valid LISTEN channel.
  queue text not null,
  -- ^[A-Za-z0-9_.:-]{1,100}$
  kind text not null,
  payload jsonb not null default '{}'::jsonb,
  priority integer not null default 0,
  -- pending | processing | completed | failed | retrying | cancelled
  status text not null default 'pending',
  attempts integer not null default 0,
  max_attempts integer not null default 5,
  backoff_base_ms integer not null default 1000,
  backoff_cap_ms integer not null default 600000,
  -- Earliest time the job may be claimed: enqueue delay, then retry backoff.
  run_at timestamptz not null default now(),
  -- Dependencies not completed yet; claimable only at 0.
  pending_dependencies integer not null default 0,
  worker_id text,
  lease_token uuid,
  lease_expires_at timestamptz,
  -- 0 to 100
  progress smallint not null default 0,
  result jsonb,
  last_error text,
  dedup_key text,
  owner_id uuid references auth.users (id) on delete cascade,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- Start of the latest attempt.
  started_at timestamptz,
  -- When the job reached completed, failed or cancelled.
  completed_at timestamptz,
  check ((status = 'processing') = (lease_token is not null and lease_expires_at is not null))
);

comment on table public.jobs is
  'Job queue entries. Written only through the queue functions (see migration 20261122000200).';

-- Claim and queue position walk this index in claim order; finished jobs are not in it.
create index jobs_claim_idx on public.jobs (queue, priority desc, run_at, seq)
  where status in ('pending', 'retrying') and pending_dependencies = 0;
-- Expired-lease sweep and processing counts: only in-flight jobs.
create index jobs_lease_idx on public.jobs (queue, lease_expires_at)
  where status = 'processing';
-- Jobs still waiting for a dependency (rare; counted by queue_stats).
create index jobs_blocked_idx on public.jobs (queue)
  where status = 'pending' and pending_dependencies > 0;
-- Dedup among unfinished jobs; also what makes concurrent dedup enqueues race-safe.
create unique index jobs_dedup_idx on public.jobs (queue, dedup_key)
  where dedup_key is not null and status in ('pending', 'processing', 'retrying');
-- Stats over finished jobs by queue, and retention cleanup by age.
create index jobs_finished_idx on public.jobs (queue, status, completed_at)
  where status in ('completed', 'failed', 'cancelled');
create index jobs_cleanup_idx on public.jobs (completed_at)
  where status in ('completed', 'failed', 'cancelled');
-- A user's own jobs (RLS filter, listing) and the auth.users cascade.
create index jobs_owner_idx on public.jobs (owner_id, created_at desc)
  where owner_id is not null;

-- A queue table churns: vacuum it early so dead index entries do not slow the claim scan.
alter table public.jobs set (
  autovacuum_vacuum_scale_factor = 0.02,
  autovacuum_analyze_scale_factor = 0.02,
  autovacuum_vacuum_insert_scale_factor = 0.05
);

create table public.job_dependencies (
  job_id uuid not null references public.jobs (id) on delete cascade,
  depends_on uuid not null references public.jobs (id) on delete cascade,
  primary key (job_id, depends_on),
  check (job_id <> depends_on)
);
create index job_dependencies_depends_on_idx on public.job_dependencies (depends_on);

-- No foreign key to jobs: an FK check per event (a row lock on the job, written to WAL) is
-- a large share of a claim's cost. Events go with their job through the jobs delete
-- trigger below instead.
create table public.job_events (
  id bigint generated always as identity,
  job_id uuid not null,
  -- Copied from the job so RLS needs no join.
  owner_id uuid,
  queue text not null,
  from_status text,
  to_status text not null,
  attempt integer not null,
  -- 'worker', 'user:<uuid>', 'service_role', 'system:lease_expiry', 'system:dependency', ...
  actor text not null,
  worker_id text,
  error text,
  -- The job's run_at after the transition: for retrying, when the next attempt may start.
  run_at timestamptz,
  created_at timestamptz not null default now(),
  -- One index serves both identity and "a job's history in order".
  primary key (job_id, id)
);

-- Written on every completion: checked by heartbeat_worker / claim_jobs, not by CHECKs
-- (see public.jobs).
create table public.workers (
  -- 1 to 200 characters
  id text primary key,
  queues text[] not null default '{}',
  -- active | idle | stopped
  status text not null default 'active',
  metadata jsonb not null default '{}'::jsonb,
  jobs_done bigint not null default 0,
  jobs_failed bigint not null default 0,
  started_at timestamptz not null default now(),
  last_heartbeat_at timestamptz not null default now()
);

-- -----------------------------------------------------------------------------
-- Privileges and row level security.
-- Supabase's default privileges grant everything on new public tables to anon and
-- authenticated; take that back. Reads are RLS-filtered; every write goes through the
-- functions below (security definer, owned by the migration role).
-- -----------------------------------------------------------------------------

revoke all on table public.jobs, public.job_dependencies, public.job_events, public.workers
  from public, anon, authenticated, service_role;
grant select on table public.jobs, public.job_dependencies, public.job_events
  to authenticated, service_role;
grant select on table public.workers to service_role;
revoke all on sequence public.jobs_seq_seq, public.job_events_id_seq
  from public, anon, authenticated, service_role;

alter table public.jobs enable row level security;
alter table public.job_dependencies enable row level security;
alter table public.job_events enable row level security;
alter table public.workers enable row level security;

create policy jobs_owner_select on public.jobs
  for select to authenticated using (owner_id = (select auth.uid()));
create policy jobs_service_select on public.jobs
  for select to service_role using (true);

create policy job_events_owner_select on public.job_events
  for select to authenticated using (owner_id = (select auth.uid()));
create policy job_events_service_select on public.job_events
  for select to service_role using (true);

create policy job_dependencies_owner_select on public.job_dependencies
  for select to authenticated using (
    exists (select 1 from public.jobs j
            where j.id = job_dependencies.job_id and j.owner_id = (select auth.uid()))
  );
create policy job_dependencies_service_select on public.job_dependencies
  for select to service_role using (true);

create policy workers_service_select on public.workers
  for select to service_role using (true);

-- -----------------------------------------------------------------------------
-- Internal helpers (no role but the owner may execute them)
-- -----------------------------------------------------------------------------

-- True when the caller may act on a job owned by p_owner: API users (PostgREST sets the
-- role to anon/authenticated) only on their own jobs; service_role and the database owner
-- on any. Inside a security definer function current_user is the owner, but the role
-- setting still names the caller.
create function public.job_caller_may_access(p_owner uuid) returns boolean
language plpgsql stable set search_path = ''
as $$
begin
  if coalesce(nullif(current_setting('role', true), 'none'), session_user::text)
     in ('anon', 'authenticated') then
    return p_owner is not null and p_owner = auth.uid();
  end if;
  return true;
end
$$;

-- Event log and state machine guard for status changes made outside the core queue
-- functions (other migrations' functions, SQL by hand): rejects any transition outside
-- the state machine and records the rest. The actor is edgeworks.job_actor when the
-- caller set it (transaction-local), else the signed-in user or the database role.
--
-- The core queue functions below write their events themselves, set-based, in the same
-- statement as the change (a trigger firing per row costs more than the claim it
-- records). While one runs, edgeworks.job_events_inline is 'on' and the WHEN clause
-- skips this trigger; each restores both settings before it returns. Their WHERE
-- clauses only ever select rows in a status the transition allows.
create function public.record_job_transition() returns trigger
language plpgsql set search_path = ''
as $$
declare
  v_actor text;
begin
  if (old.status, new.status) not in (
      ('pending', 'processing'), ('retrying', 'processing'),
      ('processing', 'completed'), ('processing', 'retrying'), ('processing', 'failed'),
      ('pending', 'failed'),
      ('pending', 'cancelled'), ('retrying', 'cancelled'), ('processing', 'cancelled')) then
    raise exception using errcode = '22023',
      message = format('illegal job transition %s -> %s (job %s)', old.status, new.status, new.id);
  end if;
  v_actor := coalesce(nullif(current_setting('edgeworks.job_actor', true), ''),
                      'user:' || auth.uid()::text,
                      'sql:' || coalesce(nullif(current_setting('role', true), 'none'),
                                         session_user::text));
  insert into public.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
                                 actor, worker_id, error, run_at)
  values (new.id, new.owner_id, new.queue, old.status, new.status, new.attempts, v_actor,
          coalesce(new.worker_id, old.worker_id),
          case when new.status in ('retrying', 'failed') then new.last_error end,
          new.run_at);
  return null;
end
$$;

-- Creation: statement-level, so a batch enqueue writes its events in one insert.
create function public.record_job_creation() returns trigger
language plpgsql set search_path = ''
as $$
declare
  v_actor text := nullif(current_setting('edgeworks.job_actor', true), '');
begin
  if exists (select 1 from new_jobs n where n.status <> 'pending') then
    raise exception using errcode = '22023', message = 'a job must be created pending';
  end if;
  if v_actor is null then
    v_actor := coalesce('user:' || auth.uid()::text,
                        'sql:' || coalesce(nullif(current_setting('role', true), 'none'),
                                           session_user::text));
  end if;
  insert into public.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
                                 actor, worker_id, error, run_at)
  select n.id, n.owner_id, n.queue, null, n.status, n.attempts, v_actor, null, null, n.run_at
    from new_jobs n
   order by n.seq;
  return null;
end
$$;

create trigger jobs_record_insert after insert on public.jobs
  referencing new table as new_jobs
  for each statement execute function public.record_job_creation();
create trigger jobs_record_update after update of status on public.jobs
  for each row
  when (old.status is distinct from new.status
        and coalesce(current_setting('edgeworks.job_events_inline', true), '') <> 'on')
  execute function public.record_job_transition();

-- A deleted job (cleanup, or its owner deleted from auth.users) takes its history along.
-- Security definer: an auth.users deletion cascading here may run as another role.
create function public.forget_job_events() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  delete from public.job_events e using deleted_jobs d where e.job_id = d.id;
  return null;
end
$$;

create trigger jobs_forget_events after delete on public.jobs
  referencing old table as deleted_jobs
  for each statement execute function public.forget_job_events();

-- Fails every unfinished job that depends, directly or through other jobs, on one of
-- p_roots (which just failed or were cancelled). Returns how many it failed.
create function public.fail_dependents(p_roots uuid[]) returns integer
language plpgsql set search_path = ''
as $$
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
    insert into public.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
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
$$;

-- Counts completed dependencies off their dependents; the ones with nothing left to wait
-- for are claimable now, so their queues are notified.
create function public.release_dependents(p_done uuid[]) returns void
language plpgsql set search_path = ''
as $$
declare
  v_released record;
begin
  for v_released in
    update public.jobs j
       set pending_dependencies = j.pending_dependencies - c.n, updated_at = now()
      from (select d.job_id, count(*)::integer as n
              from public.job_dependencies d
             where d.depends_on = any(p_done)
             group by d.job_id) c
     where j.id = c.job_id and j.status = 'pending'
    returning j.queue, j.kind, j.pending_dependencies, j.run_at
  loop
    if v_released.pending_dependencies = 0 and v_released.run_at <= now() then
      perform pg_notify('jobs_' || v_released.queue, v_released.kind);
    end if;
  end loop;
end
$$;

create function public.raise_lease_lost(p_job uuid) returns void
language plpgsql stable set search_path = ''
as $$
declare
  v_status text;
begin
  select status into v_status from public.jobs where id = p_job;
  if not found then
    raise exception using errcode = 'EQ404', message = format('job %s not found', p_job);
  end if;
  raise exception using errcode = 'EQ409',
    message = format('lease lost: job %s is not processing under this lease token', p_job),
    detail = format('job status is %s', v_status),
    hint = 'the lease expired and the job was requeued, or it was cancelled or already finished';
end
$$;

-- -----------------------------------------------------------------------------
-- API
-- -----------------------------------------------------------------------------

create function public.backoff_ceiling_ms(p_attempt integer, p_base_ms integer, p_cap_ms integer)
returns bigint
language sql immutable parallel safe set search_path = ''
as $$
  -- Float math with the exponent clamped (2^62 already exceeds any int cap), so no
  -- attempt count can overflow; the cap applies before the cast back to bigint.
  select least(p_cap_ms::float8,
               p_base_ms::float8 * power(2::float8, least(greatest(p_attempt, 1) - 1, 62)))::bigint
$$;

-- The argument checks of enqueue_job, shared with enqueue_jobs' set-based path.
create function public.check_job_arguments(
  p_queue text, p_kind text, p_payload jsonb, p_priority integer, p_delay_ms integer,
  p_max_attempts integer, p_dedup_key text, p_backoff_base_ms integer, p_backoff_cap_ms integer
) returns void
language plpgsql immutable set search_path = ''
as $$
begin
  if p_queue is null or p_queue !~ '^[a-z0-9_]{1,56}$' then
    raise exception using errcode = '22023', message = 'p_queue must match ^[a-z0-9_]{1,56}$';
  end if;
  if p_kind is null or p_kind !~ '^[A-Za-z0-9_.:-]{1,100}$' then
    raise exception using errcode = '22023', message = 'p_kind must match ^[A-Za-z0-9_.:-]{1,100}$';
  end if;
  if p_payload is not null and octet_length(p_payload::text) > 1048576 then
    raise exception using errcode = '22023', message = 'p_payload exceeds 1 MiB';
  end if;
  if p_priority is null then
    raise exception using errcode = '22023', message = 'p_priority must not be null';
  end if;
  if p_delay_ms is null or p_delay_ms < 0 then
    raise exception using errcode = '22023', message = 'p_delay_ms must be >= 0';
  end if;
  if p_max_attempts is null or p_max_attempts not between 1 and 1000 then
    raise exception using errcode = '22023', message = 'p_max_attempts must be between 1 and 1000';
  end if;
  if p_backoff_base_ms is null or p_backoff_base_ms < 0
     or p_backoff_cap_ms is null or p_backoff_cap_ms < p_backoff_base_ms then
    raise exception using errcode = '22023',
      message = 'p_backoff_base_ms must be >= 0 and p_backoff_cap_ms >= p_backoff_base_ms';
  end if;
  if p_dedup_key is not null and length(p_dedup_key) not between 1 and 400 then
    raise exception using errcode = '22023', message = 'p_dedup_key must be 1 to 400 characters';
  end if;
end
$$;

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
  p_backoff_cap_ms integer default 600000
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
  perform public.check_job_arguments(p_queue, p_kind, p_payload, p_priority, p_delay_ms,
                                     p_max_attempts, p_dedup_key, p_backoff_base_ms,
                                     p_backoff_cap_ms);
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
                             pending_dependencies)
    values (p_queue, p_kind, coalesce(p_payload, '{}'::jsonb), p_priority,
            now() + make_interval(secs => p_delay_ms / 1000.0), p_max_attempts,
            p_backoff_base_ms, p_backoff_cap_ms, p_dedup_key, p_owner, v_unfinished)
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
      perform public.fail_dependents(array[v_broken]);
      select * into v_job from public.jobs where id = v_job.id;
    elsif p_delay_ms = 0 and v_unfinished = 0 then
      perform pg_notify('jobs_' || p_queue, p_kind);
    end if;
  end if;

  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true);
  return v_job;
end
$$;

create function public.enqueue_jobs(p_jobs jsonb) returns setof public.jobs
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
                                     'backoff_base_ms', 'backoff_cap_ms'];
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
        p_backoff_cap_ms => coalesce((v_item ->> 'backoff_cap_ms')::integer, 600000));
    end loop;
    return;
  end if;

  -- Plain jobs: check every item's values, then one insert for the whole batch, in input
  -- order (seq follows it).
  perform public.check_job_arguments(
            e ->> 'queue', e ->> 'kind', e -> 'payload',
            coalesce((e ->> 'priority')::integer, 0),
            coalesce((e ->> 'delay_ms')::integer, 0),
            coalesce((e ->> 'max_attempts')::integer, 5), null,
            coalesce((e ->> 'backoff_base_ms')::integer, 1000),
            coalesce((e ->> 'backoff_cap_ms')::integer, 600000))
     from jsonb_array_elements(p_jobs) e;
  perform set_config('edgeworks.job_actor',
                     coalesce(nullif(current_setting('role', true), 'none'), session_user::text),
                     true);
  return query
    with ins as (
      insert into public.jobs (queue, kind, payload, priority, run_at, max_attempts,
                               backoff_base_ms, backoff_cap_ms, owner_id)
      select x.e ->> 'queue', x.e ->> 'kind',
             coalesce(nullif(x.e -> 'payload', 'null'::jsonb), '{}'::jsonb),
             coalesce((x.e ->> 'priority')::integer, 0),
             now() + make_interval(secs => coalesce((x.e ->> 'delay_ms')::integer, 0) / 1000.0),
             coalesce((x.e ->> 'max_attempts')::integer, 5),
             coalesce((x.e ->> 'backoff_base_ms')::integer, 1000),
             coalesce((x.e ->> 'backoff_cap_ms')::integer, 600000),
             (x.e ->> 'owner')::uuid
        from jsonb_array_elements(p_jobs) with ordinality as x (e, ord)
       order by x.ord
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

-- Requeues (or, with no attempts left, fails) processing jobs whose lease expired.
create function public.requeue_expired_leases(p_queues text[] default null) returns integer
language plpgsql volatile security definer set search_path = ''
as $$
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
    insert into public.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
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
    perform public.fail_dependents(v_failed);
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
$$;

-- Generic plans: a custom plan per call (what plpgsql would keep doing here, because the
-- LIMIT is a parameter) costs more than the claim itself. Every statement below is
-- written so that its generic plan walks the claim index.
create function public.claim_jobs(
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
  v_seen record;
  v_prev_actor text := current_setting('edgeworks.job_actor', true);
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

  -- Heartbeat, at most once a second per worker: a busy worker claims far more often,
  -- and rewriting its row on every claim would be a good part of the claim's cost.
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

  perform set_config('edgeworks.job_actor', 'worker', true),
          set_config('edgeworks.job_events_inline', 'on', true);
  if cardinality(p_queues) = 1 then
    -- One queue (the common case): equality lets the claim index return rows already in
    -- claim order, so the scan stops after p_batch unlocked rows.
    return query
      with picked as (
        select c.id, c.status from public.jobs c
         where c.queue = p_queues[1]
           and c.status in ('pending', 'retrying')
           and c.pending_dependencies = 0
           and c.run_at <= now()
           and (p_kinds is null or c.kind = any(p_kinds))
         order by c.priority desc, c.run_at, c.seq
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
               updated_at = now(),
               progress = 0
         where j.id = any(array(select p.id from picked p))
        returning j.*
      ),
      logged as (
        insert into public.job_events (job_id, owner_id, queue, from_status, to_status,
                                       attempt, actor, worker_id, error, run_at)
        select c.id, c.owner_id, c.queue, p.status, 'processing', c.attempts, 'worker',
               c.worker_id, null, c.run_at
          from claimed c join picked p on p.id = c.id
      )
      select * from claimed;
  else
    -- Several queues: `queue = any(...)` would sort every waiting row of those queues.
    -- Instead take the head of each queue from the claim index (locking up to p_batch
    -- rows per queue) and keep the best p_batch overall; the surplus stays locked only
    -- until this transaction ends, and other workers skip it meanwhile.
    return query
      with heads as (
        select h.id, h.status, h.priority, h.run_at, h.seq
          from unnest(p_queues) as q (name)
          cross join lateral (
            select c.id, c.status, c.priority, c.run_at, c.seq from public.jobs c
             where c.queue = q.name
               and c.status in ('pending', 'retrying')
               and c.pending_dependencies = 0
               and c.run_at <= now()
               and (p_kinds is null or c.kind = any(p_kinds))
             order by c.priority desc, c.run_at, c.seq
             limit p_batch
               for update skip locked
          ) h
      ),
      picked as (
        select heads.id, heads.status from heads
         order by heads.priority desc, heads.run_at, heads.seq
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
         where j.id = any(array(select p.id from picked p))
        returning j.*
      ),
      logged as (
        insert into public.job_events (job_id, owner_id, queue, from_status, to_status,
                                       attempt, actor, worker_id, error, run_at)
        select c.id, c.owner_id, c.queue, p.status, 'processing', c.attempts, 'worker',
               c.worker_id, null, c.run_at
          from claimed c join picked p on p.id = c.id
      )
      select * from claimed;
  end if;
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true),
          set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
end
$$;

create function public.complete_job(p_job uuid, p_lease_token uuid, p_result jsonb default null)
returns public.jobs
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_job public.jobs;
  v_prev_actor text := current_setting('edgeworks.job_actor', true);
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
begin
  if p_result is not null and octet_length(p_result::text) > 1048576 then
    raise exception using errcode = '22023', message = 'p_result exceeds 1 MiB';
  end if;
  perform set_config('edgeworks.job_actor', 'worker', true),
          set_config('edgeworks.job_events_inline', 'on', true);

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
    perform public.raise_lease_lost(p_job);
  end if;

  -- Most jobs have no dependents: skip the call unless the index says otherwise.
  if exists (select 1 from public.job_dependencies d where d.depends_on = p_job) then
    perform public.release_dependents(array[p_job]);
  end if;
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true),
          set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
  return v_job;
end
$$;

create function public.complete_jobs(p_completions jsonb)
returns table (job_id uuid, completed boolean, status text)
language plpgsql volatile security definer set search_path = ''
as $$
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
           updated_at = now(),
           lease_token = null,
           lease_expires_at = null
      from input i
     -- The redundant `= any(v_ids)` lets the planner reach the rows through the primary key.
     where j.id = any(v_ids) and j.id = i.id and j.lease_token = i.token
       and j.status = 'processing'
    returning j.*
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
       set jobs_done = w.jobs_done + x.n, last_heartbeat_at = now()
      from (select d.worker_id, count(*) as n from done d
             where d.worker_id is not null group by d.worker_id) x
     where w.id = x.worker_id
  )
  select array_agg(d.id) into v_done from done d;

  if v_done is not null
     and exists (select 1 from public.job_dependencies d where d.depends_on = any(v_done)) then
    perform public.release_dependents(v_done);
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
$$;

create function public.fail_job(
  p_job uuid,
  p_lease_token uuid,
  p_error text,
  p_retryable boolean default true,
  p_retry_after_ms integer default null
) returns public.jobs
language plpgsql volatile security definer set search_path = ''
as $$
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
    perform public.raise_lease_lost(p_job);
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
  insert into public.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
                                 actor, worker_id, error, run_at)
  values (v_job.id, v_job.owner_id, v_job.queue, 'processing', v_job.status, v_job.attempts,
          'worker', v_job.worker_id, v_job.last_error, v_job.run_at);
  if v_job.status = 'failed' then
    perform public.fail_dependents(array[p_job]);
  end if;

  update public.workers
     set jobs_failed = jobs_failed + 1, last_heartbeat_at = now()
   where id = v_job.worker_id;
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true),
          set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
  return v_job;
end
$$;

create function public.extend_lease(p_job uuid, p_lease_token uuid, p_lease_seconds integer default 60)
returns timestamptz
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_expires timestamptz;
  v_worker text;
begin
  if p_lease_seconds is null or p_lease_seconds not between 1 and 86400 then
    raise exception using errcode = '22023', message = 'p_lease_seconds must be between 1 and 86400';
  end if;
  update public.jobs
     set lease_expires_at = now() + make_interval(secs => p_lease_seconds), updated_at = now()
   where id = p_job and lease_token = p_lease_token and status = 'processing'
  returning lease_expires_at, worker_id into v_expires, v_worker;
  if not found then
    perform public.raise_lease_lost(p_job);
  end if;
  update public.workers set last_heartbeat_at = now() where id = v_worker;
  return v_expires;
end
$$;

create function public.report_progress(p_job uuid, p_lease_token uuid, p_progress integer)
returns integer
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if p_progress is null or p_progress not between 0 and 100 then
    raise exception using errcode = '22023', message = 'p_progress must be between 0 and 100';
  end if;
  update public.jobs
     set progress = p_progress, updated_at = now()
   where id = p_job and lease_token = p_lease_token and status = 'processing';
  if not found then
    perform public.raise_lease_lost(p_job);
  end if;
  return p_progress;
end
$$;

create function public.heartbeat_worker(
  p_worker text,
  p_queues text[] default null,
  p_status text default 'active',
  p_metadata jsonb default null
) returns public.workers
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_worker public.workers;
begin
  if p_worker is null or length(p_worker) not between 1 and 200 then
    raise exception using errcode = '22023', message = 'p_worker must be 1 to 200 characters';
  end if;
  if p_status is null or p_status not in ('active', 'idle', 'stopped') then
    raise exception using errcode = '22023', message = 'p_status must be active, idle or stopped';
  end if;
  if p_metadata is not null and jsonb_typeof(p_metadata) <> 'object' then
    raise exception using errcode = '22023', message = 'p_metadata must be a JSON object';
  end if;
  insert into public.workers as w (id, queues, status, metadata, last_heartbeat_at)
  values (p_worker, coalesce(p_queues, '{}'), p_status, coalesce(p_metadata, '{}'::jsonb), now())
  on conflict (id) do update
    set queues = coalesce(p_queues, w.queues),
        status = excluded.status,
        metadata = coalesce(p_metadata, w.metadata),
        last_heartbeat_at = excluded.last_heartbeat_at
  returning * into v_worker;
  return v_worker;
end
$$;

create function public.cancel_job(p_job uuid) returns public.jobs
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_job public.jobs;
  v_from text;
  v_actor text;
  v_prev_actor text := current_setting('edgeworks.job_actor', true);
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
begin
  select * into v_job from public.jobs where id = p_job for update;
  if not found or not public.job_caller_may_access(v_job.owner_id) then
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
  insert into public.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
                                 actor, worker_id, error, run_at)
  values (v_job.id, v_job.owner_id, v_job.queue, v_from, 'cancelled', v_job.attempts,
          v_actor, v_job.worker_id, null, v_job.run_at);
  perform public.fail_dependents(array[p_job]);
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true),
          set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
  return v_job;
end
$$;

create function public.queue_position(p_job uuid) returns integer
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_job public.jobs;
  v_higher bigint;
  v_same bigint;
begin
  select * into v_job from public.jobs where id = p_job;
  if not found or not public.job_caller_may_access(v_job.owner_id) then
    raise exception using errcode = 'EQ404', message = format('job %s not found', p_job);
  end if;
  if v_job.status = 'processing' then
    return 0;
  end if;
  if v_job.status not in ('pending', 'retrying') or v_job.pending_dependencies > 0 then
    return null;
  end if;
  -- Two range scans of the claim index (priority is its second column, descending);
  -- finished jobs are not in that index, so their number does not matter.
  select count(*) into v_higher from public.jobs j
   where j.queue = v_job.queue and j.status in ('pending', 'retrying')
     and j.pending_dependencies = 0 and j.priority > v_job.priority;
  select count(*) into v_same from public.jobs j
   where j.queue = v_job.queue and j.status in ('pending', 'retrying')
     and j.pending_dependencies = 0 and j.priority = v_job.priority
     and (j.run_at, j.seq) < (v_job.run_at, v_job.seq);
  return (v_higher + v_same + 1)::integer;
end
$$;

create function public.queue_stats(
  p_queue text,
  p_window_seconds integer default 3600,
  p_worker_timeout_seconds integer default 60
) returns jsonb
language plpgsql stable security definer set search_path = ''
as $$
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
  select count(*) into v_blocked from public.jobs j
   where j.queue = p_queue and j.status = 'pending' and j.pending_dependencies > 0;

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
$$;

create function public.cleanup_jobs(p_retention_seconds integer default 604800, p_limit integer default 10000)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_jobs integer;
  v_workers integer;
begin
  if p_retention_seconds is null or p_retention_seconds < 0 then
    raise exception using errcode = '22023', message = 'p_retention_seconds must be >= 0';
  end if;
  if p_limit is null or p_limit not between 1 and 100000 then
    raise exception using errcode = '22023', message = 'p_limit must be between 1 and 100000';
  end if;
  -- Events and dependency rows go with their job (on delete cascade). A completed
  -- dependency may go before its dependents: they no longer count it.
  delete from public.jobs j
   where j.id in (
     select f.id from public.jobs f
      where f.status in ('completed', 'failed', 'cancelled')
        and f.completed_at < now() - make_interval(secs => p_retention_seconds)
      order by f.completed_at
      limit p_limit
      for update skip locked);
  get diagnostics v_jobs = row_count;

  delete from public.workers w
   where w.last_heartbeat_at < now() - make_interval(secs => p_retention_seconds);
  get diagnostics v_workers = row_count;

  return jsonb_build_object('jobs_deleted', v_jobs, 'workers_deleted', v_workers);
end
$$;

-- -----------------------------------------------------------------------------
-- Function privileges: nothing for PUBLIC (nor for the API roles Supabase's default
-- privileges would grant); the service role runs the queue; signed-in users may
-- cancel and locate their own jobs.
-- -----------------------------------------------------------------------------

do $$
declare
  f regprocedure;
begin
  for f in
    select p.oid::regprocedure from pg_proc p
     where p.pronamespace = 'public'::regnamespace
       and p.proname in ('job_caller_may_access', 'record_job_transition', 'record_job_creation',
                         'forget_job_events',
                         'check_job_arguments',
                         'fail_dependents', 'raise_lease_lost', 'backoff_ceiling_ms',
                         'enqueue_job', 'enqueue_jobs', 'requeue_expired_leases',
                         'claim_jobs', 'complete_job', 'complete_jobs', 'release_dependents',
                         'fail_job', 'extend_lease',
                         'report_progress', 'heartbeat_worker', 'cancel_job',
                         'queue_position', 'queue_stats', 'cleanup_jobs')
  loop
    execute format('revoke execute on function %s from public, anon, authenticated, service_role', f);
  end loop;
end
$$;

grant execute on function
  public.backoff_ceiling_ms(integer, integer, integer),
  public.enqueue_job(text, text, jsonb, integer, integer, integer, text, uuid[], uuid, integer, integer),
  public.enqueue_jobs(jsonb),
  public.requeue_expired_leases(text[]),
  public.claim_jobs(text, text[], text[], integer, integer),
  public.complete_job(uuid, uuid, jsonb),
  public.complete_jobs(jsonb),
  public.fail_job(uuid, uuid, text, boolean, integer),
  public.extend_lease(uuid, uuid, integer),
  public.report_progress(uuid, uuid, integer),
  public.heartbeat_worker(text, text[], text, jsonb),
  public.cancel_job(uuid),
  public.queue_position(uuid),
  public.queue_stats(text, integer, integer),
  public.cleanup_jobs(integer, integer)
  to service_role;

grant execute on function public.cancel_job(uuid), public.queue_position(uuid) to authenticated;
