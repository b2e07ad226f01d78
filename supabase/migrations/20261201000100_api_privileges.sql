-- =============================================================================
-- What the API roles may do, by construction.
-- =============================================================================
--
-- Supabase's default privileges grant EXECUTE on every new function, and every
-- right on every new table and sequence, to `anon` and `authenticated` DIRECTLY
-- (not through PUBLIC), so `revoke ... from public` takes nothing away from them.
-- Everything in an exposed schema is an API reachable with the anon key over
-- /rest/v1. From this migration on:
--
--   1. New functions carry no EXECUTE for public, anon or authenticated; new
--      tables and sequences no rights for anon or authenticated. Each migration
--      grants what its API needs, explicitly, next to the object.
--   2. Helpers nobody should call over HTTP live in schema `private`, which
--      PostgREST does not expose (config.toml [api] schemas) and on which the
--      API roles have no USAGE. Security definer functions in public call them
--      as their owner.
--   3. tests/security/privileges.test.ts compares, for every function, table,
--      view and sequence of every exposed schema, what anon, authenticated and
--      service_role may do with tests/security/privileges.allow.json; an object
--      nobody allow-listed fails the test.
--
-- Rules for later migrations: create helpers in `private`; grant EXECUTE per
-- function to the roles that call it; a check that can yield NULL is written so
-- that NULL refuses (`is not true`).
--
-- How five systems share one database (README "Database layout"):
--   * One exposed schema, `public`: every seed's client calls supabase.from('<table>')
--     without .schema(), and Realtime publishes tables, not views.
--   * A table keeps the name its seed gives it when that name is unique across the
--     product (ai-chat: conversations, messages, profiles, ...; uploads: documents,
--     realtime_progress_updates, feature_flags; pipelines: pipelines, pipeline_steps,
--     ...; media: images, videos, projects). A table whose name no seed fixes carries
--     its system's prefix: chat_ (chat queue), media_, ai_, pipeline_, upload_.
--     Platform tables: jobs, job_*, workers, rate_limit_buckets, error_logs.
--   * Should two systems want one name, the later one takes its prefix, and a
--     security_invoker view carries the seed's name where a client needs it.
--   * Internal tables and helpers live in `private`; migrations are named
--     <timestamp>_<system>_<what>.sql and their header lists the tables they own.
-- =============================================================================

-- -----------------------------------------------------------------------------
-- 1. Default privileges for objects created by the migration role from now on.
-- -----------------------------------------------------------------------------

-- Postgres grants EXECUTE to PUBLIC on every new function; only the global form
-- of ALTER DEFAULT PRIVILEGES can take that back (a per-schema entry only adds).
alter default privileges for role postgres revoke execute on functions from public;
-- Supabase's per-schema defaults for public (the local baseline copies them).
alter default privileges for role postgres in schema public
  revoke execute on functions from anon, authenticated;
alter default privileges for role postgres in schema public
  revoke all on tables from anon, authenticated;
alter default privileges for role postgres in schema public
  revoke all on sequences from anon, authenticated;

-- -----------------------------------------------------------------------------
-- 2. The private schema.
-- -----------------------------------------------------------------------------

create schema if not exists private;
revoke all on schema private from public, anon, authenticated, service_role;
alter default privileges for role postgres in schema private
  revoke execute on functions from anon, authenticated, service_role;

-- Helpers move as they are (a trigger refers to its function by oid, so the
-- triggers on public.jobs keep working). Callers name them schema-qualified
-- (search_path is empty in every function), so the callers are re-created
-- below with the new names.
alter function public.job_caller_may_access(uuid) set schema private;
alter function public.record_job_transition() set schema private;
alter function public.record_job_creation() set schema private;
alter function public.forget_job_events() set schema private;
alter function public.check_job_arguments(text, text, jsonb, integer, integer, integer, text, integer, integer)
  set schema private;
alter function public.fail_dependents(uuid[]) set schema private;
alter function public.release_dependents(uuid[]) set schema private;
alter function public.raise_lease_lost(uuid) set schema private;
alter function public.chat_job_view(public.jobs, public.chat_jobs) set schema private;
alter function public.chat_queue_timing(text) set schema private;

