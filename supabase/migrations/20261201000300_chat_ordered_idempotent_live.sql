-- =============================================================================
-- The chat queue answers each session in order, exactly once per submit, live.
-- =============================================================================
--
-- In order: every question is enqueued with its session id as the queue's ordering
-- key (migration 20261201000200), so a question is claimed only when every earlier
-- question of its session has finished, and its prompt (chat_job_context) holds
-- every earlier exchange. Sessions proceed in parallel; owners are served fairly.
--
-- Exactly once per submit: chat_submit takes an idempotency key (the client's
-- Idempotency-Key header). The same key from the same user within 24 hours returns
-- the original result and creates nothing; the same key with a different request
-- is EC422 idempotency_key_reused. Concurrent retries serialise on the key's row:
-- one enqueues, the others wait for it and return its result.
--
-- Cancel: chat_cancel(p_job) lets the owner cancel a question that has not started
-- (pending or waiting to retry). A cancelled question gives its place back (the
-- session's question count goes down) and the next question of the session becomes
-- claimable.
--
-- Live: chat_jobs mirrors its job's status (a trigger on public.jobs), and chat_jobs
-- and chat_messages are in the supabase_realtime publication. Their RLS policies
-- (owner only) decide who receives a change.
--
-- API:
--   chat_submit(..., p_idempotency_key text = null) -> jsonb        [service_role]
--       as before, plus `replayed: true` when the key's original result is returned.
--   chat_cancel(p_job uuid) -> jsonb             [authenticated: own; service_role]
--       EC404 job_not_found, EC409 job_not_cancellable (running or finished).
-- Errors: EC422 idempotency_key_reused.
-- =============================================================================

-- -----------------------------------------------------------------------------
-- Idempotency keys (private: read and written only by security definer functions)
-- -----------------------------------------------------------------------------

create table private.idempotency_keys (
  scope text not null,
  owner_id uuid not null,
  key text not null check (length(key) between 1 and 255),
  request_hash text not null,
  response jsonb,
  created_at timestamptz not null default now(),
  primary key (scope, owner_id, key)
);
create index idempotency_keys_created_idx on private.idempotency_keys (created_at);
alter table private.idempotency_keys enable row level security;
revoke all on private.idempotency_keys from public, anon, authenticated, service_role;

-- -----------------------------------------------------------------------------
-- chat_jobs mirrors its job's status, for Realtime subscribers
-- -----------------------------------------------------------------------------

alter table public.chat_jobs
  add column status text not null default 'pending',
  add column updated_at timestamptz not null default now();
update public.chat_jobs c set status = j.status, updated_at = j.updated_at
  from public.jobs j where j.id = c.job_id;

create function private.chat_mirror_job_status() returns trigger
language plpgsql security definer set search_path = ''
as $$
begin
  update public.chat_jobs set status = new.status, updated_at = new.updated_at
   where job_id = new.id and status is distinct from new.status;
  return null;
end
$$;
create trigger jobs_chat_status_mirror after update of status on public.jobs
  for each row when (new.queue = 'chat' and old.status is distinct from new.status)
  execute function private.chat_mirror_job_status();

alter publication supabase_realtime add table public.chat_jobs, public.chat_messages;

-- -----------------------------------------------------------------------------
-- chat_submit with the session as ordering key and an idempotency key
-- -----------------------------------------------------------------------------

drop function public.chat_submit(uuid, text, text, text, integer, integer, integer, integer, integer);
create function public.chat_submit(
  p_user uuid,
  p_session_id text,
  p_message text,
  p_field_id text default null,
  p_priority integer default 0,
  p_max_questions integer default 10,
  p_session_max_age_seconds integer default 86400,
  p_max_attempts integer default 4,
  p_backoff_base_ms integer default 1000,
  p_idempotency_key text default null
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_session public.chat_sessions;
  v_message uuid;
  v_job public.jobs;
  v_position integer;
  v_hash text;
  v_key private.idempotency_keys;
  v_result jsonb;
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
  if p_idempotency_key is not null and p_idempotency_key !~ '^[\x21-\x7e]{1,255}$' then
    raise exception using errcode = '22023', message = 'p_idempotency_key must be 1 to 255 printable ASCII characters';
  end if;
  if not exists (select 1 from auth.users u where u.id = p_user) then
    raise exception using errcode = 'EC401', message = 'user_not_found';
  end if;

  if p_idempotency_key is not null then
    v_hash := encode(sha256(convert_to(
      jsonb_build_array(p_session_id, p_message, p_field_id, p_priority)::text, 'UTF8')), 'hex');
    -- A concurrent request with the same key waits here until the first commits
    -- (then it reads that result) or rolls back (then it goes ahead itself).
    insert into private.idempotency_keys (scope, owner_id, key, request_hash)
    values ('chat-submit', p_user, p_idempotency_key, v_hash)
    on conflict do nothing;
    if not found then
      select * into v_key from private.idempotency_keys k
       where k.scope = 'chat-submit' and k.owner_id = p_user and k.key = p_idempotency_key
         for update;
      if v_key.created_at > now() - interval '24 hours' then
        if v_key.request_hash <> v_hash then
          raise exception using errcode = 'EC422', message = 'idempotency_key_reused';
        end if;
        if v_key.response is not null then
          return v_key.response || jsonb_build_object('replayed', true);
        end if;
      end if;
      -- Older than 24 hours (or, impossibly, without a result): the key starts afresh.
      update private.idempotency_keys k
         set request_hash = v_hash, response = null, created_at = now()
       where k.scope = 'chat-submit' and k.owner_id = p_user and k.key = p_idempotency_key;
    end if;
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
    p_backoff_base_ms => p_backoff_base_ms,
    p_ordering_key => p_session_id
  );

  insert into public.chat_jobs (job_id, session_id, owner_id, user_message_id, status)
  values (v_job.id, p_session_id, p_user, v_message, v_job.status);
  update public.chat_messages set job_id = v_job.id where id = v_message;
  update public.chat_sessions
     set question_count = question_count + 1, updated_at = now()
   where id = p_session_id;

  v_position := public.queue_position(v_job.id);
  v_result := private.chat_queue_timing('chat') || jsonb_build_object(
    'job_id', v_job.id,
    'status', v_job.status,
    'queue_position', coalesce(v_position, 0),
    'session_id', p_session_id,
    'question_count', v_session.question_count + 1,
    'max_questions', least(v_session.max_questions, p_max_questions)
  );
  if p_idempotency_key is not null then
    update private.idempotency_keys k set response = v_result
     where k.scope = 'chat-submit' and k.owner_id = p_user and k.key = p_idempotency_key;
  end if;
  return v_result;
end
$$;

-- -----------------------------------------------------------------------------
-- chat_cancel
-- -----------------------------------------------------------------------------

create function public.chat_cancel(p_job uuid)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_link public.chat_jobs;
  v_job public.jobs;
begin
  select * into v_link from public.chat_jobs c where c.job_id = p_job;
  -- Someone else's job and no job at all look the same on purpose.
  if v_link.job_id is null
     or (auth.role() is distinct from 'service_role' and v_link.owner_id is distinct from auth.uid()) then
    raise exception using errcode = 'EC404', message = 'job_not_found';
  end if;
  -- The session lock orders a cancel with concurrent submits' question counting.
  perform 1 from public.chat_sessions s where s.id = v_link.session_id for update;
  select * into v_job from public.jobs j where j.id = p_job for update;
  if v_job.status = 'cancelled' then
    return private.chat_job_view(v_job, v_link);
  end if;
  if v_job.status not in ('pending', 'retrying') then
    raise exception using errcode = 'EC409', message = 'job_not_cancellable',
      detail = v_job.status;
  end if;
  v_job := public.cancel_job(p_job);
  update public.chat_sessions
     set question_count = greatest(question_count - 1, 0), updated_at = now()
   where id = v_link.session_id;
  select * into v_link from public.chat_jobs c where c.job_id = p_job;
  return private.chat_job_view(v_job, v_link);
end
$$;

-- Keys live 24 hours; queue-worker's housekeeping (cleanup_jobs) drops older ones.
create or replace function public.cleanup_jobs(p_retention_seconds integer default 604800, p_limit integer default 10000)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_jobs integer;
  v_workers integer;
  v_keys integer;
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

  -- Workers heartbeat on every claim and queue-worker run; one silent for 15 minutes
  -- (or the retention, if shorter) is dead.
  delete from public.workers w
   where w.last_heartbeat_at < now() - make_interval(secs => least(p_retention_seconds, 900));
  get diagnostics v_workers = row_count;

  delete from private.idempotency_keys k
   where k.ctid = any(array(select x.ctid from private.idempotency_keys x
                             where x.created_at < now() - interval '24 hours'
                             limit p_limit));
  get diagnostics v_keys = row_count;

  return jsonb_build_object('jobs_deleted', v_jobs, 'workers_deleted', v_workers,
                            'idempotency_keys_deleted', v_keys);
end
$$;

revoke execute on function private.chat_mirror_job_status() from public, anon, authenticated, service_role;
grant execute on function
  public.chat_submit(uuid, text, text, text, integer, integer, integer, integer, integer, text)
  to service_role;
grant execute on function public.chat_cancel(uuid) to authenticated, service_role;
