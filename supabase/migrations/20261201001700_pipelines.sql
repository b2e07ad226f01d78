-- =============================================================================
-- Seed 003, content pipelines: pipelines of steps run as queue jobs, cron
-- schedules in users' time zones, OAuth connections to social platforms,
-- the posting queue, Replicate predictions and user notifications.
-- =============================================================================
--
-- Tables (public: RLS, owner reads; writes only where granted below):
--   pipelines             a user's pipeline                 owner: all (named columns)
--   pipeline_steps        its ordered steps                 owner: all (named columns)
--   pipeline_runs         one run of a pipeline             owner: read
--   pipeline_history      one row per (run, step): the step's memoized result,
--                         attempts and error                owner: read
--   scheduled_jobs        cron schedules                    owner: read, pause, delete
--   oauth_connections     a user's platform account (never its tokens)   owner: read
--   posting_queue         one post per (run, step, platform) idempotency key  owner: read
--   pipeline_predictions  Replicate predictions             owner: read
--   notifications         messages to a user                owner: read, mark read, delete
-- Private (no API role can reach them):
--   private.oauth_tokens        AES-GCM ciphertexts (encrypted in Rust), refresh lease
--   private.oauth_state_nonces  spent OAuth `state` nonces (single use)
--   private.replicate_webhooks  webhook ids already handled (replays answered, not redone)
--
-- Steps: a run's steps travel on queue 'pipelines' as jobs of kind 'pipeline_step'
-- (payload {run_id}), one unfinished job per run (dedup key 'run:<id>'). A step job
-- begins with pipeline_step_begin, which picks the first step of the run without a
-- succeeded history row: a retried or resumed run starts after its last finished step
-- and never repeats one. pipeline_step_finish stores the result, completes the job
-- and enqueues the next step in one transaction.
--
-- Schedules fire exactly once per occurrence: scheduled_jobs_claim_due hands due rows
-- to one processor (FOR UPDATE SKIP LOCKED plus a claim token and lease);
-- scheduled_jobs_fire advances a row only if its claim token and next_run_at are still
-- the ones claimed (compare-and-set), and runs are unique per (schedule, scheduled_for).
--
-- Single-flight token refresh: oauth_token_acquire reads the token under its row lock
-- and, when it expires within the margin, gives ONE caller a refresh lease; the others
-- are told to wait and read again. (A row lock cannot be held across the HTTP call to
-- the token endpoint: through PostgREST each call is its own transaction. The lease is
-- the lock that spans it, taken under the row lock, fenced by its token, and it expires
-- if its holder dies.)
--
-- API (service_role unless noted; the functions take the user id the Rust side verified):
--   pipeline_run_start(p_pipeline, p_user, p_trigger, p_max_attempts, p_backoff_base_ms) -> jsonb
--   pipeline_run_cancel(p_run, p_user) -> jsonb          EP404 run_not_found, EP409 run_finished
--   pipeline_run_resume(p_run, p_user, ...) -> jsonb     EP404, EP409 run_not_resumable
--   pipeline_step_begin(p_job, p_lease_token, p_run) -> jsonb           EQ409 lease lost
--   pipeline_step_finish(p_job, p_lease_token, p_run, p_step, p_result) -> jsonb
--   pipeline_step_failed(p_run, p_reason, p_retry_base_ms) -> jsonb
--   pipeline_post_reserve(...) -> jsonb, pipeline_post_record(...) -> jsonb
--   scheduled_job_create(...) -> scheduled_jobs
--   scheduled_jobs_claim_due(p_limit, p_lease_seconds) -> jsonb
--   scheduled_jobs_fire(p_items jsonb) -> jsonb
--   oauth_state_consume(p_nonce, p_user, p_platform, p_expires_at) -> boolean
--   oauth_connection_save(...) -> oauth_connections
--   oauth_token_acquire(p_user, p_platform, p_margin_seconds, p_lease_seconds) -> jsonb
--   oauth_token_refreshed(...) / oauth_token_refresh_failed(...) -> jsonb
--   oauth_connection_delete(p_user, p_platform) -> jsonb
--   pipeline_prediction_save(...) / pipeline_prediction_update(...) -> pipeline_predictions
--   replicate_webhook_record(p_webhook_id) -> boolean
-- Errors: EP404 not found (or not the caller's), EP409 state conflict, 22023 bad argument.
-- =============================================================================

-- -----------------------------------------------------------------------------
-- Tables
-- -----------------------------------------------------------------------------

create table public.pipelines (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  name text not null check (length(name) between 1 and 200),
  description text check (description is null or length(description) <= 2000),
  status text not null default 'active' check (status in ('active', 'paused', 'archived')),
  config jsonb not null default '{}'::jsonb
    check (jsonb_typeof(config) = 'object' and pg_column_size(config) <= 65536),
  last_run_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index pipelines_user_idx on public.pipelines (user_id, created_at desc);

create table public.pipeline_steps (
  id uuid primary key default gen_random_uuid(),
  pipeline_id uuid not null references public.pipelines (id) on delete cascade,
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  position integer not null check (position between 1 and 50),
  step_type text not null check (step_type in ('generate-content', 'post-to-platform', 'schedule-pipeline')),
  config jsonb not null default '{}'::jsonb
    check (jsonb_typeof(config) = 'object' and pg_column_size(config) <= 65536),
  created_at timestamptz not null default now(),
  unique (pipeline_id, position)
);

create table public.pipeline_runs (
  id uuid primary key default gen_random_uuid(),
  pipeline_id uuid not null references public.pipelines (id) on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  status text not null default 'queued'
    check (status in ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
  trigger text not null default 'manual' check (trigger in ('manual', 'schedule', 'pipeline')),
  scheduled_job_id uuid,
  scheduled_for timestamptz,
  current_position integer,
  error text,
  max_attempts integer not null default 3 check (max_attempts between 1 and 20),
  backoff_base_ms integer not null default 1000 check (backoff_base_ms between 1 and 3600000),
  created_at timestamptz not null default clock_timestamp(),
  started_at timestamptz,
  finished_at timestamptz,
  updated_at timestamptz not null default now()
);
-- One run per schedule occurrence, whatever number of processors race.
create unique index pipeline_runs_occurrence_idx on public.pipeline_runs (scheduled_job_id, scheduled_for)
  where scheduled_job_id is not null;
create index pipeline_runs_pipeline_idx on public.pipeline_runs (pipeline_id, created_at desc);
create index pipeline_runs_user_idx on public.pipeline_runs (user_id, created_at desc);

create table public.pipeline_history (
  id uuid primary key default gen_random_uuid(),
  run_id uuid not null references public.pipeline_runs (id) on delete cascade,
  pipeline_id uuid not null,
  user_id uuid not null,
  step_id uuid not null,
  position integer not null,
  step_type text not null,
  status text not null check (status in ('running', 'succeeded', 'failed')),
  attempts integer not null default 0,
  result jsonb,
  error text,
  job_id uuid,
  started_at timestamptz,
  finished_at timestamptz,
  unique (run_id, step_id)
);
create index pipeline_history_user_idx on public.pipeline_history (user_id, started_at desc);

create table public.scheduled_jobs (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  pipeline_id uuid not null references public.pipelines (id) on delete cascade,
  -- Validated by job-processor (systems/pipelines/src/cron.rs) before it is stored.
  cron_expression text not null check (length(cron_expression) between 1 and 200),
  timezone text not null default 'UTC' check (length(timezone) between 1 and 64),
  catch_up text not null default 'once' check (catch_up in ('once', 'skip')),
  next_run_at timestamptz,
  last_run_at timestamptz,
  is_active boolean not null default true,
  retry_count integer not null default 0,
  max_retries integer not null default 3 check (max_retries between 0 and 20),
  last_error text,
  claim_token uuid,
  claimed_until timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index scheduled_jobs_due_idx on public.scheduled_jobs (next_run_at) where is_active;
create index scheduled_jobs_user_idx on public.scheduled_jobs (user_id);
-- A pipeline has a given schedule once (the schedule-pipeline step relies on it).
create unique index scheduled_jobs_identity_idx on public.scheduled_jobs (pipeline_id, cron_expression, timezone);

create table public.oauth_connections (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  platform text not null
    check (platform in ('instagram', 'twitter', 'linkedin', 'tiktok', 'google', 'facebook')),
  platform_user_id text,
  username text,
  display_name text,
  profile jsonb not null default '{}'::jsonb,
  scopes text[] not null default '{}',
  -- active | refresh_failed (a refresh failed for good: connect again) | expired
  status text not null default 'active' check (status in ('active', 'refresh_failed', 'expired')),
  token_expires_at timestamptz,
  refreshed_at timestamptz,
  last_error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (user_id, platform)
);

create table private.oauth_tokens (
  connection_id uuid primary key references public.oauth_connections (id) on delete cascade,
  -- "v1.<key id>.<nonce>.<ciphertext>" (systems/pipelines/src/secrets.rs); never plaintext.
  access_token text not null,
  refresh_token text,
  expires_at timestamptz,
  version integer not null default 1,
  refresh_lease uuid,
  refresh_lease_until timestamptz,
  updated_at timestamptz not null default now()
);
alter table private.oauth_tokens enable row level security;
revoke all on private.oauth_tokens from public, anon, authenticated, service_role;

create table private.oauth_state_nonces (
  nonce text primary key check (length(nonce) between 16 and 64),
  user_id uuid not null,
  platform text not null,
  expires_at timestamptz not null,
  used_at timestamptz not null default now()
);
create index oauth_state_nonces_expiry_idx on private.oauth_state_nonces (expires_at);
alter table private.oauth_state_nonces enable row level security;
revoke all on private.oauth_state_nonces from public, anon, authenticated, service_role;

create table public.posting_queue (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  pipeline_id uuid,
  run_id uuid references public.pipeline_runs (id) on delete set null,
  step_id uuid,
  platform text not null,
  content jsonb not null default '{}'::jsonb,
  -- sha256(run, step, platform): a retry finds its own earlier post here.
  idempotency_key text not null unique check (length(idempotency_key) between 1 and 128),
  -- pending -> posting -> posted | failed (definitely not posted) | unknown (the
  -- platform may have it: never posted again automatically)
  status text not null default 'pending' check (status in ('pending', 'posting', 'posted', 'failed', 'unknown')),
  attempts integer not null default 0,
  external_post_id text,
  error text,
  posted_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index posting_queue_user_idx on public.posting_queue (user_id, created_at desc);

create table public.pipeline_predictions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  replicate_id text not null unique check (length(replicate_id) between 1 and 100),
  model text,
  version text,
  prompt text,
  input jsonb not null default '{}'::jsonb,
  -- starting | processing | storing (done at Replicate, being copied) | succeeded | failed | canceled
  status text not null check (status in ('starting', 'processing', 'storing', 'succeeded', 'failed', 'canceled')),
  output_url text,
  storage_bucket text,
  storage_path text,
  error text,
  metrics jsonb,
  run_id uuid,
  created_at timestamptz not null default now(),
  completed_at timestamptz,
  updated_at timestamptz not null default now()
);
create index pipeline_predictions_user_idx on public.pipeline_predictions (user_id, created_at desc);

create table private.replicate_webhooks (
  webhook_id text primary key check (length(webhook_id) between 1 and 200),
  received_at timestamptz not null default now()
);
alter table private.replicate_webhooks enable row level security;
revoke all on private.replicate_webhooks from public, anon, authenticated, service_role;

create table public.notifications (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  kind text not null check (length(kind) between 1 and 100),
  title text not null,
  body text,
  data jsonb not null default '{}'::jsonb,
  read_at timestamptz,
  created_at timestamptz not null default now()
);
create index notifications_user_idx on public.notifications (user_id, created_at desc);

-- -----------------------------------------------------------------------------
-- Row level security and grants
-- -----------------------------------------------------------------------------

alter table public.pipelines enable row level security;
create policy pipelines_owner on public.pipelines for all to authenticated
  using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
grant select, delete on public.pipelines to authenticated;
grant insert (name, description, status, config) on public.pipelines to authenticated;
grant update (name, description, status, config) on public.pipelines to authenticated;

alter table public.pipeline_steps enable row level security;
create policy pipeline_steps_owner on public.pipeline_steps for all to authenticated
  using (user_id = (select auth.uid()))
  with check (
    user_id = (select auth.uid())
    and exists (select 1 from public.pipelines p
                 where p.id = pipeline_id and p.user_id = (select auth.uid())));
grant select, delete on public.pipeline_steps to authenticated;
grant insert (pipeline_id, position, step_type, config) on public.pipeline_steps to authenticated;
grant update (position, step_type, config) on public.pipeline_steps to authenticated;

alter table public.pipeline_runs enable row level security;
create policy pipeline_runs_owner_read on public.pipeline_runs for select to authenticated
  using (user_id = (select auth.uid()));
grant select on public.pipeline_runs to authenticated;

alter table public.pipeline_history enable row level security;
create policy pipeline_history_owner_read on public.pipeline_history for select to authenticated
  using (user_id = (select auth.uid()));
grant select on public.pipeline_history to authenticated;

alter table public.scheduled_jobs enable row level security;
create policy scheduled_jobs_owner_read on public.scheduled_jobs for select to authenticated
  using (user_id = (select auth.uid()));
create policy scheduled_jobs_owner_pause on public.scheduled_jobs for update to authenticated
  using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
create policy scheduled_jobs_owner_delete on public.scheduled_jobs for delete to authenticated
  using (user_id = (select auth.uid()));
-- Schedules are created through job-processor, which validates the expression.
grant select, delete on public.scheduled_jobs to authenticated;
grant update (is_active) on public.scheduled_jobs to authenticated;

alter table public.oauth_connections enable row level security;
create policy oauth_connections_owner_read on public.oauth_connections for select to authenticated
  using (user_id = (select auth.uid()));
grant select on public.oauth_connections to authenticated;

alter table public.posting_queue enable row level security;
create policy posting_queue_owner_read on public.posting_queue for select to authenticated
  using (user_id = (select auth.uid()));
grant select on public.posting_queue to authenticated;

alter table public.pipeline_predictions enable row level security;
create policy pipeline_predictions_owner_read on public.pipeline_predictions for select to authenticated
  using (user_id = (select auth.uid()));
grant select on public.pipeline_predictions to authenticated;

alter table public.notifications enable row level security;
create policy notifications_owner_read on public.notifications for select to authenticated
  using (user_id = (select auth.uid()));
create policy notifications_owner_mark on public.notifications for update to authenticated
  using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
create policy notifications_owner_delete on public.notifications for delete to authenticated
  using (user_id = (select auth.uid()));
grant select, delete on public.notifications to authenticated;
grant update (read_at) on public.notifications to authenticated;

alter publication supabase_realtime add table
  public.pipeline_runs, public.pipeline_history, public.pipeline_predictions, public.notifications;

-- -----------------------------------------------------------------------------
-- Private helpers
-- -----------------------------------------------------------------------------

create function private.pipeline_notify(p_user uuid, p_kind text, p_title text, p_body text, p_data jsonb)
returns void
language sql volatile set search_path = ''
as $$
  insert into public.notifications (user_id, kind, title, body, data)
  values (p_user, p_kind, p_title, p_body, coalesce(p_data, '{}'::jsonb));
$$;

-- Enqueues the step job of a run (one unfinished job per run: the dedup key).
create function private.pipeline_enqueue_step(p_run public.pipeline_runs, p_delay_ms integer)
returns uuid
language plpgsql volatile set search_path = ''
as $$
declare
  v_job public.jobs;
begin
  v_job := public.enqueue_job(
    p_queue := 'pipelines',
    p_kind := 'pipeline_step',
    p_payload := jsonb_build_object('run_id', p_run.id),
    p_delay_ms := greatest(coalesce(p_delay_ms, 0), 0),
    p_max_attempts := p_run.max_attempts,
    p_dedup_key := 'run:' || p_run.id,
    p_owner := p_run.user_id,
    p_backoff_base_ms := p_run.backoff_base_ms,
    p_backoff_cap_ms := greatest(p_run.backoff_base_ms, 600000));
  return v_job.id;
end
$$;

-- Raises EQ409 unless p_job is processing under p_lease_token.
create function private.pipeline_check_lease(p_job uuid, p_lease_token uuid) returns void
language plpgsql stable set search_path = ''
as $$
begin
  perform 1 from public.jobs j
   where j.id = p_job and j.lease_token = p_lease_token and j.status = 'processing';
  if not found then
    perform private.raise_lease_lost(p_job);
  end if;
end
$$;

-- -----------------------------------------------------------------------------
-- Runs
-- -----------------------------------------------------------------------------

create function public.pipeline_run_start(
  p_pipeline uuid,
  p_user uuid default null,
  p_trigger text default 'manual',
  p_max_attempts integer default 3,
  p_backoff_base_ms integer default 1000
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_pipeline public.pipelines;
  v_run public.pipeline_runs;
  v_job uuid;
begin
  if p_trigger is null or p_trigger not in ('manual', 'pipeline') then
    raise exception using errcode = '22023', message = 'p_trigger must be manual or pipeline';
  end if;
  select * into v_pipeline from public.pipelines p
   where p.id = p_pipeline and (p_user is null or p.user_id = p_user);
  if not found then
    raise exception using errcode = 'EP404', message = 'pipeline_not_found';
  end if;
  if v_pipeline.status <> 'active' then
    raise exception using errcode = 'EP409', message = 'pipeline_not_active', detail = v_pipeline.status;
  end if;
  if not exists (select 1 from public.pipeline_steps s where s.pipeline_id = p_pipeline) then
    raise exception using errcode = 'EP409', message = 'pipeline_has_no_steps';
  end if;
  insert into public.pipeline_runs (pipeline_id, user_id, trigger, max_attempts, backoff_base_ms)
  values (p_pipeline, v_pipeline.user_id, p_trigger, p_max_attempts, p_backoff_base_ms)
  returning * into v_run;
  v_job := private.pipeline_enqueue_step(v_run, 0);
  update public.pipelines set last_run_at = now() where id = p_pipeline;
  return jsonb_build_object('run_id', v_run.id, 'pipeline_id', p_pipeline, 'status', v_run.status,
                            'job_id', v_job, 'created_at', v_run.created_at);
end
$$;

create function public.pipeline_run_cancel(p_run uuid, p_user uuid default null) returns jsonb
language plpgsql volatile security definer set search_path = ''
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
    select j.id from public.jobs j
     where j.queue = 'pipelines' and j.dedup_key = 'run:' || p_run and j.status in ('pending', 'retrying')
  loop
    perform public.cancel_job(v_job);
    v_cancelled := v_cancelled + 1;
  end loop;
  return jsonb_build_object('run_id', p_run, 'status', 'cancelled', 'jobs_cancelled', v_cancelled);
end
$$;

create function public.pipeline_run_resume(p_run uuid, p_user uuid default null) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_run public.pipeline_runs;
  v_job uuid;
begin
  select * into v_run from public.pipeline_runs r
   where r.id = p_run and (p_user is null or r.user_id = p_user) for update;
  if not found then
    raise exception using errcode = 'EP404', message = 'run_not_found';
  end if;
  if v_run.status not in ('failed', 'cancelled') then
    raise exception using errcode = 'EP409', message = 'run_not_resumable', detail = v_run.status;
  end if;
  update public.pipeline_runs set status = 'queued', error = null, finished_at = null, updated_at = now()
   where id = p_run returning * into v_run;
  v_job := private.pipeline_enqueue_step(v_run, 0);
  return jsonb_build_object('run_id', p_run, 'status', 'queued', 'job_id', v_job);
end
$$;

-- -----------------------------------------------------------------------------
-- Steps
-- -----------------------------------------------------------------------------

create function public.pipeline_step_begin(p_job uuid, p_lease_token uuid, p_run uuid) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_run public.pipeline_runs;
  v_step public.pipeline_steps;
  v_history public.pipeline_history;
  v_pipeline public.pipelines;
  v_memo jsonb;
begin
  perform private.pipeline_check_lease(p_job, p_lease_token);
  select * into v_run from public.pipeline_runs where id = p_run for update;
  if not found then
    return jsonb_build_object('action', 'stop', 'reason', 'run_not_found');
  end if;
  if v_run.status in ('succeeded', 'failed', 'cancelled') then
    return jsonb_build_object('action', 'stop', 'reason', 'run_' || v_run.status);
  end if;
  select * into v_step from public.pipeline_steps s
   where s.pipeline_id = v_run.pipeline_id
     and not exists (select 1 from public.pipeline_history h
                      where h.run_id = p_run and h.step_id = s.id and h.status = 'succeeded')
   order by s.position
   limit 1;
  if not found then
    update public.pipeline_runs set status = 'succeeded', finished_at = now(), updated_at = now()
     where id = p_run;
    return jsonb_build_object('action', 'done');
  end if;
  insert into public.pipeline_history as h (run_id, pipeline_id, user_id, step_id, position, step_type,
                                           status, attempts, job_id, started_at)
  values (p_run, v_run.pipeline_id, v_run.user_id, v_step.id, v_step.position, v_step.step_type,
          'running', 1, p_job, now())
  on conflict (run_id, step_id) do update
    set status = 'running', attempts = h.attempts + 1, job_id = p_job, error = null, started_at = now()
  returning * into v_history;
  update public.pipeline_runs
     set status = 'running', started_at = coalesce(started_at, now()), current_position = v_step.position,
         updated_at = now()
   where id = p_run;
  select * into v_pipeline from public.pipelines where id = v_run.pipeline_id;
  select coalesce(jsonb_agg(jsonb_build_object('position', h.position, 'step_type', h.step_type,
                                               'result', h.result) order by h.position), '[]'::jsonb)
    into v_memo
    from public.pipeline_history h where h.run_id = p_run and h.status = 'succeeded';
  return jsonb_build_object(
    'action', 'run',
    'run_id', p_run,
    'user_id', v_run.user_id,
    'pipeline', jsonb_build_object('id', v_pipeline.id, 'name', v_pipeline.name, 'config', v_pipeline.config),
    'step', jsonb_build_object('id', v_step.id, 'position', v_step.position, 'step_type', v_step.step_type,
                               'config', v_step.config),
    'attempt', v_history.attempts,
    'previous', v_memo);
end
$$;

create function public.pipeline_step_finish(
  p_job uuid, p_lease_token uuid, p_run uuid, p_step uuid, p_result jsonb
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_run public.pipeline_runs;
  v_job uuid;
begin
  select * into v_run from public.pipeline_runs where id = p_run for update;
  if not found then
    raise exception using errcode = 'EP404', message = 'run_not_found';
  end if;
  perform private.pipeline_check_lease(p_job, p_lease_token);
  update public.pipeline_history
     set status = 'succeeded', result = coalesce(p_result, '{}'::jsonb), error = null, finished_at = now()
   where run_id = p_run and step_id = p_step;
  perform public.complete_job(p_job, p_lease_token, jsonb_build_object('run_id', p_run, 'step_id', p_step));
  if v_run.status = 'cancelled' then
    return jsonb_build_object('next', 'cancelled');
  end if;
  if exists (select 1 from public.pipeline_steps s
              where s.pipeline_id = v_run.pipeline_id
                and not exists (select 1 from public.pipeline_history h
                                 where h.run_id = p_run and h.step_id = s.id and h.status = 'succeeded')) then
    v_job := private.pipeline_enqueue_step(v_run, 0);
    return jsonb_build_object('next', 'enqueued', 'job_id', v_job);
  end if;
  update public.pipeline_runs set status = 'succeeded', finished_at = now(), updated_at = now(), error = null
   where id = p_run;
  if v_run.scheduled_job_id is not null then
    update public.scheduled_jobs set retry_count = 0, last_error = null, updated_at = now()
     where id = v_run.scheduled_job_id;
  end if;
  return jsonb_build_object('next', 'done');
end
$$;

-- A step failed for good (its job's attempts are spent, or it cannot succeed):
-- the run stops with the reason. A scheduled run gets the schedule's retries
-- (backoff doubling from p_retry_base_ms) before the schedule is deactivated
-- and its owner notified.
create function public.pipeline_step_failed(
  p_run uuid, p_reason text, p_retry_base_ms integer default 60000
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_run public.pipeline_runs;
  v_sched public.scheduled_jobs;
  v_history public.pipeline_history;
  v_reason text := left(coalesce(p_reason, 'failed'), 2000);
  v_delay integer;
begin
  select * into v_run from public.pipeline_runs where id = p_run for update;
  if not found then
    raise exception using errcode = 'EP404', message = 'run_not_found';
  end if;
  -- The step that failed is the one its job was running.
  update public.pipeline_history set status = 'failed', error = v_reason, finished_at = now()
   where id = (select h.id from public.pipeline_history h
                where h.run_id = p_run and h.status = 'running' order by h.position limit 1)
  returning * into v_history;
  if v_run.status in ('succeeded', 'failed', 'cancelled') then
    return jsonb_build_object('run_status', v_run.status);
  end if;
  v_reason := coalesce(format('step %s (%s) failed: %s', v_history.position, v_history.step_type, v_reason),
                       v_reason);
  if v_run.scheduled_job_id is not null then
    select * into v_sched from public.scheduled_jobs where id = v_run.scheduled_job_id for update;
    if found and v_sched.retry_count < v_sched.max_retries then
      update public.scheduled_jobs set retry_count = retry_count + 1, last_error = v_reason, updated_at = now()
       where id = v_sched.id;
      v_delay := least(greatest(coalesce(p_retry_base_ms, 60000), 1)::bigint * (2 ^ v_sched.retry_count)::bigint,
                       3600000)::integer;
      update public.pipeline_runs set status = 'retrying', error = v_reason, updated_at = now()
       where id = p_run returning * into v_run;
      perform private.pipeline_enqueue_step(v_run, v_delay);
      return jsonb_build_object('run_status', 'retrying', 'retry_in_ms', v_delay,
                                'schedule_retries', v_sched.retry_count + 1);
    elsif found then
      update public.scheduled_jobs
         set is_active = false, last_error = v_reason, updated_at = now(), claim_token = null
       where id = v_sched.id;
      perform private.pipeline_notify(v_run.user_id, 'schedule_deactivated',
        'A scheduled pipeline was turned off',
        format('It failed %s times in a row. Last error: %s', v_sched.retry_count + 1, v_reason),
        jsonb_build_object('scheduled_job_id', v_sched.id, 'pipeline_id', v_run.pipeline_id, 'run_id', p_run));
    end if;
  end if;
  update public.pipeline_runs set status = 'failed', error = v_reason, finished_at = now(), updated_at = now()
   where id = p_run;
  perform private.pipeline_notify(v_run.user_id, 'pipeline_run_failed', 'A pipeline run failed', v_reason,
    jsonb_build_object('pipeline_id', v_run.pipeline_id, 'run_id', p_run));
  return jsonb_build_object('run_status', 'failed');
end
$$;

-- -----------------------------------------------------------------------------
-- Posting: one row per idempotency key; at most one attempt may be in flight
-- -----------------------------------------------------------------------------

-- Returns {go: true, post} when the caller may post now; {go: false, post} when the
-- key is already posted (post.status = 'posted': reuse its result) or its outcome is
-- unknown (an earlier attempt may have reached the platform: never post again).
create function public.pipeline_post_reserve(
  p_user uuid, p_run uuid, p_step uuid, p_pipeline uuid, p_platform text, p_key text, p_content jsonb
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_post public.posting_queue;
begin
  insert into public.posting_queue (user_id, pipeline_id, run_id, step_id, platform, content,
                                    idempotency_key, status, attempts)
  values (p_user, p_pipeline, p_run, p_step, p_platform, coalesce(p_content, '{}'::jsonb), p_key, 'posting', 1)
  on conflict (idempotency_key) do nothing
  returning * into v_post;
  if found then
    return jsonb_build_object('go', true, 'post', to_jsonb(v_post));
  end if;
  select * into v_post from public.posting_queue where idempotency_key = p_key for update;
  if v_post.status in ('pending', 'failed') then
    update public.posting_queue set status = 'posting', attempts = attempts + 1, error = null, updated_at = now()
     where id = v_post.id returning * into v_post;
    return jsonb_build_object('go', true, 'post', to_jsonb(v_post));
  end if;
  if v_post.status = 'posting' then
    -- The attempt that set 'posting' never recorded its outcome.
    update public.posting_queue set status = 'unknown', updated_at = now(),
           error = 'an earlier attempt did not record whether the platform accepted the post'
     where id = v_post.id returning * into v_post;
  end if;
  return jsonb_build_object('go', false, 'post', to_jsonb(v_post));
end
$$;

create function public.pipeline_post_record(
  p_key text, p_status text, p_external_id text default null, p_error text default null
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_post public.posting_queue;
begin
  if p_status is null or p_status not in ('posted', 'failed', 'unknown') then
    raise exception using errcode = '22023', message = 'p_status must be posted, failed or unknown';
  end if;
  update public.posting_queue
     set status = p_status, external_post_id = p_external_id, error = left(p_error, 2000),
         posted_at = case when p_status = 'posted' then now() end, updated_at = now()
   where idempotency_key = p_key and status = 'posting'
  returning * into v_post;
  if not found then
    raise exception using errcode = 'EP409', message = 'post_not_in_flight';
  end if;
  return to_jsonb(v_post);
end
$$;

-- -----------------------------------------------------------------------------
-- Schedules
-- -----------------------------------------------------------------------------

create function public.scheduled_job_create(
  p_user uuid, p_pipeline uuid, p_cron text, p_timezone text, p_next_run_at timestamptz,
  p_catch_up text default 'once', p_max_retries integer default 3
) returns public.scheduled_jobs
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_job public.scheduled_jobs;
begin
  if p_next_run_at is null then
    raise exception using errcode = '22023', message = 'p_next_run_at is required';
  end if;
  if not exists (select 1 from public.pipelines p where p.id = p_pipeline and p.user_id = p_user) then
    raise exception using errcode = 'EP404', message = 'pipeline_not_found';
  end if;
  insert into public.scheduled_jobs (user_id, pipeline_id, cron_expression, timezone, catch_up,
                                     next_run_at, max_retries)
  values (p_user, p_pipeline, p_cron, p_timezone, coalesce(p_catch_up, 'once'), p_next_run_at,
          coalesce(p_max_retries, 3))
  returning * into v_job;
  return v_job;
end
$$;

-- Hands up to p_limit due schedules to the caller for p_lease_seconds. Rows
-- another processor holds are skipped, never waited for.
create function public.scheduled_jobs_claim_due(p_limit integer default 100, p_lease_seconds integer default 30)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_rows jsonb;
begin
  if p_limit is null or p_limit not between 1 and 1000 then
    raise exception using errcode = '22023', message = 'p_limit must be between 1 and 1000';
  end if;
  if p_lease_seconds is null or p_lease_seconds not between 1 and 600 then
    raise exception using errcode = '22023', message = 'p_lease_seconds must be between 1 and 600';
  end if;
  with due as (
    select s.id from public.scheduled_jobs s
     where s.is_active and s.next_run_at <= now()
       and (s.claimed_until is null or s.claimed_until < now())
     order by s.next_run_at
     limit p_limit
     for update skip locked
  ), claimed as (
    update public.scheduled_jobs s
       set claim_token = gen_random_uuid(), claimed_until = now() + make_interval(secs => p_lease_seconds)
      from due where s.id = due.id
    returning s.id, s.claim_token, s.cron_expression, s.timezone, s.catch_up, s.next_run_at
  )
  select coalesce(jsonb_agg(to_jsonb(c) order by c.next_run_at), '[]'::jsonb) into v_rows from claimed c;
  return jsonb_build_object('now', now(), 'schedules', v_rows);
end
$$;

-- Applies a processor's decisions. Each item:
--   {id, claim_token, due_at, fire, scheduled_for, next_run_at (null: never again), error}
-- An item whose claim token or due_at no longer match is skipped (another processor
-- or an earlier call already advanced it), so an occurrence is enqueued at most once;
-- the unique (scheduled_job_id, scheduled_for) index holds even against a stale claim.
create function public.scheduled_jobs_fire(p_items jsonb) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_item jsonb;
  v_sched public.scheduled_jobs;
  v_pipeline public.pipelines;
  v_run public.pipeline_runs;
  v_fired integer := 0;
  v_skipped integer := 0;
  v_duplicates integer := 0;
  v_deactivated integer := 0;
  v_runs jsonb := '[]'::jsonb;
  v_error text;
begin
  if p_items is null or jsonb_typeof(p_items) <> 'array' or jsonb_array_length(p_items) > 1000 then
    raise exception using errcode = '22023', message = 'p_items must be an array of at most 1000 items';
  end if;
  for v_item in select * from jsonb_array_elements(p_items) loop
    update public.scheduled_jobs s
       set next_run_at = nullif(v_item->>'next_run_at', '')::timestamptz,
           last_run_at = case when (v_item->>'fire')::boolean
                              then (v_item->>'scheduled_for')::timestamptz else s.last_run_at end,
           claim_token = null, claimed_until = null, updated_at = now()
     where s.id = (v_item->>'id')::uuid
       and s.claim_token = (v_item->>'claim_token')::uuid
       and s.next_run_at = (v_item->>'due_at')::timestamptz
    returning * into v_sched;
    if not found then
      v_skipped := v_skipped + 1;
      continue;
    end if;
    v_error := nullif(v_item->>'error', '');
    if v_error is null and v_sched.next_run_at is null then
      v_error := 'the cron expression has no further run times';
    end if;
    if v_error is not null then
      update public.scheduled_jobs set is_active = false, last_error = left(v_error, 2000)
       where id = v_sched.id;
      perform private.pipeline_notify(v_sched.user_id, 'schedule_deactivated',
        'A scheduled pipeline was turned off', v_error,
        jsonb_build_object('scheduled_job_id', v_sched.id, 'pipeline_id', v_sched.pipeline_id));
      v_deactivated := v_deactivated + 1;
      continue;
    end if;
    if not coalesce((v_item->>'fire')::boolean, false) then
      continue;
    end if;
    select * into v_pipeline from public.pipelines where id = v_sched.pipeline_id;
    if not found or v_pipeline.status <> 'active'
       or not exists (select 1 from public.pipeline_steps st where st.pipeline_id = v_sched.pipeline_id) then
      update public.scheduled_jobs set last_error = 'the pipeline is not active or has no steps; run skipped'
       where id = v_sched.id;
      continue;
    end if;
    insert into public.pipeline_runs (pipeline_id, user_id, trigger, scheduled_job_id, scheduled_for)
    values (v_sched.pipeline_id, v_sched.user_id, 'schedule', v_sched.id,
            (v_item->>'scheduled_for')::timestamptz)
    on conflict (scheduled_job_id, scheduled_for) where scheduled_job_id is not null do nothing
    returning * into v_run;
    if not found then
      v_duplicates := v_duplicates + 1;
      continue;
    end if;
    perform private.pipeline_enqueue_step(v_run, 0);
    update public.pipelines set last_run_at = now() where id = v_run.pipeline_id;
    v_fired := v_fired + 1;
    v_runs := v_runs || jsonb_build_object(
      'scheduled_job_id', v_sched.id, 'run_id', v_run.id, 'scheduled_for', v_run.scheduled_for,
      'lateness_ms', round(extract(epoch from (v_run.created_at - v_run.scheduled_for)) * 1000));
  end loop;
  return jsonb_build_object('fired', v_fired, 'skipped', v_skipped, 'duplicates', v_duplicates,
                            'deactivated', v_deactivated, 'runs', v_runs);
end
$$;

-- -----------------------------------------------------------------------------
-- OAuth
-- -----------------------------------------------------------------------------

-- Spends a state nonce: true the first time, false on a replay.
create function public.oauth_state_consume(p_nonce text, p_user uuid, p_platform text, p_expires_at timestamptz)
returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if p_nonce is null or p_user is null or p_expires_at is null then
    raise exception using errcode = '22023', message = 'p_nonce, p_user and p_expires_at are required';
  end if;
  delete from private.oauth_state_nonces
   where nonce in (select n.nonce from private.oauth_state_nonces n
                    where n.expires_at < now() - interval '1 hour' limit 100);
  insert into private.oauth_state_nonces (nonce, user_id, platform, expires_at)
  values (p_nonce, p_user, p_platform, p_expires_at)
  on conflict do nothing;
  return found;
end
$$;

create function public.oauth_connection_save(
  p_user uuid, p_platform text, p_access_token text, p_platform_user_id text,
  p_username text default null, p_display_name text default null, p_profile jsonb default null,
  p_scopes text[] default null, p_refresh_token text default null, p_expires_at timestamptz default null
) returns public.oauth_connections
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_conn public.oauth_connections;
begin
  if p_access_token is null or p_access_token !~ '^v1\.' then
    raise exception using errcode = '22023', message = 'p_access_token must be a sealed token';
  end if;
  insert into public.oauth_connections as c (user_id, platform, platform_user_id, username, display_name,
                                             profile, scopes, status, token_expires_at, refreshed_at)
  values (p_user, p_platform, p_platform_user_id, p_username, p_display_name, coalesce(p_profile, '{}'::jsonb),
          coalesce(p_scopes, '{}'), 'active', p_expires_at, now())
  on conflict (user_id, platform) do update
    set platform_user_id = excluded.platform_user_id, username = excluded.username,
        display_name = excluded.display_name, profile = excluded.profile, scopes = excluded.scopes,
        status = 'active', token_expires_at = excluded.token_expires_at, refreshed_at = now(),
        last_error = null, updated_at = now()
  returning * into v_conn;
  insert into private.oauth_tokens as t (connection_id, access_token, refresh_token, expires_at)
  values (v_conn.id, p_access_token, p_refresh_token, p_expires_at)
  on conflict (connection_id) do update
    set access_token = excluded.access_token, refresh_token = excluded.refresh_token,
        expires_at = excluded.expires_at, version = t.version + 1, refresh_lease = null,
        refresh_lease_until = null, updated_at = now();
  return v_conn;
end
$$;

-- The single-flight gate. Answers one of:
--   {state: 'fresh', access_token, expires_at, version}      use it
--   {state: 'refresh', lease, access_token, refresh_token, ...} you refresh, then call
--                                                            oauth_token_refreshed / _refresh_failed
--   {state: 'wait', version}                                 another caller is refreshing; ask again
--   {state: 'unusable', status, last_error}                  the user must connect again
create function public.oauth_token_acquire(
  p_user uuid, p_platform text, p_margin_seconds integer default 300, p_lease_seconds integer default 30
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_conn public.oauth_connections;
  v_tok private.oauth_tokens;
  v_lease uuid;
begin
  select * into v_conn from public.oauth_connections c where c.user_id = p_user and c.platform = p_platform;
  if not found then
    raise exception using errcode = 'EP404', message = 'connection_not_found';
  end if;
  if v_conn.status <> 'active' then
    return jsonb_build_object('state', 'unusable', 'status', v_conn.status, 'last_error', v_conn.last_error,
                              'connection_id', v_conn.id);
  end if;
  select * into v_tok from private.oauth_tokens t where t.connection_id = v_conn.id for update;
  if not found then
    return jsonb_build_object('state', 'unusable', 'status', 'no_token', 'connection_id', v_conn.id);
  end if;
  if v_tok.expires_at is null
     or v_tok.expires_at > now() + make_interval(secs => greatest(coalesce(p_margin_seconds, 300), 0)) then
    return jsonb_build_object('state', 'fresh', 'connection_id', v_conn.id, 'access_token', v_tok.access_token,
                              'expires_at', v_tok.expires_at, 'version', v_tok.version);
  end if;
  if v_tok.refresh_lease is not null and v_tok.refresh_lease_until > now() then
    return jsonb_build_object('state', 'wait', 'connection_id', v_conn.id, 'version', v_tok.version);
  end if;
  v_lease := gen_random_uuid();
  update private.oauth_tokens
     set refresh_lease = v_lease,
         refresh_lease_until = now() + make_interval(secs => least(greatest(coalesce(p_lease_seconds, 30), 1), 120))
   where connection_id = v_conn.id;
  return jsonb_build_object('state', 'refresh', 'connection_id', v_conn.id, 'lease', v_lease,
                            'access_token', v_tok.access_token, 'refresh_token', v_tok.refresh_token,
                            'expires_at', v_tok.expires_at, 'version', v_tok.version);
end
$$;

create function public.oauth_token_refreshed(
  p_connection uuid, p_lease uuid, p_access_token text, p_refresh_token text default null,
  p_expires_at timestamptz default null
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_tok private.oauth_tokens;
begin
  if p_access_token is null or p_access_token !~ '^v1\.' then
    raise exception using errcode = '22023', message = 'p_access_token must be a sealed token';
  end if;
  update private.oauth_tokens t
     set access_token = p_access_token,
         -- Providers that do not rotate refresh tokens send none back: keep ours.
         refresh_token = coalesce(p_refresh_token, t.refresh_token),
         expires_at = p_expires_at, version = t.version + 1,
         refresh_lease = null, refresh_lease_until = null, updated_at = now()
   where t.connection_id = p_connection and t.refresh_lease = p_lease
  returning * into v_tok;
  if not found then
    raise exception using errcode = 'EP409', message = 'refresh_lease_lost';
  end if;
  update public.oauth_connections
     set token_expires_at = p_expires_at, refreshed_at = now(), last_error = null, updated_at = now()
   where id = p_connection;
  return jsonb_build_object('version', v_tok.version, 'expires_at', v_tok.expires_at);
end
$$;

create function public.oauth_token_refresh_failed(
  p_connection uuid, p_lease uuid, p_reason text, p_permanent boolean
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_conn public.oauth_connections;
begin
  update private.oauth_tokens set refresh_lease = null, refresh_lease_until = null
   where connection_id = p_connection and refresh_lease = p_lease;
  if not found then
    raise exception using errcode = 'EP409', message = 'refresh_lease_lost';
  end if;
  if p_permanent is not true then
    update public.oauth_connections set last_error = left(p_reason, 2000), updated_at = now()
     where id = p_connection;
    return jsonb_build_object('status', 'active');
  end if;
  update public.oauth_connections
     set status = 'refresh_failed', last_error = left(p_reason, 2000), updated_at = now()
   where id = p_connection
  returning * into v_conn;
  perform private.pipeline_notify(v_conn.user_id, 'oauth_refresh_failed',
    format('Reconnect your %s account', v_conn.platform),
    format('We could not renew access to %s (%s). Connect the account again to keep posting.',
           v_conn.platform, left(p_reason, 500)),
    jsonb_build_object('connection_id', v_conn.id, 'platform', v_conn.platform));
  return jsonb_build_object('status', 'refresh_failed');
end
$$;

-- Removes the connection and its tokens; returns the sealed tokens so the caller can
-- revoke them at the platform.
create function public.oauth_connection_delete(p_user uuid, p_platform text) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_conn public.oauth_connections;
  v_tok private.oauth_tokens;
begin
  select * into v_conn from public.oauth_connections where user_id = p_user and platform = p_platform for update;
  if not found then
    raise exception using errcode = 'EP404', message = 'connection_not_found';
  end if;
  select * into v_tok from private.oauth_tokens where connection_id = v_conn.id;
  delete from public.oauth_connections where id = v_conn.id;
  return jsonb_build_object('connection_id', v_conn.id, 'access_token', v_tok.access_token,
                            'refresh_token', v_tok.refresh_token);
end
$$;

-- -----------------------------------------------------------------------------
-- Replicate predictions
-- -----------------------------------------------------------------------------

create function public.pipeline_prediction_save(
  p_user uuid, p_replicate_id text, p_status text, p_model text, p_version text, p_input jsonb,
  p_prompt text default null, p_run uuid default null, p_poll_delay_ms integer default 60000
) returns public.pipeline_predictions
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_row public.pipeline_predictions;
begin
  insert into public.pipeline_predictions (user_id, replicate_id, status, model, version, prompt, input, run_id)
  values (p_user, p_replicate_id, p_status, p_model, p_version, p_prompt, coalesce(p_input, '{}'::jsonb), p_run)
  returning * into v_row;
  -- The fallback when no webhook arrives: a poll job with its own backoff.
  perform public.enqueue_job(
    p_queue := 'pipelines', p_kind := 'replicate_poll',
    p_payload := jsonb_build_object('replicate_id', p_replicate_id),
    p_delay_ms := greatest(coalesce(p_poll_delay_ms, 60000), 0), p_max_attempts := 12,
    p_dedup_key := 'poll:' || p_replicate_id, p_owner := p_user,
    p_backoff_base_ms := 30000, p_backoff_cap_ms := 600000);
  return v_row;
end
$$;

-- Moves a prediction forward; a finished one (succeeded, failed, canceled) never moves.
create function public.pipeline_prediction_update(
  p_replicate_id text, p_status text, p_output_url text default null, p_error text default null,
  p_metrics jsonb default null, p_storage_bucket text default null, p_storage_path text default null
) returns public.pipeline_predictions
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_row public.pipeline_predictions;
begin
  update public.pipeline_predictions p
     set status = p_status,
         output_url = coalesce(p_output_url, p.output_url),
         error = coalesce(left(p_error, 2000), p.error),
         metrics = coalesce(p_metrics, p.metrics),
         storage_bucket = coalesce(p_storage_bucket, p.storage_bucket),
         storage_path = coalesce(p_storage_path, p.storage_path),
         completed_at = case when p_status in ('succeeded', 'failed', 'canceled') then now() else p.completed_at end,
         updated_at = now()
   where p.replicate_id = p_replicate_id and p.status not in ('succeeded', 'failed', 'canceled')
  returning * into v_row;
  if not found then
    select * into v_row from public.pipeline_predictions where replicate_id = p_replicate_id;
    if not found then
      raise exception using errcode = 'EP404', message = 'prediction_not_found';
    end if;
  end if;
  return v_row;
end
$$;

-- True the first time a webhook id is recorded.
create function public.replicate_webhook_record(p_webhook_id text) returns boolean
language plpgsql volatile security definer set search_path = ''
as $$
begin
  delete from private.replicate_webhooks
   where webhook_id in (select w.webhook_id from private.replicate_webhooks w
                         where w.received_at < now() - interval '7 days' limit 100);
  insert into private.replicate_webhooks (webhook_id) values (p_webhook_id) on conflict do nothing;
  return found;
end
$$;

-- -----------------------------------------------------------------------------
-- Grants: every function above is for the service role only.
-- -----------------------------------------------------------------------------

grant execute on function
  public.pipeline_run_start(uuid, uuid, text, integer, integer),
  public.pipeline_run_cancel(uuid, uuid),
  public.pipeline_run_resume(uuid, uuid),
  public.pipeline_step_begin(uuid, uuid, uuid),
  public.pipeline_step_finish(uuid, uuid, uuid, uuid, jsonb),
  public.pipeline_step_failed(uuid, text, integer),
  public.pipeline_post_reserve(uuid, uuid, uuid, uuid, text, text, jsonb),
  public.pipeline_post_record(text, text, text, text),
  public.scheduled_job_create(uuid, uuid, text, text, timestamptz, text, integer),
  public.scheduled_jobs_claim_due(integer, integer),
  public.scheduled_jobs_fire(jsonb),
  public.oauth_state_consume(text, uuid, text, timestamptz),
  public.oauth_connection_save(uuid, text, text, text, text, text, jsonb, text[], text, timestamptz),
  public.oauth_token_acquire(uuid, text, integer, integer),
  public.oauth_token_refreshed(uuid, uuid, text, text, timestamptz),
  public.oauth_token_refresh_failed(uuid, uuid, text, boolean),
  public.oauth_connection_delete(uuid, text),
  public.pipeline_prediction_save(uuid, text, text, text, text, jsonb, text, uuid, integer),
  public.pipeline_prediction_update(text, text, text, text, jsonb, text, text),
  public.replicate_webhook_record(text)
to service_role;
