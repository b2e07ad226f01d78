-- Seed 000, the chat job queue: sessions, messages, fields (domains with a
-- system prompt), the link between a chat question and its queue job, and
-- error logs. The seed's table names map onto the queue engine:
--   chat_jobs        a table here: session + user message + queue job (+ answer)
--   job_queue        a view over public.jobs
--   job_dependencies the queue engine's table
--   worker_status    a view over public.workers
--
-- API (EXECUTE revoked from PUBLIC):
--   claim_job(p_job, p_worker, p_lease_seconds) -> jobs          [service_role]
--       claim one named job (chat-process {job_id}); empty when it is not claimable.
--   chat_submit(p_user, p_session_id, p_message, p_field_id, p_priority,
--               p_max_questions, p_session_max_age_seconds, p_max_attempts,
--               p_backoff_base_ms) -> jsonb                      [service_role]
--       Atomically: create the session on first use (owned by p_user) or lock it,
--       refuse another user's (EC403), an expired one (EC410) or one at its question
--       limit (EC429), store the question, enqueue the job, count the question.
--       Returns {job_id, status, queue_position, avg_processing_ms, samples,
--       active_workers, session_id, question_count, max_questions}.
--   chat_job_context(p_job, p_lease_token) -> jsonb                [service_role]
--       Everything a worker needs to build the prompt, in one round trip.
--   chat_complete(p_job, p_lease_token, p_content, p_model, p_provider, p_prompt_tokens,
--                 p_completion_tokens, p_total_tokens, p_finish_reason) -> jsonb [service_role]
--       Store the answer and complete the job in one transaction (EQ409 if the lease
--       was lost: nothing is stored).
--   chat_job_status(p_job) -> jsonb                  [authenticated: own jobs; service_role]
--   chat_session_status(p_session_id, p_limit) -> jsonb   [authenticated: own; service_role]
--   chat_log_error(p_function, p_code, p_message, p_request_id, p_job, p_details) [service_role]
--
-- Errors: EC403 session belongs to another user; EC404 field or session not found;
-- EC409 session bound to another field; EC410 session expired; EC429 question limit.

