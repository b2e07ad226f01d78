-- =============================================================================
-- Media generation (seed 001): jobs on the shared queue, credits, assets.
-- =============================================================================
--
-- Tables (RLS on every one; users read their own rows):
--   projects               a user's folders for generated media (owner CRUD)
--   images, videos         generated assets; in supabase_realtime, so a client sees
--                          a result appear. Written only by the functions below.
--   media_jobs             the seed's job record, one per queue job (same id); its
--                          status mirrors public.jobs: queued, processing, completed,
--                          failed, cancelled, expired. In supabase_realtime.
--   media_credit_accounts  a user's balance (available) and reserved credits
--   media_credit_ledger    every grant, reserve, commit and refund
--   private.media_job_types       the ten job types (keep equal to systems/media/src/catalog.rs)
--   private.media_webhook_ids     webhook ids already applied (replay refusal)
--
-- Queues: sdxl_* job types run on sdxl_queue, the rest on wan_queue. Jobs are
-- enqueued with their owner (p_owner), so claims are fair across users
-- (migration 20261201000200), and with max_attempts 2: a worker that lost its
-- lease is charged an attempt and the job runs once more elsewhere.
--
-- Credits: media_queue_job reserves the job type's cost in the transaction that
-- enqueues the job (a row lock on the account; balance never below 0, a CHECK says
-- so too). A trigger on public.jobs settles the reservation in the transaction
-- that changes the job's status, whatever path changed it: completed commits,
-- failed / cancelled / expired refund. Settling is idempotent (media_jobs.credit_state).
--
-- TTL: a job not started by media_jobs.expires_at is cancelled as expired (and
-- refunded) by media_expire_jobs, which media_claim_jobs runs before every claim.
--
-- Callbacks (media_job_callback, called by job-callback after it verified the
-- worker's signature): the claim's lease token must be presented; a lease that
-- expired is 409 and changes nothing; transitions processing -> processing
-- (progress), processing -> completed | failed; anything else is 409. A replayed
-- webhook id is acknowledged without effect; a repeated completion from the
-- worker that completed the job is acknowledged unchanged. Output paths arrive
-- normalised by the function and are checked here to lie under the owner's prefix.
-- Progress reaches the owner on the private broadcast topic media:<user id>,
-- at most twice a second per job.
--
-- API:
--   media_queue_job(...) -> jsonb                          [service_role]
--   media_claim_jobs(p_worker, p_queues, p_batch, p_lease_seconds) -> setof jsonb [service_role]
--   media_heartbeat(p_job, p_lease_token, p_lease_seconds) -> jsonb              [service_role]
--   media_release_job(p_job, p_lease_token) -> jsonb  (graceful shutdown)       [service_role]
--   media_job_callback(...) -> jsonb                       [service_role]
--   media_expire_jobs() -> integer                         [service_role]
--   media_grant_credits(p_user, p_amount, p_reason) -> jsonb                    [service_role]
--   media_record_admin_image(...) -> jsonb                 [service_role]
--   media_cancel_job(p_job) -> jsonb                       [authenticated: own; service_role]
-- Errors (SQLSTATE, mapped by systems/media): EM400 bad argument or path, EM402
-- insufficient_credits, EM404 not found (or not yours), EM409 illegal transition
-- or lease lost / expired, 22023 invalid argument.
-- =============================================================================

-- -----------------------------------------------------------------------------
-- Catalogue (private; the same table is systems/media/src/catalog.rs)
-- -----------------------------------------------------------------------------

create table private.media_job_types (
  job_type text primary key,
  queue text not null,
  model_variant text not null,
  expected_duration_ms integer not null,
  credits integer not null check (credits > 0),
  output_kind text not null check (output_kind in ('image', 'video')),
  enhanced boolean not null
);
alter table private.media_job_types enable row level security;
revoke all on private.media_job_types from public, anon, authenticated, service_role;

insert into private.media_job_types values
  ('sdxl_image_fast',       'sdxl_queue', 'sdxl-lightning-4step',      8000,   1, 'image', false),
  ('sdxl_image_high',       'sdxl_queue', 'sdxl-base-1.0',            15000,   2, 'image', false),
  ('image_fast',            'wan_queue',  'wan2.1-t2v-1.3b',          73000,   3, 'image', false),
  ('image_high',            'wan_queue',  'wan2.1-t2v-1.3b',          90000,   4, 'image', false),
  ('video_fast',            'wan_queue',  'wan2.1-t2v-1.3b',         180000,  10, 'video', false),
  ('video_high',            'wan_queue',  'wan2.1-t2v-1.3b',         280000,  15, 'video', false),
  ('image7b_fast_enhanced', 'wan_queue',  'wan2.1-t2v-1.3b+qwen2.5-7b', 87000,  4, 'image', true),
  ('image7b_high_enhanced', 'wan_queue',  'wan2.1-t2v-1.3b+qwen2.5-7b', 104000, 5, 'image', true),
  ('video7b_fast_enhanced', 'wan_queue',  'wan2.1-t2v-1.3b+qwen2.5-7b', 194000, 12, 'video', true),
  ('video7b_high_enhanced', 'wan_queue',  'wan2.1-t2v-1.3b+qwen2.5-7b', 294000, 18, 'video', true);

create table private.media_webhook_ids (
  id text primary key,
  received_at timestamptz not null default now()
);
create index media_webhook_ids_received_idx on private.media_webhook_ids (received_at);
alter table private.media_webhook_ids enable row level security;
revoke all on private.media_webhook_ids from public, anon, authenticated, service_role;

-- -----------------------------------------------------------------------------
-- Tables
-- -----------------------------------------------------------------------------

create table public.projects (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  title text not null default 'Untitled' check (length(title) between 1 and 200),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index projects_user_idx on public.projects (user_id, created_at desc);

create table public.media_jobs (
  -- The queue job's id (public.jobs.id).
  id uuid primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  job_type text not null,
  queue text not null,
  model_variant text not null,
  -- queued | processing | completed | failed | cancelled | expired
  status text not null default 'queued',
  project_id uuid references public.projects (id) on delete set null,
  video_id uuid,
  image_id uuid,
  prompt text not null,
  negative_prompt text not null default '',
  enhanced_prompt text,
  metadata jsonb not null default '{}'::jsonb,
  credits integer not null,
  -- reserved | committed | refunded
  credit_state text not null default 'reserved',
  expected_duration_ms integer not null,
  progress smallint not null default 0,
  outputs text[] not null default '{}',
  error_message text,
  -- The lease of the latest claim: a repeated completion with it is acknowledged.
  last_lease_token uuid,
  last_broadcast_at timestamptz,
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,
  updated_at timestamptz not null default now()
);
create index media_jobs_user_idx on public.media_jobs (user_id, created_at desc);
-- The expiry sweep: only jobs still waiting.
create index media_jobs_expiry_idx on public.media_jobs (expires_at) where status = 'queued';

create table public.images (
  id uuid primary key default gen_random_uuid(),
  -- Null only for images the service role made with generate-admin-image (key prefix admin/).
  user_id uuid references auth.users (id) on delete cascade,
  project_id uuid references public.projects (id) on delete set null,
  job_id uuid references public.media_jobs (id) on delete set null,
  prompt text not null default '',
  enhanced_prompt text,
  negative_prompt text,
  model_variant text,
  quality text,
  -- queued | generating | completed | failed | cancelled
  status text not null default 'queued',
  bucket text not null default 'media',
  -- The object key in `bucket`: <user_id>/...
  storage_path text,
  image_urls text[] not null default '{}',
  metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index images_user_idx on public.images (user_id, created_at desc);
create index images_job_idx on public.images (job_id) where job_id is not null;

create table public.videos (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  project_id uuid references public.projects (id) on delete set null,
  job_id uuid references public.media_jobs (id) on delete set null,
  prompt text not null default '',
  enhanced_prompt text,
  negative_prompt text,
  model_variant text,
  quality text,
  -- queued | generating | completed | failed | cancelled
  status text not null default 'queued',
  bucket text not null default 'media',
  storage_path text,
  video_url text,
  metadata jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index videos_user_idx on public.videos (user_id, created_at desc);
create index videos_job_idx on public.videos (job_id) where job_id is not null;

alter table public.media_jobs
  add constraint media_jobs_image_fk foreign key (image_id) references public.images (id) on delete set null,
  add constraint media_jobs_video_fk foreign key (video_id) references public.videos (id) on delete set null;

create table public.media_credit_accounts (
  user_id uuid primary key references auth.users (id) on delete cascade,
  balance integer not null default 0 check (balance >= 0),
  reserved integer not null default 0 check (reserved >= 0),
  updated_at timestamptz not null default now()
);

create table public.media_credit_ledger (
  id bigint generated always as identity primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  job_id uuid,
  -- grant | reserve | commit | refund
  kind text not null check (kind in ('grant', 'reserve', 'commit', 'refund')),
  -- Signed change of the available balance (commit moves reserved credits out: 0).
  amount integer not null,
  balance_after integer not null,
  reason text,
  created_at timestamptz not null default now()
);
create index media_credit_ledger_user_idx on public.media_credit_ledger (user_id, id desc);
create index media_credit_ledger_job_idx on public.media_credit_ledger (job_id) where job_id is not null;

-- -----------------------------------------------------------------------------
-- Privileges and RLS
-- -----------------------------------------------------------------------------

revoke all on table public.projects, public.media_jobs, public.images, public.videos,
  public.media_credit_accounts, public.media_credit_ledger
  from public, anon, authenticated, service_role;
revoke all on sequence public.media_credit_ledger_id_seq from public, anon, authenticated, service_role;

grant select, delete on table public.projects to authenticated;
grant insert (title), update (title) on table public.projects to authenticated;
grant select on table public.media_jobs, public.images, public.videos,
  public.media_credit_accounts, public.media_credit_ledger to authenticated;
grant select, insert, update, delete on table public.projects to service_role;
grant select on table public.media_jobs, public.images, public.videos,
  public.media_credit_accounts, public.media_credit_ledger to service_role;

alter table public.projects enable row level security;
alter table public.media_jobs enable row level security;
alter table public.images enable row level security;
alter table public.videos enable row level security;
alter table public.media_credit_accounts enable row level security;
alter table public.media_credit_ledger enable row level security;

create policy projects_owner_select on public.projects
  for select to authenticated using (user_id = (select auth.uid()));
create policy projects_owner_insert on public.projects
  for insert to authenticated with check (user_id = (select auth.uid()));
create policy projects_owner_update on public.projects
  for update to authenticated using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));
create policy projects_owner_delete on public.projects
  for delete to authenticated using (user_id = (select auth.uid()));
create policy projects_service_all on public.projects
  for all to service_role using (true) with check (true);

create policy media_jobs_owner_select on public.media_jobs
  for select to authenticated using (user_id = (select auth.uid()));
create policy media_jobs_service_select on public.media_jobs
  for select to service_role using (true);
create policy images_owner_select on public.images
  for select to authenticated using (user_id = (select auth.uid()));
create policy images_service_select on public.images
  for select to service_role using (true);
create policy videos_owner_select on public.videos
  for select to authenticated using (user_id = (select auth.uid()));
create policy videos_service_select on public.videos
  for select to service_role using (true);
create policy media_credit_accounts_owner_select on public.media_credit_accounts
  for select to authenticated using (user_id = (select auth.uid()));
create policy media_credit_accounts_service_select on public.media_credit_accounts
  for select to service_role using (true);
create policy media_credit_ledger_owner_select on public.media_credit_ledger
  for select to authenticated using (user_id = (select auth.uid()));
create policy media_credit_ledger_service_select on public.media_credit_ledger
  for select to service_role using (true);

-- Progress broadcasts go to the private topic media:<user id>; only its user may join.
create policy media_progress_topic_read on realtime.messages
  for select to authenticated
  using (realtime.topic() = 'media:' || (select auth.uid())::text and extension = 'broadcast');

alter publication supabase_realtime add table public.images, public.videos, public.media_jobs;

-- -----------------------------------------------------------------------------
-- Helpers (private)
-- -----------------------------------------------------------------------------

-- Settles a job's reservation once: 'commit' or 'refund'. Caller holds the job.
create function private.media_settle(p_job uuid, p_outcome text) returns void
language plpgsql volatile set search_path = ''
as $$
declare
  v_mj public.media_jobs;
  v_balance integer;
begin
  select * into v_mj from public.media_jobs where id = p_job for update;
  if not found or v_mj.credit_state <> 'reserved' then
    return;
  end if;
  if p_outcome = 'commit' then
    update public.media_credit_accounts
       set reserved = reserved - v_mj.credits, updated_at = now()
     where user_id = v_mj.user_id
    returning balance into v_balance;
    insert into public.media_credit_ledger (user_id, job_id, kind, amount, balance_after, reason)
    values (v_mj.user_id, p_job, 'commit', 0, v_balance, v_mj.job_type);
    update public.media_jobs set credit_state = 'committed' where id = p_job;
  else
    update public.media_credit_accounts
       set reserved = reserved - v_mj.credits, balance = balance + v_mj.credits, updated_at = now()
     where user_id = v_mj.user_id
    returning balance into v_balance;
    insert into public.media_credit_ledger (user_id, job_id, kind, amount, balance_after, reason)
    values (v_mj.user_id, p_job, 'refund', v_mj.credits, v_balance, p_outcome);
    update public.media_jobs set credit_state = 'refunded' where id = p_job;
  end if;
end
$$;

-- Mirrors a media queue job's status into media_jobs and its asset row, and
-- settles credits, in the transaction that changed the job (any path: callback,
-- cancel, lease expiry, expiry sweep). edgeworks.media_cancel_reason = 'expired'
-- (transaction-local, set by media_expire_jobs) names a cancel an expiry.
create function private.media_mirror_job() returns trigger
language plpgsql security definer set search_path = ''
as $$
declare
  v_status text;
  v_asset text;
begin
  v_status := case new.status
    when 'pending' then 'queued'
    when 'retrying' then 'queued'
    when 'processing' then 'processing'
    when 'completed' then 'completed'
    when 'failed' then 'failed'
    when 'cancelled' then
      case when current_setting('edgeworks.media_cancel_reason', true) = 'expired'
           then 'expired' else 'cancelled' end
  end;
  v_asset := case v_status
    when 'queued' then 'queued' when 'processing' then 'generating'
    when 'completed' then 'completed' when 'failed' then 'failed' else 'cancelled' end;
  update public.media_jobs m
     set status = v_status,
         started_at = case when new.status = 'processing' then new.started_at else m.started_at end,
         last_lease_token = case when new.status = 'processing' then new.lease_token else m.last_lease_token end,
         progress = case when new.status = 'completed' then 100
                         when new.status = 'processing' then 0 else m.progress end,
         error_message = case when new.status = 'failed' then new.last_error else m.error_message end,
         completed_at = case when new.status in ('completed', 'failed', 'cancelled') then now() end,
         updated_at = now()
   where m.id = new.id;
  update public.images set status = v_asset, updated_at = now()
   where job_id = new.id and status is distinct from v_asset and status <> 'completed';
  update public.videos set status = v_asset, updated_at = now()
   where job_id = new.id and status is distinct from v_asset and status <> 'completed';
  if new.status = 'completed' then
    perform private.media_settle(new.id, 'commit');
  elsif new.status in ('failed', 'cancelled') then
    perform private.media_settle(new.id, v_status);
  end if;
  return null;
end
$$;

create trigger jobs_media_mirror after update of status on public.jobs
  for each row when (new.queue in ('sdxl_queue', 'wan_queue') and old.status is distinct from new.status)
  execute function private.media_mirror_job();

-- The seed's job record as clients see it.
create function private.media_job_json(p_job public.media_jobs) returns jsonb
language sql stable set search_path = ''
as $$
  select jsonb_build_object(
    'id', p_job.id, 'user_id', p_job.user_id, 'job_type', p_job.job_type,
    'status', p_job.status, 'queue', p_job.queue, 'model_variant', p_job.model_variant,
    'project_id', p_job.project_id, 'video_id', p_job.video_id, 'image_id', p_job.image_id,
    'prompt', p_job.prompt, 'negative_prompt', p_job.negative_prompt,
    'enhanced_prompt', p_job.enhanced_prompt, 'metadata', p_job.metadata,
    'credits', p_job.credits, 'credit_state', p_job.credit_state,
    'expected_duration_ms', p_job.expected_duration_ms, 'progress', p_job.progress,
    'outputs', to_jsonb(p_job.outputs), 'error_message', p_job.error_message,
    'expires_at', p_job.expires_at, 'created_at', p_job.created_at,
    'started_at', p_job.started_at, 'completed_at', p_job.completed_at)
$$;

-- -----------------------------------------------------------------------------
-- Credits
-- -----------------------------------------------------------------------------

create function public.media_grant_credits(p_user uuid, p_amount integer, p_reason text default null)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_balance integer;
begin
  if p_user is null or not exists (select 1 from auth.users u where u.id = p_user) then
    raise exception using errcode = 'EM404', message = 'user_not_found';
  end if;
  if p_amount is null or p_amount not between 1 and 1000000 then
    raise exception using errcode = '22023', message = 'p_amount must be between 1 and 1000000';
  end if;
  insert into public.media_credit_accounts as a (user_id, balance)
  values (p_user, p_amount)
  on conflict (user_id) do update set balance = a.balance + excluded.balance, updated_at = now()
  returning balance into v_balance;
  insert into public.media_credit_ledger (user_id, kind, amount, balance_after, reason)
  values (p_user, 'grant', p_amount, v_balance, left(p_reason, 200));
  return jsonb_build_object('user_id', p_user, 'balance', v_balance);
end
$$;

-- -----------------------------------------------------------------------------
-- Enqueue
-- -----------------------------------------------------------------------------

create function public.media_queue_job(
  p_user uuid,
  p_job_type text,
  p_prompt text,
  p_negative_prompt text default '',
  p_metadata jsonb default '{}'::jsonb,
  p_project uuid default null,
  p_video uuid default null,
  p_image uuid default null,
  p_ttl_seconds integer default 3600
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_type private.media_job_types;
  v_job public.jobs;
  v_mj public.media_jobs;
  v_balance integer;
  v_queue_length integer;
  v_quality text;
begin
  if p_user is null then
    raise exception using errcode = '22023', message = 'p_user is required';
  end if;
  select * into v_type from private.media_job_types t where t.job_type = p_job_type;
  if not found then
    raise exception using errcode = 'EM400', message = 'unknown_job_type';
  end if;
  if p_prompt is null or length(p_prompt) > 4000 then
    raise exception using errcode = '22023', message = 'p_prompt must be at most 4000 characters';
  end if;
  if p_metadata is null or jsonb_typeof(p_metadata) <> 'object' or octet_length(p_metadata::text) > 16384 then
    raise exception using errcode = '22023', message = 'p_metadata must be a JSON object of at most 16 KiB';
  end if;
  if p_ttl_seconds is null or p_ttl_seconds not between 1 and 604800 then
    raise exception using errcode = '22023', message = 'p_ttl_seconds must be between 1 and 604800';
  end if;
  if not exists (select 1 from auth.users u where u.id = p_user) then
    raise exception using errcode = 'EM404', message = 'user_not_found';
  end if;
  -- Someone else's row and no row look the same.
  if p_project is not null and not exists (
       select 1 from public.projects p where p.id = p_project and p.user_id = p_user) then
    raise exception using errcode = 'EM404', message = 'project_not_found';
  end if;
  if p_image is not null and not exists (
       select 1 from public.images i where i.id = p_image and i.user_id = p_user) then
    raise exception using errcode = 'EM404', message = 'image_not_found';
  end if;
  if p_video is not null and not exists (
       select 1 from public.videos v where v.id = p_video and v.user_id = p_user) then
    raise exception using errcode = 'EM404', message = 'video_not_found';
  end if;

  -- Reserve: the row lock serialises a user's concurrent requests, and the WHERE
  -- lets none of them take the balance below zero.
  update public.media_credit_accounts a
     set balance = a.balance - v_type.credits, reserved = a.reserved + v_type.credits, updated_at = now()
   where a.user_id = p_user and a.balance >= v_type.credits
  returning balance into v_balance;
  if not found then
    select a.balance into v_balance from public.media_credit_accounts a where a.user_id = p_user;
    raise exception using errcode = 'EM402', message = 'insufficient_credits',
      detail = jsonb_build_object('required', v_type.credits, 'balance', coalesce(v_balance, 0))::text;
  end if;

  v_job := public.enqueue_job(
    p_queue => v_type.queue,
    p_kind => p_job_type,
    p_payload => jsonb_build_object('job_type', p_job_type),
    p_max_attempts => 2,
    p_owner => p_user);

  v_quality := case when p_job_type like '%high%' then 'high' else 'fast' end;
  if v_type.output_kind = 'image' and p_image is null then
    insert into public.images (user_id, project_id, prompt, negative_prompt, model_variant, quality, metadata)
    values (p_user, p_project, p_prompt, p_negative_prompt, v_type.model_variant, v_quality,
            jsonb_build_object('job_type', p_job_type))
    returning id into p_image;
  elsif v_type.output_kind = 'video' and p_video is null then
    insert into public.videos (user_id, project_id, prompt, negative_prompt, model_variant, quality, metadata)
    values (p_user, p_project, p_prompt, p_negative_prompt, v_type.model_variant, v_quality,
            jsonb_build_object('job_type', p_job_type))
    returning id into p_video;
  end if;

  insert into public.media_jobs (id, user_id, job_type, queue, model_variant, project_id,
                                 video_id, image_id, prompt, negative_prompt, metadata, credits,
                                 expected_duration_ms, expires_at)
  values (v_job.id, p_user, p_job_type, v_type.queue, v_type.model_variant, p_project,
          p_video, p_image, p_prompt, coalesce(p_negative_prompt, ''), p_metadata, v_type.credits,
          v_type.expected_duration_ms, now() + make_interval(secs => p_ttl_seconds))
  returning * into v_mj;

  -- The asset this job produces points back at it (an existing row is re-generated).
  if v_type.output_kind = 'image' then
    update public.images set job_id = v_job.id, status = 'queued', updated_at = now() where id = p_image;
  else
    update public.videos set job_id = v_job.id, status = 'queued', updated_at = now() where id = p_video;
  end if;

  insert into public.media_credit_ledger (user_id, job_id, kind, amount, balance_after, reason)
  values (p_user, v_job.id, 'reserve', -v_type.credits, v_balance, p_job_type);

  select count(*) into v_queue_length from public.jobs j
   where j.queue = v_type.queue and j.status in ('pending', 'retrying');

  return jsonb_build_object(
    'job', private.media_job_json(v_mj),
    'queueLength', v_queue_length,
    'modelVariant', v_type.model_variant,
    'balance', v_balance);
end
$$;

-- -----------------------------------------------------------------------------
-- Expiry
-- -----------------------------------------------------------------------------

-- Cancels (as expired, refunded) every media job still waiting past its TTL, and
-- forgets webhook ids no signature can still be valid for (5 minutes' tolerance
-- each way after receipt, with a margin).
create function public.media_expire_jobs() returns integer
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_id uuid;
  v_count integer := 0;
  v_prev text := current_setting('edgeworks.media_cancel_reason', true);
begin
  perform set_config('edgeworks.media_cancel_reason', 'expired', true);
  for v_id in
    select m.id from public.media_jobs m
      join public.jobs j on j.id = m.id
     where m.status = 'queued' and m.expires_at < now()
       and j.status in ('pending', 'retrying')
     order by m.expires_at
     limit 1000
       for update of j skip locked
  loop
    perform public.cancel_job(v_id);
    v_count := v_count + 1;
  end loop;
  perform set_config('edgeworks.media_cancel_reason', coalesce(v_prev, ''), true);
  delete from private.media_webhook_ids w where w.received_at < now() - interval '15 minutes';
  return v_count;
end
$$;

-- -----------------------------------------------------------------------------
-- Worker side
-- -----------------------------------------------------------------------------

-- Expires overdue jobs, then claims (fairly, with leases) and returns what a
-- worker needs to run each job.
create function public.media_claim_jobs(
  p_worker text,
  p_queues text[] default array['sdxl_queue', 'wan_queue'],
  p_batch integer default 1,
  p_lease_seconds integer default 30
) returns setof jsonb
language plpgsql volatile security definer set search_path = ''
as $$
begin
  if p_queues is null or not (p_queues <@ array['sdxl_queue', 'wan_queue']) then
    raise exception using errcode = '22023', message = 'p_queues must name sdxl_queue and/or wan_queue';
  end if;
  if exists (select 1 from public.media_jobs m where m.status = 'queued' and m.expires_at < now()) then
    perform public.media_expire_jobs();
  end if;
  return query
    select jsonb_build_object(
             'job_id', j.id, 'lease_token', j.lease_token, 'lease_expires_at', j.lease_expires_at,
             'attempt', j.attempts, 'queue', j.queue, 'job_type', m.job_type,
             'model_variant', m.model_variant, 'user_id', m.user_id, 'prompt', m.prompt,
             'negative_prompt', m.negative_prompt, 'metadata', m.metadata,
             'output_kind', t.output_kind, 'enhanced', t.enhanced,
             'expected_duration_ms', m.expected_duration_ms)
      from public.claim_jobs(p_worker, p_queues, null, p_batch, p_lease_seconds) j
      join public.media_jobs m on m.id = j.id
      join private.media_job_types t on t.job_type = m.job_type;
end
$$;

-- Renews the lease; tells the worker to stop when the job was cancelled (or its
-- lease lost). Never raises for those: stopping is the answer.
create function public.media_heartbeat(p_job uuid, p_lease_token uuid, p_lease_seconds integer default 30)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_job public.jobs;
  v_media text;
begin
  if p_lease_seconds is null or p_lease_seconds not between 1 and 3600 then
    raise exception using errcode = '22023', message = 'p_lease_seconds must be between 1 and 3600';
  end if;
  update public.jobs
     set lease_expires_at = now() + make_interval(secs => p_lease_seconds), updated_at = now()
   where id = p_job and lease_token = p_lease_token and status = 'processing'
     and lease_expires_at >= now()
  returning * into v_job;
  if found then
    update public.workers set last_heartbeat_at = now() where id = v_job.worker_id;
    return jsonb_build_object('continue', true, 'lease_expires_at', v_job.lease_expires_at);
  end if;
  select m.status into v_media from public.media_jobs m where m.id = p_job;
  return jsonb_build_object('continue', false,
    'reason', case when v_media in ('cancelled', 'expired') then 'cancelled'
                   when v_media is null then 'not_found' else 'lease_lost' end);
end
$$;

-- Graceful shutdown: hands a claimed job back to the queue at once, without
-- charging an attempt.
create function public.media_release_job(p_job uuid, p_lease_token uuid) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_job public.jobs;
  v_prev text := current_setting('edgeworks.job_actor', true);
begin
  perform set_config('edgeworks.job_actor', 'worker', true);
  update public.jobs
     set status = 'retrying', run_at = now(), attempts = greatest(attempts - 1, 0),
         lease_token = null, lease_expires_at = null, updated_at = now(),
         last_error = 'released by worker at shutdown'
   where id = p_job and lease_token = p_lease_token and status = 'processing'
  returning * into v_job;
  perform set_config('edgeworks.job_actor', coalesce(v_prev, ''), true);
  if not found then
    return jsonb_build_object('released', false);
  end if;
  perform pg_notify('jobs_' || v_job.queue, 'requeued');
  return jsonb_build_object('released', true);
end
$$;

-- The worker's status report (see the header). p_outputs are object keys already
-- normalised by job-callback; each must lie under the job owner's prefix.
create function public.media_job_callback(
  p_job uuid,
  p_lease_token uuid,
  p_status text,
  p_progress integer default null,
  p_preview text default null,
  p_outputs text[] default null,
  p_enhanced_prompt text default null,
  p_error text default null,
  p_webhook_id text default null
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_mj public.media_jobs;
  v_job public.jobs;
  v_type private.media_job_types;
  v_path text;
  v_first boolean := true;
  v_progress integer;
begin
  if p_job is null or p_lease_token is null then
    raise exception using errcode = 'EM400', message = 'job_and_lease_required';
  end if;
  if p_status is null or p_status not in ('processing', 'completed', 'failed') then
    raise exception using errcode = 'EM400', message = 'invalid_status';
  end if;
  if p_webhook_id is not null then
    insert into private.media_webhook_ids (id) values (p_webhook_id) on conflict do nothing;
    if not found then
      return jsonb_build_object('replayed', true, 'applied', false);
    end if;
  end if;

  select * into v_job from public.jobs j where j.id = p_job for update;
  select * into v_mj from public.media_jobs m where m.id = p_job for update;
  if v_job.id is null or v_mj.id is null then
    raise exception using errcode = 'EM404', message = 'job_not_found';
  end if;
  select * into v_type from private.media_job_types t where t.job_type = v_mj.job_type;

  -- A repeated final report from the worker that made it: acknowledged, unchanged.
  if v_job.status in ('completed', 'failed') and v_mj.last_lease_token = p_lease_token
     and v_mj.status = p_status then
    return jsonb_build_object('applied', false, 'duplicate', true, 'job', private.media_job_json(v_mj));
  end if;
  if v_job.status <> 'processing' then
    raise exception using errcode = 'EM409', message = 'illegal_transition',
      detail = v_mj.status || ' -> ' || p_status;
  end if;
  if v_job.lease_token is distinct from p_lease_token then
    raise exception using errcode = 'EM409', message = 'lease_lost';
  end if;
  if v_job.lease_expires_at < now() then
    -- The next claim's sweep requeues it; this refusal must change nothing.
    raise exception using errcode = 'EM409', message = 'lease_expired';
  end if;

  if p_status = 'processing' then
    v_progress := least(greatest(coalesce(p_progress, v_mj.progress), 0), 100);
    if p_preview is not null and p_preview not like v_mj.user_id::text || '/%' then
      raise exception using errcode = 'EM400', message = 'path_not_owned';
    end if;
    update public.jobs set progress = v_progress, updated_at = now() where id = p_job;
    -- At most two broadcasts (and media_jobs writes, which Realtime also carries)
    -- a second per job; the last word before completion is the completion itself.
    if v_mj.last_broadcast_at is null or v_mj.last_broadcast_at <= now() - interval '500 milliseconds' then
      update public.media_jobs
         set progress = v_progress, last_broadcast_at = now(), updated_at = now()
       where id = p_job;
      perform realtime.send(
        jsonb_build_object('job_id', p_job, 'status', 'processing', 'progress', v_progress,
                           'preview', p_preview),
        'progress', 'media:' || v_mj.user_id::text, true);
      return jsonb_build_object('applied', true, 'broadcast', true, 'progress', v_progress,
                                'user_id', v_mj.user_id, 'job_type', v_mj.job_type);
    end if;
    return jsonb_build_object('applied', true, 'broadcast', false, 'progress', v_progress,
                              'user_id', v_mj.user_id, 'job_type', v_mj.job_type);
  end if;

  if p_status = 'failed' then
    perform public.fail_job(p_job, p_lease_token, left(coalesce(p_error, 'worker reported failure'), 2000), false);
    select * into v_mj from public.media_jobs m where m.id = p_job;
    perform realtime.send(jsonb_build_object('job_id', p_job, 'status', 'failed'),
                          'status', 'media:' || v_mj.user_id::text, true);
    return jsonb_build_object('applied', true, 'job', private.media_job_json(v_mj));
  end if;

  -- completed
  if p_outputs is null or cardinality(p_outputs) = 0 or cardinality(p_outputs) > 16 then
    raise exception using errcode = 'EM400', message = 'outputs_required';
  end if;
  if v_type.output_kind = 'video' and cardinality(p_outputs) <> 1 then
    raise exception using errcode = 'EM400', message = 'one_video_output';
  end if;
  foreach v_path in array p_outputs loop
    if v_path is null or v_path not like v_mj.user_id::text || '/%' or v_path ~ '(^|/)\.\.?(/|$)'
       or length(v_path) > 1024 then
      raise exception using errcode = 'EM400', message = 'path_not_owned';
    end if;
  end loop;
  if p_enhanced_prompt is not null and (not v_type.enhanced or length(p_enhanced_prompt) > 8000) then
    raise exception using errcode = 'EM400', message = 'enhanced_prompt_not_expected';
  end if;

  update public.media_jobs
     set outputs = p_outputs, enhanced_prompt = coalesce(p_enhanced_prompt, enhanced_prompt), updated_at = now()
   where id = p_job;
  if v_type.output_kind = 'image' then
    foreach v_path in array p_outputs loop
      if v_first and v_mj.image_id is not null then
        update public.images
           set storage_path = v_path, image_urls = p_outputs, enhanced_prompt = p_enhanced_prompt,
               status = 'completed', updated_at = now()
         where id = v_mj.image_id;
      else
        insert into public.images (user_id, project_id, job_id, prompt, enhanced_prompt, negative_prompt,
                                   model_variant, quality, status, storage_path, image_urls, metadata)
        select v_mj.user_id, v_mj.project_id, p_job, v_mj.prompt, p_enhanced_prompt, v_mj.negative_prompt,
               v_mj.model_variant, i.quality, 'completed', v_path, p_outputs, i.metadata
          from (select coalesce((select quality from public.images where id = v_mj.image_id),
                                case when v_mj.job_type like '%high%' then 'high' else 'fast' end) as quality,
                       jsonb_build_object('job_type', v_mj.job_type) as metadata) i;
      end if;
      v_first := false;
    end loop;
  else
    update public.videos
       set storage_path = p_outputs[1], video_url = p_outputs[1], enhanced_prompt = p_enhanced_prompt,
           status = 'completed', updated_at = now()
     where id = v_mj.video_id;
  end if;
  perform public.complete_job(p_job, p_lease_token,
                              jsonb_build_object('outputs', to_jsonb(p_outputs)));
  select * into v_mj from public.media_jobs m where m.id = p_job;
  perform realtime.send(jsonb_build_object('job_id', p_job, 'status', 'completed',
                                           'outputs', to_jsonb(p_outputs)),
                        'status', 'media:' || v_mj.user_id::text, true);
  return jsonb_build_object('applied', true, 'job', private.media_job_json(v_mj));
end
$$;

-- -----------------------------------------------------------------------------
-- Owner actions
-- -----------------------------------------------------------------------------

-- Cancels a queued or running job of the caller's (service_role: anyone's); a
-- running job's worker learns it at its next heartbeat. Refunded by the trigger.
-- A finished job comes back unchanged.
create function public.media_cancel_job(p_job uuid) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_mj public.media_jobs;
begin
  select * into v_mj from public.media_jobs m where m.id = p_job;
  if v_mj.id is null
     or (auth.role() is distinct from 'service_role' and v_mj.user_id is distinct from auth.uid()) then
    raise exception using errcode = 'EM404', message = 'job_not_found';
  end if;
  perform public.cancel_job(p_job);
  select * into v_mj from public.media_jobs m where m.id = p_job;
  return private.media_job_json(v_mj);
end
$$;

-- An image made by generate-admin-image, recorded like any other (p_user null:
-- made by the service role, visible to it alone).
create function public.media_record_admin_image(
  p_user uuid,
  p_prompt text,
  p_mode text,
  p_path text,
  p_metadata jsonb default '{}'::jsonb
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_image public.images;
begin
  if p_user is not null and not exists (select 1 from auth.users u where u.id = p_user) then
    raise exception using errcode = 'EM404', message = 'user_not_found';
  end if;
  -- An admin user's image lives under their prefix; the service role's under admin/.
  if p_path is null or p_path not like coalesce(p_user::text, 'admin') || '/%'
     or p_path ~ '(^|/)\.\.?(/|$)' then
    raise exception using errcode = 'EM400', message = 'path_not_owned';
  end if;
  if p_prompt is null or length(p_prompt) > 4000 then
    raise exception using errcode = '22023', message = 'p_prompt must be at most 4000 characters';
  end if;
  if p_metadata is null or jsonb_typeof(p_metadata) <> 'object' or octet_length(p_metadata::text) > 16384 then
    raise exception using errcode = '22023', message = 'p_metadata must be a JSON object of at most 16 KiB';
  end if;
  insert into public.images (user_id, prompt, model_variant, quality, status, storage_path, image_urls, metadata)
  values (p_user, p_prompt, 'edgeworks-render', left(coalesce(p_mode, 'fast'), 40), 'completed', p_path,
          array[p_path], p_metadata || jsonb_build_object('admin', true))
  returning * into v_image;
  return to_jsonb(v_image);
end
$$;

revoke execute on function
  private.media_settle(uuid, text),
  private.media_mirror_job(),
  private.media_job_json(public.media_jobs)
  from public, anon, authenticated, service_role;
grant execute on function
  public.media_grant_credits(uuid, integer, text),
  public.media_queue_job(uuid, text, text, text, jsonb, uuid, uuid, uuid, integer),
  public.media_expire_jobs(),
  public.media_claim_jobs(text, text[], integer, integer),
  public.media_heartbeat(uuid, uuid, integer),
  public.media_release_job(uuid, uuid),
  public.media_job_callback(uuid, uuid, text, integer, text, text[], text, text, text),
  public.media_record_admin_image(uuid, text, text, text, jsonb)
  to service_role;
grant execute on function public.media_cancel_job(uuid) to authenticated, service_role;
