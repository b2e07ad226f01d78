-- =============================================================================
-- Job queue: complete_jobs reaches each job through the primary key.
-- =============================================================================
--
-- complete_jobs' update found its rows with `j.id = any(v_ids) and j.id = i.id and
-- j.lease_token = i.token` against the unnested items. Its generic plan, made while the
-- table was small, read jobs with a sequential scan (the function did not turn scans off,
-- as the claim functions do) and joined the items by a nested loop whose join filter
-- compared every row with every item: 2,450 rows removed for a batch of 50. It now keeps
-- sequential and bitmap scans off like the other queue functions, and the update is
-- driven by the items: a nested loop over them, each one an index scan of jobs_pkey on
-- `id = i.id` with the token and the lease as filters. Same rows updated, same answers.
-- Batch 50 (claim_jobs of 50, then complete_jobs of them; callgrind as in the README, the
-- difference between 30 and 10 rounds over 1,000 jobs): 472,700 -> 329,100 instructions
-- per job.
-- Body otherwise as in 20261202002000; create or replace keeps grants.
-- =============================================================================

alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create or replace function public.complete_jobs(p_completions jsonb)
 RETURNS TABLE(job_id uuid, completed boolean, status text)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
 SET plan_cache_mode TO 'force_generic_plan'
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
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
     -- One primary-key probe per item, driven by the items (not a scan of jobs joined
     -- to them by a filter over every pair).
     where j.id = i.id and j.lease_token = i.token
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