-- True only when the caller may act on a job owned by p_owner. The old version
-- answered NULL for an API caller without a user id (`true and null`), and its
-- callers' `if not ...` let NULL through; it now never answers NULL, and its
-- callers test `is not true`.
create or replace function private.job_caller_may_access(p_owner uuid) returns boolean
language plpgsql stable set search_path = ''
as $$
begin
  if coalesce(nullif(current_setting('role', true), 'none'), session_user::text)
     in ('anon', 'authenticated') then
    return coalesce(p_owner is not null and p_owner = auth.uid(), false);
  end if;
  return true;
end
$$;

-- Re-create every function that calls a moved helper with the helper's new
-- schema, and turn `not <access check>` into `<access check> is not true`.
-- Each definition is taken from the catalogue (pg_get_functiondef keeps owner,
-- security, search_path and grants through CREATE OR REPLACE); the block fails
-- the migration if any reference to an old name survives.
do $$
declare
  v_helpers constant text :=
    'job_caller_may_access|record_job_transition|record_job_creation|forget_job_events|'
    'check_job_arguments|fail_dependents|release_dependents|raise_lease_lost|'
    'chat_job_view|chat_queue_timing';
  v_fn record;
  v_def text;
  v_new text;
begin
  for v_fn in
    select p.oid from pg_proc p
     where p.pronamespace in ('public'::regnamespace, 'private'::regnamespace)
       and p.prokind = 'f'
       and p.prosrc ~ ('public\.(' || v_helpers || ')\(')
  loop
    v_def := pg_get_functiondef(v_fn.oid);
    v_new := regexp_replace(v_def, 'public\.(' || v_helpers || ')\(', 'private.\1(', 'g');
    v_new := regexp_replace(v_new, 'not private\.job_caller_may_access\(([^()]*)\)',
                            'private.job_caller_may_access(\1) is not true', 'g');
    execute v_new;
  end loop;
  if exists (select 1 from pg_proc p
              where p.pronamespace in ('public'::regnamespace, 'private'::regnamespace)
                and p.prosrc ~ ('public\.(' || v_helpers || ')\(')) then
    raise exception 'a function still calls a helper by its public name';
  end if;
  if exists (select 1 from pg_proc p
              where p.pronamespace in ('public'::regnamespace, 'private'::regnamespace)
                and p.prosrc ~ 'not private\.job_caller_may_access') then
    raise exception 'an access check still reads "not job_caller_may_access(...)"';
  end if;
end
$$;

-- -----------------------------------------------------------------------------
-- 3. Functions whose behaviour changes.
-- -----------------------------------------------------------------------------

-- chat-process {job_id} names one job; it must be one of the worker's queues and
-- kinds, or the claim returns nothing (409 in the function) and the job is left
-- alone. The old claim_job took any job of any queue, and the chat worker then
-- failed it for want of a chat question.
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
begin
  if p_job is null then
    raise exception using errcode = '22023', message = 'p_job is required';
  end if;
  if p_worker is null or length(p_worker) not between 1 and 200 then
    raise exception using errcode = '22023', message = 'p_worker must be 1 to 200 characters';
  end if;
  if p_queues is null or cardinality(p_queues) = 0 then
    raise exception using errcode = '22023', message = 'p_queues must name at least one queue';
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
  perform set_config('edgeworks.job_actor', 'worker', true);
  insert into public.workers as w (id, queues, status, last_heartbeat_at)
  values (p_worker, array[v_queue], 'active', now())
  on conflict (id) do update set status = 'active', last_heartbeat_at = excluded.last_heartbeat_at;
  return query
    with picked as (
      select j.id from public.jobs j
       where j.id = p_job
         and j.status in ('pending', 'retrying')
         and j.pending_dependencies = 0
         and j.run_at <= now()
       for update skip locked
    )
    update public.jobs j
       set status = 'processing',
           attempts = j.attempts + 1,
           worker_id = p_worker,
           lease_token = gen_random_uuid(),
           lease_expires_at = now() + make_interval(secs => p_lease_seconds),
           started_at = now(),
           updated_at = now(),
           progress = 0
      from picked
     where j.id = picked.id
    returning j.*;
