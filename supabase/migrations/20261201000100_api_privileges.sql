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
--   3. tests/platform/security/privileges.test.ts compares, for every function, table,
--      view and sequence of every exposed schema, what anon, authenticated and
--      service_role may do with tests/platform/security/privileges.allow.json; an object
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

-- Changed elsewhere, in the migrations that follow: claim_job takes the worker's
-- queues and kinds (20261201000200), chat_submit refuses a user missing from
-- auth.users and takes an idempotency key (20261201000300), cleanup_jobs reaps
-- workers silent for 15 minutes (20261201000300).

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
  public.claim_job(uuid, text, integer),
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
