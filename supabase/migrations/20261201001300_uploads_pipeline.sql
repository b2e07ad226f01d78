-- =============================================================================
-- The upload pipeline (seed 004): documents uploaded straight to storage,
-- verified, then processed storage -> parse -> embed -> completed.
-- =============================================================================
--
-- Tables (public, RLS: an owner reads their own rows; nobody but the service
-- role writes, always through the functions below):
--   documents                   one uploaded file: what was declared, what was verified,
--                               where it is, where its processing stands
--   upload_sessions             the server-held multipart session of a document (S3 upload
--                               id, part size and count), so any tab or device of the owner
--                               resumes it
--   upload_parts                each part: the SHA-256 the client declared (the storage
--                               verifies it against the bytes), then size and ETag once stored
--   realtime_progress_updates   status changes (not every percent), for postgres_changes;
--                               rows older than 24 hours are deleted
--   feature_flags               name, enabled, rollout_percentage, per-user targeting;
--                               read by the service role only (targets name users)
-- Private:
--   private.upload_webhook_receipts   webhook ids seen per source (replays acknowledged, no effect)
-- Views (security_invoker, so each reader sees only their own rows):
--   document_processing_stats, failed_documents, stuck_documents, user_upload_stats
--
-- API (service_role only; each takes the acting user and checks ownership itself,
-- refusing another user's document exactly as a missing one, EU404):
--   upload_init(...)            -> jsonb   a new document and its session, or the caller's
--                                          own verified duplicate
--   upload_document(p_user, p_document)   -> jsonb   document + session + parts
--   upload_document_by_id(p_document)     -> jsonb   the document and its owner (for the pipeline)
--   upload_record_parts(p_user, p_document, p_parts jsonb) -> jsonb   stored parts (ListParts)
--   upload_finish(p_user, p_document, p_sniffed_type, p_size) -> jsonb   verified: finishes
--                                          the storage step (dedup by verified hash)
--   upload_progress(p_document, p_stage, p_progress, p_eta_state, p_status, p_min_broadcast_ms)
--                                          -> jsonb   progress, throttled broadcast
--   upload_progress_reset(p_document) -> jsonb
--   upload_step_finished(p_document, p_step, p_source, p_external_id) -> jsonb
--   upload_step_failed(p_document, p_step, p_error, p_retryable) -> jsonb
--   upload_parse_submitted(p_document, p_job_id) -> jsonb   LlamaParse's job id, checked on its webhook
--   upload_webhook_receive(p_source, p_webhook_id, p_body_sha256, p_document, p_step, p_status, ...)
--       -> jsonb   a verified delivery recorded and applied at once (replays acknowledged)
--   upload_cleanup() -> jsonb
-- The next step's job is enqueued in the same transaction as the step it follows
-- (public.enqueue_job, queue 'uploads', kinds upload_parse and upload_embed).
-- Errors: EU404 document_not_found, EU409 <state conflict>, 22023 bad argument.
-- =============================================================================

create table public.documents (
  id uuid primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  filename text not null check (length(filename) between 1 and 255),
  declared_content_type text not null check (declared_content_type in (
    'application/pdf',
    'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
    'text/plain')),
  sniffed_content_type text,
  file_size bigint not null check (file_size between 1 and 52428800),
  -- The client's claim until sha256_verified: dedup never trusts it before.
  sha256 text not null check (sha256 ~ '^[0-9a-f]{64}$'),
  sha256_verified boolean not null default false,
  storage_bucket text not null,
  storage_key text not null,
  upload_method text not null check (upload_method in ('single', 'multipart')),
  status text not null default 'uploading'
    check (status in ('uploading', 'processing', 'completed', 'failed')),
  progress smallint not null default 0 check (progress between 0 and 100),
  processing_step text not null default 'upload'
    check (processing_step in ('upload', 'storage', 'parse', 'embed', 'completed')),
  error_code text,
  error_message text,
  retry_count integer not null default 0,
  llama_parse_job_id text,
  duplicate_of uuid references public.documents (id) on delete set null,
  -- Per-stage smoothed throughput (edgeworks-uploads eta::EtaState), written by
  -- progress-tracker; the ETA and its band are computed from it.
  eta_state jsonb not null default '{}'::jsonb,
  last_broadcast_at timestamptz,
  last_progress_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  completed_at timestamptz,
  unique (storage_bucket, storage_key)
);
create index documents_user_created_idx on public.documents (user_id, created_at desc);
create index documents_user_hash_idx on public.documents (user_id, sha256) where sha256_verified;
create index documents_stuck_idx on public.documents (last_progress_at)
  where status in ('uploading', 'processing');
alter table public.documents enable row level security;
create policy documents_owner_read on public.documents for select to authenticated
  using (user_id = auth.uid());
grant select on public.documents to authenticated;

create table public.upload_sessions (
  document_id uuid primary key references public.documents (id) on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  upload_id text not null check (length(upload_id) between 1 and 1024),
  part_size integer not null check (part_size between 5242880 and 52428800),
  part_count integer not null check (part_count between 1 and 10000),
  created_at timestamptz not null default now(),
  reconciled_at timestamptz,
  completed_at timestamptz
);
alter table public.upload_sessions enable row level security;
create policy upload_sessions_owner_read on public.upload_sessions for select to authenticated
  using (user_id = auth.uid());
grant select on public.upload_sessions to authenticated;

create table public.upload_parts (
  document_id uuid not null references public.documents (id) on delete cascade,
  part_number integer not null check (part_number between 1 and 10000),
  user_id uuid not null references auth.users (id) on delete cascade,
  -- base64 SHA-256 the client declared; signed into the part's URL.
  sha256_b64 text not null check (sha256_b64 ~ '^[A-Za-z0-9+/]{43}=$'),
  expected_size bigint not null check (expected_size between 1 and 52428800),
  size bigint,
  etag text,
  uploaded_at timestamptz,
  primary key (document_id, part_number)
);
alter table public.upload_parts enable row level security;
create policy upload_parts_owner_read on public.upload_parts for select to authenticated
  using (user_id = auth.uid());
grant select on public.upload_parts to authenticated;

create table public.realtime_progress_updates (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  document_id uuid not null references public.documents (id) on delete cascade,
  payload jsonb not null,
  created_at timestamptz not null default now()
);
create index realtime_progress_updates_user_idx on public.realtime_progress_updates (user_id, created_at desc);
create index realtime_progress_updates_document_idx on public.realtime_progress_updates (document_id);
create index realtime_progress_updates_created_idx on public.realtime_progress_updates (created_at);
alter table public.realtime_progress_updates enable row level security;
create policy realtime_progress_updates_owner_read on public.realtime_progress_updates
  for select to authenticated using (user_id = auth.uid());
grant select on public.realtime_progress_updates to authenticated;
alter publication supabase_realtime add table public.documents, public.realtime_progress_updates;

create table public.feature_flags (
  name text primary key check (name ~ '^[a-z0-9_]{1,64}$'),
  is_enabled boolean not null default false,
  rollout_percentage integer not null default 0 check (rollout_percentage between 0 and 100),
  -- Always on for these users, whatever the percentage (while enabled).
  target_user_ids uuid[] not null default '{}',
  description text,
  updated_at timestamptz not null default now()
);
alter table public.feature_flags enable row level security;
-- Targets name users: only the service role (which bypasses RLS) reads flags.
create policy feature_flags_service_only on public.feature_flags for all to service_role
  using (true) with check (true);
insert into public.feature_flags (name, is_enabled, rollout_percentage, description) values
  ('supabase_v2_upload', true, 100, 'the direct-to-storage upload pipeline'),
  ('realtime_progress', true, 100, 'progress broadcast over Realtime'),
  ('llama_parse_integration', false, 0, 'parse with LlamaParse (its webhook finishes the step)'),
  ('external_embedding', false, 0, 'embed with the external service (its webhook finishes the step)');

create table private.upload_webhook_receipts (
  source text not null,
  webhook_id text not null,
  body_sha256 text not null,
  document_id uuid,
  received_at timestamptz not null default now(),
  primary key (source, webhook_id)
);
create index upload_webhook_receipts_received_idx on private.upload_webhook_receipts (received_at);
alter table private.upload_webhook_receipts enable row level security;
revoke all on private.upload_webhook_receipts from public, anon, authenticated, service_role;

-- Progress broadcasts go to a private channel per user; only that user may join it.
create policy uploads_progress_topic_owner on realtime.messages for select to authenticated
  using (realtime.topic() = 'uploads:' || auth.uid()::text and extension = 'broadcast');

-- -----------------------------------------------------------------------------
-- Views
-- -----------------------------------------------------------------------------

create view public.document_processing_stats with (security_invoker = true) as
select d.user_id,
       count(*) as total_documents,
       count(*) filter (where d.status = 'uploading') as uploading,
       count(*) filter (where d.status = 'processing') as processing,
       count(*) filter (where d.status = 'completed') as completed,
       count(*) filter (where d.status = 'failed') as failed,
       round(avg(extract(epoch from d.completed_at - d.created_at))
             filter (where d.completed_at is not null)::numeric, 3) as avg_processing_seconds,
       coalesce(sum(d.file_size) filter (where d.status = 'completed'), 0) as completed_bytes
  from public.documents d
 group by d.user_id;

create view public.failed_documents with (security_invoker = true) as
select d.id, d.user_id, d.filename, d.processing_step, d.error_code, d.error_message,
       d.retry_count, d.updated_at
  from public.documents d
 where d.status = 'failed';

-- Stuck: an unfinished document with no progress for 30 minutes.
create view public.stuck_documents with (security_invoker = true) as
select d.id, d.user_id, d.filename, d.status, d.processing_step, d.progress, d.last_progress_at,
       now() - d.last_progress_at as stuck_for
  from public.documents d
 where d.status in ('uploading', 'processing')
   and d.last_progress_at < now() - interval '30 minutes';

create view public.user_upload_stats with (security_invoker = true) as
select d.user_id,
       count(*) as uploads,
       coalesce(sum(d.file_size), 0) as bytes_declared,
       count(*) filter (where d.duplicate_of is not null) as duplicates,
       max(d.created_at) as last_upload_at
  from public.documents d
 group by d.user_id;

grant select on public.document_processing_stats, public.failed_documents,
  public.stuck_documents, public.user_upload_stats to authenticated;

-- The service role reads; every write goes through the functions below (flags aside,
-- which operators manage).
revoke all on public.documents, public.upload_sessions, public.upload_parts,
  public.realtime_progress_updates, public.feature_flags, public.document_processing_stats,
  public.failed_documents, public.stuck_documents, public.user_upload_stats from service_role;
grant select on public.documents, public.upload_sessions, public.upload_parts,
  public.realtime_progress_updates, public.document_processing_stats, public.failed_documents,
  public.stuck_documents, public.user_upload_stats to service_role;
grant select, insert, update, delete on public.feature_flags to service_role;

-- -----------------------------------------------------------------------------
-- Helpers (private)
-- -----------------------------------------------------------------------------

-- The caller's own document, locked; another user's is indistinguishable from a missing one.
create function private.upload_owned_document(p_user uuid, p_document uuid) returns public.documents
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_doc public.documents;
begin
  select * into v_doc from public.documents where id = p_document for update;
  if not found or (v_doc.user_id = p_user) is not true then
    raise exception using errcode = 'EU404', message = 'document_not_found';
  end if;
  return v_doc;
end
$$;

-- The document as clients see it (seed field names).
create function private.upload_document_json(d public.documents) returns jsonb
language sql stable set search_path = ''
as $$
  select jsonb_build_object(
    'id', d.id, 'filename', d.filename, 'content_type', d.declared_content_type,
    'sniffed_content_type', d.sniffed_content_type, 'file_size', d.file_size,
    'sha256', d.sha256, 'sha256_verified', d.sha256_verified, 'storage_bucket', d.storage_bucket,
    'storage_key', d.storage_key,
    'upload_method', d.upload_method, 'status', d.status, 'progress', d.progress,
    'processing_step', d.processing_step, 'error_code', d.error_code,
    'error_message', d.error_message, 'retry_count', d.retry_count,
    'llama_parse_job_id', d.llama_parse_job_id, 'duplicate_of', d.duplicate_of,
    'eta_state', d.eta_state, 'last_progress_at', d.last_progress_at,
    'created_at', d.created_at, 'updated_at', d.updated_at, 'completed_at', d.completed_at)
$$;

-- A status change: one row for postgres_changes subscribers, old rows trimmed.
create function private.upload_status_changed(d public.documents, p_kind text, p_extra jsonb)
returns void
language plpgsql volatile security definer set search_path = ''
as $$
begin
  insert into public.realtime_progress_updates (user_id, document_id, payload)
  values (d.user_id, d.id, jsonb_build_object(
    'type', p_kind, 'document_id', d.id, 'status', d.status, 'progress', d.progress,
    'processing_step', d.processing_step, 'error_code', d.error_code,
    'at', now()) || coalesce(p_extra, '{}'::jsonb));
  -- 24-hour retention, a few rows at a time so no write pays for a backlog.
  delete from public.realtime_progress_updates
   where id in (select id from public.realtime_progress_updates
                 where created_at < now() - interval '24 hours' limit 100);
end
$$;

-- The stage's smoothed rate after a report of p_progress at p_at_ms: the same
-- rule as edgeworks-uploads-protocol eta::EtaState::observe (an exponentially
-- weighted mean and variance of percent per second, weight 0.3; reports under
-- 50 ms apart merged; progress going backwards starts the stage over). Observed
-- here, under the document's row lock, on the database's clock, so concurrent
-- reporters on many isolates fold into one state; Rust estimates from it.
create function private.upload_eta_observe(p_state jsonb, p_stage text, p_progress double precision,
                                           p_at_ms bigint) returns jsonb
language plpgsql immutable set search_path = ''
as $$
declare
  v_state jsonb := coalesce(p_state, '{}'::jsonb);
  v_p double precision := least(greatest(coalesce(p_progress, 0), 0), 100);
  v_s jsonb := v_state -> 'stages' -> p_stage;
  v_rate double precision;
  v_var double precision;
  v_n integer;
  v_inst double precision;
  v_diff double precision;
begin
  if jsonb_typeof(v_state -> 'stages') is distinct from 'object' then
    v_state := jsonb_build_object('stages', '{}'::jsonb);
  end if;
  if v_s is null or v_p < (v_s ->> 'progress')::double precision or p_at_ms < (v_s ->> 'at_ms')::bigint then
    return jsonb_set(v_state, array['stages', p_stage], jsonb_build_object(
      'rate', 0, 'var', 0, 'progress', v_p, 'at_ms', p_at_ms, 'samples', 0));
  end if;
  if p_at_ms - (v_s ->> 'at_ms')::bigint < 50 then
    return v_state;
  end if;
  v_inst := (v_p - (v_s ->> 'progress')::double precision)
            / ((p_at_ms - (v_s ->> 'at_ms')::bigint) / 1000.0);
  v_n := (v_s ->> 'samples')::integer;
  if v_n = 0 then
    v_rate := v_inst;
    v_var := 0;
  else
    v_diff := v_inst - (v_s ->> 'rate')::double precision;
    v_rate := (v_s ->> 'rate')::double precision + 0.3 * v_diff;
    v_var := 0.7 * ((v_s ->> 'var')::double precision + 0.3 * v_diff * v_diff);
  end if;
  return jsonb_set(v_state, array['stages', p_stage], jsonb_build_object(
    'rate', v_rate, 'var', v_var, 'progress', v_p, 'at_ms', p_at_ms, 'samples', v_n + 1));
end
$$;

-- Enqueues the job that starts the step after p_step (nothing after embed).
create function private.upload_enqueue_next(d public.documents, p_step text) returns uuid
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_kind text := case p_step when 'storage' then 'upload_parse' when 'parse' then 'upload_embed' end;
  v_job public.jobs;
begin
  if v_kind is null then
    return null;
  end if;
  v_job := public.enqueue_job(
    p_queue => 'uploads', p_kind => v_kind,
    p_payload => jsonb_build_object('document_id', d.id, 'user_id', d.user_id),
    p_max_attempts => 3, p_dedup_key => v_kind || ':' || d.id::text, p_owner => d.user_id);
  return v_job.id;
end
$$;

-- -----------------------------------------------------------------------------
-- API
-- -----------------------------------------------------------------------------

-- A new document (and, for multipart, its session and declared parts), unless the
-- caller already has a verified document with this hash: then that one is returned
-- and nothing is created. Only the caller's own documents are looked at.
create function public.upload_init(
  p_user uuid,
  p_document uuid,
  p_filename text,
  p_content_type text,
  p_size bigint,
  p_sha256 text,
  p_bucket text,
  p_key text,
  p_method text,
  p_upload_id text default null,
  p_part_size integer default null,
  p_parts jsonb default null
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_dup public.documents;
  v_doc public.documents;
begin
  if p_user is null or not exists (select 1 from auth.users where id = p_user) then
    raise exception using errcode = 'EU401', message = 'user_not_found';
  end if;
  select * into v_dup from public.documents
   where user_id = p_user and sha256 = p_sha256 and sha256_verified and status <> 'failed'
   order by created_at limit 1;
  if found then
    return jsonb_build_object('duplicate', true, 'document', private.upload_document_json(v_dup));
  end if;
  insert into public.documents (id, user_id, filename, declared_content_type, file_size, sha256,
                                storage_bucket, storage_key, upload_method)
  values (p_document, p_user, p_filename, p_content_type, p_size, p_sha256, p_bucket, p_key, p_method)
  returning * into v_doc;
  if p_method = 'multipart' then
    if p_upload_id is null or p_part_size is null or jsonb_typeof(p_parts) is distinct from 'array' then
      raise exception using errcode = '22023', message = 'a multipart upload needs its upload id, part size and parts';
    end if;
    insert into public.upload_sessions (document_id, user_id, upload_id, part_size, part_count)
    values (v_doc.id, p_user, p_upload_id, p_part_size, jsonb_array_length(p_parts));
    insert into public.upload_parts (document_id, part_number, user_id, sha256_b64, expected_size)
    select v_doc.id, (x ->> 'part_number')::integer, p_user, x ->> 'sha256', (x ->> 'size')::bigint
      from jsonb_array_elements(p_parts) x;
  end if;
  perform private.upload_status_changed(v_doc, 'status_change', null);
  return jsonb_build_object('duplicate', false, 'document', private.upload_document_json(v_doc));
end
$$;

-- The caller's document with its session and parts (EU404 for anyone else's).
create function public.upload_document(p_user uuid, p_document uuid) returns jsonb
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_doc public.documents;
  v_session public.upload_sessions;
begin
  select * into v_doc from public.documents where id = p_document;
  if not found or (v_doc.user_id = p_user) is not true then
    raise exception using errcode = 'EU404', message = 'document_not_found';
  end if;
  select * into v_session from public.upload_sessions where document_id = p_document;
  return jsonb_build_object(
    'document', private.upload_document_json(v_doc),
    'session', case when v_session.document_id is null then null else jsonb_build_object(
      'upload_id', v_session.upload_id, 'part_size', v_session.part_size,
      'part_count', v_session.part_count, 'completed_at', v_session.completed_at) end,
    'parts', coalesce((select jsonb_agg(jsonb_build_object(
        'part_number', p.part_number, 'sha256', p.sha256_b64, 'expected_size', p.expected_size,
        'size', p.size, 'etag', p.etag, 'uploaded_at', p.uploaded_at) order by p.part_number)
      from public.upload_parts p where p.document_id = p_document), '[]'::jsonb));
end
$$;

-- A document by id alone, for the pipeline's reporters (service role only).
create function public.upload_document_by_id(p_document uuid) returns jsonb
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_doc public.documents;
begin
  select * into v_doc from public.documents where id = p_document;
  if not found then
    raise exception using errcode = 'EU404', message = 'document_not_found';
  end if;
  return private.upload_document_json(v_doc) || jsonb_build_object('user_id', v_doc.user_id);
end
$$;

-- Records what the storage lists as stored (ListParts), the server-side truth a
-- resuming client starts from. A listing only adds: reports of different parts
-- race (each lists before the other's part is stored), and a part of a live
-- upload is never taken away (an aborted upload is gone as a whole, and the
-- completion asks the storage again).
create function public.upload_record_parts(p_user uuid, p_document uuid, p_parts jsonb) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_doc public.documents := private.upload_owned_document(p_user, p_document);
  v_stored bigint;
  v_progress integer;
begin
  if v_doc.status <> 'uploading' then
    raise exception using errcode = 'EU409', message = 'upload_not_in_progress';
  end if;
  if jsonb_typeof(p_parts) is distinct from 'array' then
    raise exception using errcode = '22023', message = 'p_parts must be an array';
  end if;
  update public.upload_parts p
     set size = x.size, etag = coalesce(nullif(x.etag, ''), p.etag),
         uploaded_at = coalesce(p.uploaded_at, now())
    from (select (e ->> 'part_number')::integer as part_number, (e ->> 'size')::bigint as size,
                 e ->> 'etag' as etag from jsonb_array_elements(p_parts) e) x
   where p.document_id = p_document and p.part_number = x.part_number;
  update public.upload_sessions set reconciled_at = now() where document_id = p_document;
  select coalesce(sum(size), 0) into v_stored from public.upload_parts
   where document_id = p_document and uploaded_at is not null;
  -- Upload is the first 0..100 of the upload stage; never moves backwards here.
  v_progress := least(99, (v_stored * 100 / greatest(v_doc.file_size, 1))::integer);
  update public.documents set progress = greatest(progress, v_progress), last_progress_at = now(),
         updated_at = now()
   where id = p_document;
  return public.upload_document(p_user, p_document);
end
$$;

-- The upload is verified (size, SHA-256 and first bytes checked by upload-handler
-- against the stored object): the storage step is finished. A verified document
-- with the same hash owned by the same user makes this one its duplicate (the
-- newer object is redundant; upload-handler deletes it). Otherwise the parse job
-- is enqueued in this transaction.
create function public.upload_finish(p_user uuid, p_document uuid, p_sniffed_type text, p_size bigint)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_doc public.documents := private.upload_owned_document(p_user, p_document);
  v_dup public.documents;
  v_job uuid;
begin
  if v_doc.status <> 'uploading' then
    -- Finished already (another tab): the same answer, nothing done twice.
    return jsonb_build_object('already_finished', true, 'document', private.upload_document_json(v_doc));
  end if;
  if (p_size = v_doc.file_size) is not true then
    raise exception using errcode = '22023', message = 'p_size is not the declared size';
  end if;
  select * into v_dup from public.documents
   where user_id = p_user and sha256 = v_doc.sha256 and sha256_verified and id <> v_doc.id
     and status <> 'failed'
   order by created_at limit 1;
  update public.upload_sessions set completed_at = now() where document_id = p_document;
  if v_dup.id is not null then
    update public.documents set sha256_verified = true, sniffed_content_type = p_sniffed_type,
           duplicate_of = v_dup.id, status = 'completed', processing_step = 'completed',
           progress = 100, completed_at = now(), last_progress_at = now(), updated_at = now()
     where id = p_document returning * into v_doc;
    perform private.upload_status_changed(v_doc, 'complete', jsonb_build_object('duplicate_of', v_dup.id));
    return jsonb_build_object('duplicate', true, 'document', private.upload_document_json(v_doc));
  end if;
  update public.documents set sha256_verified = true, sniffed_content_type = p_sniffed_type,
         status = 'processing', processing_step = 'storage', progress = 0,
         eta_state = '{}'::jsonb, last_progress_at = now(), updated_at = now()
   where id = p_document returning * into v_doc;
  perform private.upload_status_changed(v_doc, 'status_change', null);
  v_job := private.upload_enqueue_next(v_doc, 'storage');
  update public.documents set processing_step = 'parse' where id = p_document returning * into v_doc;
  return jsonb_build_object('duplicate', false, 'next_job_id', v_job,
                            'document', private.upload_document_json(v_doc));
end
$$;

-- Progress within a stage. The stage's rate is observed here (private.upload_eta_observe)
-- unless p_eta_state gives the new state. A broadcast on the user's private channel is
-- sent at most once per p_min_broadcast_ms; a status change always writes a row
-- to realtime_progress_updates (and broadcasts).
create function public.upload_progress(
  p_document uuid,
  p_stage text,
  p_progress integer,
  p_eta_state jsonb default null,
  p_status text default null,
  p_min_broadcast_ms integer default 250
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_doc public.documents;
  v_old_status text;
  v_progress integer;
  v_broadcast boolean;
begin
  if p_progress is null or p_progress not between 0 and 100 then
    raise exception using errcode = '22023', message = 'p_progress must be 0 to 100';
  end if;
  if p_stage not in ('upload', 'storage', 'parse', 'embed') then
    raise exception using errcode = '22023', message = 'unknown stage';
  end if;
  if p_status is not null and p_status <> 'failed' then
    raise exception using errcode = '22023', message = 'p_status may only be failed';
  end if;
  select * into v_doc from public.documents where id = p_document for update;
  if not found then
    raise exception using errcode = 'EU404', message = 'document_not_found';
  end if;
  if v_doc.status in ('completed', 'failed') then
    raise exception using errcode = 'EU409', message = 'document_finished';
  end if;
  -- Only the current stage reports progress: a late report of an earlier stage
  -- must not move the document back.
  if (case when v_doc.status = 'uploading' then p_stage = 'upload'
           else p_stage = v_doc.processing_step end) is not true then
    raise exception using errcode = 'EU409', message = 'stage_not_current',
      detail = v_doc.processing_step;
  end if;
  v_old_status := v_doc.status;
  -- Uploaded bytes only grow: reports of parts that raced arrive in any order.
  v_progress := case when p_stage = 'upload' then greatest(v_doc.progress, p_progress) else p_progress end;
  v_broadcast := v_doc.last_broadcast_at is null
    or v_doc.last_broadcast_at < now() - make_interval(secs => greatest(p_min_broadcast_ms, 0) / 1000.0)
    or (p_status is not null and p_status <> v_old_status);
  update public.documents
     set progress = v_progress,
         eta_state = coalesce(p_eta_state, private.upload_eta_observe(
           eta_state, p_stage, v_progress, (extract(epoch from clock_timestamp()) * 1000)::bigint)),
         status = coalesce(p_status, status),
         last_progress_at = now(), updated_at = now(),
         last_broadcast_at = case when v_broadcast then now() else last_broadcast_at end
   where id = p_document returning * into v_doc;
  if v_doc.status <> v_old_status then
    perform private.upload_status_changed(v_doc, 'status_change', null);
  end if;
  if v_broadcast then
    perform realtime.send(
      jsonb_build_object('document_id', v_doc.id, 'status', v_doc.status, 'progress', v_doc.progress,
                         'processing_step', v_doc.processing_step, 'at', now()),
      'progress_update', 'uploads:' || v_doc.user_id::text, true);
  end if;
  return jsonb_build_object('broadcast', v_broadcast, 'document', private.upload_document_json(v_doc));
end
$$;

-- Back to the start of the current step, for a retry (its failure forgotten).
create function public.upload_progress_reset(p_document uuid) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_doc public.documents;
begin
  select * into v_doc from public.documents where id = p_document for update;
  if not found then
    raise exception using errcode = 'EU404', message = 'document_not_found';
  end if;
  if v_doc.status = 'completed' then
    raise exception using errcode = 'EU409', message = 'document_completed';
  end if;
  update public.documents
     set progress = 0, eta_state = '{}'::jsonb, error_code = null, error_message = null,
         status = case when status = 'failed' then
                    case when processing_step = 'upload' then 'uploading' else 'processing' end
                  else status end,
         retry_count = retry_count + 1, last_progress_at = now(), updated_at = now()
   where id = p_document returning * into v_doc;
  perform private.upload_status_changed(v_doc, 'status_change', jsonb_build_object('reset', true));
  if v_doc.processing_step in ('parse', 'embed') then
    -- The step starts again: its job is enqueued (deduplicated if one is waiting).
    perform private.upload_enqueue_next(v_doc,
      case v_doc.processing_step when 'parse' then 'storage' else 'parse' end);
  end if;
  return jsonb_build_object('document', private.upload_document_json(v_doc));
end
$$;

-- A step finished (a webhook, or a job that did the step itself). Only the step the
-- document is at may finish (EU409 otherwise, so an out-of-order or stale webhook
-- changes nothing); the next step's job is enqueued in the same transaction; after
-- embed the document is completed.
create function public.upload_step_finished(
  p_document uuid,
  p_step text,
  p_source text,
  p_external_id text default null
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_doc public.documents;
  v_next text := case p_step when 'storage' then 'parse' when 'parse' then 'embed' when 'embed' then 'completed' end;
  v_job uuid;
begin
  if v_next is null then
    raise exception using errcode = '22023', message = 'unknown step';
  end if;
  select * into v_doc from public.documents where id = p_document for update;
  if not found then
    raise exception using errcode = 'EU404', message = 'document_not_found';
  end if;
  if p_step = 'storage' and v_doc.sha256_verified and v_doc.processing_step <> 'storage' then
    -- The upload's own verification finished the storage step already.
    return jsonb_build_object('already_finished', true, 'document', private.upload_document_json(v_doc));
  end if;
  if v_doc.status <> 'processing' or v_doc.processing_step <> p_step then
    raise exception using errcode = 'EU409', message = 'step_not_current',
      detail = coalesce(v_doc.processing_step, '');
  end if;
  -- A LlamaParse result must be the job we submitted (when we submitted one).
  if p_source = 'llamaparse' and v_doc.llama_parse_job_id is not null
     and (p_external_id = v_doc.llama_parse_job_id) is not true then
    raise exception using errcode = 'EU409', message = 'external_job_mismatch',
      detail = 'the webhook names another LlamaParse job';
  end if;
  update public.documents
     set processing_step = v_next,
         status = case when v_next = 'completed' then 'completed' else status end,
         progress = case when v_next = 'completed' then 100 else 0 end,
         completed_at = case when v_next = 'completed' then now() else completed_at end,
         llama_parse_job_id = case when p_step = 'parse' and p_source = 'llamaparse'
                                   then coalesce(p_external_id, llama_parse_job_id)
                                   else llama_parse_job_id end,
         eta_state = '{}'::jsonb, error_code = null, error_message = null,
         last_progress_at = now(), updated_at = now()
   where id = p_document returning * into v_doc;
  perform private.upload_status_changed(v_doc,
    case when v_next = 'completed' then 'complete' else 'status_change' end,
    jsonb_build_object('finished_step', p_step, 'source', p_source));
  v_job := private.upload_enqueue_next(v_doc, p_step);
  return jsonb_build_object('next_job_id', v_job, 'document', private.upload_document_json(v_doc));
end
$$;

-- The parse job handed the document to LlamaParse: its job id, which the result's
-- webhook must name. Only while parse is the current step.
create function public.upload_parse_submitted(p_document uuid, p_job_id text) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_doc public.documents;
begin
  if p_job_id is null or length(p_job_id) not between 1 and 200 then
    raise exception using errcode = '22023', message = 'p_job_id must be 1 to 200 characters';
  end if;
  select * into v_doc from public.documents where id = p_document for update;
  if not found then
    raise exception using errcode = 'EU404', message = 'document_not_found';
  end if;
  if v_doc.status <> 'processing' or v_doc.processing_step <> 'parse' then
    raise exception using errcode = 'EU409', message = 'step_not_current', detail = v_doc.processing_step;
  end if;
  update public.documents set llama_parse_job_id = p_job_id, updated_at = now(), last_progress_at = now()
   where id = p_document returning * into v_doc;
  return jsonb_build_object('document', private.upload_document_json(v_doc));
end
$$;

-- A step failed. Retryable failures count a retry and leave the step current
-- (its job retries); others fail the document.
create function public.upload_step_failed(
  p_document uuid,
  p_step text,
  p_error text,
  p_retryable boolean default false
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_doc public.documents;
begin
  select * into v_doc from public.documents where id = p_document for update;
  if not found then
    raise exception using errcode = 'EU404', message = 'document_not_found';
  end if;
  if v_doc.status in ('completed', 'failed') or v_doc.processing_step <> p_step then
    raise exception using errcode = 'EU409', message = 'step_not_current',
      detail = coalesce(v_doc.processing_step, '');
  end if;
  update public.documents
     set status = case when p_retryable is true then status else 'failed' end,
         error_code = case when p_retryable is true then error_code else p_step || '_failed' end,
         error_message = left(coalesce(p_error, ''), 1000),
         retry_count = retry_count + case when p_retryable is true then 1 else 0 end,
         last_progress_at = now(), updated_at = now()
   where id = p_document returning * into v_doc;
  perform private.upload_status_changed(v_doc,
    case when v_doc.status = 'failed' then 'error' else 'status_change' end,
    jsonb_build_object('failed_step', p_step, 'retryable', p_retryable is true));
  return jsonb_build_object('document', private.upload_document_json(v_doc));
end
$$;

-- A verified webhook delivery, received and applied in one transaction: the first
-- delivery of an id takes effect; the same id with the same body again is
-- acknowledged ('duplicate') without effect; the same id with another body is
-- EU409 webhook_id_reused. A delivery whose effect fails leaves no receipt (the
-- transaction rolls back), so the sender's retry is processed.
create function public.upload_webhook_receive(
  p_source text,
  p_webhook_id text,
  p_body_sha256 text,
  p_document uuid,
  p_step text,
  p_status text,
  p_progress integer default null,
  p_external_id text default null,
  p_error text default null,
  p_retryable boolean default false,
  p_min_broadcast_ms integer default 250
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_hash text;
  v_result jsonb;
begin
  if p_webhook_id is null or length(p_webhook_id) not between 1 and 256 then
    raise exception using errcode = '22023', message = 'p_webhook_id must be 1 to 256 characters';
  end if;
  insert into private.upload_webhook_receipts (source, webhook_id, body_sha256, document_id)
  values (p_source, p_webhook_id, p_body_sha256, p_document)
  on conflict (source, webhook_id) do nothing;
  if not found then
    select body_sha256 into v_hash from private.upload_webhook_receipts
     where source = p_source and webhook_id = p_webhook_id;
    if (v_hash = p_body_sha256) is not true then
      raise exception using errcode = 'EU409', message = 'webhook_id_reused';
    end if;
    return jsonb_build_object('duplicate', true);
  end if;
  v_result := case p_status
    when 'completed' then public.upload_step_finished(p_document, p_step, p_source, p_external_id)
    when 'failed' then public.upload_step_failed(p_document, p_step, coalesce(p_error, 'failed'), p_retryable)
    when 'processing' then public.upload_progress(p_document, p_step, coalesce(p_progress, 0), null, null,
                                                  p_min_broadcast_ms)
  end;
  if v_result is null then
    raise exception using errcode = '22023', message = 'unknown status';
  end if;
  return jsonb_build_object('duplicate', false, 'result', v_result);
end
$$;

-- Retention: progress rows after 24 hours, webhook receipts after 7 days (a
-- receipt only has to outlive the 5-minute signature tolerance).
create function public.upload_cleanup() returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_updates integer;
  v_receipts integer;
begin
  delete from public.realtime_progress_updates where created_at < now() - interval '24 hours';
  get diagnostics v_updates = row_count;
  delete from private.upload_webhook_receipts where received_at < now() - interval '7 days';
  get diagnostics v_receipts = row_count;
  return jsonb_build_object('progress_updates_deleted', v_updates, 'webhook_receipts_deleted', v_receipts);
end
$$;

grant execute on function public.upload_init(uuid, uuid, text, text, bigint, text, text, text, text, text, integer, jsonb) to service_role;
grant execute on function public.upload_document(uuid, uuid) to service_role;
grant execute on function public.upload_document_by_id(uuid) to service_role;
grant execute on function public.upload_record_parts(uuid, uuid, jsonb) to service_role;
grant execute on function public.upload_finish(uuid, uuid, text, bigint) to service_role;
grant execute on function public.upload_progress(uuid, text, integer, jsonb, text, integer) to service_role;
grant execute on function public.upload_progress_reset(uuid) to service_role;
grant execute on function public.upload_step_finished(uuid, text, text, text) to service_role;
grant execute on function public.upload_step_failed(uuid, text, text, boolean) to service_role;
grant execute on function public.upload_parse_submitted(uuid, text) to service_role;
grant execute on function public.upload_webhook_receive(text, text, text, uuid, text, text, integer, text, text, boolean, integer)
  to service_role;
grant execute on function public.upload_cleanup() to service_role;