end
$$;

-- A submit for a user who is not in auth.users (deleted, with a token that has
-- not expired yet) is refused with EC401 before anything is written; the old
-- version failed on the foreign key with a 500.
create or replace function public.chat_submit(
  p_user uuid,
  p_session_id text,
  p_message text,
  p_field_id text default null,
  p_priority integer default 0,
  p_max_questions integer default 10,
  p_session_max_age_seconds integer default 86400,
  p_max_attempts integer default 4,
  p_backoff_base_ms integer default 1000
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_session public.chat_sessions;
  v_message uuid;
  v_job public.jobs;
  v_position integer;
begin
  if p_user is null then
    raise exception using errcode = '22023', message = 'p_user is required';
  end if;
  if p_session_id is null or p_session_id !~ '^[A-Za-z0-9_.:-]{1,128}$' then
    raise exception using errcode = '22023', message = 'p_session_id must be 1 to 128 of A-Z a-z 0-9 _ . : -';
  end if;
  if p_message is null or length(p_message) = 0 then
    raise exception using errcode = '22023', message = 'p_message is required';
  end if;
  if p_max_questions is null or p_max_questions not between 1 and 1000 then
    raise exception using errcode = '22023', message = 'p_max_questions must be between 1 and 1000';
  end if;
  if p_session_max_age_seconds is null or p_session_max_age_seconds not between 60 and 31536000 then
    raise exception using errcode = '22023', message = 'p_session_max_age_seconds must be between 60 and 31536000';
  end if;
  if not exists (select 1 from auth.users u where u.id = p_user) then
    raise exception using errcode = 'EC401', message = 'user_not_found';
  end if;
  if p_field_id is not null and not exists (select 1 from public.fields f where f.id = p_field_id) then
    raise exception using errcode = 'EC404', message = 'field_not_found';
  end if;

  insert into public.chat_sessions (id, owner_id, field_id, max_questions, expires_at)
  values (p_session_id, p_user, coalesce(p_field_id, 'general'), p_max_questions,
          now() + make_interval(secs => p_session_max_age_seconds))
  on conflict (id) do nothing;

  -- The session row lock serialises submits on one session: the question
  -- count can never pass the limit, however many arrive at once.
  select * into v_session from public.chat_sessions s where s.id = p_session_id for update;
  if v_session.owner_id is distinct from p_user then
    raise exception using errcode = 'EC403', message = 'session_forbidden';
  end if;
  if v_session.expires_at <= now()
     or v_session.created_at <= now() - make_interval(secs => p_session_max_age_seconds) then
    raise exception using errcode = 'EC410', message = 'session_expired';
  end if;
  if p_field_id is not null and p_field_id <> v_session.field_id then
    raise exception using errcode = 'EC409', message = 'session_field_mismatch';
  end if;
  if v_session.question_count >= least(v_session.max_questions, p_max_questions) then
    raise exception using errcode = 'EC429', message = 'question_limit_reached',
      detail = least(v_session.max_questions, p_max_questions)::text;
  end if;

  insert into public.chat_messages (session_id, owner_id, role, content)
  values (p_session_id, p_user, 'user', p_message)
  returning id into v_message;

  v_job := public.enqueue_job(
    p_queue => 'chat',
    p_kind => 'chat_completion',
    p_payload => jsonb_build_object('session_id', p_session_id, 'message_id', v_message),
    p_priority => p_priority,
    p_max_attempts => p_max_attempts,
    p_owner => p_user,
    p_backoff_base_ms => p_backoff_base_ms
  );

  insert into public.chat_jobs (job_id, session_id, owner_id, user_message_id)
  values (v_job.id, p_session_id, p_user, v_message);
  update public.chat_messages set job_id = v_job.id where id = v_message;
  update public.chat_sessions
     set question_count = question_count + 1, updated_at = now()
   where id = p_session_id;

  v_position := public.queue_position(v_job.id);
  return private.chat_queue_timing('chat') || jsonb_build_object(
    'job_id', v_job.id,
    'status', v_job.status,
    'queue_position', coalesce(v_position, 0),
    'session_id', p_session_id,
    'question_count', v_session.question_count + 1,
    'max_questions', least(v_session.max_questions, p_max_questions)
  );
end
$$;

-- Error rows are bounded: a caller cannot store megabytes through one call.
create or replace function public.chat_log_error(
  p_function text, p_code text, p_message text,
  p_request_id text default null, p_job uuid default null, p_details jsonb default null
) returns void
language sql volatile security definer set search_path = ''
as $$
  insert into public.error_logs (function, code, message, request_id, job_id, details)
  values (left(p_function, 100), left(p_code, 100), left(p_message, 2000), left(p_request_id, 200), p_job,
          case when p_details is null or octet_length(p_details::text) <= 8192 then p_details
               else jsonb_build_object('truncated', true, 'bytes', octet_length(p_details::text)) end)
$$;

-- Workers heartbeat on every claim and every queue-worker run; a worker that has
-- been silent for 15 minutes (or the retention, if shorter) is dead and its row
-- goes, so the table holds the live workers and the recently departed.
create or replace function public.cleanup_jobs(p_retention_seconds integer default 604800, p_limit integer default 10000)
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
   where w.last_heartbeat_at < now() - make_interval(secs => least(p_retention_seconds, 900));
  get diagnostics v_workers = row_count;

  return jsonb_build_object('jobs_deleted', v_jobs, 'workers_deleted', v_workers);
end
$$;

-- -----------------------------------------------------------------------------
-- 4. Explicit privileges on everything that exists today.
-- -----------------------------------------------------------------------------

revoke execute on all functions in schema public from public, anon, authenticated, service_role;
revoke execute on all functions in schema private from public, anon, authenticated, service_role;

-- Anyone, signed in or not: the liveness probe.
grant execute on function public.health_ping() to anon, authenticated, service_role;

-- Signed-in users, on their own jobs and sessions only (each checks the caller).
grant execute on function
  public.cancel_job(uuid),
  public.queue_position(uuid),
  public.chat_job_status(uuid),
  public.chat_session_status(text, integer)
  to authenticated, service_role;

-- The service role: workers, schedulers and the functions' system work.
grant execute on function
  public.backoff_ceiling_ms(integer, integer, integer),
  public.enqueue_job(text, text, jsonb, integer, integer, integer, text, uuid[], uuid, integer, integer),
  public.enqueue_jobs(jsonb),
  public.requeue_expired_leases(text[]),
  public.claim_jobs(text, text[], text[], integer, integer),
  public.claim_job(uuid, text, text[], text[], integer),
  public.complete_job(uuid, uuid, jsonb),
  public.complete_jobs(jsonb),
  public.fail_job(uuid, uuid, text, boolean, integer),
  public.extend_lease(uuid, uuid, integer),
  public.report_progress(uuid, uuid, integer),
  public.heartbeat_worker(text, text[], text, jsonb),
  public.queue_stats(text, integer, integer),
  public.cleanup_jobs(integer, integer),
  public.rate_limit_take(text, integer, integer, double precision),
  public.rate_limit_prune(integer),
  public.chat_submit(uuid, text, text, text, integer, integer, integer, integer, integer),
  public.chat_job_context(uuid, uuid),
  public.chat_complete(uuid, uuid, text, text, text, integer, integer, integer, text),
  public.chat_log_error(text, text, text, text, uuid, jsonb)
  to service_role;

-- Tables: TRUNCATE, REFERENCES and TRIGGER are no API's business (TRUNCATE
-- ignores RLS), and anon has nothing to read in the per-user tables.
revoke truncate, references, trigger on all tables in schema public from anon, authenticated;
revoke all on public.chat_sessions, public.chat_messages, public.chat_jobs, public.jobs,
              public.job_dependencies, public.job_events, public.job_queue, public.worker_status
  from anon;
-- worker_status reads public.workers, which only the service role may read.
revoke all on public.worker_status from authenticated;
revoke all on all sequences in schema public from anon, authenticated;
