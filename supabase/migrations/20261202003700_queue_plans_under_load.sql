-- =============================================================================
-- Job queue: enqueue plans that stay right whatever the statistics said.
-- =============================================================================
--
-- An audit of every statement the queue bench runs (auto_explain with nested statements,
-- 8 connections, 5,000 jobs per phase, batches of 1 and 50, with and without owners,
-- statistics from no ANALYZE, from one with 5,000 jobs waiting, and from one with all
-- jobs finished, each phase in fresh sessions) found two:
--
-- 1. next_fair_position's read of the queue's head (the first waiting job in claim order)
--    is a generic plan (force_generic_plan). Made when the statistics said almost no job
--    was waiting (an ANALYZE between bursts), the two ways to read it cost the same to
--    within a few hundredths: the ordered read of jobs_claim_idx (one entry), or
--    jobs_waiting_idx then a top-N sort (every waiting job of the queue). Once
--    jobs_claim_idx had one btree level more than jobs_waiting_idx (its descent costs
--    0.125 more) the sort won: every enqueue then read and sorted all the queue's waiting
--    jobs. Seen in the audit: a session enqueuing 5,000 jobs into a queue of 5,000 read
--    2,375 buffers per call (1.36 ms, 4,783 rows sorted for 1) instead of 3; the same
--    5,000 enqueues from the same state, 8.6 s of database CPU before, 2.3 s after. It now
--    sets enable_sort off (its other statements sort nothing), so only the ordered index
--    read is left. The setting costs 2,800 instructions per batch-1 enqueue (callgrind,
--    890,900 -> 893,700).
-- 2. enqueue_jobs joined each job to its (queue, owner) base by a hash on the queue and
--    a join filter `b.owner is not distinct from i.owner`: every (job, base) pair of a
--    queue compared, 450 pairs removed for a batch of 50 from 10 owners (2,450 from 50).
--    The owner is now part of the hash key as coalesce(owner::text, '') (exact: no
--    owner matches only no owner); same pairs, same positions. Batch 50, instructions
--    per job (callgrind): 10 owners 370,400 -> 368,200, 50 owners 546,900 -> 519,100.
--
-- Bodies otherwise as in 20261202003100 (next_fair_position) and 20261202003300
-- (enqueue_jobs); create or replace keeps grants, owner and comments.
-- =============================================================================

alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create or replace function private.next_fair_position(p_queue text, p_owner uuid)
 RETURNS bigint
 LANGUAGE plpgsql
 STABLE
 SET search_path TO ''
 SET plan_cache_mode TO 'force_generic_plan'
 SET enable_seqscan TO 'off'
 SET enable_bitmapscan TO 'off'
 SET enable_sort TO 'off'
AS $function$
declare
  v_head bigint;
  v_waiting bigint;
  v_running bigint;
begin
  select j.fair_position into v_head from public.jobs j
   where j.queue = p_queue and j.status in ('pending', 'retrying') and j.pending_dependencies = 0
   order by j.priority desc, j.fair_position, j.run_at, j.seq
   limit 1;
  select j.fair_position into v_waiting from public.jobs j
   where j.queue = p_queue
     and coalesce(j.owner_id, '00000000-0000-0000-0000-000000000000'::uuid)
       = coalesce(p_owner, '00000000-0000-0000-0000-000000000000'::uuid)
     and j.status in ('pending', 'retrying')
   order by j.fair_position desc limit 1;
  if p_owner is null then
    select max(j.fair_position) into v_running from public.jobs j
     where j.queue = p_queue and j.status = 'processing' and j.owner_id is null;
  else
    select max(j.fair_position) into v_running from public.jobs j
     where j.queue = p_queue and j.status = 'processing' and j.owner_id = p_owner;
  end if;
  return greatest(coalesce(v_head, 0), coalesce(v_waiting, 0), coalesce(v_running, 0)) + 1;
end
$function$;

create or replace function public.enqueue_jobs(p_jobs jsonb)
 RETURNS SETOF jobs
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO ''
AS $function$
declare
  v_item jsonb;
  v_unknown text;
  v_index integer;
  v_simple boolean;
  v_prev_actor text := current_setting('edgeworks.job_actor', true);
  v_allowed constant text[] := array['queue', 'kind', 'payload', 'priority', 'delay_ms',
                                     'max_attempts', 'dedup_key', 'depends_on', 'owner',
                                     'backoff_base_ms', 'backoff_cap_ms', 'ordering_key'];
