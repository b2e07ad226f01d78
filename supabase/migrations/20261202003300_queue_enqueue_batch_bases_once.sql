-- =============================================================================
-- Job queue: enqueue_jobs reads each (queue, owner)'s fair position once per batch,
-- not once per job.
-- =============================================================================
--
-- enqueue_jobs gives a batch's plain jobs their fair positions from `bases`: one
-- private.next_fair_position(queue, owner) per (queue, owner) of the batch, then the
-- n-th job of that group gets base + n. `bases` was referenced once, so the planner
-- inlined it and pulled it up into the insert's join; the call was then evaluated in
-- the join's output, once per job: three index reads (the queue's head, the owner's last
-- waiting and last in-flight position) and a function call with four SET options, for
-- every job of the batch. Written `bases as materialized`, it is evaluated once per
-- group, before the first row is inserted.
--
-- The positions are the same. next_fair_position is STABLE, so its statements run on
-- the snapshot of the statement that calls it, the insert's: evaluated per job, it
-- never saw the rows inserted before it by the same statement (that is why the batch
-- adds n), and every job of a group got the same base. Materialized, each group's base
-- comes from that same snapshot, computed once. Every other column, the insert order
-- (order by i.ord, so seq follows the input) and the returned rows are unchanged:
-- 300 random backlogs (three queues, three owners and none, priorities, delays,
-- blocked and claimed jobs) and batches of 1 to 31 plain jobs, old and new body in one
-- transaction, gave the same 4,577 rows (all but id, seq and timestamps). Only a STABLE
-- call was folded: a VOLATILE one keeps the subquery apart.
--
-- Callgrind as in the README (a DO block of enqueue_jobs of 50, each committed; the
-- difference of 30 and 10 rounds over the 1,000 jobs between them; databases built
-- fresh from the migrations), instructions per job:
--   ownerless, beside a second queue   467,000 -> 248,100 (again: 467,300 -> 248,300)
--   one owner                          519,200 -> 299,400
--   ten owners, five jobs each         515,700 -> 351,300
-- enqueue_jobs with dedup keys or dependencies goes through enqueue_job, unchanged.
--
-- Body otherwise as in 20261201000200; create or replace keeps grants, owner and
-- comments.
-- =============================================================================

-- The default privileges of 20261201000100 (no EXECUTE for public, anon or
-- authenticated on new functions), restated as in every queue migration.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create or replace function public.enqueue_jobs(p_jobs jsonb) returns setof public.jobs
language plpgsql volatile security definer set search_path = ''
as $$
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
        from items i join bases b on b.queue = i.queue and b.owner is not distinct from i.owner
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
$$;
