-- =============================================================================
-- Job queue: statements that reach one job by id and lease token use the primary key.
-- =============================================================================
--
-- complete_job, complete_jobs, complete_job_and_claim, fail_job, extend_lease,
-- report_progress, media_heartbeat, media_release_job, private.pipeline_check_lease and
-- chat_job_context found their job with `id = p_job and lease_token = p_lease_token and
-- status = 'processing'`, and claim_job's expired-lease probe with `id = p_job and
-- status = 'processing' and lease_expires_at < now()`. The status test makes the partial
-- index jobs_lease_idx (where status = 'processing') usable, and when statistics say few
-- jobs are processing the planner picks it (always in the generic plans the queue
-- functions keep, with seqscan and bitmapscan off; in claim_job's probe even in a custom
-- plan) and reads the whole index with id as a filter. A session whose plan was made
-- then reads every processing job's index entry per call once thousands are processing.
--
-- The status test is now the lease rule's other half, which names no indexed status:
-- private.job_status_changed (on every update of status, lease_token or
-- lease_expires_at) and the insert trigger hold that a job is processing exactly when
-- it has a lease token and a lease expiry, so `lease_token = p_lease_token and
-- lease_expires_at is not null` is `lease_token = p_lease_token and status =
-- 'processing'`, and `lease_token is not null and lease_expires_at < now()` is
-- `status = 'processing' and lease_expires_at < now()`. Plans: Index Scan using
-- jobs_pkey, Index Cond: (id = $1). Bodies otherwise as in their latest migrations
-- (20261202000200, 20261202000300, 20261202001300, 20261122000200, 20261201001100,
-- 20261201001700, 20261122000400, 20261202001200); create or replace keeps grants.
-- =============================================================================

alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create or replace function public.complete_job(p_job uuid, p_lease_token uuid, p_result jsonb DEFAULT NULL::jsonb)
 RETURNS jobs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  v_job public.jobs;
  v_prev_inline text := current_setting('edgeworks.job_events_inline', true);
  v_ignored text;
begin
  if p_result is not null and octet_length(p_result::text) > 1048576 then
    raise exception using errcode = '22023', message = 'p_result exceeds 1 MiB';
  end if;
  v_ignored := set_config('edgeworks.job_events_inline', 'on', true);
  -- One statement for the job, its event and its worker's counter.
  with done as (
    update public.jobs
       set status = 'completed',
           result = p_result,
           progress = 100,
           completed_at = now(),
           completion_event = nextval('job_history.job_events_id_seq'),
           updated_at = now(),
           lease_token = null,
           lease_expires_at = null
     where id = p_job and lease_token = p_lease_token and lease_expires_at is not null
    returning *
  ),
  counted as (
    update public.workers w
       set jobs_done = w.jobs_done + 1, last_heartbeat_at = now()
      from done
     where w.id = done.worker_id
  )
  select * into v_job from done;
  if v_job.id is null then
    perform private.raise_lease_lost(p_job);
  end if;
  -- Most jobs have no dependents: skip the call unless the index says otherwise. Its own
  -- statement, after the update, on purpose: an enqueue naming this job as a dependency
  -- holds FOR SHARE on it, so the update waits for that enqueue to commit, and only a
  -- snapshot taken after the update sees the new dependency row (one taken with the
  -- update's statement would miss it and strand the dependent).
  if exists (select 1 from public.job_dependencies d where d.depends_on = p_job) then
    perform private.release_dependents(array[p_job]);
  end if;
  v_ignored := set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
  return v_job;
end
$function$
;

create or replace function public.complete_jobs(p_completions jsonb)
 RETURNS TABLE(job_id uuid, completed boolean, status text)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
 SET plan_cache_mode TO 'force_generic_plan'
 SET "edgeworks.job_actor" TO 'worker'
 SET "edgeworks.job_events_inline" TO 'on'
AS $function$
#variable_conflict use_column
declare
  v_ids uuid[];
  v_tokens uuid[];
  v_results jsonb[];
  v_done uuid[];
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
  -- The input, read once and in order: each uuid is parsed once.
  select array_agg((x.e ->> 'job')::uuid order by x.ord),
         array_agg((x.e ->> 'lease_token')::uuid order by x.ord),
         array_agg(nullif(x.e -> 'result', 'null'::jsonb) order by x.ord)
    into v_ids, v_tokens, v_results
    from jsonb_array_elements(p_completions) with ordinality as x (e, ord);

  with done as (
    update public.jobs j
       set status = 'completed',
           result = i.result,
           progress = 100,
           completed_at = now(),
           completion_event = nextval('job_history.job_events_id_seq'),
           updated_at = now(),
           lease_token = null,
           lease_expires_at = null
      from unnest(v_ids, v_tokens, v_results) as i (id, token, result)
     -- The redundant `= any(v_ids)` lets the planner reach the rows through the primary key.
     where j.id = any(v_ids) and j.id = i.id and j.lease_token = i.token
       and j.lease_expires_at is not null
    returning j.id, j.worker_id
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
    perform private.release_dependents(v_done);
  end if;

  return query
    select i.id, coalesce(i.id = any(v_done), false), j.status
      from unnest(v_ids) with ordinality as i (id, ord)
      left join public.jobs j on j.id = i.id
     order by i.ord;
end
$function$
;

create or replace function public.complete_job_and_claim(p_job uuid, p_lease_token uuid, p_result jsonb, p_worker text, p_queues text[], p_kinds text[] DEFAULT NULL::text[], p_batch integer DEFAULT 1, p_lease_seconds integer DEFAULT 60)
 RETURNS SETOF jobs
 LANGUAGE plpgsql
 SECURITY DEFINER ROWS 10
 SET search_path TO ''
 SET plan_cache_mode TO 'force_generic_plan'
 SET enable_bitmapscan TO 'off'
 SET enable_seqscan TO 'off'
 SET "edgeworks.job_events_inline" TO 'on'
AS $function$
declare
  v_done uuid;
  v_holder text;
  v_current boolean;
  v_next uuid;
begin
  if p_job is null or p_lease_token is null then
    raise exception using errcode = '22023', message = 'p_job and p_lease_token are required';
  end if;
  if p_result is not null and octet_length(p_result::text) > 1048576 then
    raise exception using errcode = '22023', message = 'p_result exceeds 1 MiB';
  end if;
  if cardinality(p_queues) is distinct from 1 then
    -- Several queues (or a bad argument, which claim_jobs refuses, rolling the
    -- completion back with it): complete_job, then claim_jobs.
    perform public.complete_job(p_job, p_lease_token, p_result);
    return query select * from public.claim_jobs(p_worker, p_queues, p_kinds, p_batch, p_lease_seconds);
    return;
  end if;
  -- claim_preamble's checks, inline (a nested call costs a tenth of the whole): the
  -- arguments, then expired leases; the heartbeat is the completion's (below).
  if p_worker is null or length(p_worker) not between 1 and 200 then
    raise exception using errcode = '22023', message = 'p_worker must be 1 to 200 characters';
  end if;
  if p_batch is null or p_batch not between 1 and 1000 then
    raise exception using errcode = '22023', message = 'p_batch must be between 1 and 1000';
  end if;
  if p_lease_seconds is null or p_lease_seconds not between 1 and 86400 then
    raise exception using errcode = '22023', message = 'p_lease_seconds must be between 1 and 86400';
  end if;
  -- The probes are PERFORM ... LIMIT 1 rather than IF EXISTS (...): no InitPlan.
  perform from public.jobs j
   where j.status = 'processing' and j.queue = p_queues[1] and j.lease_expires_at < now()
   limit 1;
  if found then
    perform public.requeue_expired_leases(p_queues);
  end if;

  -- complete_job's update, then the counter's, as two plain statements (one statement
  -- with two data-modifying CTEs cost 23,000 instructions more in CTE scans and
  -- InitPlans); the counter's update also tells whether the worker's row already says
  -- what touch_worker would write.
  update public.jobs
     set status = 'completed',
         result = p_result,
         progress = 100,
         completed_at = now(),
         completion_event = nextval('job_history.job_events_id_seq'),
         updated_at = now(),
         lease_token = null,
         lease_expires_at = null
   where id = p_job and lease_token = p_lease_token and lease_expires_at is not null
  returning id, worker_id into v_done, v_holder;
  if v_done is null then
    perform private.raise_lease_lost(p_job);
  end if;
  update public.workers w
     set jobs_done = w.jobs_done + 1, last_heartbeat_at = now()
   where w.id = v_holder
  returning w.status = 'active' and w.queues = p_queues into v_current;
  -- The completion refreshed its worker's heartbeat; a claim for another worker, or
  -- for other queues than the worker last named (or a worker with no row yet), records
  -- that worker's as claim_jobs does.
  if v_holder is distinct from p_worker or v_current is not true then
    perform private.touch_worker(p_worker, p_queues);
  end if;
  -- A statement of its own after the update, as in complete_job (see there).
  perform from public.job_dependencies d where d.depends_on = p_job limit 1;
  if found then
    perform private.release_dependents(array[p_job]);
  end if;

  -- claim_jobs' one-queue statement: keep the candidates' conditions and order equal.
  if p_batch = 1 then
    -- One job: the pick (locking it) and the update are two plain statements, with no
    -- CTE, InitPlan or array between them; no candidate, no update.
    select c.id into v_next
      from public.jobs c
     where c.queue = p_queues[1]
       and c.status in ('pending', 'retrying')
       and c.pending_dependencies = 0
       and c.run_at <= now()
       and (p_kinds is null or c.kind = any(p_kinds))
       and (c.ordering_key is null or private.ordering_key_free(c.queue, c.ordering_key, c.seq))
     order by c.priority desc, c.fair_position, c.run_at, c.seq
     limit 1
       for update skip locked;
    if v_next is null then
      return;
    end if;
    return query
      update public.jobs j
         set status = 'processing',
             attempts = j.attempts + 1,
             worker_id = p_worker,
             lease_token = gen_random_uuid(),
             lease_expires_at = now() + make_interval(secs => p_lease_seconds),
             started_at = now(),
             claimed_from = j.status,
             claim_event = nextval('job_history.job_events_id_seq'),
             updated_at = now(),
             progress = 0
       where j.id = v_next
      returning j.*;
  else
    return query
      with picked as (
        select c.id
          from public.jobs c
         where c.queue = p_queues[1]
           and c.status in ('pending', 'retrying')
           and c.pending_dependencies = 0
           and c.run_at <= now()
           and (p_kinds is null or c.kind = any(p_kinds))
           and (c.ordering_key is null or private.ordering_key_free(c.queue, c.ordering_key, c.seq))
         order by c.priority desc, c.fair_position, c.run_at, c.seq
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
               claimed_from = j.status,
               claim_event = nextval('job_history.job_events_id_seq'),
               updated_at = now(),
               progress = 0
         where j.id = any(array(select p.id from picked p))
        returning j.*
      )
      select c.* from claimed c
       order by c.priority desc, c.fair_position, c.run_at, c.seq;
  end if;
end
$function$
;

create or replace function public.fail_job(p_job uuid, p_lease_token uuid, p_error text, p_retryable boolean DEFAULT true, p_retry_after_ms integer DEFAULT NULL::integer)
 RETURNS jobs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
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
   where id = p_job and lease_token = p_lease_token and lease_expires_at is not null
   for update;
  if not found then
    perform private.raise_lease_lost(p_job);
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
  insert into job_history.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
                                 actor, worker_id, error, run_at)
  values (v_job.id, v_job.owner_id, v_job.queue, 'processing', v_job.status, v_job.attempts,
          'worker', v_job.worker_id, v_job.last_error, v_job.run_at);
  if v_job.status = 'failed' then
    perform private.fail_dependents(array[p_job]);
  end if;

  update public.workers
     set jobs_failed = jobs_failed + 1, last_heartbeat_at = now()
   where id = v_job.worker_id;
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true),
          set_config('edgeworks.job_events_inline', coalesce(v_prev_inline, ''), true);
  return v_job;
end
$function$
;

create or replace function public.extend_lease(p_job uuid, p_lease_token uuid, p_lease_seconds integer DEFAULT 60)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  v_expires timestamptz;
  v_worker text;
begin
  if p_lease_seconds is null or p_lease_seconds not between 1 and 86400 then
    raise exception using errcode = '22023', message = 'p_lease_seconds must be between 1 and 86400';
  end if;
  update public.jobs
     set lease_expires_at = now() + make_interval(secs => p_lease_seconds), updated_at = now()
   where id = p_job and lease_token = p_lease_token and lease_expires_at is not null
  returning lease_expires_at, worker_id into v_expires, v_worker;
  if not found then
    perform private.raise_lease_lost(p_job);
  end if;
  update public.workers set last_heartbeat_at = now() where id = v_worker;
  return v_expires;
end
$function$
;

create or replace function public.report_progress(p_job uuid, p_lease_token uuid, p_progress integer)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
begin
  if p_progress is null or p_progress not between 0 and 100 then
    raise exception using errcode = '22023', message = 'p_progress must be between 0 and 100';
  end if;
  update public.jobs
     set progress = p_progress, updated_at = now()
   where id = p_job and lease_token = p_lease_token and lease_expires_at is not null;
  if not found then
    perform private.raise_lease_lost(p_job);
  end if;
  return p_progress;
end
$function$
;

create or replace function public.media_heartbeat(p_job uuid, p_lease_token uuid, p_lease_seconds integer DEFAULT 30)
 RETURNS jsonb
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  v_job public.jobs;
  v_media text;
begin
  if p_lease_seconds is null or p_lease_seconds not between 1 and 3600 then
    raise exception using errcode = '22023', message = 'p_lease_seconds must be between 1 and 3600';
  end if;
  update public.jobs
     set lease_expires_at = now() + make_interval(secs => p_lease_seconds), updated_at = now()
   where id = p_job and lease_token = p_lease_token and lease_expires_at is not null
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
$function$
;

create or replace function public.media_release_job(p_job uuid, p_lease_token uuid)
 RETURNS jsonb
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  v_job public.jobs;
  v_prev text := current_setting('edgeworks.job_actor', true);
begin
  perform set_config('edgeworks.job_actor', 'worker', true);
  update public.jobs
     set status = 'retrying', run_at = now(), attempts = greatest(attempts - 1, 0),
         lease_token = null, lease_expires_at = null, updated_at = now(),
         last_error = 'released by worker at shutdown'
   where id = p_job and lease_token = p_lease_token and lease_expires_at is not null
  returning * into v_job;
  perform set_config('edgeworks.job_actor', coalesce(v_prev, ''), true);
  if not found then
    return jsonb_build_object('released', false);
  end if;
  perform pg_notify('jobs_' || v_job.queue, 'requeued');
  return jsonb_build_object('released', true);
end
$function$
;

create or replace function private.pipeline_check_lease(p_job uuid, p_lease_token uuid)
 RETURNS void
 LANGUAGE plpgsql
 STABLE
 SET search_path TO ''
AS $function$
begin
  perform 1 from public.jobs j
   where j.id = p_job and j.lease_token = p_lease_token and j.lease_expires_at is not null;
  if not found then
    perform private.raise_lease_lost(p_job);
  end if;
end
$function$
;

create or replace function public.chat_job_context(p_job uuid, p_lease_token uuid)
 RETURNS jsonb
 LANGUAGE plpgsql
 STABLE SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  v_link public.chat_jobs;
  v_session public.chat_sessions;
  v_question public.chat_messages;
  v_field jsonb;
  v_history jsonb;
begin
  if not exists (select 1 from public.jobs j
                  where j.id = p_job and j.lease_token = p_lease_token and j.lease_expires_at is not null) then
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
$function$
;

create or replace function public.claim_job(p_job uuid, p_worker text, p_queues text[], p_kinds text[] DEFAULT NULL::text[], p_lease_seconds integer DEFAULT 60)
 RETURNS SETOF jobs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
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
              where j.id = p_job and j.lease_token is not null and j.lease_expires_at < now()) then
    perform public.requeue_expired_leases(array[v_queue]);
  end if;
  perform private.touch_worker(p_worker, array[v_queue]);
  v_ids := array(
    select c.id from public.jobs c
     where c.id = p_job
       and c.status in ('pending', 'retrying')
       and c.pending_dependencies = 0
       and c.run_at <= now()
       and (c.ordering_key is null or private.ordering_key_free(c.queue, c.ordering_key, c.seq))
       for update skip locked);
  if cardinality(v_ids) = 0 then
    return;
  end if;
  return query select * from private.claim_locked(p_worker, p_lease_seconds, v_ids);
end
$function$
;