create table public.fields (
  id text primary key check (id ~ '^[A-Za-z0-9_.:-]{1,100}$'),
  name text not null check (length(name) between 1 and 200),
  -- Placeholders filled by crates/core/src/prompt.rs: {field_name}, {date}.
  system_prompt text not null check (length(system_prompt) <= 20000),
  model text,
  temperature real check (temperature is null or temperature between 0 and 2),
  max_output_tokens integer check (max_output_tokens is null or max_output_tokens between 1 and 65536),
  top_p real check (top_p is null or top_p between 0 and 1),
  top_k integer check (top_k is null or top_k between 1 and 1000),
  history_token_budget integer not null default 6000 check (history_token_budget between 0 and 1000000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
alter table public.fields enable row level security;
create policy fields_readable on public.fields for select to anon, authenticated using (true);
revoke insert, update, delete on public.fields from anon, authenticated;

create table public.chat_sessions (
  id text primary key check (id ~ '^[A-Za-z0-9_.:-]{1,128}$'),
  owner_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  field_id text not null default 'general' references public.fields (id),
  question_count integer not null default 0 check (question_count >= 0),
  max_questions integer not null default 10 check (max_questions between 1 and 1000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  expires_at timestamptz not null default now() + interval '24 hours'
);
create index chat_sessions_owner_idx on public.chat_sessions (owner_id, created_at desc);
alter table public.chat_sessions enable row level security;
create policy chat_sessions_owner_read on public.chat_sessions for select to authenticated
  using (owner_id = (select auth.uid()));
create policy chat_sessions_owner_create on public.chat_sessions for insert to authenticated
  with check (owner_id = (select auth.uid()));
-- A user may create a session naming only its id and field; the owner, the
-- counters and the expiry are the server's.
revoke insert, update, delete on public.chat_sessions from anon, authenticated;
grant insert (id, field_id) on public.chat_sessions to authenticated;

create table public.chat_messages (
  id uuid primary key default gen_random_uuid(),
  session_id text not null references public.chat_sessions (id) on delete cascade,
  owner_id uuid not null,
  role text not null check (role in ('user', 'assistant')),
  content text not null,
  job_id uuid,
  model text,
  provider text,
  prompt_tokens integer,
  completion_tokens integer,
  total_tokens integer,
  finish_reason text,
  created_at timestamptz not null default clock_timestamp()
);
create index chat_messages_session_idx on public.chat_messages (session_id, created_at);
alter table public.chat_messages enable row level security;
create policy chat_messages_owner_read on public.chat_messages for select to authenticated
  using (owner_id = (select auth.uid()));
revoke insert, update, delete on public.chat_messages from anon, authenticated;

create table public.chat_jobs (
  job_id uuid primary key references public.jobs (id) on delete cascade,
  session_id text not null references public.chat_sessions (id) on delete cascade,
  owner_id uuid not null,
  user_message_id uuid not null references public.chat_messages (id) on delete cascade,
  assistant_message_id uuid references public.chat_messages (id) on delete set null,
  created_at timestamptz not null default now()
);
create index chat_jobs_session_idx on public.chat_jobs (session_id, created_at desc);
alter table public.chat_jobs enable row level security;
create policy chat_jobs_owner_read on public.chat_jobs for select to authenticated
  using (owner_id = (select auth.uid()));
revoke insert, update, delete on public.chat_jobs from anon, authenticated;

create table public.error_logs (
  id bigint generated always as identity primary key,
  function text not null,
  code text not null,
  message text not null,
  request_id text,
  job_id uuid,
  details jsonb,
  created_at timestamptz not null default now()
);
create index error_logs_created_idx on public.error_logs (created_at desc);
alter table public.error_logs enable row level security;
-- No policies: only the service role (which bypasses RLS) reads error logs.
revoke all on public.error_logs from anon, authenticated;

-- The seed's names, as views that keep the callers' RLS (security_invoker).
create view public.job_queue with (security_invoker = true) as
  select j.id, j.queue as queue_name, j.kind as job_type, j.payload, j.priority, j.status,
         j.attempts, j.max_attempts, j.run_at as scheduled_at, j.worker_id,
         j.lease_expires_at, j.progress, j.result, j.last_error as error_message,
         j.owner_id as user_id, j.created_at, j.updated_at, j.started_at, j.completed_at
    from public.jobs j;
create view public.worker_status with (security_invoker = true) as
  select w.id as worker_id, w.queues, w.status, w.last_heartbeat_at as last_heartbeat,
         w.jobs_done as jobs_processed, w.jobs_failed, w.started_at
    from public.workers w;
revoke insert, update, delete on public.job_queue, public.worker_status from anon, authenticated;

-- ---------------------------------------------------------------------------
create function public.claim_job(
  p_job uuid,
  p_worker text,
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
  if p_lease_seconds is null or p_lease_seconds not between 1 and 86400 then
    raise exception using errcode = '22023', message = 'p_lease_seconds must be between 1 and 86400';
  end if;
  select j.queue into v_queue from public.jobs j where j.id = p_job;
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
revoke execute on function public.claim_job(uuid, text, integer) from public;
grant execute on function public.claim_job(uuid, text, integer) to service_role;

-- Recent real processing times of a queue and its live workers: the basis
-- of every time estimate (crates/core computes the estimate from these).
create function public.chat_queue_timing(p_queue text default 'chat')
returns jsonb
language sql stable security definer set search_path = ''
as $$
  select jsonb_build_object(
    'avg_processing_ms', coalesce((
      select round(avg(extract(epoch from (j.completed_at - j.started_at)) * 1000))
        from (select completed_at, started_at from public.jobs
               where queue = p_queue and status = 'completed'
                 and completed_at > now() - interval '1 hour'
               order by completed_at desc limit 200) j), 0),
    'samples', (select count(*) from (select 1 from public.jobs
               where queue = p_queue and status = 'completed'
                 and completed_at > now() - interval '1 hour' limit 200) s),
    'active_workers', (select count(*) from public.workers w
               where p_queue = any(w.queues) and w.status = 'active'
                 and w.last_heartbeat_at > now() - interval '60 seconds')
  )
$$;
revoke execute on function public.chat_queue_timing(text) from public;
grant execute on function public.chat_queue_timing(text) to service_role;

create function public.chat_submit(
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
  if v_session.owner_id <> p_user then
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
  return public.chat_queue_timing('chat') || jsonb_build_object(
    'job_id', v_job.id,
    'status', v_job.status,
    'queue_position', coalesce(v_position, 0),
    'session_id', p_session_id,
    'question_count', v_session.question_count + 1,
    'max_questions', least(v_session.max_questions, p_max_questions)
  );
end
$$;
revoke execute on function public.chat_submit(uuid, text, text, text, integer, integer, integer, integer, integer) from public;
grant execute on function public.chat_submit(uuid, text, text, text, integer, integer, integer, integer, integer) to service_role;

create function public.chat_job_context(p_job uuid, p_lease_token uuid)
returns jsonb
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_link public.chat_jobs;
  v_session public.chat_sessions;
  v_question public.chat_messages;
  v_field jsonb;
  v_history jsonb;
begin
  if not exists (select 1 from public.jobs j
                  where j.id = p_job and j.status = 'processing' and j.lease_token = p_lease_token) then
    raise exception using errcode = 'EQ409', message = 'lease_lost';
  end if;
  select * into v_link from public.chat_jobs c where c.job_id = p_job;
  if not found then
    raise exception using errcode = 'EC404', message = 'chat_job_not_found';
  end if;
  select * into v_session from public.chat_sessions s where s.id = v_link.session_id;
  select * into v_question from public.chat_messages m where m.id = v_link.user_message_id;
  select to_jsonb(f) into v_field from public.fields f where f.id = v_session.field_id;
  -- The conversation so far: every earlier question of the session that has an
  -- answer, each followed by its answer (whenever that answer was stored), oldest
  -- first, the newest 50 exchanges at most (the prompt builder trims further).
  select coalesce(jsonb_agg(x.msg order by x.asked_at, x.ord), '[]')
    into v_history
    from (select p.asked_at, o.ord, o.msg
            from (select u.created_at as asked_at, u.content as question, a.content as answer
                    from public.chat_jobs c
                    join public.chat_messages u on u.id = c.user_message_id
                    join public.chat_messages a on a.id = c.assistant_message_id
                   where c.session_id = v_link.session_id
                     and u.created_at < v_question.created_at
                   order by u.created_at desc
                   limit 50) p
            cross join lateral (values
              (1, jsonb_build_object('role', 'user', 'content', p.question)),
              (2, jsonb_build_object('role', 'assistant', 'content', p.answer))) as o (ord, msg)) x;
  return jsonb_build_object(
    'job_id', p_job,
    'session_id', v_link.session_id,
    'owner_id', v_link.owner_id,
    'field', v_field,
    'question', jsonb_build_object('id', v_question.id, 'content', v_question.content),
    'history', v_history
  );
end
$$;
revoke execute on function public.chat_job_context(uuid, uuid) from public;
grant execute on function public.chat_job_context(uuid, uuid) to service_role;

create function public.chat_complete(
  p_job uuid,
  p_lease_token uuid,
  p_content text,
  p_model text,
  p_provider text,
  p_prompt_tokens integer,
  p_completion_tokens integer,
  p_total_tokens integer,
  p_finish_reason text default null
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_link public.chat_jobs;
  v_message public.chat_messages;
begin
  select * into v_link from public.chat_jobs c where c.job_id = p_job for update;
  if not found then
    raise exception using errcode = 'EC404', message = 'chat_job_not_found';
  end if;
  insert into public.chat_messages (session_id, owner_id, role, content, job_id, model, provider,
                                    prompt_tokens, completion_tokens, total_tokens, finish_reason)
  values (v_link.session_id, v_link.owner_id, 'assistant', p_content, p_job, p_model, p_provider,
          p_prompt_tokens, p_completion_tokens, p_total_tokens, p_finish_reason)
  returning * into v_message;
  update public.chat_jobs set assistant_message_id = v_message.id where job_id = p_job;
  -- Refuses (EQ409) a stale lease; the whole transaction, message included, rolls back.
  perform public.complete_job(p_job, p_lease_token, jsonb_build_object(
    'message_id', v_message.id,
    'content', v_message.content,
    'created_at', v_message.created_at,
    'model', p_model,
    'provider', p_provider,
    'usage', jsonb_build_object('prompt_tokens', p_prompt_tokens,
                                'completion_tokens', p_completion_tokens,
                                'total_tokens', p_total_tokens)
  ));
  return jsonb_build_object('message_id', v_message.id, 'created_at', v_message.created_at);
end
$$;
revoke execute on function public.chat_complete(uuid, uuid, text, text, text, integer, integer, integer, text) from public;
grant execute on function public.chat_complete(uuid, uuid, text, text, text, integer, integer, integer, text) to service_role;

-- One job as chat-status shows it.
create function public.chat_job_view(j public.jobs, c public.chat_jobs)
returns jsonb
language sql stable security definer set search_path = ''
as $$
  select jsonb_build_object(
    'job_id', j.id,
    'session_id', c.session_id,
    'status', j.status,
    'progress', j.progress,
    'result', case when j.status = 'completed' then jsonb_build_object(
        'message_id', j.result ->> 'message_id',
        'content', j.result ->> 'content',
        'created_at', j.result ->> 'created_at',
        'model', j.result ->> 'model',
        'usage', j.result -> 'usage') end,
    'error', case when j.status in ('failed', 'retrying', 'cancelled') then j.last_error end,
    'queue_position', case when j.status in ('pending', 'retrying') then public.queue_position(j.id) end,
    'processing_time_ms', case when j.completed_at is not null and j.started_at is not null
        then round(extract(epoch from (j.completed_at - j.started_at)) * 1000)::bigint end,
    'retry_count', greatest(j.attempts - 1, 0),
    'attempts', j.attempts,
    'max_attempts', j.max_attempts,
    'run_at', j.run_at,
    'started_at', j.started_at,
    'completed_at', j.completed_at,
    'created_at', j.created_at,
    'updated_at', j.updated_at
  )
$$;
revoke execute on function public.chat_job_view(public.jobs, public.chat_jobs) from public;

create function public.chat_job_status(p_job uuid)
returns jsonb
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_job public.jobs;
  v_link public.chat_jobs;
begin
  select * into v_link from public.chat_jobs c where c.job_id = p_job;
  select * into v_job from public.jobs j where j.id = p_job;
  -- Someone else's job and no job at all look the same on purpose.
  if v_link.job_id is null or v_job.id is null
     or not (auth.role() = 'service_role' or v_link.owner_id = auth.uid()) then
    raise exception using errcode = 'EC404', message = 'job_not_found';
  end if;
  return public.chat_job_view(v_job, v_link) || jsonb_build_object('timing', public.chat_queue_timing('chat'));
end
$$;
revoke execute on function public.chat_job_status(uuid) from public;
grant execute on function public.chat_job_status(uuid) to authenticated, service_role;

create function public.chat_session_status(p_session_id text, p_limit integer default 10)
returns jsonb
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_session public.chat_sessions;
  v_jobs jsonb;
  v_stats jsonb;
begin
  if p_limit is null or p_limit not between 1 and 100 then
    raise exception using errcode = '22023', message = 'p_limit must be between 1 and 100';
  end if;
  select * into v_session from public.chat_sessions s where s.id = p_session_id;
  if not found or not (auth.role() = 'service_role' or v_session.owner_id = auth.uid()) then
    raise exception using errcode = 'EC404', message = 'session_not_found';
  end if;
  select coalesce(jsonb_agg(public.chat_job_view(j, c) order by c.created_at desc), '[]')
    into v_jobs
    from (select * from public.chat_jobs where session_id = p_session_id
           order by created_at desc limit p_limit) c
    join public.jobs j on j.id = c.job_id;
  select jsonb_build_object(
      'total_jobs', count(*),
      'completed_jobs', count(*) filter (where j.status = 'completed'),
      'failed_jobs', count(*) filter (where j.status = 'failed'),
      'average_processing_time_ms', coalesce(round(avg(extract(epoch from (j.completed_at - j.started_at)) * 1000)
                                     filter (where j.status = 'completed')), 0),
      'question_count', v_session.question_count,
      'max_questions', v_session.max_questions,
      'expires_at', v_session.expires_at)
    into v_stats
    from public.chat_jobs c join public.jobs j on j.id = c.job_id
   where c.session_id = p_session_id;
  return jsonb_build_object('session_id', p_session_id, 'jobs', v_jobs, 'session_stats', v_stats,
                            'timing', public.chat_queue_timing('chat'));
end
$$;
revoke execute on function public.chat_session_status(text, integer) from public;
grant execute on function public.chat_session_status(text, integer) to authenticated, service_role;

create function public.chat_log_error(
  p_function text, p_code text, p_message text,
  p_request_id text default null, p_job uuid default null, p_details jsonb default null
) returns void
language sql volatile security definer set search_path = ''
as $$
  insert into public.error_logs (function, code, message, request_id, job_id, details)
  values (left(p_function, 100), left(p_code, 100), left(p_message, 2000), left(p_request_id, 200), p_job, p_details)
$$;
revoke execute on function public.chat_log_error(text, text, text, text, uuid, jsonb) from public;
grant execute on function public.chat_log_error(text, text, text, text, uuid, jsonb) to service_role;

-- The default field, so a session created without one works.
insert into public.fields (id, name, system_prompt)
values ('general', 'General',
        'You are a helpful course assistant for {field_name}. Answer clearly and concisely. Today is {date}.')
on conflict (id) do nothing;
