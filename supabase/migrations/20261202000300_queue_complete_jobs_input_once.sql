-- =============================================================================
-- Job queue: complete_jobs (batch completion) reads its input once and keeps its plans.
-- =============================================================================
--
-- At batch 50 (claim_jobs of 50, then complete_jobs of the 50), measured with callgrind
-- on a single-user backend as the marginal instructions per job between 10 and 30
-- rounds, complete_jobs spent, per job:
--   - about 25,000 instructions parsing uuids: each job id was parsed from the JSON
--     three times (the id list, the update's input, the answer) and its lease token
--     once; a uuid costs Postgres 15 about 600 instructions per byte pair;
--   - a custom plan for its statements at every call: without plan_cache_mode =
--     force_generic_plan the plan cache kept re-planning them (their parameters are
--     arrays and JSON, whose custom plans it never judged worse than a generic one);
--   - set_config calls to set and restore the actor and the history setting, now the
--     function's SET clauses (restored by Postgres on exit, as complete_job_and_claim
--     does since 20261201005100).
-- Now the input is read once into arrays (ids, tokens, results, in input order), the
-- update joins the arrays, it returns the two columns the rest reads, and the answer is
-- built from the id array. Same answers, same refusals, same history (20261202000200):
-- one completion event per completed job. 401,000 -> 380,000 instructions per job at
-- batch 50.
-- =============================================================================

-- Functions created below carry no EXECUTE for public, anon or authenticated: the
-- default privileges of 20261201000100, restated here. complete_jobs keeps its grant to
-- service_role (create or replace keeps a function's privileges).
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create or replace function public.complete_jobs(p_completions jsonb)
returns table (job_id uuid, completed boolean, status text)
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
set "edgeworks.job_actor" = 'worker'
set "edgeworks.job_events_inline" = 'on'
as $$
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
       and j.status = 'processing'
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
$$;
