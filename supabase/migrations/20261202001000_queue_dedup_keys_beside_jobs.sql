-- =============================================================================
-- Job queue: dedup keys in a table of their own, paid only by the jobs that have one.
-- =============================================================================
--
-- jobs_dedup_idx was a partial unique index on jobs (queue, dedup_key) where dedup_key
-- is not null and the job is unfinished. Few jobs have a dedup key, but for every
-- statement that updates jobs Postgres 15 opens the index, copies its predicate and
-- compiles it (ExecOpenIndices, ExecPrepareQual), whether or not the row goes into it.
-- A chained job (complete_job_and_claim at batch 1) updates jobs twice: measured with
-- callgrind on a single-user backend, 300 chained calls, the index cost 22,000 of its
-- 1,018,000 instructions.
--
-- Now private.job_dedup_keys holds one row per (queue, dedup_key): the job that took
-- the key last. enqueue_job inserts that row first (ON CONFLICT DO NOTHING: a concurrent
-- enqueue of the same key waits for this one to commit or roll back, as it did on the
-- unique index), then the job under the id it reserved. On a conflict it returns the
-- holder if the holder is unfinished; a holder that finished (or was deleted) leaves the
-- key free: its row is dropped and the insert tried again. Nothing on the claim,
-- completion, failure or cancel paths touches the table. Rows go with their jobs
-- (cleanup_jobs, an owner's deletion) through jobs_forget_events.
--
-- jobs.dedup_key stays, written as before, so rows read through /rest/v1 are the same.
-- The table is in private (PostgREST serves public only), with RLS on, no policy, and
-- no privileges for anon, authenticated or service_role: only the queue's
-- security-definer functions reach it.
-- =============================================================================

alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create table private.job_dedup_keys (
  queue text not null,
  dedup_key text not null,
  job_id uuid not null,
  primary key (queue, dedup_key)
);
comment on table private.job_dedup_keys is
  'The job that took each (queue, dedup_key) last; the key is held while that job is unfinished (enqueue_job).';
alter table private.job_dedup_keys enable row level security;
revoke all on table private.job_dedup_keys from public, anon, authenticated, service_role;

-- The unfinished jobs' keys, which jobs_dedup_idx kept unique.
insert into private.job_dedup_keys (queue, dedup_key, job_id)
select j.queue, j.dedup_key, j.id
  from public.jobs j
 where j.dedup_key is not null and j.status in ('pending', 'processing', 'retrying');

create or replace function public.enqueue_job(p_queue text, p_kind text, p_payload jsonb DEFAULT '{}'::jsonb, p_priority integer DEFAULT 0, p_delay_ms integer DEFAULT 0, p_max_attempts integer DEFAULT 5, p_dedup_key text DEFAULT NULL::text, p_depends_on uuid[] DEFAULT NULL::uuid[], p_owner uuid DEFAULT NULL::uuid, p_backoff_base_ms integer DEFAULT 1000, p_backoff_cap_ms integer DEFAULT 600000, p_ordering_key text DEFAULT NULL::text)
 RETURNS jobs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $$
declare
  v_job public.jobs;
  v_deps uuid[];
  v_found integer := 0;
  v_unfinished integer := 0;
  v_broken uuid;
  v_try integer := 0;
  v_duplicate boolean := false;
  v_id uuid;
  v_holder uuid;
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
    if p_dedup_key is null then
      insert into public.jobs (queue, kind, payload, priority, run_at, max_attempts,
                               backoff_base_ms, backoff_cap_ms, dedup_key, owner_id,
                               pending_dependencies, ordering_key, fair_position)
      values (p_queue, p_kind, coalesce(p_payload, '{}'::jsonb), p_priority,
              now() + make_interval(secs => p_delay_ms / 1000.0), p_max_attempts,
              p_backoff_base_ms, p_backoff_cap_ms, null, p_owner, v_unfinished,
              p_ordering_key, private.next_fair_position(p_queue, p_owner))
      returning * into v_job;
      exit;
    end if;
    -- The key first, for the job about to be inserted: a concurrent enqueue of the same
    -- key waits here until this one commits or rolls back, as it did on jobs_dedup_idx.
    v_id := gen_random_uuid();
    insert into private.job_dedup_keys (queue, dedup_key, job_id)
    values (p_queue, p_dedup_key, v_id)
    on conflict (queue, dedup_key) do nothing;
    if found then
      insert into public.jobs (id, queue, kind, payload, priority, run_at, max_attempts,
                               backoff_base_ms, backoff_cap_ms, dedup_key, owner_id,
                               pending_dependencies, ordering_key, fair_position)
      values (v_id, p_queue, p_kind, coalesce(p_payload, '{}'::jsonb), p_priority,
              now() + make_interval(secs => p_delay_ms / 1000.0), p_max_attempts,
              p_backoff_base_ms, p_backoff_cap_ms, p_dedup_key, p_owner, v_unfinished,
              p_ordering_key, private.next_fair_position(p_queue, p_owner))
      returning * into v_job;
      exit;
    end if;
    -- A duplicate: return the unfinished job holding the key. A holder that finished
    -- (or is gone) leaves its key free: drop that entry and insert once more.
    select k.job_id into v_holder from private.job_dedup_keys k
     where k.queue = p_queue and k.dedup_key = p_dedup_key;
    if v_holder is not null then
      select * into v_job from public.jobs j
       where j.id = v_holder and j.status in ('pending', 'processing', 'retrying');
      if found then
        v_duplicate := true;
        exit;
      end if;
      delete from private.job_dedup_keys k
       where k.queue = p_queue and k.dedup_key = p_dedup_key and k.job_id = v_holder;
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
  return null;
end
$$;

-- A run's waiting step job is the unfinished holder of its key 'run:<id>'.
create or replace function public.pipeline_run_cancel(p_run uuid, p_user uuid default null::uuid)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_run public.pipeline_runs;
  v_job uuid;
  v_cancelled integer := 0;
begin
  select * into v_run from public.pipeline_runs r
   where r.id = p_run and (p_user is null or r.user_id = p_user) for update;
  if not found then
    raise exception using errcode = 'EP404', message = 'run_not_found';
  end if;
  if v_run.status in ('succeeded', 'failed', 'cancelled') then
    raise exception using errcode = 'EP409', message = 'run_finished', detail = v_run.status;
  end if;
  update public.pipeline_runs set status = 'cancelled', finished_at = now(), updated_at = now(),
         error = 'cancelled by its owner'
   where id = p_run;
  -- Waiting step jobs are cancelled; a step running now finishes, and its
  -- pipeline_step_finish sees the run cancelled and enqueues nothing.
  for v_job in
    select j.id from private.job_dedup_keys k join public.jobs j on j.id = k.job_id
     where k.queue = 'pipelines' and k.dedup_key = 'run:' || p_run
       and j.status in ('pending', 'retrying')
  loop
    perform public.cancel_job(v_job);
    v_cancelled := v_cancelled + 1;
  end loop;
  return jsonb_build_object('run_id', p_run, 'status', 'cancelled', 'jobs_cancelled', v_cancelled);
end
$$;

drop index public.jobs_dedup_idx;