begin
  if p_jobs is null or jsonb_typeof(p_jobs) <> 'array' then
    raise exception using errcode = '22023', message = 'p_jobs must be a JSON array';
  end if;
  if jsonb_array_length(p_jobs) > 1000 then
    raise exception using errcode = '22023', message = 'p_jobs holds more than 1000 jobs';
  end if;
  -- Shape first (one pass), then values: each a single statement over the whole batch.
  select x.ord - 1,
         case when jsonb_typeof(x.e) <> 'object' then 'must be an object'
              else 'has unknown key ' || (select min(k) from jsonb_object_keys(x.e) k
                                           where k <> all (v_allowed)) end
    into v_index, v_unknown
    from jsonb_array_elements(p_jobs) with ordinality as x (e, ord)
   where case when jsonb_typeof(x.e) <> 'object' then true
              else (x.e - v_allowed) <> '{}'::jsonb end
   order by x.ord
   limit 1;
  if v_unknown is not null then
    raise exception using errcode = '22023', message = format('p_jobs[%s] %s', v_index, v_unknown);
  end if;
  v_simple := not exists (
    select 1 from jsonb_array_elements(p_jobs) e
     where e ->> 'dedup_key' is not null
        or (jsonb_typeof(e -> 'depends_on') = 'array' and jsonb_array_length(e -> 'depends_on') > 0));

  if not v_simple then
    -- Dedup keys and dependencies need enqueue_job's per-job locking; keep input order.
    for v_item in select value from jsonb_array_elements(p_jobs) loop
      return next public.enqueue_job(
        p_queue => v_item ->> 'queue',
        p_kind => v_item ->> 'kind',
        p_payload => coalesce(nullif(v_item -> 'payload', 'null'::jsonb), '{}'::jsonb),
        p_priority => coalesce((v_item ->> 'priority')::integer, 0),
        p_delay_ms => coalesce((v_item ->> 'delay_ms')::integer, 0),
        p_max_attempts => coalesce((v_item ->> 'max_attempts')::integer, 5),
        p_dedup_key => v_item ->> 'dedup_key',
        p_depends_on => case when jsonb_typeof(v_item -> 'depends_on') = 'array'
                             then array(select jsonb_array_elements_text(v_item -> 'depends_on'))::uuid[]
                        end,
        p_owner => (v_item ->> 'owner')::uuid,
        p_backoff_base_ms => coalesce((v_item ->> 'backoff_base_ms')::integer, 1000),
        p_backoff_cap_ms => coalesce((v_item ->> 'backoff_cap_ms')::integer, 600000),
        p_ordering_key => v_item ->> 'ordering_key');
    end loop;
    return;
  end if;

  -- Plain jobs: check every item's values, then one insert for the whole batch, in input
  -- order (seq follows it).
  perform private.check_job_arguments(
            e ->> 'queue', e ->> 'kind', e -> 'payload',
            coalesce((e ->> 'priority')::integer, 0),
            coalesce((e ->> 'delay_ms')::integer, 0),
            coalesce((e ->> 'max_attempts')::integer, 5), null,
            coalesce((e ->> 'backoff_base_ms')::integer, 1000),
            coalesce((e ->> 'backoff_cap_ms')::integer, 600000))
     from jsonb_array_elements(p_jobs) e;
  if exists (select 1 from jsonb_array_elements(p_jobs) e
              where e ? 'ordering_key' and jsonb_typeof(e -> 'ordering_key') <> 'null'
                and length(e ->> 'ordering_key') not between 1 and 400) then
    raise exception using errcode = '22023', message = 'ordering_key must be 1 to 400 characters';
  end if;
  perform set_config('edgeworks.job_actor',
                     coalesce(nullif(current_setting('role', true), 'none'), session_user::text),
                     true);
  return query
    with items as (
      select x.e, x.ord, x.e ->> 'queue' as queue, (x.e ->> 'owner')::uuid as owner,
             -- The n-th job of one owner in one queue within this batch.
             row_number() over (partition by x.e ->> 'queue', x.e ->> 'owner' order by x.ord) as nth
        from jsonb_array_elements(p_jobs) with ordinality as x (e, ord)
    ),
    -- Materialized: one next_fair_position per (queue, owner), not one per job (see
    -- the header); the snapshot is the statement's either way.
    bases as materialized (
      select t.queue, t.owner, private.next_fair_position(t.queue, t.owner) - 1 as base
        from (select distinct i.queue, i.owner from items i) t
    ),
    ins as (
      insert into public.jobs (queue, kind, payload, priority, run_at, max_attempts,
                               backoff_base_ms, backoff_cap_ms, owner_id, ordering_key, fair_position)
      select i.queue, i.e ->> 'kind',
             coalesce(nullif(i.e -> 'payload', 'null'::jsonb), '{}'::jsonb),
             coalesce((i.e ->> 'priority')::integer, 0),
             now() + make_interval(secs => coalesce((i.e ->> 'delay_ms')::integer, 0) / 1000.0),
             coalesce((i.e ->> 'max_attempts')::integer, 5),
             coalesce((i.e ->> 'backoff_base_ms')::integer, 1000),
             coalesce((i.e ->> 'backoff_cap_ms')::integer, 600000),
             i.owner, i.e ->> 'ordering_key', b.base + i.nth
        from items i join bases b
          on b.queue = i.queue
         -- One hashable equality that still tells no owner from any owner ('' is no uuid's
         -- text); `is not distinct from` was a join filter over every (job, base) pair.
         and coalesce(b.owner::text, '') = coalesce(i.owner::text, '')
       order by i.ord
      returning *
    )
    select * from ins order by ins.seq;
  -- Identical notifications in one transaction are delivered once anyway; send one per
  -- (queue, kind) that has a job claimable now.
  perform pg_notify('jobs_' || n.queue, n.kind)
     from (select distinct e ->> 'queue' as queue, e ->> 'kind' as kind
             from jsonb_array_elements(p_jobs) e
            where coalesce((e ->> 'delay_ms')::integer, 0) = 0) n;
  perform set_config('edgeworks.job_actor', coalesce(v_prev_actor, ''), true);
end
$function$;
