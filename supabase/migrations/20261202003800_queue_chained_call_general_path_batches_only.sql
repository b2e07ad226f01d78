-- =============================================================================
-- Job queue: complete_job_and_claim's general path without its unreachable batch of one.
-- =============================================================================
--
-- Since 20261202003000 a call with a batch of one and valid arguments takes the common
-- path, and the general path refuses every other call with a batch of one (a missing id
-- or token, a result over 1 MiB, a bad worker name or lease length) or hands it to
-- complete_job and claim_jobs (several queues). Its own batch-of-one claim could no
-- longer run. It is removed; the general path claims a batch of several only. No call
-- changes its answer.
-- Body otherwise as in 20261202003400; create or replace keeps grants.
-- =============================================================================

alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

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
  v_tid tid;
begin
  -- The common call in one test: both ids given, a result within bounds, one queue, a
  -- batch of one, a lease length in range. Anything else (including a NULL, for which
  -- the test is not true) takes the general path, which checks each argument in turn
  -- with its own error, as before. p_worker is checked only where the fast path uses it
  -- (below): when it names the job's holder, that holder passed the check when it claimed.
  if (p_job is not null and p_lease_token is not null
      and (p_result is null or octet_length(p_result::text) <= 1048576)
      and cardinality(p_queues) = 1 and p_batch = 1
      and p_lease_seconds between 1 and 86400) is not true then
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

    -- Here p_batch is more than 1: a call with a batch of one and valid arguments takes
    -- the common path below, and any other has been refused above.
    -- claim_jobs' one-queue statement: keep the candidates' conditions and order equal.
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
    return;
  end if;

  perform from public.jobs j
   where j.status = 'processing' and j.queue = p_queues[1] and j.lease_expires_at < now()
   limit 1;
  if found then
    perform public.requeue_expired_leases(p_queues);
  end if;

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
  update public.workers w
     set jobs_done = w.jobs_done + 1, last_heartbeat_at = now()
   where w.id = v_holder
  returning w.status = 'active' and w.queues = p_queues into v_current;
  perform from public.job_dependencies d where d.depends_on = p_job limit 1;
  -- One test for the three rare cases: the job has dependents, the lease was lost (then
  -- no holder and no counter), or the claim is for another worker or queues than the
  -- worker's row says.
  if found or v_current is not true or v_holder is distinct from p_worker then
    if v_holder is distinct from p_worker or v_current is not true then
      if p_worker is null or length(p_worker) not between 1 and 200 then
        raise exception using errcode = '22023', message = 'p_worker must be 1 to 200 characters';
      end if;
    end if;
    if v_done is null then
      perform private.raise_lease_lost(p_job);
    end if;
    if found then
      perform private.release_dependents(array[p_job]);
    end if;
    if v_holder is distinct from p_worker or v_current is not true then
      perform private.touch_worker(p_worker, p_queues);
    end if;
  end if;

  -- claim_jobs' one-queue statement: keep the candidates' conditions and order equal.
  -- The update reaches the locked row by its address: this transaction holds the row's
  -- lock, so no one else can update or move it, and the update's statement (a new
  -- snapshot) sees the version the pick locked. No candidate, no update: the update
  -- below then matches no row.
  select c.ctid into v_tid
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
     where j.ctid = v_tid
    returning j.*;
end
$function$
;
